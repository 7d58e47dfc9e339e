"""`detok export`: a run as a Hugging Face Hub folder (weights, config with latent statistics, metrics, model card),
optionally uploaded; `hf:ORG/NAME[@REV]` then loads it wherever a model folder is accepted."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="a run as a Hub-ready folder (config.json, model.safetensors, metrics.json, model card); --push-to-hub",
        description="Writes config.json (with the latent statistics), model.safetensors, metrics.json (what the run "
        "folder records: evaluation with its evaluator, the command and commit that trained it) and a model card "
        "README.md with the Hub's metadata. Load it back with detok.load_tokenizer('hf:ORG/NAME') "
        "(pip install 'detok[hub]').",
    )
    p.add_argument("run", help="a run directory or model folder")
    p.add_argument("--out", required=True, help="the folder to write (new or empty)")
    p.add_argument("--name", help="the repository id the card names, ORG/NAME (default: --push-to-hub, else --out)")
    p.add_argument("--license", default="mit", help="the card's license id (default: mit)")
    p.add_argument("--regime", help="the training regime to record, e.g. short, cpu-long, quality")
    p.add_argument("--tokenizer", help="for a generator: the tokenizer its config names, e.g. hf:ORG/TOKENIZER")
    p.add_argument("--push-to-hub", metavar="ORG/NAME", help="then upload the folder there (huggingface_hub's token)")
    p.add_argument("--private", action="store_true", help="create the repository private (with --push-to-hub)")
    p.add_argument("--revision", help="the branch to upload to (with --push-to-hub; default main)")
    p.set_defaults(fn=export)


def export(args: argparse.Namespace) -> int:
    from detok.hub import export_folder, push_folder

    if (args.private or args.revision) and not args.push_to_hub:
        raise ValueError("--private and --revision apply to the upload: add --push-to-hub ORG/NAME")
    name = args.name or args.push_to_hub
    out = export_folder(args.run, args.out, name, args.license, args.regime, args.tokenizer)
    print(f"exported {args.run} → {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    if args.push_to_hub:
        print(f"uploaded: {push_folder(out, args.push_to_hub, args.private, args.revision)}")
    return 0
