"""`detok convert`: released upstream checkpoints ⇄ detok model folders, checked against the upstream code.

One module per upstream format (`detok_official.py`, …), each with its key map as a data table that import and
export both read (`keymap.py`), and one safe loader for every file from outside (`safe_load.py`). What each format
covers, and against which upstream commit it was verified, is listed in docs/checkpoints.md; the fixtures the tests
compare with are written by benchmarks/upstream/make_fixtures.py from the upstream checkouts themselves.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import torch

from detok.checkpoint import CheckpointError, load_model_folder, save_model_folder
from detok.convert import detok_official, diffusers_vae, dit, ldm_vae, lightningdit, lth14_mar, mar_official
from detok.convert.safe_load import load_checkpoint

# Signature keys of the checkpoints detok knows of, to say what a file holds when it is not what was asked for.
_SIGNATURES = [
    ("a DeTok (l-DeTok) tokenizer", lambda s: detok_official.matches(s)),
    (
        "a MAR generator",
        lambda s: any(k.startswith("diffloss.") for k in s) and any("encoder_blocks." in k for k in s),
    ),
    ("a LightningDiT generator (hustvl's)", lambda s: lightningdit.matches(s)),
    ("a DiT / SiT generator (one network: --format dit or sit names the objective)", lambda s: dit.matches_backbone(s)),
    ("a LightningDiT / DiT / SiT generator", lambda s: {"x_embedder.proj.weight", "t_embedder.mlp.0.weight"} <= set(s)),
    ("an LDM autoencoder (MAR's KL-16 / VA-VAE)", lambda s: ldm_vae.matches(s)),
    (
        "a CNN autoencoder (diffusers' AutoencoderKL: SD-VAE)",
        lambda s: any(k.startswith("encoder.down_blocks.") for k in s),
    ),
]

FORMATS = {
    m.NAME: m for m in (detok_official, mar_official, lth14_mar, ldm_vae, diffusers_vae, lightningdit, dit.DIT, dit.SIT)
}


def describe(state: dict[str, Any]) -> str:
    """What a state dict holds, in words, by the signature keys of the known formats."""
    for what, test in _SIGNATURES:
        if test(state):
            return what
    sample = ", ".join(list(state)[:4])
    return f"no model detok converts (first keys: {sample})" if state else "no weights"


def select_weights(data: dict[str, Any], path: Path, ema: bool) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict to convert from a loaded checkpoint, and which entry it was: EMA by default, raw on request.

    Training checkpoints hold {"model", "model_ema"} (DeTok, LTH14/mar) or {"model", "ema"} (DiT/SiT training);
    released files may be a bare state dict (DiT-XL/2, SiT-XL/2: the EMA weights) or {"state_dict"}.
    """
    ema_keys, raw_keys = ("model_ema", "ema"), ("model", "state_dict")
    wanted = ema_keys if ema else raw_keys
    for key in wanted:
        if isinstance(data.get(key), dict):
            return data[key], key
    if all(isinstance(v, torch.Tensor) for v in data.values()):
        return data, "the file's state dict (no EMA/raw distinction in it)"
    holds = [k for k in (*ema_keys, *raw_keys) if isinstance(data.get(k), dict)]
    if holds:
        flag = "without --raw" if not ema else "with --raw"
        raise CheckpointError(
            f"{path} has no {'EMA' if ema else 'raw'} weights ({' or '.join(map(repr, wanted))}); it holds "
            f"{', '.join(map(repr, holds))}: convert {flag}"
        )
    raise CheckpointError(f"{path} holds no state dict (top-level keys: {', '.join(map(str, list(data)[:8]))})")


def _as_format(fmt: str | None, state: dict, path: Path):
    if fmt is None:
        found = [m for m in FORMATS.values() if m.matches(state)]
        if len(found) > 1:  # DiT and SiT: one network, two objectives
            names = " or ".join(f"--format {m.NAME}" for m in found)
            raise CheckpointError(f"{path} holds {describe(state)}; the weights cannot tell which: give {names}")
        if found:
            return found[0]
        raise CheckpointError(f"{path} holds {describe(state)}; detok converts: {', '.join(FORMATS)}")
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    module = FORMATS[fmt]
    if not getattr(module, "accepts", module.matches)(state):  # `accepts`: a format never recognised on its own
        raise CheckpointError(f"{path} holds {describe(state)}, not {fmt}")
    return module


