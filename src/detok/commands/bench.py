"""`detok bench reproduce`: the benchmark suites that reproduce the paper's claims at small scale."""

from __future__ import annotations

import argparse
from pathlib import Path

from detok.commands._common import NON_NEGATIVE_INT


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--threads", type=NON_NEGATIVE_INT, default=0, help="CPU threads (0: all cores)")
    p.set_defaults(fn=reproduce)


def reproduce(args: argparse.Namespace) -> int:
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
