"""`neobert mteb --model DIR --tasks A,B [--out DIR]`: MTEB (v2) tasks through mteb's own evaluator."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# An unknown task, a bad model folder (see neobert.cli.exit_code_of).
USER_ERRORS = (KeyError, ValueError, FileNotFoundError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="an embedder folder (e.g. what `neobert contrastive` wrote)")
    parser.add_argument("--tasks", required=True, help="comma-separated MTEB task names, e.g. Banking77Classification")
    parser.add_argument("--out", default=None, help="folder for mteb's result cache and a summary.json")
    parser.add_argument(
        "--pooling",
        default=None,
        help="mean, cls or max (default: the folder's sentence-transformers pooling, else mean)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="texts a forward pass")
    parser.add_argument("--no-prompts", action="store_true", help="no default instructions by task type")


def run(args: argparse.Namespace) -> int:
    from neobert.errors import UsageError, UserError

    if args.pooling not in (None, "mean", "cls", "max"):
        raise UsageError(f"--pooling must be mean, cls or max, got {args.pooling!r}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    import mteb

    from neobert.eval.mteb_encoder import NeoBERTEncoder

    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    tasks = mteb.get_tasks(tasks=names)
    encoder = NeoBERTEncoder(
        args.model, pooling=args.pooling, batch_size=args.batch_size, use_default_prompts=not args.no_prompts
    )
    cache = mteb.ResultCache(args.out) if args.out else None
    try:
        results = mteb.evaluate(encoder, tasks, cache=cache)
    except Exception as error:  # dataset downloads fail offline; say so instead of a deep traceback (exit 1)
        raise UserError(f"evaluation failed: {type(error).__name__}: {error}", exit_code=1) from error
    from neobert.eval.score_table import score_table

    summary = {result.task_name: result.get_score() for result in results.task_results}
    print(score_table(("task", "main score"), sorted(summary.items())))
    if args.out:
        target = Path(args.out) / "summary.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"model": args.model, "main_scores": summary}, indent=2))
        tmp.replace(target)
    return 0
