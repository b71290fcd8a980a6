"""Shared fixtures of the data tests: the tokenizer (loaded once), small corpora written into tmp_path."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

from neobert.data.prepare import PrepareConfig, PrepareSummary, prepare
from neobert.data.sources import ReaderOptions, resolve_sources

_WORD_LIST = (
    "the of and a to in is was he for it with as his on be at by i this had not are but from or have an "
    "they which one you were her all she there would their we him been has when who will more no if out "
    "so said what up its about into than them can only other new some could time these two may then do "
    "first any my now such like our over man me even most made after also did many before must through "
    "back years where much your way well down should because each just those people how too little state "
    "good very make world still own see men work long get here between both life being under never day "
    "same another know while last might us great old year off come since against go came right used take "
    "three café naïve résumé"
)
WORDS = _WORD_LIST.split()


@functools.cache
def tokenizer():
    from neobert.tokenizer import load_tokenizer

    return load_tokenizer()


def sample_texts(count: int, seed: int = 0, long_every: int = 7, long_words: int = 1500) -> list[str]:
    """Deterministic English-like documents of varied length; every `long_every`-th is long."""
    rng = random.Random(seed)
    texts = []
    for index in range(count):
        words = long_words if long_every and index % long_every == long_every - 1 else rng.randint(3, 120)
        sentence = " ".join(rng.choice(WORDS) for _ in range(words))
        texts.append(f"Document {index}. {sentence.capitalize()}.")
    return texts


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for number, text in enumerate(texts):
            handle.write(json.dumps({field: text, "id": number}) + "\n")
    return path


def prepare_files(specs: list[str | Path], out: Path, **settings) -> PrepareSummary:
    """`prepare` with quiet defaults for tests (one process unless told otherwise)."""
    reader = ReaderOptions(**settings.pop("reader", {}))
    settings.setdefault("workers", 1)
    settings.setdefault("progress", False)
    config = PrepareConfig(reader=reader, **settings)
    return prepare(resolve_sources([str(s) for s in specs], reader), out, tokenizer(), config)


def content_ids(texts: list[str]) -> list[list[int]]:
    """What the transformers tokenizer gives, without special tokens: the reference for shards."""
    return tokenizer()(texts, add_special_tokens=False)["input_ids"]


def files_of(folder: Path) -> dict[str, bytes]:
    """The files of a folder; a corpus's record of checked checksums (written by readers) is left out."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "verified.json"
    }
