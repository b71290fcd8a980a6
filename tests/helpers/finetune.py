"""Small model folders and labelled files for the fine-tuning and evaluation tests."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from helpers.model import small_config
from neobert import NeoBERTForMaskedLM


def tiny_model_folder(folder: Path, **overrides) -> Path:
    """A random small NeoBERT with its MLM head, saved as `save_pretrained` writes it."""
    fields = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, max_length=128)
    fields.update(overrides)
    NeoBERTForMaskedLM(small_config(**fields)).save_pretrained(folder)
    return folder


def write_table(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def word_rows(count: int, seed: int = 0) -> list[dict]:
    """Sentences whose label is decided by one cue word (separable), padded with neutral words."""
    rng = random.Random(seed)
    filler = ["the", "a", "movie", "was", "very", "today", "it", "seemed", "quite"]
    rows = []
    for i in range(count):
        cue = "excellent" if i % 2 == 0 else "terrible"
        words = rng.sample(filler, 4) + [cue]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "pos" if i % 2 == 0 else "neg"})
    return rows
