"""The `detok` subcommands: each builds a typed config from the parsed arguments and calls the library.

`detok.cli` parses the command line and dispatches here; nothing below parses argv itself.
"""

from __future__ import annotations

import argparse
import json
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


def tokenizer_train(args: argparse.Namespace) -> int:
    from detok.training.tokenizer import default_run_config, train_tokenizer

    cfg = apply_overrides(default_run_config(args.preset), args.set or [])
    return _run_training(cfg, Path(args.out or f"runs/{args.preset}"), train_tokenizer, "tokenizer", args.dry_run)


def teacher_train(args: argparse.Namespace) -> int:
    from detok.teachers.mae import default_teacher_dir
    from detok.training.teacher import PROBE_FILE, default_run_config, train_teacher

    cfg = apply_overrides(default_run_config(args.preset), args.set or [])
    out = Path(args.out) if args.out else default_teacher_dir(args.preset)
    code = _run_training(cfg, out, train_teacher, "teacher", args.dry_run)
    if not args.dry_run:
        probe = json.loads((out / PROBE_FILE).read_text())
        print(
            f"linear probe: {probe['test_accuracy']:.2%} test accuracy on {probe['feature_dim']}-d mean-pooled "
            f"features ({out / PROBE_FILE}); teacher spec: detok:{args.out or args.preset}"
        )
    return code


def tokenizer_eval(args: argparse.Namespace) -> int:
    import torch

    from detok.checkpoint import load_tokenizer, write_json
    from detok.data import build_dataset
    from detok.eval.features import fit_to_size
    from detok.eval.recon import evaluate_reconstruction
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads, for_process=True)
    device = resolve_device(args.device)
    tok = load_tokenizer(args.run, device)
    data = _data_for(args.run, tok, args.set)
    dataset = build_dataset(data, args.split)
    notes = {}
    extractor, notes["rfid_note"] = _reconstruction_evaluator(args.evaluator, data.name, device)
    extractor = fit_to_size(extractor, data.image_size)  # e.g. a 64-px tokenizer and the 32-px classifier
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
        return None, f"rFID skipped: the shipped reference classifier is missing from {folder} (a broken install?)"
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


def tokenizer_stats(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_tokenizer
    from detok.data import build_dataset
    from detok.latents import compute_latent_stats, store_latent_stats
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads, for_process=True)
    device = resolve_device(args.device)
    tok = load_tokenizer(args.run, device)
    dataset = build_dataset(_data_for(args.run, tok, args.set), "train")
    mean, std = compute_latent_stats(tok, dataset, args.batch_size, args.max_images, device)
    store_latent_stats(args.run, mean, std)
    print(json.dumps({"latent_mean": mean, "latent_std": std}, indent=2))
    return 0


def latents_cache(args: argparse.Namespace) -> int:
    from detok import dist
    from detok.checkpoint import load_tokenizer
    from detok.data import build_dataset
    from detok.latents import cache_latents

    device = _start_processes(args)
    tok = load_tokenizer(args.tokenizer, device)
    data = _data_for(args.tokenizer, tok, args.set)
    dataset = build_dataset(data, args.split)
    out = cache_latents(
        tok,
        dataset,
        args.out,
        str(args.tokenizer),
        args.batch_size,
        args.shard_size,
        max_images=args.max_images,
        dtype=args.dtype,
        workers=data.workers,
        prefetch=data.prefetch,
    )
    count = len(dataset) if args.max_images is None else min(len(dataset), args.max_images)
    dist.print0(f"cached {count} latents (and their flips) in {out}")
    return 0


def _start_processes(args: argparse.Namespace):
    """The device of this process, after joining the process group if launched by torchrun (left at exit)."""
    import atexit

    from detok import dist
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads, for_process=True)
    device = resolve_device(args.device)
    dist.init(device)
    if dist.is_distributed():
        atexit.register(dist.cleanup)
    return device


def generator_train(args: argparse.Namespace) -> int:
    from detok.training.generator import default_run_config, train_generator

    text = {"captions": args.captions, "text_encoder": args.text_encoder}
    cfg = default_run_config(args.preset, args.tokenizer, args.latents, args.set or [], **text)
    return _run_training(cfg, Path(args.out or f"runs/{args.preset}"), train_generator, "generator", args.dry_run)


def _parse_interval(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"--cfg-interval takes two numbers 'lo,hi' (noise level, 0 = data, 1 = noise), got {text!r}")
    return float(parts[0]), float(parts[1])


