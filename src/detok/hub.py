"""Model folders for the Hugging Face Hub: export a run as a Hub-ready folder, and upload one.

An exported folder is a detok model folder (`config.json` with the latent statistics, `model.safetensors`) plus
`metrics.json` (what the run folder records of its evaluation and training) and a model card `README.md` whose
YAML header carries the Hub's metadata (`library_name: detok`, tags, license, data set). Loading goes the other way
through `checkpoint.resolve_model_folder`: `detok.load_tokenizer("hf:ORG/NAME[@REV]")` reads the folder from
huggingface_hub's cache. Uploading is huggingface_hub's own `create_repo` + `upload_folder`; nothing here talks
HTTP.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from detok.checkpoint import CONFIG_FILE, HUB_INSTALL, WEIGHTS_FILE, read_json, read_model_config, write_json

CARD_FILE = "README.md"
METRICS_FILE = "metrics.json"
HUB_FILES = (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, CARD_FILE)
# Data set names on the Hub, for the card's `datasets:` metadata (only those detok trains on by name).
HUB_DATASETS = {"fashion-mnist": "zalando-datasets/fashion_mnist", "cifar10": "uoft-cs/cifar10"}
KIND_TAGS = {"tokenizer": "image-tokenizer", "generator": "image-generation"}


# --------------------------------------------------------------------------------------------------
# What a run folder records
# --------------------------------------------------------------------------------------------------


def _maybe_json(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def _generation_summary(record: dict) -> dict:
    """The final (best-CFG) row and the no-guidance rows of an `eval generation` record, without file names."""
    keep = ("cfg", "temperature", "num", "seed", "fid", "is", "precision", "recall", "class_consistency")
    pick = lambda row: {k: row[k] for k in keep if k in row}  # noqa: E731
    out = {"evaluator": record.get("evaluator"), "reference": record.get("reference")}
    if record.get("final"):
        out["final"] = pick(record["final"])
    if record.get("no_cfg_rows"):
        out["no_cfg"] = [pick(r) for r in record["no_cfg_rows"]]
    return out


def run_metrics(run: Path, regime: str | None = None) -> dict[str, Any]:
    """What `run` records of its evaluation and training: reconstruction (`eval-<split>.json`), generation
    (`eval/generation.json`), and the command, commit and settings that trained it (`done.json`, written by the
    bench's steps, or `command`/`commit` keys of `run_config.json`). Missing records are left out, never guessed."""
    metrics: dict[str, Any] = {"regime": regime}
    for path in sorted(run.glob("eval-*.json")):
        rec = read_json(path)
        keep = ("images", "psnr", "ssim", "rfid", "lpips", "evaluator")
        metrics.setdefault("reconstruction", {})[path.stem[len("eval-") :]] = {k: rec.get(k) for k in keep if k in rec}
    generation = _maybe_json(run / "eval" / "generation.json")
    if generation is not None:
        metrics["generation"] = _generation_summary(generation)
    trained: dict[str, Any] = {}
    for source in (_maybe_json(run / "run_config.json") or {}, _maybe_json(run / "done.json") or {}):
        for key in ("command", "commit"):
            if source.get(key):
                trained[key] = source[key]
        spec = source.get("spec")
        if isinstance(spec, dict) and spec.get("preset"):
            trained["bench_step"] = {"preset": spec["preset"], "overrides": spec.get("overrides", [])}
    if trained:
        metrics["trained_by"] = trained
    return metrics


# --------------------------------------------------------------------------------------------------
# The model card
# --------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def model_card(raw: dict, metrics: dict, name: str, license: str, run_config: dict | None) -> str:
    """The README.md of an exported folder: YAML metadata, how to load it, the model, its metrics, its training."""
    kind, arch, preset = raw.get("kind", "model"), raw["arch"], raw.get("preset")
    data = (run_config or {}).get("data") or {}
    tags = list(dict.fromkeys(["detok", KIND_TAGS.get(kind, kind), arch.lower(), *([preset] if preset else [])]))
    meta = ["---", "library_name: detok", f"license: {license}", "tags:", *(f"- {t}" for t in tags)]
    if data.get("name") in HUB_DATASETS:
        meta += ["datasets:", f"- {HUB_DATASETS[data['name']]}"]
    meta.append("---")
    loader = "load_tokenizer" if kind == "tokenizer" else "load_generator"
    lines = [
        *meta,
        "",
        f"# {name}",
        "",
        f"A detok {kind}: `{arch}`" + (f", preset `{preset}`" if preset else "") + f", {raw.get('step', '?')} steps.",
        "",
        "## Use",
        "",
        "```python",
        "import detok",
        "",
        f'model = detok.{loader}("hf:{name}")  # {HUB_INSTALL}',
        "```",
        "",
        "## Model",
        "",
        f"- kind `{kind}`, architecture `{arch}`; the full configuration is `config.json` (`model`).",
    ]
    if kind == "tokenizer":
        stats = raw["model"].get("latent_mean") is not None
        lines.append(
            "- latent statistics (per-channel mean/std, `model.latent_mean`/`latent_std` in `config.json`): "
            + ("stored" if stats else "not computed (`detok tokenizer stats` before export)")
        )
    if kind == "generator":
        lines.append(f"- trained on the latents of tokenizer `{raw.get('tokenizer', 'not recorded')}`")
    if data:
        lines.append(
            f"- data: `{data.get('name')}` at {data.get('image_size')} px, {data.get('channels')} channel(s); "
            f"{(run_config or {}).get('train', {}).get('images', '?')} training images seen"
        )
    lines += ["", "## Metrics", "", f"Regime: {metrics.get('regime') or 'not recorded'}.", ""]
    rec, gen = metrics.get("reconstruction"), metrics.get("generation")
    if rec:
        lines += ["| split | images | PSNR | SSIM | rFID | LPIPS | evaluator |", "|---|---|---|---|---|---|---|"]
        for split, m in rec.items():
            cells = [m.get("images"), m.get("psnr"), m.get("ssim"), m.get("rfid"), m.get("lpips")]
            evaluator = f"`{m['evaluator']}`" if m.get("evaluator") else "none"
            lines.append(f"| {split} | " + " | ".join(_fmt(v) for v in cells) + f" | {evaluator} |")
        lines.append("")
    if gen:
        rows = ([gen["final"]] if "final" in gen else []) + gen.get("no_cfg", [])
        lines += [
            f"Evaluator `{gen.get('evaluator')}`, reference `{gen.get('reference')}`.",
            "",
            "| CFG | temperature | samples | gFID | IS | precision | recall | class consistency |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            keys = ("cfg", "temperature", "num", "fid", "is", "precision", "recall", "class_consistency")
            lines.append("| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
        lines.append("")
    if not rec and not gen:
        lines += ["No evaluation is recorded in the run folder.", ""]
    trained = metrics.get("trained_by", {})
    lines += ["## Training", ""]
    lines.append(f"- command: `{trained['command']}`" if "command" in trained else "- command: not recorded")
    if "bench_step" in trained:
        step = trained["bench_step"]
        sets = " ".join(f"--set {o}" for o in step["overrides"])
        lines.append(f"- a `detok bench reproduce` step: preset `{step['preset']}` with `{sets or 'no overrides'}`")
    lines.append(f"- commit: `{trained['commit']}`" if "commit" in trained else "- commit: not recorded")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Export and upload
# --------------------------------------------------------------------------------------------------


def export_folder(
    run: str | Path,
    out: str | Path,
    name: str | None = None,
    license: str = "mit",
    regime: str | None = None,
    tokenizer: str | None = None,
) -> Path:
    """Write the Hub-ready folder of `run` into `out` (which must not exist yet, or be empty).

    Args:
        run: a run directory or model folder (`config.json` + `model.safetensors`).
        out: the folder to write.
        name: the repository id the card names (ORG/NAME); default the folder's name.
        license: the card's `license:` (a Hub license id).
        regime: the training regime to record (e.g. short, cpu-long, quality), when the run folder does not say.
        tokenizer: for a generator, the tokenizer spec its config.json should name (e.g. `hf:ORG/TOKENIZER`)
            instead of the training machine's path.

    Returns:
        The folder written.
    """
    run, out = Path(run), Path(out)
    _, _, raw = read_model_config(run)  # refuses anything that is not a detok model folder
    if not (run / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{run} has {CONFIG_FILE} but no {WEIGHTS_FILE} (training not finished?)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; export into a new folder")
    if tokenizer is not None:
        if raw.get("kind") != "generator":
            raise ValueError(f"--tokenizer applies to generators; {run} holds a {raw.get('kind')}")
        raw = {**raw, "tokenizer": tokenizer}
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / WEIGHTS_FILE, out / WEIGHTS_FILE)
    write_json(out / CONFIG_FILE, raw)
    metrics = run_metrics(run, regime)
    write_json(out / METRICS_FILE, metrics)
    run_config = _maybe_json(run / "run_config.json")
    run_config = run_config.get("run", run_config) if isinstance(run_config, dict) else None
    card = model_card(raw, metrics, name or out.name, license, run_config)
    (out / CARD_FILE).write_text(card)
    return out


def push_folder(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None) -> str:
    """Upload an exported folder to the Hub repository `repo_id` (created if missing) with huggingface_hub's
    `create_repo` + `upload_folder`; the token is huggingface_hub's (`hf auth login` or `HF_TOKEN`).

    Returns:
        The URL of the commit.
    """
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ImportError(f"uploading to the Hub needs huggingface_hub: {HUB_INSTALL}") from None
    folder = Path(folder)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not an exported folder: {', '.join(missing)} missing (`detok export`)")
    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="model",
        revision=revision,
        allow_patterns=list(HUB_FILES),
        commit_message=f"detok export: {json.loads((folder / CONFIG_FILE).read_text()).get('arch')} model",
    )
    return str(getattr(info, "commit_url", info))
