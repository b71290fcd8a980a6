"""`neobert export CHECKPOINT --out FOLDER`: a folder for transformers (with or without neobert installed),
sentence-transformers and the official remote code."""

from __future__ import annotations

import argparse
import shutil
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a checkpoint folder (e.g. runs/x/checkpoints/latest) or a model folder")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--pooling", default="mean", help="sentence-transformers pooling: mean, cls or max")
    parser.add_argument("--tokenizer", default=None, help="tokenizer name or folder (default: bert-base-uncased)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--without-code",
        action="store_true",
        help="leave out the model code (the folder then loads only where neobert is installed)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also write the encoder as onnx/model.onnx (onnxruntime, Text Embeddings Inference)",
    )
    parser.add_argument(
        "--int8", action="store_true", help="with --onnx: also write onnx/model_qint8.onnx (int8 weights)"
    )
    add_prompt_option(
        parser, 'a prompt stored for sentence-transformers and `neobert encode`, e.g. --prompt "query=query: "'
    )


def add_prompt_option(parser: argparse.ArgumentParser, description: str) -> None:
    """`--prompt NAME=TEXT`, repeatable; read back with `parse_prompts`."""
    parser.add_argument("--prompt", action="append", default=[], metavar="NAME=TEXT", help=description)


def parse_prompts(items: list[str]) -> dict[str, str]:
    """`--prompt NAME=TEXT` options as a mapping (the text may be empty or contain '=')."""
    prompts = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--prompt takes NAME=TEXT, got {item!r}")
        prompts[name] = text
    return prompts


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neobert.errors import io_failure
    from neobert.export import export_model

    existed = Path(args.out).exists()
    out = None
    try:
        if args.int8 and not args.onnx:
            raise ValueError("--int8 quantises the ONNX export: add --onnx")
        prompts = parse_prompts(args.prompt)
        out = export_model(
            args.source,
            args.out,
            args.pooling,
            args.tokenizer,
            args.overwrite,
            prompts or None,
            with_code=not args.without_code,
        )
        if args.onnx:
            from neobert.onnx_export import export_onnx

            export_onnx(out, int8=args.int8)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"neobert export: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if out is not None and not existed:
            # The folder is complete but its ONNX step failed: remove it, so the same command can run again.
            shutil.rmtree(out, ignore_errors=True)
        line, code = io_failure("export", error, f"--out {args.out}")
        print(line, file=sys.stderr)
        return code
    print(f"wrote {out}")
    return 0
