"""`detok report`: a Markdown + HTML report of one run or a comparison of runs."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a Markdown + HTML report for one run or a comparison of runs")
    p.add_argument("runs", nargs="+", help="run directories (tokenizers and/or generators)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.html, figures)")
    p.add_argument("--title", help="page title")
    p.set_defaults(fn=report)


def report(args: argparse.Namespace) -> int:
    from detok.eval.report import write_report

    paths = write_report(args.runs, args.out, title=args.title)
    for p in paths.values():
        print(f"written {p}")
    return 0
