"""`neobert export-onnx MODEL [--out DIR] [--int8]`: the encoder as onnx/model.onnx (dynamic batch and
length; inputs input_ids and attention_mask, outputs last_hidden_state and sentence_embedding) in the layout
Text Embeddings Inference and sentence-transformers read, for onnxruntime and `neobert encode --backend onnx`;
with --int8 also onnx/model_qint8.onnx (`--backend onnx-int8`)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model folder (e.g. what `neobert export` or `neobert contrastive` wrote)")
    parser.add_argument("--out", default=None, help="folder to write (default: onnx/model.onnx inside MODEL)")
    parser.add_argument(
        "--int8", action="store_true", help="also write onnx/model_qint8.onnx (dynamic int8 quantisation)"
    )


def run(args: argparse.Namespace) -> int:
    from neobert.onnx_export import export_onnx

    try:
        path = export_onnx(args.model, args.out, int8=args.int8)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"neobert export-onnx: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        from neobert.errors import io_failure

        line, code = io_failure("export-onnx", error, f"--out {args.out or args.model}")
        print(line, file=sys.stderr)
        return code
    from neobert.onnx_export import ONNX_INT8_FILE

    print(f"wrote {path}" + (f" and {path.parent.parent / ONNX_INT8_FILE}" if args.int8 else ""))
    return 0