def convert_checkpoint(
    path: str | Path,
    out: str | Path,
    fmt: str | None = None,
    ema: bool = True,
    stats: str | Path | None = None,
    stats_key: str | None = None,
    overrides: list[str] | None = None,
    tokenizer: str | Path | None = None,
) -> Path:
    """Convert an upstream checkpoint file into a detok model folder (config.json + model.safetensors).

    Args:
        fmt: the upstream format (`FORMATS`); None recognises it from the weights.
        ema: take the EMA weights (the default, as the upstream's evaluation does); False takes the raw ones.
        stats: the upstream's latent statistics file (DeTok's `stats.pkl`), stored as the folder's
            latent_mean/latent_std; without it, compute them with `detok tokenizer stats`.
        overrides: `model.KEY=VALUE` settings the weights cannot tell (e.g. `model.enc_heads=12`); each format
            names the ones it takes (`SETTABLE`).
        tokenizer: for a generator, the tokenizer folder it samples through (recorded as training records it,
            after checking that its latents are what the generator models).
    """
    path, out = Path(path), Path(out)
    data = load_checkpoint(path)
    try:
        state, entry = select_weights(data, path, ema)
    except CheckpointError as no_ema:  # autoencoder releases carry one set of weights, which their upstream loads
        if not ema:
            raise
        state, entry = select_weights(data, path, ema=False)
        single = [m for m in FORMATS.values() if getattr(m, "SINGLE_WEIGHTS", False) and m.matches(state)]
        if not single or (fmt is not None and single[0].NAME != fmt):
            raise no_ema from None
        entry += " (the release's one set of weights)"
    if fmt is None:  # formats whose weights look like another's, told apart by what else the file holds
        fmt = next((m.NAME for m in FORMATS.values() if hasattr(m, "recognise") and m.recognise(data, state)), None)
    module = _as_format(fmt, state, path)
    settable = getattr(module, "SETTABLE", ("enc_heads", "dec_heads"))
    settings: dict[str, int] = {}
    for item in overrides or []:
        key, _, value = item.partition("=")
        name = key.removeprefix("model.")
        if not key.startswith("model.") or name not in settable or not value.isdigit() or int(value) < 1:
            allowed = " / ".join(f"model.{s}" for s in settable)
            raise CheckpointError(f"--set {item}: a {module.NAME} conversion takes only {allowed} (positive integers)")
        settings[name] = int(value)
    dropped = module.training_only(state) if hasattr(module, "training_only") else []
    state = {k: v for k, v in state.items() if k not in set(dropped)}
    # detok_official / mar_official read heads as {"enc": n, "dec": n}; formats with SETTABLE take field names
    model = module.to_detok(
        state, path.name, settings if hasattr(module, "SETTABLE") else {k[:3]: v for k, v in settings.items()}
    )
    extra: dict[str, Any] = {
        "converted_from": {
            "file": path.name,
            "format": module.NAME,
            "upstream": module.UPSTREAM,
            "verified_commit": module.VERIFIED_COMMIT,
            "weights": entry,
        }
    }
    if dropped:  # nothing silently lost: what was left out, by prefix
        prefixes = sorted({k.split(".")[0] + "." for k in dropped})
        extra["converted_from"]["dropped_training_weights"] = {
            p: sum(k.startswith(p) for k in dropped) for p in prefixes
        }
    if hasattr(module, "notes"):  # what the conversion left out of a tensor (SiT's learn-sigma rows)
        extra["converted_from"].update(module.notes(state))
    if hasattr(module, "upstream_sampling"):  # the upstream's settings that are sampling arguments, not config
        extra["converted_from"]["upstream_sampling"] = module.upstream_sampling(model)
    if stats is not None:
        mean, std, key = module.read_stats(stats, stats_key, model.config.latent_channels)
        model.config = dataclasses.replace(model.config, latent_mean=mean, latent_std=std)
        extra["converted_from"]["stats"] = {"file": Path(stats).name, "key": key}
    elif hasattr(module, "default_stats") and (known := module.default_stats(model)) is not None:
        mean, std, source = known
        model.config = dataclasses.replace(model.config, latent_mean=mean, latent_std=std)
        extra["converted_from"]["stats"] = {"source": source}
    if tokenizer is not None:
        extra["tokenizer"] = _check_tokenizer(model, Path(tokenizer))
    save_model_folder(out, model, extra)
    return out


