"""From user inputs (files, columns, a model folder) to a checked `TaskData` and a fine-tuning run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig

from neobert.finetune.conll import align_labels, read_conll, tag_space
from neobert.finetune.data import (
    Columns,
    Examples,
    FinetuneDataError,
    LabelSpace,
    encode,
    infer_label_space,
    read_examples,
)
from neobert.finetune.model import max_positions, model_folder, tokenizer_for
from neobert.finetune.trainer import FinetuneSettings, TaskData

TASKS = ("sequence-classification", "token-classification")


@dataclass
class FinetuneRequest:
    model: str | os.PathLike
    train: str | os.PathLike
    validation: str | os.PathLike
    out: str | os.PathLike
    task: str = "sequence-classification"
    columns: Columns = field(default_factory=Columns)
    problem: str = "auto"
    label_separator: str = "|"
    train_split: str = "train"
    validation_split: str = "validation"
    settings: FinetuneSettings = field(default_factory=FinetuneSettings)


def effective_max_length(folder: Path, wanted: int) -> int:
    limit = max_positions(folder)
    return min(wanted, limit) if limit else wanted


def shown_texts(split: Examples) -> list[str]:
    """The texts written beside predictions; the two sides of a pair joined by ' ||| '."""
    if split.pairs is None:
        return split.texts
    return [f"{a} ||| {b}" for a, b in zip(split.texts, split.pairs, strict=True)]


def sequence_task(
    train: Examples,
    validations: dict[str, Examples],
    tokenizer,
    max_length: int,
    problem: str = "auto",
    separator: str = "|",
    space: LabelSpace | None = None,
) -> TaskData:
    """Targets and token ids of every split; `space` fixes the labels (GLUE's), else they come from `train`."""
    space = space or infer_label_space(train, problem, separator)
    # Map every split's labels before any tokenisation: an unknown validation label fails here, fast.
    train_targets = space.targets(train)
    valid_targets = {name: space.targets(split) for name, split in validations.items()}
    return TaskData(
        train=encode(train, tokenizer, max_length, train_targets),
        validation={
            name: encode(split, tokenizer, max_length, valid_targets[name]) for name, split in validations.items()
        },
        space=space,
        pad_id=tokenizer.pad_token_id,
        validation_texts={name: shown_texts(split) for name, split in validations.items()},
    )


def token_task(train_path, validation_path, tokenizer, max_length: int) -> TaskData:
    train, validation = read_conll(train_path), read_conll(validation_path)
    space = tag_space(train)
    return TaskData(
        train=align_labels(train, space, tokenizer, max_length),
        validation={"validation": align_labels(validation, space, tokenizer, max_length)},
        space=space,
        pad_id=tokenizer.pad_token_id,
        validation_texts={"validation": [" ".join(words) for words in validation.words]},
    )


def prepare(request: FinetuneRequest) -> tuple[Path, TaskData]:
    """Every check that can fail before training: the model folder, the files, columns and labels."""
    if request.task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {request.task!r}")
    folder = model_folder(request.model)
    tokenizer = tokenizer_for(folder)
    max_length = effective_max_length(folder, request.settings.max_length)
    if request.task == "token-classification":
        data = token_task(request.train, request.validation, tokenizer, max_length)
    else:
        train = read_examples(request.train, request.columns, request.train_split)
        validation = read_examples(request.validation, request.columns, request.validation_split)
        data = sequence_task(
            train, {"validation": validation}, tokenizer, max_length, request.problem, request.label_separator
        )
    check_vocabulary(folder, data)
    return folder, data


def check_vocabulary(folder: Path, data: TaskData) -> None:
    """Token ids the model has no embedding for (a tokenizer bigger than the model's vocabulary) are found
    here, naming both, rather than by the first training step."""
    vocab_size = getattr(AutoConfig.from_pretrained(folder), "vocab_size", None)
    splits = [data.train, *data.validation.values()]
    highest = max((max(row) for split in splits for row in split.input_ids if row), default=-1)
    if vocab_size is not None and highest >= vocab_size:
        raise FinetuneDataError(
            f"{folder / 'config.json'}: vocab_size is {vocab_size}, but the tokenizer gives token id {highest}; "
            "use the tokenizer the model was trained with"
        )
