"""The `detok` command: one small function per subcommand that builds a config and calls the library."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from detok.config import apply_overrides, to_dict


def _run_training(cfg, out: Path, train, what: str, dry_run: bool) -> int:
    """Print the resolved config (`--dry-run`) or train, then leave the process group.

    A run that fails removes the run folder it created if it wrote nothing there but its resolved config.
    """
    if dry_run:
        print(json.dumps({"out": str(out), **to_dict(cfg)}, indent=2))
        return 0
    from detok import dist

    created = not out.exists()
    try:
        train(cfg, out)
        dist.print0(f"trained {what} written to {out}")
    except BaseException:
        if created and dist.is_main():
            _remove_if_unused(out)
        raise
    finally:
        dist.cleanup()
    return 0


def _remove_if_unused(run_dir: Path) -> None:
    """Delete `run_dir` if it holds no file other than run_config.json (empty sub-folders aside)."""
    if not run_dir.is_dir():
        return
    files = [p for p in run_dir.rglob("*") if not p.is_dir()]
    if all(p == run_dir / "run_config.json" for p in files):
        shutil.rmtree(run_dir, ignore_errors=True)


def _train_tokenizer(args: argparse.Namespace) -> int:
    from detok.training.tokenizer import default_run_config, train_tokenizer

    cfg = apply_overrides(default_run_config(args.preset), args.set or [])
    return _run_training(cfg, Path(args.out or f"runs/{args.preset}"), train_tokenizer, "tokenizer", args.dry_run)


def _eval_tokenizer(args: argparse.Namespace) -> int:
    import torch

    from detok.checkpoint import load_tokenizer, write_json
    from detok.data import build_dataset
    from detok.eval.recon import evaluate_reconstruction
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads)
    device = resolve_device(args.device)
    tok = load_tokenizer(args.run, device)
    data = _data_for(args.run, tok, args.set)
    dataset = build_dataset(data, args.split)
    notes = {}
    extractor, notes["rfid_note"] = _reconstruction_evaluator(args.evaluator, data.name, device)
    lpips, notes["lpips_note"] = _lpips_or_note(args.lpips, device)
    with torch.no_grad():
        metrics = evaluate_reconstruction(
            tok, dataset, args.batch_size, args.max_images, device, extractor=extractor, lpips=lpips
        )
    record = {"split": args.split, "dataset": to_dict(data), **metrics}
    record.setdefault("rfid", None)
    record.setdefault("lpips", None)
    record["evaluator"] = extractor.name if extractor is not None else None
    record.update({k: v for k, v in notes.items() if v})
    print(json.dumps(record, indent=2))
    for note in filter(None, notes.values()):
        print(f"note: {note}", file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.run) / f"eval-{args.split}.json"
    write_json(out, record)
    print(f"written to {out}", file=sys.stderr)
    return 0


def _reconstruction_evaluator(spec: str | None, dataset: str, device):
    """(extractor, None) or (None, why rFID is skipped): the default is the dataset's cached reference classifier."""
    from detok.eval.features import build_extractor, default_reference_dir

    if spec == "none":
        return None, "rFID not computed (--evaluator none)"
    if spec is not None:
        return build_extractor(spec, device, dataset), None
    if dataset != "fashion-mnist":
        return None, f"rFID skipped: no default evaluator for {dataset!r}; pass --evaluator inception[:WEIGHTS]"
    folder = default_reference_dir(dataset)
    if not (folder / "config.json").is_file():
        return None, f"rFID skipped: no reference classifier at {folder}; train it with `detok eval train-reference`"
    return build_extractor("reference", device, dataset), None


def _lpips_or_note(mode: str, device):
    """(LPIPS module, None) or (None, why it is skipped); mode "auto" skips when the VGG weights are unavailable."""
    from detok.losses.perceptual import PerceptualUnavailableError, build_perceptual

    if mode == "off":
        return None, "LPIPS not computed (--lpips off)"
    try:
        return build_perceptual().to(device), None
    except PerceptualUnavailableError as e:
        if mode == "on":
            raise
        reason = str(e).split(". To train without")[0]
        return None, f"LPIPS skipped: {reason}"