def _check_tokenizer(model, folder: Path) -> str:
    """The tokenizer folder a converted generator records, after checking it fits: a tokenizer with latent
    statistics whose latents have the generator's channels and layout."""
    if getattr(model, "kind", None) != "generator":
        raise ValueError("--tokenizer is for generators; a tokenizer is converted on its own")
    tok = load_model_folder(folder)
    if getattr(tok, "kind", None) != "tokenizer":
        raise ValueError(f"--tokenizer {folder} holds a {getattr(tok, 'kind', 'unknown')} model, not a tokenizer")
    if tok.config.latent_mean is None:
        raise ValueError(
            f"--tokenizer {folder} has no latent statistics (convert it with --stats, or `detok tokenizer stats`)"
        )
    cfg = model.config
    want = (cfg.latent_channels, *cfg.input_size)
    if tuple(tok.latent_shape) != want:
        raise ValueError(
            f"--tokenizer {folder} makes latents of shape {tuple(tok.latent_shape)}; the generator models {want}"
        )
    return str(folder)


def export_checkpoint(
    folder: str | Path, out: str | Path, stats_key: str | None = None, fmt: str | None = None
) -> list[Path]:
    """Write a detok model folder in its upstream's layout: `out` ({"model", "model_ema"} or the format's
    `EXPORT_ENTRIES`, all the folder's weights)
    and, when the folder has latent statistics and `stats_key` is given, a `stats.pkl` beside it.

    Args:
        fmt: the upstream format; by default the one the folder was converted from, or the only format of its
            model class (a CNN tokenizer has two: LDM's and diffusers' names).
    """
    from detok.checkpoint import read_model_config

    model = load_model_folder(folder)
    fmt = fmt or read_model_config(folder)[2].get("converted_from", {}).get("format")
    candidates = [  # a format never recognised on its own (`accepts`) is written only when named
        m
        for m in FORMATS.values()
        if isinstance(model, m.MODEL_CLS) and (fmt == m.NAME or (fmt is None and not hasattr(m, "accepts")))
    ]
    if not candidates:
        what = f"format {fmt!r} for" if fmt else "upstream layout for"
        raise ValueError(f"{folder} holds a {type(model).__name__}: there is no {what} it")
    if len(candidates) > 1:
        names = ", ".join(m.NAME for m in candidates)
        raise ValueError(f"{folder} can be written in several upstream layouts ({names}): choose one with --format")
    module = candidates[0]
    state = module.to_upstream(model)
    out = Path(out)
    cache, stats_path = None, out.with_name("stats.pkl")
    if stats_key is not None:  # checked first, so that a refusal leaves nothing written
        if stats_path.exists():
            raise FileExistsError(f"{stats_path} exists; the statistics are written beside --out, as a new file")
        cache = module.stats_cache(model, stats_key)
    out.parent.mkdir(parents=True, exist_ok=True)
    entries = getattr(module, "EXPORT_ENTRIES", ("model", "model_ema"))  # the names the upstream's loader reads
    torch.save(dict.fromkeys(entries, state), out)  # one set of tensors, stored once, under both names
    written = [out]
    if cache is not None:
        stats_path.write_bytes(pickle.dumps(cache))
        written.append(stats_path)
    return written


__all__ = ["FORMATS", "convert_checkpoint", "describe", "export_checkpoint", "select_weights"]
