"""`neobert export --model CHECKPOINT --out FOLDER`: a folder for transformers (with or without neobert installed),
sentence-transformers and the official remote code."""

from __future__ import annotations

import argparse
import shutil

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)  # see neobert.cli.exit_code_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from neobert.commands.options import add_model_option, add_out_option, add_restart_option

    add_model_option(
        parser, "a checkpoint folder (e.g. runs/x/checkpoints/latest) or a model folder", positional_too=True
    )
    add_out_option(
        parser,
        "folder to write (required but with --onnx, which without it adds onnx/ to the --model folder itself)",
        default=None,
    )
    parser.add_argument(
        "--pooling", default=None, help="sentence-transformers pooling: mean, cls or max (default: mean)"
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer name or folder (default: bert-base-uncased)")
    add_restart_option(parser, "replace --out if it exists", ("--overwrite",))
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
        "--int8",
        action="store_true",
        help="with --onnx: also write the int8 graphs onnx/model_qint8.onnx (7-bit weights, every x86 CPU) "
        "and onnx/model_qint8_avx512_vnni.onnx (full-range weights, read on CPUs with VNNI)",
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

    from neobert.errors import UsageError, write_failure
    from neobert.export.folder import export_model

    if args.int8 and not args.onnx:
        raise UsageError("--int8 quantises the ONNX export: add --onnx")
    if args.out is None:
        return _onnx_in_place(args)
    prompts = parse_prompts(args.prompt)
    existed = Path(args.out).exists()
    out = None
    try:
        out = export_model(
            args.model,
            args.out,
            args.pooling or "mean",
            args.tokenizer,
            args.restart,
            prompts or None,
            with_code=not args.without_code,
        )
        if args.onnx:
            from neobert.export.onnx_export import export_onnx

            export_onnx(out, int8=args.int8)
    except (FileNotFoundError, FileExistsError):
        raise  # a bad input or an existing --out: exit 2, nothing written to remove
    except OSError as error:
        if out is not None and not existed:
            # The folder is complete but its ONNX step failed: remove it, so the same command can run again.
            shutil.rmtree(out, ignore_errors=True)
        raise write_failure(error, f"--out {args.out}") from error
    print(f"wrote {out}")
    return 0


def _onnx_in_place(args: argparse.Namespace) -> int:
    """`--onnx` without `--out`: onnx/ added to the --model folder itself, with the pooling it stores."""
    from neobert.errors import UsageError

    if not args.onnx:
        raise UsageError("--out is required (only --onnx may leave it out, to add onnx/ to the --model folder)")
    shaping = ("--pooling", "--tokenizer", "--restart", "--prompt", "--without-code")
    given = [flag for flag in shaping if getattr(args, flag[2:].replace("-", "_"))]
    if given:
        raise UsageError(f"{', '.join(given)} shape a new folder: give --out")
    return write_onnx(args.model, None, args.int8)


def write_onnx(model: str, out: str | None, int8: bool) -> int:
    """ONNX of a model folder, into `out` (the folder's files copied there too) or into the folder itself."""
    from neobert.errors import write_failure
    from neobert.export.onnx_export import ONNX_INT8_FILE, ONNX_INT8_VNNI_FILE, export_onnx

    try:
        path = export_onnx(model, out, int8=int8)
    except (FileNotFoundError, FileExistsError):
        raise  # a bad input or an occupied --out: exit 2
    except OSError as error:
        raise write_failure(error, f"--out {out or model}") from error
    int8_files = [path.parent.parent / name for name in (ONNX_INT8_FILE, ONNX_INT8_VNNI_FILE)] if int8 else []
    print(f"wrote {', '.join(str(p) for p in [path, *int8_files] if p.is_file())}")
    return 0
