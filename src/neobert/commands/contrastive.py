"""`neobert contrastive --model DIR --data pairs.jsonl [more.jsonl ...] --steps N --out DIR`: contrastive
fine-tuning (InfoNCE, in-batch and hard negatives) into a sentence-transformers folder. torchrun works.
`--data demo` trains on headline -> article pairs from the offline demo corpus's pre-training side."""

from __future__ import annotations

import argparse

# Bad pairs, settings or folders (see neobert.cli.exit_code_of).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from neobert.commands.export import add_prompt_option
    from neobert.commands.options import add_model_option, add_out_option, add_restart_option

    add_model_option(parser, "a NeoBERT folder (e.g. what `neobert export` wrote)")
    parser.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="pairs: .jsonl files, saved `datasets` folders, hf:NAME[:CONFIG], or demo (headline -> article "
        "pairs from the demo corpus, none of them in the retrieval-offline suite); one dataset each",
    )
    add_out_option(parser, "folder to write the embedder to", required=True)
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per process and step")
    parser.add_argument("--lr", type=float, default=2e-5, help="peak learning rate")
    parser.add_argument("--temperature", type=float, default=0.07, help="InfoNCE temperature")
    parser.add_argument("--alpha", type=float, default=0.5, help="datasets sampled in proportion to size^alpha")
    parser.add_argument("--grad-cache", type=int, default=None, metavar="CHUNK", help="gradient cache chunk size")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per text (longer ones are cut)")
    parser.add_argument("--pooling", default="mean", help="mean, cls or max")
    parser.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and initialisation")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_prompt_option(
        parser,
        'prompt stored with the model; "query" and "document" prompts are also used in training, '
        'e.g. --prompt "query=query: " --prompt "document=passage: "',
    )
    add_restart_option(parser, "replace what --out holds (an earlier embedder) with this run's", ("--overwrite",))


def data_words() -> dict:
    """The words `--data` takes besides paths, each with the function that reads its pairs."""
    from neobert.demo.pairs import demo_pairs

    return {"demo": demo_pairs}


def run(args: argparse.Namespace) -> int:
    from neobert.commands.export import parse_prompts
    from neobert.embed_train.train import ContrastiveSettings, train_contrastive
    from neobert.errors import UsageError

    settings = ContrastiveSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        alpha=args.alpha,
        chunk_size=args.grad_cache,
        max_length=args.max_length,
        pooling=args.pooling,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        device=args.device,
    )
    if args.steps < 1:
        raise UsageError(f"--steps must be positive, got {args.steps}")
    if args.pooling not in ("mean", "cls", "max"):
        raise UsageError(f"unknown pooling {args.pooling!r}; choose mean, cls or max")
    prompts = parse_prompts(args.prompt)
    out = train_contrastive(args.model, args.data, args.out, settings, prompts or None, args.restart, data_words())
    print(f"wrote {out}")
    return 0
