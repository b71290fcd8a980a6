"""`neobert ablate`: the paper's ablation ladder (Table 2) and the modern recipe's rows at small scale on the
demo corpus, several seeds a row, with a table (mean ± std, each row's difference from the row it changes)
and a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

USER_ERRORS = (ValueError,)  # an unknown row, a bad override (see neobert.cli.exit_code_of)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from neobert.commands.options import add_restart_option
    from neobert.demo.ablate import EXTRA_ROWS, ROW_NAMES

    extra = ",".join(row.name for row in EXTRA_ROWS)
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="dotted overrides for every row")
    parser.add_argument(
        "--rows", default=None, help=f"comma-separated rows (default the ladder: {','.join(ROW_NAMES)}; also {extra})"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default: ablations/small)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and a few steps: checks the ladder runs")
    parser.add_argument("--corpus", default=None, help="prepared corpus folder (default: the cached demo corpus)")
    parser.add_argument(
        "--out", default="runs/ablate", help="results folder (a ladder of the same settings resumes there)"
    )
    add_restart_option(parser, "delete the ladder in --out and start afresh")
    parser.add_argument("--no-probe", action="store_true", help="skip the frozen-embedding linear probe")


def run(args: argparse.Namespace) -> int:
    from neobert.commands.demo import prepare_demo_corpus
    from neobert.commands.pretrain import split_items
    from neobert.demo.ablate import LadderSettings, format_table, run_ladder, select_rows
    from neobert.errors import UsageError

    paths, overrides = split_items(args.overrides)
    if paths:
        raise UsageError(f"takes only key=value overrides, not {paths}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    rows = select_rows(args.rows.split(",") if args.rows else None)
    corpus = Path(args.corpus) if args.corpus else prepare_demo_corpus()
    settings = LadderSettings(
        corpus=str(corpus),
        out=args.out,
        seeds=args.seeds,
        steps=args.steps,
        quick=args.quick,
        probe=not args.no_probe,
        probe_train=60 if args.quick else 500,
        probe_test=40 if args.quick else 300,
        extra=tuple(overrides),
    )
    report = run_ladder(rows, settings, restart=args.restart)  # interrupted: exit 130, see neobert.cli
    print(format_table(rows, report["summary"]))
    print(f"\nresults: {Path(args.out) / 'results.json'}\ntable: {Path(args.out) / 'ablations.md'}")
    return 0