def generator_sample(args: argparse.Namespace) -> int:
    import torch

    from detok import dist
    from detok.checkpoint import load_generator, load_tokenizer, read_model_config
    from detok.generate import is_text_conditioned, npz_path, sample_to_file, with_sampling_settings

    device = _start_processes(args)
    model = load_generator(args.run, device)
    model = with_sampling_settings(model, args.set or [])  # e.g. model.flow.sample_steps=100
    recorded = read_model_config(args.run)[2]
    tokenizer_path = args.tokenizer or recorded.get("tokenizer")
    if not tokenizer_path:
        raise ValueError(f"{args.run} does not record its tokenizer; pass --tokenizer")
    text, notes = {}, {}
    if is_text_conditioned(model):
        text, notes = _caption_conditions(args, model, recorded, device)
    elif args.captions or args.text_encoder:
        raise ValueError(f"{args.run} is class-conditional: --captions and --text-encoder are for t2i-* generators")
    num = args.num or (len(text["captions"]) if text else 100)
    if text:
        which = torch.arange(num) % len(text["captions"])  # the captions in turn
        text = {"text": text["tokens"][which], "labels": which, "captions": text["captions"]}
    tok = load_tokenizer(tokenizer_path, device)
    path = npz_path(args.out)
    sample_to_file(  # resumable: a rerun keeps the finished parts; under torchrun the processes share the parts
        path,
        model,
        tok,
        num,
        batch_size=args.batch_size,
        seed=args.seed,
        cfg_scale=args.cfg,
        cfg_interval=None if args.cfg_interval is None else _parse_interval(args.cfg_interval),
        temperature=args.temperature,
        **text,
    )
    settings = {"cfg": args.cfg, "cfg_interval": args.cfg_interval, "temperature": args.temperature}
    dist.print0(json.dumps({"samples": str(path), "num": num, "seed": args.seed, **settings, **notes}))
    return 0


