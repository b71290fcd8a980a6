"""`neobert evaluate --model DIR`: pseudo-perplexity by length, held-out MLM, the offline suite."""

from __future__ import annotations

import argparse
from pathlib import Path

USER_ERRORS = (ValueError, FileNotFoundError)  # a missing text file, a bad length (see neobert.cli.exit_code_of)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model folder or checkpoint (with its MLM head)")
    parser.add_argument("--out", default="runs/evaluate", help="folder for results, tables and plots")
    parser.add_argument("--pseudo-perplexity", default=None, metavar="FILE", help="a text file to score")
    parser.add_argument("--lengths", default="512,1024", help="input lengths for pseudo-perplexity")
    parser.add_argument("--sequences", type=int, default=4, help="sequences per length")
    parser.add_argument("--batch-size", type=int, default=32, help="masked copies per forward pass")
    parser.add_argument(
        "--max-positions",
        type=int,
        default=None,
        help="score at most this many positions a sequence, spread evenly (default: every position, as the paper)",
    )
    parser.add_argument("--mlm-data", default=None, help="a `neobert prepare` folder: MLM loss/accuracy on it")
    parser.add_argument("--mlm-split", default="heldout", help="split of --mlm-data to score")
    parser.add_argument("--mlm-batches", type=int, default=50, help="batches of --mlm-data to score")
    parser.add_argument(
        "--suite",
        default=None,
        choices=("offline", "retrieval-offline"),
        help="offline: GLUE-style tasks on available data; retrieval-offline: headline -> article retrieval",
    )
    parser.add_argument("--compare", nargs="*", default=[], help="more model folders for the offline suite")
    parser.add_argument("--no-baseline", action="store_true", help="offline suite without all-MiniLM-L6-v2")
    parser.add_argument("--budget-steps", type=int, default=300, help="offline suite: fine-tuning steps a task")
    parser.add_argument("--max-train", type=int, default=2000, help="offline suite: training examples a task")
    parser.add_argument("--max-test", type=int, default=500, help="offline suite: test examples a task")


def _pseudo_perplexity(args, folder: Path, out: Path) -> dict:
    from transformers import AutoModelForMaskedLM

    from neobert.eval.pseudo_perplexity import (
        format_length_table,
        perplexity_by_length,
        plot_lengths,
        results_as_dicts,
    )
    from neobert.finetune.model import tokenizer_for
    from neobert.text_files import utf8_lines

    text_file = Path(args.pseudo_perplexity)
    if not text_file.is_file():
        raise FileNotFoundError(f"{text_file}: no such text file")
    texts = [line for line in utf8_lines(text_file) if line.strip()]
    model = AutoModelForMaskedLM.from_pretrained(folder)
    lengths = [int(v) for v in args.lengths.split(",")]
    results = perplexity_by_length(
        model, tokenizer_for(folder), texts, lengths, args.sequences, args.batch_size, args.max_positions
    )
    table = format_length_table(results)
    (out / "pseudo_perplexity.md").write_text(table, encoding="utf-8")
    if results:
        plot_lengths(results, out / "pseudo_perplexity.png", model.config.max_length, f"{folder.name}")
    print(table)
    return {"file": str(text_file), "results": results_as_dicts(results), "training_length": model.config.max_length}


def _mlm(args, folder: Path) -> dict:
    from transformers import AutoModelForMaskedLM

    from neobert.data.loader import LoaderConfig, build_loader
    from neobert.train.evaluate import evaluate_mlm

    model = AutoModelForMaskedLM.from_pretrained(folder)
    config = LoaderConfig(path=args.mlm_data, split=args.mlm_split, batch_size=16, epochs=1)
    loader = build_loader(config, rank=0, world_size=1)
    result = evaluate_mlm(model, loader, torch_device(), max_batches=args.mlm_batches)
    print(f"MLM on {args.mlm_data} ({args.mlm_split}): loss {result.loss:.4f}, accuracy {result.accuracy:.4f}")
    return result.as_record("mlm")


def torch_device():
    import torch

    return torch.device("cpu")


def retrieval_table(suite: dict) -> str:
    from neobert.eval.score_table import score_table

    keys = ("recall_at_1", "mrr_at_10", "ndcg_at_10")
    rows = [(name, *(scores[key] for key in keys)) for name, scores in suite["results"].items()]
    title = f"{suite['task']}: {suite['num_queries']} queries, {suite['num_documents']} documents"
    return title + "\n" + score_table(("model", "recall@1", "MRR@10", "nDCG@10"), rows)


def check_numbers(args: argparse.Namespace) -> str | None:
    """The first count or length that cannot work, as a message naming its option; None when all can."""
    try:
        lengths = [int(v) for v in args.lengths.split(",")]
    except ValueError:
        return f"--lengths takes comma-separated token counts, got {args.lengths!r}"
    if min(lengths) < 3:
        return f"--lengths must be at least 3 tokens ([CLS], a token, [SEP]), got {args.lengths!r}"
    for option in ("sequences", "batch_size", "mlm_batches", "budget_steps", "max_train", "max_test"):
        if getattr(args, option) < 1:
            return f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}"
    if args.max_positions is not None and args.max_positions < 1:
        return f"--max-positions must be at least 1, got {args.max_positions}"
    return None


def run(args: argparse.Namespace) -> int:
    from neobert.errors import UsageError
    from neobert.files import write_json_atomically
    from neobert.finetune.model import model_folder

    folder = model_folder(args.model)
    if not (args.pseudo_perplexity or args.mlm_data or args.suite):
        raise UsageError("choose --pseudo-perplexity FILE, --mlm-data FOLDER or --suite offline|retrieval-offline")
    problem = check_numbers(args)
    if problem:
        raise UsageError(problem)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"model": str(folder)}
    if args.pseudo_perplexity:
        report["pseudo_perplexity"] = _pseudo_perplexity(args, folder, out)
    if args.mlm_data:
        report["mlm"] = _mlm(args, folder)
    if args.suite == "retrieval-offline":
        from neobert.demo.retrieval_offline import run_retrieval_suite

        report["retrieval_offline"] = run_retrieval_suite(
            [str(folder), *args.compare], include_baseline=not args.no_baseline
        )
    elif args.suite == "offline":
        from neobert.demo.offline_suite import SuiteBudget, run_suite

        budget = SuiteBudget(steps=args.budget_steps, max_train=args.max_train, max_test=args.max_test)
        report["offline_suite"] = run_suite([folder, *args.compare], out / "offline", budget, not args.no_baseline)
    write_json_atomically(out / "evaluate.json", report)
    if "retrieval_offline" in report:  # the other evaluations print their tables as they finish
        print(retrieval_table(report["retrieval_offline"]))
    print(f"wrote {out / 'evaluate.json'}")
    return 0
