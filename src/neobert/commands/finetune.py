"""`neobert finetune --model DIR --train F --validation F --text-column ... --label-column ... --out DIR`."""

from __future__ import annotations

import argparse

# Bad data, settings, or an --out held by another run (see neobert.cli.exit_code_of; a missing model too).
USER_ERRORS = (ValueError,)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Optimisation flags shared by `finetune` and `glue`."""
    parser.add_argument("--epochs", type=float, default=10.0, help="upper bound on epochs (default 10)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps instead")
    parser.add_argument("--eval-every", type=int, default=None, help="default min(500, steps per epoch // 10)")
    parser.add_argument("--patience", type=int, default=15, help="evaluations without improvement before stopping")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per example (longer ones are cut)")
    parser.add_argument("--eval-batch-size", type=int, default=32, help="examples a forward pass in evaluation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the head, dropout and data order")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-pack", action="store_true", help="pad NeoBERT batches instead of packing them")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model folder, checkpoint or `neobert export` output")
    parser.add_argument("--train", required=True, help="CSV, TSV, JSONL, Parquet, a saved datasets folder, hf:NAME")
    parser.add_argument("--validation", required=True, help="same formats; labels must occur in --train")
    parser.add_argument("--out", required=True, help="output folder (resumes a run of the same settings)")
    parser.add_argument("--task", default="sequence-classification", help="or token-classification (CoNLL files)")
    parser.add_argument("--text-column", default="text", help="column (or field) holding the text")
    parser.add_argument("--text-pair-column", default=None, help="second text of a pair: [CLS] A [SEP] B [SEP]")
    parser.add_argument("--label-column", default="label", help="column (or field) holding the label")
    parser.add_argument("--problem", default="auto", help="auto, single, multi or regression")
    parser.add_argument("--label-separator", default="|", help="separates labels of a multi-label cell")
    parser.add_argument("--train-split", default="train", help="split name for datasets inputs")
    parser.add_argument("--validation-split", default="validation", help="split name for datasets inputs")
    parser.add_argument("--lr", type=float, default=2e-5, help="peak learning rate")
    parser.add_argument("--batch-size", type=int, default=16, help="training examples a step")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    parser.add_argument("--metric", default=None, help="selection metric (default: accuracy / pearson / f1)")
    parser.add_argument("--restart", action="store_true", help="delete the run in --out and start afresh")
    add_settings_arguments(parser)


def settings_from(args: argparse.Namespace, **overrides):
    from neobert.finetune.trainer import FinetuneSettings

    fields = dict(
        epochs=args.epochs,
        max_steps=args.max_steps,
        eval_every=args.eval_every,
        patience=args.patience,
        max_length=args.max_length,
        eval_batch_size=args.eval_batch_size,
        seed=args.seed,
        progress=not args.no_progress,
        packed=not args.no_pack,
    )
    fields.update(overrides)
    return FinetuneSettings(**fields)


def run(args: argparse.Namespace) -> int:
    from neobert.finetune.data import Columns
    from neobert.finetune.model import load_task_model
    from neobert.finetune.run import FinetuneRequest, prepare
    from neobert.finetune.trainer import finetune
    from neobert.run_lock import check_output_folder
    from neobert.run_settings import model_digest

    settings = settings_from(
        args, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay, metric=args.metric
    )
    request = FinetuneRequest(
        model=args.model,
        train=args.train,
        validation=args.validation,
        out=args.out,
        task=args.task,
        columns=Columns(text=args.text_column, label=args.label_column, text_pair=args.text_pair_column),
        problem=args.problem,
        label_separator=args.label_separator,
        train_split=args.train_split,
        validation_split=args.validation_split,
        settings=settings,
    )
    check_output_folder(args.out, "--out")
    folder, data = prepare(request)
    result = finetune(
        lambda: load_task_model(folder, data.space, settings.classifier_dropout),
        data,
        settings,
        args.out,
        extra_results={"model": str(folder), "task": args.task, "train": str(args.train)},
        restart=args.restart,
        origin={"model": model_digest(folder)},
    )
    print(f"best {result.best_metric:.4f} at step {result.best_step} of {result.steps}: {result.best_metrics}")
    print(f"wrote {result.results_file} and the best model in {result.model_dir}")
    return 0