def _caption_conditions(args: argparse.Namespace, model, recorded: dict, device) -> tuple[dict, dict]:
    """The captions of --captions FILE and their tokens under the generator's text encoder (the one it was trained
    with, or --text-encoder), after checking the encoder fits the model; truncation is reported, not an error."""
    import warnings

    from detok.text.encoders import load_text_encoder, read_captions_file

    if not args.captions:
        raise ValueError(f"{args.run} is text-conditioned: give --captions FILE (one caption per line)")
    captions = read_captions_file(args.captions)
    spec = args.text_encoder or recorded.get("text_encoder")
    if not spec:
        raise ValueError(f"{args.run} does not record its text encoder; pass --text-encoder")
    encoder = load_text_encoder(spec, device)
    cfg = model.config
    if (encoder.max_length, encoder.dim) != (cfg.text_len, cfg.text_dim):
        raise ValueError(
            f"text encoder {spec} gives {encoder.max_length} tokens of width {encoder.dim}, the generator takes "
            f"{cfg.text_len} of width {cfg.text_dim}: use the encoder it was trained with"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoded = encoder.encode(captions)
    for w in caught:
        print(f"detok: warning: {w.message}", file=sys.stderr)
    notes = {"captions": len(captions), "truncated_captions": encoded.truncated, "truncation": encoder.truncation}
    return {"tokens": encoded.tokens, "captions": captions}, notes


def captions_make(args: argparse.Namespace) -> int:
    from detok.data import DataConfig
    from detok.text.captions import default_captions_dir, describe, make_attribute_captions

    data = apply_overrides(DataConfig(name="fashion-mnist"), args.set or [])
    out = Path(args.out) if args.out else default_captions_dir()
    captions = make_attribute_captions(data, args.per_image, args.held_out_per_class, args.seed)
    captions.save(out)
    summary = describe(captions)
    held = summary.pop("held_out_combinations", [])
    print(json.dumps({"out": str(out), **summary, "held_out_combinations": len(held)}, indent=2))
    return 0


def text_encoder_train(args: argparse.Namespace) -> int:
    from detok.text.captions import default_captions
    from detok.text.encoders import default_text_encoder_dir
    from detok.training.text_encoder import PROBE_FILE, default_run_config, train_text_encoder

    captions = args.captions or default_captions()
    cfg = apply_overrides(default_run_config(args.preset, captions), args.set or [])
    out = Path(args.out) if args.out else default_text_encoder_dir(args.preset)
    code = _run_training(cfg, out, train_text_encoder, "text encoder", args.dry_run)
    if not args.dry_run:
        probe = json.loads((out / PROBE_FILE).read_text())
        if "retrieval_same_combination" in probe:
            print(
                f"retrieval probe: {probe['retrieval_same_combination']:.1%} of {probe['images']} test captions find "
                f"an image of their combination (chance {probe['chance']:.1%}); text encoder spec: "
                f"{args.out or args.preset}"
            )
    return code


def eval_t2i(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_generator, load_tokenizer, read_model_config
    from detok.data import build_dataset
    from detok.eval.features import build_extractor, dataset_key, reference_set
    from detok.eval.t2i import T2IEvalConfig, evaluate_t2i
    from detok.generate import is_text_conditioned, with_sampling_settings
    from detok.runtime import resolve_device, set_threads
    from detok.text.captions import CaptionSet
    from detok.text.encoders import caption_embeddings, load_text_encoder

    set_threads(args.threads, for_process=True)
    device = resolve_device(args.device)
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
    data = _data_for(tokenizer_path, tok, args.set)
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


def eval_train_reference(args: argparse.Namespace) -> int:
    from detok.data import DataConfig
    from detok.eval.features import file_digest, shipped_evaluator_dir, trained_reference_dir
    from detok.eval.reference import EVALUATOR_ARCHS, ReferenceTrainConfig, train_reference
    from detok.registry import get_preset

    if args.dataset != "fashion-mnist":
        raise ValueError(f"no reference-classifier recipe for {args.dataset!r} yet; known: fashion-mnist")
    if args.preset not in EVALUATOR_ARCHS:
        raise ValueError(f"unknown evaluator preset {args.preset!r}; known: {', '.join(EVALUATOR_ARCHS)}")
    model_cfg, seed = get_preset(args.preset).make_config(), EVALUATOR_ARCHS[args.preset][1]
    cfg = ReferenceTrainConfig(model=model_cfg, data=DataConfig(name="fashion-mnist", hflip=True), seed=seed)
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
    result = train_reference(cfg, out)
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


def _parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{what} takes comma-separated numbers, e.g. 1.0,1.5,2.0; got {text!r}") from None


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


def eval_generation(args: argparse.Namespace) -> int:
    from detok import dist
    from detok.checkpoint import load_generator, load_tokenizer, read_model_config
    from detok.eval.features import build_extractor, fit_to_size
    from detok.eval.generation import GenerationEvalConfig, evaluate_generation
    from detok.generate import is_text_conditioned, with_sampling_settings

    device = _start_processes(args)
    cfg = GenerationEvalConfig(
        cfg_scales=_parse_floats(args.cfg, "--cfg"),
        num=args.num,
        final_num=args.final_num,
        seed=args.seed,
        batch_size=args.batch_size,
        temperature=args.temperature,
        cfg_interval=None if args.cfg_interval is None else _parse_interval(args.cfg_interval),
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
    data = _data_for(tokenizer_path, tok, args.set)
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


def _fmt(v, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)


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


def eval_samples(args: argparse.Namespace) -> int:
    import numpy as np

    from detok.checkpoint import load_tokenizer, write_json
    from detok.data import DataConfig
    from detok.eval.features import build_extractor, fit_to_size
    from detok.eval.generation import score_images
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads, for_process=True)
    device = resolve_device(args.device)
    with np.load(args.samples) as f:
        if "images" not in f:
            raise ValueError(f"{args.samples} has no 'images' array (uint8 (N, H, W, C)); it has {f.files}")
        images, labels = f["images"], (f["labels"] if "labels" in f.files else None)
    if args.tokenizer:
        data = _data_for(args.tokenizer, load_tokenizer(args.tokenizer, device), args.set)
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


def eval_latents(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_tokenizer
    from detok.data import build_dataset
    from detok.eval.latent_analysis import analyze_latents
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads, for_process=True)
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


def report(args: argparse.Namespace) -> int:
    from detok.eval.report import write_report

    paths = write_report(args.runs, args.out, title=args.title)
    for p in paths.values():
        print(f"written {p}")
    return 0


def bench_reproduce(args: argparse.Namespace) -> int:
    import shlex

    from detok.bench.reproduce import parse_budget, run_suite
    from detok.runtime import set_threads

    budget = parse_budget(args.budget, args.set or [])
    set_threads(args.threads, for_process=True)
    out = Path(args.out or f"docs/results/{args.suite}")
    work = Path(args.work or f"runs/bench-{args.suite.removesuffix('-followup')}")
    command = "detok " + " ".join(shlex.quote(a) for a in args.argv)
    extra = {"second_evaluator": args.second_evaluator, "restore": args.restore}
    record = run_suite(args.suite, budget, work, out, args.evaluator, command, **extra)
    print(f"{len(record['cells'])} cells done; results in {out / 'results.md'}")
    return 0


def presets(args: argparse.Namespace) -> int:
    from detok.registry import get_preset, list_models

    for name in list_models(args.pattern):
        p = get_preset(name)
        first = p.doc.splitlines()[0] if p.doc else ""
        print(f"{name:28s} {p.kind:10s} {first}")
    return 0
