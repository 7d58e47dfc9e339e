"""Checkpoints as plain data, written atomically.

A model folder (what `load_tokenizer` reads) holds `config.json` ({"kind", "arch", "model": {...}, ...})
and `model.safetensors`. A run directory is such a folder (with the EMA weights as `model.safetensors`)
plus `checkpoints/step-XXXXXXXX/` training states: raw and EMA weights in safetensors, optimiser
states and RNG in `state.pt` (tensors and plain containers only; loaded with `weights_only=True`),
and `meta.json` (step, images seen, data position).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from detok.config import from_dict, to_dict
from detok.registry import model_class

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A weights, state or config file is missing, truncated, corrupt or not plain data; the message names it."""


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (on CPU); a truncated or foreign file raises `CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) for damaged files
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({type(e).__name__}: {e})") from None


def read_plain_state(path: str | Path) -> Any:
    """A torch-saved file of tensors and plain containers, loaded with `weights_only=True`.

    Files that would need arbitrary unpickling (pickled objects, code) are refused with a `CheckpointError` that
    names the file: detok never loads them, so torch's advice to retry with `weights_only=False` does not apply.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise CheckpointError(
            f"{path} holds more than tensors and plain containers and was refused (weights-only loading: {first}); "
            "detok never unpickles objects from files"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or not a torch-saved file ({type(e).__name__}: {e})") from None


def read_json(path: str | Path) -> Any:
    """Parsed JSON; a missing or malformed file raises `CheckpointError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def strict_json(data: Any) -> Any:
    """`data` with every non-finite float replaced by None, so that it serialises as strict JSON."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    return data


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file or folder onto `path`, with the permissions `open`/`mkdir` would give it.

    `tempfile.mkstemp`/`mkdtemp` results are for their owner only (0600/0700); renamed into place as they are,
    models, checkpoints and metrics would be unreadable for the rest of a team sharing a machine.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (0o777 if Path(tmp).is_dir() else 0o666) & ~umask)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    publish(tmp, path)


def write_json(path: str | Path, data: dict) -> None:
    """Write `data` as indented strict JSON (NaN/±inf become null), atomically."""
    _atomic_write_text(Path(path), json.dumps(strict_json(data), indent=2, allow_nan=False) + "\n")


def _contiguous_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def weights_digest(*modules: nn.Module) -> str:
    """A digest of the modules' weights and buffers: which trained models made some output (samples, a cache)."""
    h = hashlib.blake2b(digest_size=16)
    for module in modules:
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_model_folder(folder: str | Path, model: nn.Module, extra: dict[str, Any] | None = None) -> None:
    """Write `config.json` + `model.safetensors` for `model` into `folder` (atomically per file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{WEIGHTS_FILE}.")
    os.close(fd)
    save_file(_contiguous_state(model), tmp)
    publish(tmp, folder / WEIGHTS_FILE)
    meta = {"kind": model.kind, "arch": type(model).__name__, "model": to_dict(model.config)}
    write_json(folder / CONFIG_FILE, {**meta, **(extra or {})})


HUB_PREFIX = "hf:"
HUB_INSTALL = "pip install 'detok[hub]'"


def resolve_model_folder(spec: str | Path) -> Path:
    """The local folder a model spec names: a path as it is, or `hf:ORG/NAME[@REV]` (a Hub model repository at a
    branch, tag or commit; default `main`) as its snapshot in huggingface_hub's cache, downloaded once.

    Only `config.json` and `model.safetensors` are fetched. With `HF_HUB_OFFLINE=1` the cache alone answers.
    """
    spec = str(spec)
    if not spec.startswith(HUB_PREFIX):
        return Path(spec)
    repo_id, _, revision = spec[len(HUB_PREFIX) :].partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or (revision == "" and "@" in spec):
        raise ValueError(f"{spec!r} is not a Hub model spec: expected hf:ORG/NAME or hf:ORG/NAME@REVISION")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
    except ImportError:
        raise ImportError(f"{spec} is on the Hugging Face Hub, which needs huggingface_hub: {HUB_INSTALL}") from None
    try:
        path = snapshot_download(repo_id, revision=revision or None, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE])
    except (LocalEntryNotFoundError, HfHubHTTPError, HFValidationError, OSError) as e:
        # not in the cache while offline, no such repository or revision, a refused or failed request: one line,
        # the class name saying which
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FileNotFoundError(f"{spec}: {type(e).__name__}: {first}") from None
    return Path(path)


def read_model_config(folder: str | Path) -> tuple[type[nn.Module], Any, dict]:
    """(model class, typed model config, raw config.json) from a model folder or `hf:ORG/NAME[@REV]`."""
    folder = resolve_model_folder(folder)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder: {CONFIG_FILE} is missing")
    raw = read_json(cfg_path)
    missing = [k for k in ("arch", "model") if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise CheckpointError(f"{cfg_path} is not a detok model config: it has no {' or '.join(map(repr, missing))}")
    try:
        cls = model_class(raw["arch"])
        return cls, from_dict(cls.config_cls, raw["model"], "model."), raw
    except (KeyError, TypeError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise CheckpointError(f"{cfg_path}: {msg}") from None


def load_model_folder(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved in `folder` or `hf:ORG/NAME[@REV]` (in eval mode)."""
    folder = resolve_model_folder(folder)
    cls, cfg, _ = read_model_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE} (training not finished?)")
    build = getattr(cls, "for_weights", cls)  # a class may build differently what its weights will replace
    state = read_weights(weights)
    _check_weights_fit(build, cfg, state, folder)
    model = build(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing/unexpected keys or shapes: the weights are not this config's model
        raise CheckpointError(f"{weights} does not match {folder / CONFIG_FILE} ({str(e).splitlines()[0]})") from None
    return model.to(device).eval()


def _check_weights_fit(build, cfg, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Compare the weights' shapes with those of the model that config.json describes, built on the meta device
    (shapes only, no memory), before the model is built for real: a config.json whose sizes were changed (a width of
    262,144) would otherwise allocate the model it describes (824 GB) before the weights could be compared."""
    try:
        with torch.device("meta"):
            shell = build(cfg)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is compared by load_state_dict instead
        return
    want = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want == have:
        return
    if want.keys() == have.keys():
        key = next(k for k in want if want[k] != have[k])
        why = f"{key} is {list(have[key])} in the weights, {list(want[key])} in the config's model"
    else:
        missing, extra = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
        why = f"missing keys {missing[:3]}" if missing else f"unexpected keys {extra[:3]}"
    numel = sum(math.prod(s) for s in want.values())
    raise CheckpointError(
        f"{folder / WEIGHTS_FILE} does not match {folder / CONFIG_FILE} ({why}; the config describes a model of "
        f"{numel:,} parameters, the weights hold {sum(math.prod(s) for s in have.values()):,}); nothing was built"
    )


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu", check_stats: bool = True) -> nn.Module:
    """Load a tokenizer from a run directory, a folder holding `config.json` + `model.safetensors`, or a Hub
    repository holding them (`hf:ORG/NAME[@REV]`, through huggingface_hub's cache: `pip install 'detok[hub]'`).

    Its latent statistics, when it has them, must be usable: a `latent_std` of zero (or negative, or non-finite) in
    some channel would normalise latents to ±inf, so it is refused naming the config.json (`check_stats=False` for
    `detok tokenizer stats`, which replaces them)."""
    model = load_model_folder(path, device)
    if getattr(model, "kind", None) != "tokenizer":
        raise ValueError(f"{path} holds a {getattr(model, 'kind', 'unknown')} model, not a tokenizer")
    std = getattr(model.config, "latent_std", None)
    if check_stats and std is not None and not all(math.isfinite(v) and v > 0 for v in std):
        bad = next(v for v in std if not (math.isfinite(v) and v > 0))
        raise CheckpointError(
            f"{resolve_model_folder(path) / CONFIG_FILE}: model.latent_std must be positive and finite in every "
            f"channel (normalised latents divide by it), got {bad}; recompute it with `detok tokenizer stats {path}`"
        )
    return model


# --------------------------------------------------------------------------------------------------
# Training states
# --------------------------------------------------------------------------------------------------


def _step_dirs(run_dir: Path) -> list[Path]:
    ckpt = run_dir / "checkpoints"
    if not ckpt.is_dir():
        return []
    return sorted(p for p in ckpt.iterdir() if p.is_dir() and p.name.startswith("step-"))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete training checkpoint in `run_dir`, or None (its files are not read)."""
    dirs = _step_dirs(Path(run_dir))
    return dirs[-1] if dirs else None


def checkpoints_newest_first(run_dir: str | Path) -> list[Path]:
    """The training checkpoints in `run_dir`, newest first."""
    return _step_dirs(Path(run_dir))[::-1]


def save_training_state(
    run_dir: str | Path,
    step: int,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    meta: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write one training checkpoint into `run_dir/checkpoints/step-XXXXXXXX` atomically (temp dir + rename).

    Args:
        modules: name → module whose weights go to `<name>.safetensors` (e.g. model, ema, disc).
        optimizers: name → optimiser whose state goes into `state.pt`.
        meta: JSON-ready progress info (step, images seen, epoch, position).
        keep: how many checkpoints to keep (older ones are deleted).
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_root.glob(".tmp-*"):  # left by a run killed while writing; never a complete checkpoint
        shutil.rmtree(stale, ignore_errors=True)
    final = ckpt_root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=".tmp-"))
    for name, module in modules.items():
        save_file(_contiguous_state(module), str(tmp / f"{name}.safetensors"))
    state = {"optimizers": {k: o.state_dict() for k, o in optimizers.items()}, "rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    publish(tmp, final)
    for old in _step_dirs(Path(run_dir))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_training_state(
    ckpt: str | Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> dict[str, Any]:
    """Restore modules, optimisers and RNG from a checkpoint folder; returns its meta dict.

    Every file is read and checked before anything is restored, so a damaged checkpoint (`CheckpointError`)
    leaves the modules as they were and an older one can be tried instead.
    """
    ckpt = Path(ckpt)
    missing = [f"{n}.safetensors" for n in modules if not (ckpt / f"{n}.safetensors").is_file()]
    state = read_plain_state(ckpt / "state.pt")
    if not isinstance(state, dict) or not isinstance(state.get("optimizers"), dict) or "rng_cpu" not in state:
        raise CheckpointError(f"{ckpt / 'state.pt'} is not a detok training state")
    missing += [f"the {n} optimizer" for n in optimizers if n not in state["optimizers"]]
    if missing:
        raise ValueError(
            f"{ckpt} has no {', '.join(missing)}: it was written by a run with other settings (e.g. without a GAN "
            "discriminator); resume with the settings it was made with, or start a new run directory"
        )
    weights = {name: read_weights(ckpt / f"{name}.safetensors") for name in modules}
    meta = read_json(ckpt / "meta.json")
    if not isinstance(meta, dict) or not {"step", "images_seen"} <= meta.keys():
        raise CheckpointError(f"{ckpt / 'meta.json'} has no step / images_seen")
    for name, module in modules.items():
        try:
            module.load_state_dict(weights[name])
        except RuntimeError as e:
            raise CheckpointError(f"{ckpt / (name + '.safetensors')} does not fit this run's {name}: {e}") from None
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    torch.set_rng_state(state["rng_cpu"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return meta


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a generator from a run directory, a folder holding `config.json` + `model.safetensors`, or a Hub
    repository holding them (`hf:ORG/NAME[@REV]`)."""
    model = load_model_folder(path, device)
    if getattr(model, "kind", None) != "generator":
        raise ValueError(f"{path} holds a {getattr(model, 'kind', 'unknown')} model, not a generator")
    return model
