"""The `detok` command line: the parser, and one error path for every subcommand (in `detok.commands`)."""

from __future__ import annotations

import argparse
import os
import sys

from detok import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detok", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list registered model presets")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'detok-*'")
    p.set_defaults(fn=commands.presets)

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
    p.set_defaults(fn=commands.tokenizer_train)

    for name, fn, helptext in (
        ("eval", commands.tokenizer_eval, "reconstruction PSNR/SSIM on a dataset split"),
        ("stats", commands.tokenizer_stats, "compute and store per-channel latent mean/std"),
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
    tea = sub.add_parser("teacher", help="train detok's own label-free teacher").add_subparsers(
        dest="action", required=True
    )
    p = tea.add_parser(
        "train", help="train a label-free MAE teacher, then probe it (re-run the same command to resume)"
    )
    p.add_argument("--preset", required=True, help="teacher preset (see `detok presets 'mae-teacher-*'`)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.images=20000"
    )
    p.add_argument(
        "--out",
        help="run directory (default: the cache folder $DETOK_CACHE/teachers/<preset>, reused once trained, which "
        "the teacher spec detok:<preset> names)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(fn=commands.teacher_train)

    cap = sub.add_parser("captions", help="caption sets for text-to-image generators").add_subparsers(
        dest="action", required=True
    )
    p = cap.add_parser(
        "make", help="caption every image from its class and measured attributes (brightness, width, pattern)"
    )
    p.add_argument("--out", help="caption-set folder (default: the cache's captions/fashion-mnist-32)")
    p.add_argument("--per-image", type=int, default=4, help="captions per image, each phrased anew")
    p.add_argument(
        "--held-out-per-class", type=int, default=2, help="attribute combinations per class never trained on"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
    p.set_defaults(fn=commands.captions_make)

    txt = sub.add_parser("text-encoder", help="detok's own offline text encoder").add_subparsers(
        dest="action", required=True
    )
    p = txt.add_parser(
        "train", help="train the word-level text encoder CLIP-style against the images' pixels, then probe it"
    )
    p.add_argument("--preset", default="text-encoder-fmnist32", help="text-encoder preset")
    p.add_argument("--captions", help="caption set (default: the Fashion-MNIST-32 one, made on first use)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.images=60000")
    p.add_argument(
        "--out", help="run directory (default: the cache's text-encoders/<preset>, which the spec <preset> names)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(fn=commands.text_encoder_train)

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
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="storage type of the latents")
    p.add_argument("--max-images", type=int, default=None, help="cache only the first N images of the split")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(fn=commands.latents_cache)

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
    p.set_defaults(fn=commands.eval_train_reference)

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
    p.add_argument("--no-cfg-num", type=int, default=0, help="also score N fresh samples without guidance (0: off)")
    p.add_argument(
        "--no-cfg-temperatures",
        default=None,
        help="temperatures to sweep without guidance, comma-separated (the paper's AR protocol); best reported",
    )
    p.add_argument("--cfg-interval", default=None, help="guide only at noise levels in [lo,hi]")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument(
        "--temperatures",
        default=None,
        help="search every CFG scale at each of these temperatures, comma-separated (AR generators, SDE samplers); "
        "the final at the best pair",
    )
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
    p.set_defaults(fn=commands.eval_generation)

    p = ev.add_parser("samples", help="score an .npz of samples (uint8 images + labels) against real data")
    p.add_argument("samples", help=".npz with 'images' (N, H, W, C) uint8, e.g. from `detok generator sample`")
    p.add_argument("--tokenizer", help="take the real data config from this tokenizer run (default: fashion-mnist)")
    p.add_argument("--out", help="also write the scores to this JSON file")
    add_reference_args(p)
    p.set_defaults(fn=commands.eval_samples)

    p = ev.add_parser("t2i", help="text-to-image: FID against the test images and text alignment (seen/held-out)")
    p.add_argument("run", help="text-conditioned generator run directory or model folder")
    p.add_argument("--cfg", default="1.0,2.0,3.0", help="guidance scales to search, comma-separated")
    p.add_argument("--num", type=int, default=1_000, help="samples per scale in the search (test captions)")
    p.add_argument("--final-num", type=int, default=5_000, help="samples at the best scale (<= --num: no rerun)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tokenizer", help="tokenizer to decode with (default: the one the generator was trained on)")
    p.add_argument("--captions", help="caption set (default: the generator's)")
    p.add_argument("--text-encoder", help="text encoder spec (default: the generator's)")
    p.add_argument("--evaluator", default="reference", help="FID features: reference[:FOLDER] or inception[:WEIGHTS]")
    p.add_argument("--classifier", default="reference", help="reads the class of samples when the evaluator does not")
    p.add_argument("--out", help="results folder (default RUN/eval-t2i)")
    p.add_argument("--sampling", action="append", metavar="KEY=VALUE", help="sampling setting of the generator")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(fn=commands.eval_t2i)

    p = ev.add_parser("latents", help="linear probe, GMM modes and denoising robustness of a tokenizer's latents")
    p.add_argument("run", help="tokenizer run directory or model folder")
    p.add_argument("--out", help="results folder (default RUN/analysis)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(fn=commands.eval_latents)

    gen = sub.add_parser("generator", help="train generators on tokenizer latents and sample from them")
    gen = gen.add_subparsers(dest="action", required=True)
    p = gen.add_parser("train", help="train a generator (re-run the same command to resume)")
    p.add_argument("--preset", required=True, help="generator preset (see `detok presets`)")
    p.add_argument("--tokenizer", required=True, help="tokenizer run directory or model folder (with latent stats)")
    p.add_argument("--latents", help="latent cache from `detok latents cache` (default: encode images on the fly)")
    p.add_argument("--captions", help="t2i-* presets: the caption set of the training images (`detok captions make`)")
    p.add_argument(
        "--text-encoder", help="t2i-* presets: hf:FOLDER (a local transformers model), detok:FOLDER or a preset name"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.images=20000 or model.flow.sample_steps=100",
    )
    p.add_argument("--out", help="run directory (default runs/<preset>)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(fn=commands.generator_train)

    p = gen.add_parser("sample", help="sample class-balanced images into an .npz (uint8 images + labels) and a PNG")
    p.add_argument("run", help="generator run directory or model folder")
    p.add_argument(
        "--num", type=int, default=None, help="number of images (default 100; with --captions one per caption)"
    )
    p.add_argument(
        "--captions", help="text-conditioned generators: a text file, one caption per line (taken in turn for --num)"
    )
    p.add_argument("--text-encoder", help="with --captions: the text encoder (default: the one the generator used)")
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
    p.set_defaults(fn=commands.generator_sample)

    bench = sub.add_parser("bench", help="benchmark suites").add_subparsers(dest="action", required=True)
    p = bench.add_parser("reproduce", help="reproduce the paper's claims at small scale (resumable: rerun to continue)")
    p.add_argument(
        "--suite",
        default="table2",
        choices=[
            "table2",
            "table2-followup",
            "baseline-joint",
            "noise",
            "mask",
            "mask-mode",
            "generators",
            "variants",
            "peers",
            "resolution",
            "t2i",
        ],
    )
    p.add_argument(
        "--budget",
        default="cpu",
        help="named budget: cpu (<= 2 h on 2 cores), cpu-long (4x cpu's training), cpu-v1 (the first runs'), "
        "quality (provisional) or smoke (tests)",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a budget value, e.g. final_num=5000")
    p.add_argument("--out", help="results folder (default docs/results/<suite>)")
    p.add_argument("--work", help="run directories (default runs/bench-<suite>; a follow-up shares its suite's)")
    p.add_argument("--evaluator", default="reference", help="reference[:FOLDER] (default) or inception[:WEIGHTS]")
    p.add_argument(
        "--second-evaluator",
        help="the independent evaluator of the suites that use one (peers: reference-resnet[:FOLDER] by default)",
    )
    p.add_argument(
        "--restore",
        metavar="RESULTS_JSON",
        help="an earlier run's results.json (same suite, budget, evaluators): its finished cells are kept, not rerun",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.set_defaults(fn=commands.bench_reproduce)

    p = sub.add_parser("report", help="write a Markdown + HTML report for one run or a comparison of runs")
    p.add_argument("runs", nargs="+", help="run directories (tokenizers and/or generators)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.html, figures)")
    p.add_argument("--title", help="page title")
    p.set_defaults(fn=commands.report)
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
    from detok.runtime import TrainingDivergedError, forget_process_threads

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
    finally:
        forget_process_threads()  # a command's --threads holds for that command, not for what the caller runs next


if __name__ == "__main__":
    sys.exit(main())