def _data_for(run: str | Path, tok, overrides: list[str] | None):
    """The evaluation dataset: the run's training data config (if known), unflipped, with CLI replacements."""
    from detok.config import from_dict
    from detok.data import DataConfig

    run_cfg = Path(run) / "run_config.json"
    if run_cfg.is_file():
        data = from_dict(DataConfig, json.loads(run_cfg.read_text())["run"]["data"])
        data = apply_overrides(data, ["hflip=false"])
    else:
        data = DataConfig(image_size=tok.config.image_size, channels=tok.config.channels)
    return apply_overrides(data, overrides or [])


def _stats_tokenizer(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_tokenizer
    from detok.data import build_dataset
    from detok.latents import compute_latent_stats, store_latent_stats
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads)
    device = resolve_device(args.device)
    tok = load_tokenizer(args.run, device)
    dataset = build_dataset(_data_for(args.run, tok, args.set), "train")
    mean, std = compute_latent_stats(tok, dataset, args.batch_size, args.max_images, device)
    store_latent_stats(args.run, mean, std)
    print(json.dumps({"latent_mean": mean, "latent_std": std}, indent=2))
    return 0


def _cache_latents(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_tokenizer
    from detok.data import build_dataset
    from detok.latents import cache_latents
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads)
    device = resolve_device(args.device)
    tok = load_tokenizer(args.tokenizer, device)
    dataset = build_dataset(_data_for(args.tokenizer, tok, args.set), args.split)
    out = cache_latents(
        tok, dataset, args.out, str(args.tokenizer), args.batch_size, args.shard_size, max_images=args.max_images
    )
    count = len(dataset) if args.max_images is None else min(len(dataset), args.max_images)
    print(f"cached {count} latents (and their flips) in {out}")
    return 0


def _train_generator(args: argparse.Namespace) -> int:
    from detok.training.generator import default_run_config, train_generator

    cfg = default_run_config(args.preset, args.tokenizer, args.latents, args.set or [])
    return _run_training(cfg, Path(args.out or f"runs/{args.preset}"), train_generator, "generator", args.dry_run)


def _parse_interval(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"--cfg-interval takes two numbers 'lo,hi' (noise level, 0 = data, 1 = noise), got {text!r}")
    return float(parts[0]), float(parts[1])


def _sample_generator(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_generator, load_tokenizer, read_model_config
    from detok.generate import sample_to_file, with_sampling_settings
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads)
    device = resolve_device(args.device)
    model = load_generator(args.run, device)
    model = with_sampling_settings(model, args.set or [])  # e.g. model.flow.sample_steps=100
    tokenizer_path = args.tokenizer or read_model_config(args.run)[2].get("tokenizer")
    if not tokenizer_path:
        raise ValueError(f"{args.run} does not record its tokenizer; pass --tokenizer")
    tok = load_tokenizer(tokenizer_path, device)
    path = Path(args.out).with_suffix(".npz")
    images, _ = sample_to_file(  # resumable: rerunning an interrupted command keeps the finished batches
        path,
        model,
        tok,
        args.num,
        batch_size=args.batch_size,
        seed=args.seed,
        cfg_scale=args.cfg,
        cfg_interval=None if args.cfg_interval is None else _parse_interval(args.cfg_interval),
        temperature=args.temperature,
    )
    settings = {"cfg": args.cfg, "cfg_interval": args.cfg_interval, "temperature": args.temperature}
    print(json.dumps({"samples": str(path), "num": len(images), "seed": args.seed, **settings}))
    return 0


