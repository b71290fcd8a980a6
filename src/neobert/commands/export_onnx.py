"""`neobert export-onnx --model MODEL [--out DIR] [--int8]`, deprecated for `neobert export --model MODEL --onnx
[--int8]`, the one way to write ONNX: without --out it adds onnx/ to MODEL itself, as this did; with --out it
writes a new folder from MODEL (give it `--pooling` when MODEL stores a pooling other than mean). Kept, with a
one-line note, for the scripts that call it (the model may still come first); it runs the code that
`export --onnx` runs without --out. The encoder as onnx/model.onnx (dynamic batch and length; inputs
input_ids and attention_mask, outputs last_hidden_state and sentence_embedding) in the layout Text Embeddings
Inference and sentence-transformers read; with --int8 also onnx/model_qint8.onnx (`encode --backend onnx-int8`)."""

from __future__ import annotations

import argparse

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)  # see neobert.cli.exit_code_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from neobert.commands.options import add_model_option, add_out_option

    add_model_option(
        parser, "a model folder (e.g. what `neobert export` or `neobert contrastive` wrote)", positional_too=True
    )
    add_out_option(parser, "folder to write (default: onnx/model.onnx inside --model)", default=None)
    parser.add_argument(
        "--int8", action="store_true", help="also write onnx/model_qint8.onnx (dynamic int8 quantisation)"
    )


def run(args: argparse.Namespace) -> int:
    from neobert.commands.export import write_onnx
    from neobert.commands.options import deprecated

    deprecated("neobert", "export-onnx", "export --model MODEL --onnx (with --out DIR: a new folder)")
    return write_onnx(args.model, args.out, args.int8)
