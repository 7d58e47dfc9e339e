"""`detok eval train-reference|generation|samples|t2i|latents`: evaluators and the metrics they give."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detok.commands._common import (
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    add_device_args,
    data_for,
    device_for,
    parse_interval,
    start_processes,
)
from detok.config import apply_overrides, to_dict


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluators and metrics").add_subparsers(dest="action", required=True)
    p = ev.add_parser("train-reference", help="train the small-dataset reference classifier (FD/IS/P/R features)")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset with a reference recipe (fashion-mnist)")
    p.add_argument(
        "--preset",
        default="reference-fmnist32",
        help="reference-fmnist32 (the default evaluator) or reference-resnet-fmnist32 (the second, independent one)",
    )
    p.add_argument("--out", help="model folder (default: the cache's evaluators/<preset>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. epochs=2 or threads=1")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--if-missing", action="store_true", help="do nothing if the model folder already exists")
    p.set_defaults(fn=train_reference)

    p = ev.add_parser("generation", help="gFID/IS/precision/recall over a CFG sweep, then the best scale in full")
    p.add_argument("run", help="generator run directory or model folder")
    p.add_argument("--cfg", default="1.0,1.5,2.0,3.0,4.0", help="guidance scales to search, comma-separated")
    p.add_argument("--num", type=POSITIVE_INT, default=10_000, help="samples per scale in the search")
    p.add_argument(
        "--final-num", type=POSITIVE_INT, default=50_000, help="samples at the best scale (<= --num: no rerun)"
    )
    p.add_argument(
        "--no-cfg-num", type=NON_NEGATIVE_INT, default=0, help="also score N fresh samples without guidance (0: off)"
    )
    p.add_argument(
        "--no-cfg-temperatures",
        default=None,
        help="temperatures to sweep without guidance, comma-separated (the paper's AR protocol); best reported",
    )
    p.add_argument("--cfg-interval", default=None, help="guide only at noise levels in [lo,hi]")
    p.add_argument("--temperature", type=POSITIVE_FLOAT, default=1.0)
    p.add_argument(
        "--temperatures",
        default=None,
        help="search every CFG scale at each of these temperatures, comma-separated (AR generators, SDE samplers); "
        "the final at the best pair",
    )
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64)
    p.add_argument("--tokenizer", help="tokenizer to decode with (default: the one the generator was trained on)")
    p.add_argument("--out", help="results folder (default RUN/eval)")
    p.add_argument(
        "--sampling",
        action="append",
        metavar="KEY=VALUE",
        help="sampling setting of the generator, e.g. flow.sample_steps=10 or diffloss.sample_steps=20",
    )
    _add_reference_args(p)
    p.set_defaults(fn=generation)

    p = ev.add_parser("samples", help="score an .npz of samples (uint8 images + labels) against real data")
    p.add_argument("samples", help=".npz with 'images' (N, H, W, C) uint8, e.g. from `detok generator sample`")
    p.add_argument("--tokenizer", help="take the real data config from this tokenizer run (default: fashion-mnist)")
    p.add_argument("--out", help="also write the scores to this JSON file")
    _add_reference_args(p)
    p.set_defaults(fn=samples)

    p = ev.add_parser("t2i", help="text-to-image: FID against the test images and text alignment (seen/held-out)")
    p.add_argument("run", help="text-conditioned generator run directory or model folder")
    p.add_argument("--cfg", default="1.0,2.0,3.0", help="guidance scales to search, comma-separated")
    p.add_argument("--num", type=POSITIVE_INT, default=1_000, help="samples per scale in the search (test captions)")
    p.add_argument(
        "--final-num", type=POSITIVE_INT, default=5_000, help="samples at the best scale (<= --num: no rerun)"
    )
    p.add_argument("--temperature", type=POSITIVE_FLOAT, default=1.0)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64)
    p.add_argument("--tokenizer", help="tokenizer to decode with (default: the one the generator was trained on)")
    p.add_argument("--captions", help="caption set (default: the generator's)")
    p.add_argument("--text-encoder", help="text encoder spec (default: the generator's)")
    p.add_argument("--evaluator", default="reference", help="FID features: reference[:FOLDER] or inception[:WEIGHTS]")
    p.add_argument("--classifier", default="reference", help="reads the class of samples when the evaluator does not")
    p.add_argument("--out", help="results folder (default RUN/eval-t2i)")
    p.add_argument("--sampling", action="append", metavar="KEY=VALUE", help="sampling setting of the generator")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    add_device_args(p)
    p.set_defaults(fn=t2i)

    p = ev.add_parser("latents", help="linear probe, GMM modes and denoising robustness of a tokenizer's latents")
    p.add_argument("run", help="tokenizer run directory or model folder")
    p.add_argument("--out", help="results folder (default RUN/analysis)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    add_device_args(p)
    p.set_defaults(fn=latents)


def _add_reference_args(p: argparse.ArgumentParser) -> None:
    """The feature extractor and the real-data statistics of `generation` and `samples` (read by _reference_for)."""
    p.add_argument(
        "--evaluator",
        default="reference",
        help="feature extractor: reference[:FOLDER] (default, the cached reference classifier) or "
        "inception[:WEIGHTS] (needs the inception extra)",
    )
    p.add_argument("--ref-stats", help="published ADM-format statistics (.npz with mu, sigma) instead of a split")
    p.add_argument("--ref-split", default="train", choices=["train", "test"], help="real images for the stats")
    p.add_argument("--ref-images", type=POSITIVE_INT, default=None, help="use only the first N real images")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    add_device_args(p)


def train_reference(args: argparse.Namespace) -> int:
    from detok.data import DataConfig
    from detok.eval import reference
    from detok.eval.features import file_digest, shipped_evaluator_dir, trained_reference_dir
    from detok.registry import get_preset

    if args.dataset != "fashion-mnist":
        raise ValueError(f"no reference-classifier recipe for {args.dataset!r} yet; known: fashion-mnist")
    if args.preset not in reference.EVALUATOR_ARCHS:
        raise ValueError(f"unknown evaluator preset {args.preset!r}; known: {', '.join(reference.EVALUATOR_ARCHS)}")
    model_cfg, seed = get_preset(args.preset).make_config(), reference.EVALUATOR_ARCHS[args.preset][1]
    cfg = reference.ReferenceTrainConfig(model=model_cfg, data=DataConfig(name="fashion-mnist", hflip=True), seed=seed)
    cfg = apply_overrides(cfg, args.set or [])
    shipped_dir = shipped_evaluator_dir(args.preset)
    out = Path(args.out or trained_reference_dir(args.dataset, args.preset))
    if out.resolve() == shipped_dir.resolve():
        raise ValueError(f"--out {out} is the shipped evaluator's folder; train into another one")
    if args.if_missing and (out / "config.json").is_file():
        print(f"reference classifier already trained: {out}")
        return 0
    if args.dry_run:
        print(json.dumps({"out": str(out), **to_dict(cfg)}, indent=2))
        return 0
    result = reference.train_reference(cfg, out)
    if not (shipped_dir / "model.safetensors").is_file():
        print(json.dumps({"out": str(out), **result}))
        return 0
    mine, shipped = file_digest(out / "model.safetensors"), file_digest(shipped_dir / "model.safetensors")
    result["reproduces_shipped"] = mine == shipped
    print(json.dumps({"out": str(out), **result}))
    if mine == shipped:
        print(f"this retrain reproduced the shipped evaluator (reference-{shipped}) bit for bit")
    else:
        print(
            f"this retrain (reference-{mine}) differs from the shipped evaluator (reference-{shipped}): CPU kernels, "
            "thread counts or library versions change the weights. detok scores with the shipped one by default; "
            f"--evaluator reference:{out} uses this one (its FIDs are not comparable with the shipped one's)"
        )
    return 0


def generation(args: argparse.Namespace) -> int:
    from detok import dist
    from detok.checkpoint import load_generator, load_tokenizer, read_model_config
    from detok.eval.features import build_extractor, fit_to_size
    from detok.eval.generation import GenerationEvalConfig, evaluate_generation
    from detok.generate import is_text_conditioned, with_sampling_settings

    device = start_processes(args)
    cfg = GenerationEvalConfig(
        cfg_scales=_parse_floats(args.cfg, "--cfg"),
        num=args.num,
        final_num=args.final_num,
        seed=args.seed,
        batch_size=args.batch_size,
        temperature=args.temperature,
        cfg_interval=None if args.cfg_interval is None else parse_interval(args.cfg_interval),
        no_cfg_num=args.no_cfg_num,
        no_cfg_temperatures=_parse_floats(args.no_cfg_temperatures or "", "--no-cfg-temperatures"),
        temperatures=_parse_floats(args.temperatures or "", "--temperatures"),
    )
    model = with_sampling_settings(load_generator(args.run, device), args.sampling or [])
    if is_text_conditioned(model):
        raise ValueError(f"{args.run} is text-conditioned: evaluate it on captions with `detok eval t2i`")
    tokenizer_path = args.tokenizer or read_model_config(args.run)[2].get("tokenizer")
    if not tokenizer_path:
        raise ValueError(f"{args.run} does not record its tokenizer; pass --tokenizer")
    tok = load_tokenizer(tokenizer_path, device)
    data = data_for(tokenizer_path, tok, args.set)
    extractor = fit_to_size(build_extractor(args.evaluator, device, data.name), data.image_size)
    ref = _reference_for(args, extractor, data)
    out = Path(args.out or Path(args.run) / "eval")
    record = evaluate_generation(model, tok, extractor, ref, out, cfg)
    if not dist.is_main():
        return 0
    _print_generation_table(record)
    try:
        from detok.eval.report import plot_fid_vs_cfg

        print(f"plot: {plot_fid_vs_cfg(record['rows'], out / 'fid_vs_cfg.png', label=Path(args.run).name)}")
    except ImportError as e:
        print(f"note: no FID-vs-CFG plot ({e})", file=sys.stderr)
    print(f"results: {out / 'generation.json'}")
    return 0


def _reference_for(args: argparse.Namespace, extractor, data):
    """Real-data statistics: a published ADM .npz (--ref-stats) or the cached features of the dataset split (under
    torchrun computed and cached by rank 0 first, then read by the others)."""
    from detok import dist
    from detok.data import build_dataset
    from detok.eval.features import dataset_key, load_adm_stats, reference_set

    if args.ref_stats:
        return load_adm_stats(args.ref_stats)
    key = dataset_key(data, args.ref_split)
    ref = None
    if dist.is_main():
        ref = reference_set(extractor, build_dataset(data, args.ref_split), key, args.ref_images)
    dist.barrier()
    if ref is None:
        ref = reference_set(extractor, build_dataset(data, args.ref_split), key, args.ref_images, progress=False)
    return ref


def _print_generation_table(record: dict) -> None:
    print(f"evaluator {record['evaluator']}, reference {record['reference']}")
    print(f"{'cfg':>6} {'temp':>5} {'num':>7} {'FID':>8} {'IS':>7} {'prec':>6} {'recall':>6} {'class':>6}")
    rows = [(r, "") for r in record["rows"]] + ([(record["final"], "  <- final")] if record["final"] else [])
    rows += [(r, "  <- without CFG") for r in record.get("no_cfg_rows", [])]
    for r, tag in rows:
        print(
            f"{r['cfg']:>6g} {r.get('temperature', 1.0):>5g} {r['num']:>7d} {_fmt(r['fid'], '.3f'):>8} "
            f"{_fmt(r['is'], '.3f'):>7} "
            f"{_fmt(r['precision'], '.3f'):>6} {_fmt(r['recall'], '.3f'):>6} "
            f"{_fmt(r.get('class_consistency'), '.3f'):>6}{tag}"
        )


def samples(args: argparse.Namespace) -> int:
    import numpy as np

    from detok.checkpoint import load_tokenizer, write_json
    from detok.data import DataConfig, check_labels, npz_array, open_npz
    from detok.eval.features import build_extractor, fit_to_size
    from detok.eval.generation import score_images

    device = device_for(args)
    with open_npz(args.samples) as f:
        if "images" not in f:
            raise ValueError(f"{args.samples} has no 'images' array (uint8 (N, H, W, C)); it has {f.files}")
        images = npz_array(f, "images", args.samples)
        labels = npz_array(f, "labels", args.samples) if "labels" in f.files else None
    if images.ndim != 4 or images.shape[3] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(
            f"{args.samples}: 'images' must be uint8 (N, H, W, C) with C = 1 or 3, got {images.dtype} {images.shape}"
        )
    if labels is not None:
        labels = check_labels(labels, len(images), f"{args.samples} ('labels')")
    if args.tokenizer:
        data = data_for(args.tokenizer, load_tokenizer(args.tokenizer, device), args.set)
    else:
        data = apply_overrides(DataConfig(image_size=images.shape[1], channels=images.shape[3]), args.set or [])
    extractor = fit_to_size(build_extractor(args.evaluator, device, data.name), data.image_size)
    ref = _reference_for(args, extractor, data)
    record = {"samples": str(args.samples), **score_images(images, extractor, ref, seed=args.seed, labels=labels)}
    record.update(evaluator=extractor.name, reference=ref.source)
    print(json.dumps(record, indent=2))
    if args.out:
        write_json(args.out, record)
    return 0


def t2i(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_generator, load_tokenizer, read_model_config
    from detok.data import build_dataset
    from detok.eval.features import build_extractor, dataset_key, reference_set
    from detok.eval.t2i import T2IEvalConfig, evaluate_t2i
    from detok.generate import is_text_conditioned, with_sampling_settings
    from detok.text.captions import CaptionSet
    from detok.text.encoders import caption_embeddings, load_text_encoder

    device = device_for(args)
    model = with_sampling_settings(load_generator(args.run, device), args.sampling or [])
    if not is_text_conditioned(model):
        raise ValueError(f"{args.run} is class-conditional: evaluate it with `detok eval generation`")
    recorded = read_model_config(args.run)[2]
    tokenizer_path = args.tokenizer or recorded.get("tokenizer")
    captions_dir = args.captions or recorded.get("captions")
    spec = args.text_encoder or recorded.get("text_encoder")
    if not (tokenizer_path and captions_dir and spec):
        raise ValueError(f"{args.run} does not record its tokenizer, captions and text encoder; pass them")
    tok = load_tokenizer(tokenizer_path, device)
    captions = CaptionSet.load(captions_dir)
    tokens = caption_embeddings(captions, captions_dir, load_text_encoder(spec, device))
    data = data_for(tokenizer_path, tok, args.set)
    extractor = build_extractor(args.evaluator, device, data.name)
    classifier = None if getattr(extractor, "dataset_classes", False) else build_extractor(args.classifier, device)
    ref = reference_set(extractor, build_dataset(data, "test"), dataset_key(data, "test"))  # the test images
    cfg = T2IEvalConfig(
        cfg_scales=_parse_floats(args.cfg, "--cfg"),
        num=args.num,
        final_num=args.final_num,
        seed=args.seed,
        batch_size=args.batch_size,
        temperature=args.temperature,
    )
    out = Path(args.out or Path(args.run) / "eval-t2i")
    record = evaluate_t2i(model, tok, captions, tokens, extractor, ref, out, cfg, classifier)
    print(f"evaluator {record['evaluator']}, reference {record['reference']}")
    print(f"{'cfg':>6} {'num':>6} {'FID':>8} {'aligned':>8} {'seen':>6} {'held-out':>8}")
    for r, tag in [(r, "") for r in record["rows"]] + [(record["final"], "  <- final")]:
        aligned = r.get("alignment", {}).get("all", {}).get("alignment")
        print(
            f"{r['cfg']:>6g} {r['num']:>6d} {_fmt(r['fid']):>8} {_fmt(aligned):>8} "
            f"{_fmt(r.get('alignment_seen')):>6} {_fmt(r.get('alignment_held_out')):>8}{tag}"
        )
    if "real" in record:
        real = record["real"]
        print(f"test images against their own captions: {_fmt(real['all']['alignment'])} aligned (the ceiling)")
    print(f"results: {out / 't2i.json'}")
    return 0


def latents(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_tokenizer
    from detok.data import build_dataset
    from detok.eval.latent_analysis import analyze_latents

    device = device_for(args)
    tok = load_tokenizer(args.run, device)
    data = data_for(args.run, tok, args.set)
    out = Path(args.out or Path(args.run) / "analysis")
    result = analyze_latents(tok, build_dataset(data, "train"), build_dataset(data, "test"), out, seed=args.seed)
    probe, gmm = result["linear_probe"], result["gmm"]
    print(f"linear probe: {probe['test_accuracy']:.2%} test accuracy ({probe['feature_dim']}-d latents)")
    print(f"GMM: {gmm['pca_dims']} PCA dims, best K by BIC {gmm['best_k_bic']}")
    print("robustness (PSNR): " + ", ".join(f"τ={r['tau']:g}: {r['psnr']:.2f}" for r in result["robustness"]["noise"]))
    print(f"results: {out / 'latent_analysis.json'}")
    return 0


def _parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{what} takes comma-separated numbers, e.g. 1.0,1.5,2.0; got {text!r}") from None


def _fmt(v, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)