def _train_reference(args: argparse.Namespace) -> int:
    from detok.data import DataConfig
    from detok.eval.features import default_reference_dir
    from detok.eval.reference import ReferenceTrainConfig, train_reference

    if args.dataset != "fashion-mnist":
        raise ValueError(f"no reference-classifier recipe for {args.dataset!r} yet; known: fashion-mnist")
    cfg = ReferenceTrainConfig(data=DataConfig(name="fashion-mnist", hflip=True))
    cfg = apply_overrides(cfg, args.set or [])
    out = Path(args.out or default_reference_dir(args.dataset))
    if args.if_missing and (out / "config.json").is_file():
        print(f"reference classifier already trained: {out}")
        return 0
    if args.dry_run:
        print(json.dumps({"out": str(out), **to_dict(cfg)}, indent=2))
        return 0
    result = train_reference(cfg, out)
    print(json.dumps({"out": str(out), **result}))
    return 0


def _parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{what} takes comma-separated numbers, e.g. 1.0,1.5,2.0; got {text!r}") from None


def _reference_for(args: argparse.Namespace, extractor, data):
    """Real-data statistics: a published ADM .npz (--ref-stats) or the cached features of the dataset split."""
    from detok.data import build_dataset
    from detok.eval.features import dataset_key, load_adm_stats, reference_set

    if args.ref_stats:
        return load_adm_stats(args.ref_stats)
    key = dataset_key(data, args.ref_split)
    return reference_set(extractor, build_dataset(data, args.ref_split), key, args.ref_images)


def _eval_generation(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_generator, load_tokenizer, read_model_config
    from detok.eval.features import build_extractor
    from detok.eval.generation import GenerationEvalConfig, evaluate_generation
    from detok.generate import with_sampling_settings
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads)
    device = resolve_device(args.device)
    cfg = GenerationEvalConfig(
        cfg_scales=_parse_floats(args.cfg, "--cfg"),
        num=args.num,
        final_num=args.final_num,
        seed=args.seed,
        batch_size=args.batch_size,
        temperature=args.temperature,
        cfg_interval=None if args.cfg_interval is None else _parse_interval(args.cfg_interval),
    )
    model = with_sampling_settings(load_generator(args.run, device), args.sampling or [])
    tokenizer_path = args.tokenizer or read_model_config(args.run)[2].get("tokenizer")
    if not tokenizer_path:
        raise ValueError(f"{args.run} does not record its tokenizer; pass --tokenizer")
    tok = load_tokenizer(tokenizer_path, device)
    data = _data_for(tokenizer_path, tok, args.set)
    extractor = build_extractor(args.evaluator, device, data.name)
    ref = _reference_for(args, extractor, data)
    out = Path(args.out or Path(args.run) / "eval")
    record = evaluate_generation(model, tok, extractor, ref, out, cfg)
    _print_generation_table(record)
    try:
        from detok.eval.report import plot_fid_vs_cfg

        print(f"plot: {plot_fid_vs_cfg(record['rows'], out / 'fid_vs_cfg.png', label=Path(args.run).name)}")
    except ImportError as e:
        print(f"note: no FID-vs-CFG plot ({e})", file=sys.stderr)
    print(f"results: {out / 'generation.json'}")
    return 0


def _fmt(v, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)


def _print_generation_table(record: dict) -> None:
    print(f"evaluator {record['evaluator']}, reference {record['reference']}")
    print(f"{'cfg':>6} {'num':>7} {'FID':>8} {'IS':>7} {'prec':>6} {'recall':>6}")
    rows = [(r, "") for r in record["rows"]] + ([(record["final"], "  <- final")] if record["final"] else [])
    for r, tag in rows:
        print(
            f"{r['cfg']:>6g} {r['num']:>7d} {_fmt(r['fid'], '.3f'):>8} {_fmt(r['is'], '.3f'):>7} "
            f"{_fmt(r['precision'], '.3f'):>6} {_fmt(r['recall'], '.3f'):>6}{tag}"
        )


