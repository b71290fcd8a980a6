"""Loading a model folder (NeoBERT or any transformers encoder) with a fresh task head, and its tokenizer."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

import neobert.model  # noqa: F401  (registers "neobert" with the Auto classes)
from neobert.errors import UserError
from neobert.finetune.data import LabelSpace
from neobert.tokenizer import load_tokenizer
from neobert.train.checkpoint import CheckpointError, resolve_checkpoint, verify_model_folder

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
_PROBLEM_TYPES = {
    "single": "single_label_classification",
    "multi": "multi_label_classification",
    "regression": "regression",
}


class ModelFolderError(UserError, FileNotFoundError):
    """A path that holds no loadable model."""


def model_folder(path: str | os.PathLike) -> Path:
    """The folder holding config.json and weights: a model folder, a checkpoint, a `latest` pointer or a
    pre-training `checkpoints` folder (its newest good checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise ModelFolderError(f"{path}: no such model folder")
    with contextlib.suppress(CheckpointError, OSError):
        path = resolve_checkpoint(path, "marker")
    if path.is_dir() and (path / "checkpoints").is_dir() and not (path / "config.json").is_file():
        with contextlib.suppress(CheckpointError, OSError):
            path = resolve_checkpoint(path / "checkpoints", "marker")
    if not (path / "config.json").is_file() or not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelFolderError(
            f"{path}: no model here (expected config.json and model.safetensors, as `save_pretrained` or "
            "`neobert export` writes them, or a pre-training checkpoint)"
        )
    verify_model_folder(path)
    return path


def tokenizer_for(folder: Path, max_length: int = 4096):
    """The folder's own tokenizer when it ships one, else NeoBERT's bert-base-uncased WordPiece."""
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        tokenizer = load_tokenizer(folder, max_length)
        backend = getattr(tokenizer, "_tokenizer", None)
        if backend is not None:
            # Some tokenizer.json files switch padding/truncation on; we pad per batch and truncate ourselves.
            backend.no_padding()
            backend.no_truncation()
        return tokenizer
    return load_tokenizer(None, max_length)


def max_positions(folder: Path) -> int | None:
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "model_type", None) == "neobert":
        return None  # rotary positions: any length runs
    return getattr(config, "max_position_embeddings", None)


def load_task_model(folder: Path, space: LabelSpace, dropout: float = 0.1):
    """A model with a freshly initialised head of `space.num_labels` outputs (a head of another size in the
    folder, e.g. MNLI's three classes when fine-tuning RTE from MNLI, is replaced)."""
    labels = {} if space.problem == "regression" else {"id2label": dict(enumerate(space.names))}
    if labels:
        labels["label2id"] = {name: i for i, name in enumerate(space.names)}
    common = dict(num_labels=space.num_labels, ignore_mismatched_sizes=True, **labels)
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "model_type", None) == "neobert":
        common["classifier_dropout"] = dropout
    if space.problem == "token":
        return AutoModelForTokenClassification.from_pretrained(folder, **common)
    return AutoModelForSequenceClassification.from_pretrained(
        folder, problem_type=_PROBLEM_TYPES[space.problem], **common
    )
