"""`neobert encode --model DIR --input docs.jsonl|txt --out docs.npy`: one embedding per text, in order."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

# Bad texts, options or model folders (see neobert.cli.exit_code_of; a missing openvino is mapped there too).
USER_ERRORS = (ValueError, TypeError, FileNotFoundError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from neobert.commands.options import add_model_option, add_out_option

    add_model_option(parser, "a model folder (e.g. what `neobert export` wrote)")
    parser.add_argument("--input", required=True, help="texts: .txt (one per line) or .jsonl (see --text-field)")
    add_out_option(parser, ".npy file to write, shape (texts, dim)", ("--output",), required=True)
    parser.add_argument("--text-field", default="text", help="the JSON Lines field holding the text")
    parser.add_argument(
        "--pooling",
        default=None,
        help="mean, cls or max (default: the folder's sentence-transformers pooling, else mean)",
    )
    parser.add_argument("--prompt", default=None, help='text put before every input, e.g. "query: "')
    parser.add_argument("--prompt-name", default=None, help="a prompt stored with the model, e.g. query")
    parser.add_argument("--batch-size", type=int, default=64, help="texts a forward pass")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per text (default: the model's)")
    parser.add_argument("--output-dim", type=int, default=None, help="keep the first N dimensions")
    parser.add_argument("--precision", default="float32", help="float32, int8 or binary")
    parser.add_argument("--no-normalize", action="store_true", help="leave vectors at their pooled length")
    parser.add_argument(
        "--backend",
        default="torch",
        help="torch, onnx, onnx-int8, openvino, openvino-bf16 or openvino-int8 (all but torch need onnx/model.onnx / "
        "onnx/model_qint8.onnx in --model, see export --onnx; onnx-int8 runs onnx/model_qint8_avx512_vnni.onnx instead "
        "on CPUs with VNNI; openvino needs pip install 'neobert[openvino]')",
    )


def read_texts(path: Path, text_field: str) -> list[str]:
    """One text a line of a .txt file, or the `text_field` of each JSON Lines record; every problem named
    with the file and line."""
    from neobert.text_files import utf8_lines

    lines = utf8_lines(path)
    if path.suffix != ".jsonl":
        return lines
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise ValueError(f"{path}:{number}: no string field {text_field!r}")
        texts.append(record[text_field])
    return texts


def check_output(path: Path) -> None:
    """Before any encoding: the vectors must have somewhere to go."""
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; name the .npy file to write")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"--out {path}: {parent} is a file, not a folder")
    if parent is not None and not os.access(parent, os.W_OK):
        raise ValueError(f"--out {path}: {parent} is not writable")


def save_npy_atomically(path: Path, array) -> None:
    import numpy as np

    from neobert.files import publish

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".npy", delete=False) as tmp:
        try:
            np.save(tmp, array)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)  # a disk that filled up keeps no half-written temporary
            raise
    publish(tmp.name, path)  # the umask's permissions, not the temporary file's 0600


def run(args: argparse.Namespace) -> int:
    from neobert.embed import encode
    from neobert.errors import write_failure

    check_output(Path(args.out))
    texts = read_texts(Path(args.input), args.text_field)
    vectors = encode(
        args.model,
        texts,
        pooling=args.pooling,
        normalize=not args.no_normalize,
        prompt=args.prompt,
        prompt_name=args.prompt_name,
        batch_size=args.batch_size,
        max_length=args.max_length,
        output_dim=args.output_dim,
        precision=args.precision,
        backend=args.backend,
    )
    try:
        save_npy_atomically(Path(args.out), vectors)
    except OSError as error:  # any fault writing the vectors: 4 for a full disk, else 2 (as `neobert pretrain`)
        raise write_failure(error, f"--out {args.out}") from error
    print(f"wrote {args.out}: {vectors.shape[0]} vectors of {vectors.shape[-1]} ({vectors.dtype})")
    return 0