def _eval_samples(args: argparse.Namespace) -> int:
    import numpy as np

    from detok.checkpoint import load_tokenizer, write_json
    from detok.data import DataConfig
    from detok.eval.features import build_extractor
    from detok.eval.generation import score_images
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads)
    device = resolve_device(args.device)
    with np.load(args.samples) as f:
        if "images" not in f:
            raise ValueError(f"{args.samples} has no 'images' array (uint8 (N, H, W, C)); it has {f.files}")
        images = f["images"]
    if args.tokenizer:
        data = _data_for(args.tokenizer, load_tokenizer(args.tokenizer, device), args.set)
    else:
        data = apply_overrides(DataConfig(image_size=images.shape[1], channels=images.shape[3]), args.set or [])
    extractor = build_extractor(args.evaluator, device, data.name)
    ref = _reference_for(args, extractor, data)
    record = {"samples": str(args.samples), **score_images(images, extractor, ref, seed=args.seed)}
    record.update(evaluator=extractor.name, reference=ref.source)
    print(json.dumps(record, indent=2))
    if args.out:
        write_json(args.out, record)
    return 0


def _eval_latents(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_tokenizer
    from detok.data import build_dataset
    from detok.eval.latent_analysis import analyze_latents
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads)
    device = resolve_device(args.device)
    tok = load_tokenizer(args.run, device)
    data = _data_for(args.run, tok, args.set)
    out = Path(args.out or Path(args.run) / "analysis")
    result = analyze_latents(tok, build_dataset(data, "train"), build_dataset(data, "test"), out, seed=args.seed)
    probe, gmm = result["linear_probe"], result["gmm"]
    print(f"linear probe: {probe['test_accuracy']:.2%} test accuracy ({probe['feature_dim']}-d latents)")
    print(f"GMM: {gmm['pca_dims']} PCA dims, best K by BIC {gmm['best_k_bic']}")
    print("robustness (PSNR): " + ", ".join(f"τ={r['tau']:g}: {r['psnr']:.2f}" for r in result["robustness"]["noise"]))
    print(f"results: {out / 'latent_analysis.json'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from detok.eval.report import write_report

    paths = write_report(args.runs, args.out, title=args.title)
    for p in paths.values():
        print(f"written {p}")
    return 0


def _bench_reproduce(args: argparse.Namespace) -> int:
    import shlex

    import torch

    from detok.bench.reproduce import parse_budget, run_suite
    from detok.runtime import set_threads

    budget = parse_budget(args.budget, args.set or [])
    if args.suite == "noise" and not torch.cuda.is_available() and not args.allow_cpu and args.budget != "smoke":
        raise ValueError("the noise suite (7 tokenizers × 2 generators) is sized for a GPU; pass --allow-cpu to run it")
    set_threads(args.threads)
    out = Path(args.out or f"docs/results/{args.suite}")
    work = Path(args.work or f"runs/bench-{args.suite.removesuffix('-followup')}")
    command = "detok " + " ".join(shlex.quote(a) for a in args.argv)
    record = run_suite(args.suite, budget, work, out, args.evaluator, command)
    print(f"{len(record['cells'])} cells done; results in {out / 'results.md'}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from detok.registry import get_preset, list_models

    for name in list_models(args.pattern):
        p = get_preset(name)
        first = p.doc.splitlines()[0] if p.doc else ""
        print(f"{name:28s} {p.kind:10s} {first}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detok", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list registered model presets")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'detok-*'")
    p.set_defaults(fn=_presets)

    tok = sub.add_parser("tokenizer", help="train, evaluate and inspect tokenizers").add_subparsers(
        dest="action", required=True
    )
    p = tok.add_parser("train", help="train a tokenizer (re-run the same command to resume)")
    p.add_argument("--preset", required=True, help="tokenizer preset (see `detok presets 'detok-*'`)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.images=20000 or model.corruption.noise_gamma=0",
    )
    p.add_argument("--out", help="run directory (default runs/<preset>)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(fn=_train_tokenizer)

    for name, fn, helptext in (
        ("eval", _eval_tokenizer, "reconstruction PSNR/SSIM on a dataset split"),
        ("stats", _stats_tokenizer, "compute and store per-channel latent mean/std"),
    ):
        p = tok.add_parser(name, help=helptext)
        p.add_argument("run", help="run directory or folder with config.json + model.safetensors")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--max-images", type=int, default=None)
        p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        if name == "eval":
            p.add_argument("--split", default="test", choices=["train", "test"])
            p.add_argument("--out", help="metrics JSON path (default RUN/eval-<split>.json)")
            p.add_argument(
                "--evaluator",
                default=None,
                help="features for rFID: reference[:FOLDER], inception[:WEIGHTS] or none (default: the cached "
                "reference classifier for fashion-mnist, else none)",
            )
            p.add_argument(
                "--lpips",
                default="auto",
                choices=["auto", "on", "off"],
                help="LPIPS-VGG distance (auto: skipped with a note when the VGG16 weights are unavailable)",
            )
        p.set_defaults(fn=fn)
    lat = sub.add_parser("latents", help="encode a dataset once for generator training").add_subparsers(
        dest="action", required=True
    )
    p = lat.add_parser("cache", help="encode a dataset split (and its horizontal flips) into shards; resumable")
    p.add_argument("--tokenizer", required=True, help="tokenizer run directory or model folder")
    p.add_argument("--out", required=True, help="cache directory")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=10_000)
    p.add_argument("--max-images", type=int, default=None, help="cache only the first N images of the split")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(fn=_cache_latents)

    ev = sub.add_parser("eval", help="evaluators and metrics").add_subparsers(dest="action", required=True)
    p = ev.add_parser("train-reference", help="train the small-dataset reference classifier (FD/IS/P/R features)")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset with a reference recipe (fashion-mnist)")
    p.add_argument("--out", help="model folder (default runs/reference-fmnist32)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. epochs=2 or threads=1")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--if-missing", action="store_true", help="do nothing if the model folder already exists")
    p.set_defaults(fn=_train_reference)

    def add_reference_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--evaluator",
            default="reference",
            help="feature extractor: reference[:FOLDER] (default, the cached reference classifier) or "
            "inception[:WEIGHTS] (needs the inception extra)",
        )
        p.add_argument("--ref-stats", help="published ADM-format statistics (.npz with mu, sigma) instead of a split")
        p.add_argument("--ref-split", default="train", choices=["train", "test"], help="real images for the stats")
        p.add_argument("--ref-images", type=int, default=None, help="use only the first N real images")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    p = ev.add_parser("generation", help="gFID/IS/precision/recall over a CFG sweep, then the best scale in full")
    p.add_argument("run", help="generator run directory or model folder")
    p.add_argument("--cfg", default="1.0,1.5,2.0,3.0,4.0", help="guidance scales to search, comma-separated")
    p.add_argument("--num", type=int, default=10_000, help="samples per scale in the search")
    p.add_argument("--final-num", type=int, default=50_000, help="samples at the best scale (<= --num: no rerun)")
    p.add_argument("--cfg-interval", default=None, help="guide only at noise levels in [lo,hi]")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tokenizer", help="tokenizer to decode with (default: the one the generator was trained on)")
    p.add_argument("--out", help="results folder (default RUN/eval)")
    p.add_argument(
        "--sampling",
        action="append",
        metavar="KEY=VALUE",
        help="sampling setting of the generator, e.g. flow.sample_steps=10 or diffloss.sample_steps=20",
    )
    add_reference_args(p)
    p.set_defaults(fn=_eval_generation)

    p = ev.add_parser("samples", help="score an .npz of samples (uint8 images + labels) against real data")
    p.add_argument("samples", help=".npz with 'images' (N, H, W, C) uint8, e.g. from `detok generator sample`")
    p.add_argument("--tokenizer", help="take the real data config from this tokenizer run (default: fashion-mnist)")
    p.add_argument("--out", help="also write the scores to this JSON file")
    add_reference_args(p)
    p.set_defaults(fn=_eval_samples)

    p = ev.add_parser("latents", help="linear probe, GMM modes and denoising robustness of a tokenizer's latents")
    p.add_argument("run", help="tokenizer run directory or model folder")
    p.add_argument("--out", help="results folder (default RUN/analysis)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(fn=_eval_latents)

    gen = sub.add_parser("generator", help="train generators on tokenizer latents and sample from them")
    gen = gen.add_subparsers(dest="action", required=True)
    p = gen.add_parser("train", help="train a generator (re-run the same command to resume)")
    p.add_argument("--preset", required=True, help="generator preset (see `detok presets`)")
    p.add_argument("--tokenizer", required=True, help="tokenizer run directory or model folder (with latent stats)")
    p.add_argument("--latents", help="latent cache from `detok latents cache` (default: encode images on the fly)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.images=20000 or model.flow.sample_steps=100",
    )
    p.add_argument("--out", help="run directory (default runs/<preset>)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(fn=_train_generator)

    p = gen.add_parser("sample", help="sample class-balanced images into an .npz (uint8 images + labels) and a PNG")
    p.add_argument("run", help="generator run directory or model folder")
    p.add_argument("--num", type=int, default=100, help="number of images")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1 = unguided)")
    p.add_argument(
        "--cfg-interval",
        default=None,
        help="guide only at noise levels in [lo,hi] (0 = data, 1 = noise); default: the model's own (all levels, "
        "or the preset's interval for LightningDiT)",
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", required=True, help="output .npz path (a PNG grid is written beside it)")
    p.add_argument("--tokenizer", help="tokenizer to decode with (default: the one the generator was trained on)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="sampling setting, e.g. model.flow.sampler=euler"
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(fn=_sample_generator)

    bench = sub.add_parser("bench", help="benchmark suites").add_subparsers(dest="action", required=True)
    p = bench.add_parser("reproduce", help="reproduce the paper's claims at small scale (resumable: rerun to continue)")
    p.add_argument("--suite", default="table2", choices=["table2", "table2-followup", "noise", "variants"])
    p.add_argument(
        "--budget",
        default="cpu",
        help="named budget: cpu (<= 2 h on 2 cores), cpu-v1 (the first runs') or smoke (tests)",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a budget value, e.g. final_num=5000")
    p.add_argument("--out", help="results folder (default docs/results/<suite>)")
    p.add_argument("--work", help="run directories (default runs/bench-<suite>; a follow-up shares its suite's)")
    p.add_argument("--evaluator", default="reference", help="reference[:FOLDER] (default) or inception[:WEIGHTS]")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--allow-cpu", action="store_true", help="run the GPU-sized noise suite on CPU anyway")
    p.set_defaults(fn=_bench_reproduce)

    p = sub.add_parser("report", help="write a Markdown + HTML report for one run or a comparison of runs")
    p.add_argument("runs", nargs="+", help="run directories (tokenizers and/or generators)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.html, figures)")
    p.add_argument("--title", help="page title")
    p.set_defaults(fn=_report)
    return parser


# Exit codes: 2 = the input (a setting, file or data set) is unusable, 3 = training diverged (non-finite loss or
# gradient norm). Both print one line; any other exception is a bug in detok and shows its traceback.
EXIT_BAD_INPUT, EXIT_DIVERGED = 2, 3
USER_ERRORS = (KeyError, ValueError, TypeError, OSError, RuntimeError, ImportError)


def error_line(e: BaseException) -> str:
    """The one-line message of a user-facing error (a KeyError's message without repr quotes)."""
    text = e.args[0] if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) else str(e)
    return " ".join(text.split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one `detok` command; failures of the user's input print one line and return 2 (set DETOK_DEBUG=1 for
    the traceback)."""
    from detok.runtime import TrainingDivergedError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as given, for records (not sys.argv: main may be called from Python)
    try:
        return args.fn(args)
    except USER_ERRORS as e:
        if os.environ.get("DETOK_DEBUG"):
            raise
        print(f"detok: error: {error_line(e)}", file=sys.stderr)
        return EXIT_DIVERGED if isinstance(e, TrainingDivergedError) else EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
