"""GLUE tasks and their readers: the original GLUE folder layout (TSV files) or `datasets` (`nyu-mll/glue`)."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from neobert.finetune.data import Examples, FinetuneDataError, LabelSpace
from neobert.text_files import TextEncodingError, check_utf8


@dataclass(frozen=True)
class GlueTask:
    """Where a task's columns are: a header name, or a column index for CoLA's header-less files."""

    name: str
    display: str
    folder: str
    text: str | int
    label: str | int
    pair: str | int | None = None
    labels: tuple[str, ...] | None = ("0", "1")  # None: regression
    header: bool = True
    dev_files: tuple[tuple[str, str], ...] = (("validation", "dev.tsv"),)
    hf_text: str = "sentence"
    hf_pair: str | None = None
    hf_dev_splits: tuple[tuple[str, str], ...] = (("validation", "validation"),)

    def label_space(self) -> LabelSpace:
        if self.labels is None:
            return LabelSpace(problem="regression")
        return LabelSpace(problem="single", names=list(self.labels))


NLI = ("entailment", "not_entailment")
TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask("cola", "CoLA", "CoLA", text=3, label=1, header=False),
        GlueTask("sst2", "SST-2", "SST-2", text="sentence", label="label"),
        GlueTask("mrpc", "MRPC", "MRPC", "#1 String", "Quality", "#2 String", hf_text="sentence1", hf_pair="sentence2"),
        GlueTask(
            "stsb", "STS-B", "STS-B", "sentence1", "score", "sentence2", None, hf_text="sentence1", hf_pair="sentence2"
        ),
        GlueTask(
            "qqp", "QQP", "QQP", "question1", "is_duplicate", "question2", hf_text="question1", hf_pair="question2"
        ),
        GlueTask(
            "mnli",
            "MNLI",
            "MNLI",
            "sentence1",
            "gold_label",
            "sentence2",
            ("entailment", "neutral", "contradiction"),
            dev_files=(("matched", "dev_matched.tsv"), ("mismatched", "dev_mismatched.tsv")),
            hf_text="premise",
            hf_pair="hypothesis",
            hf_dev_splits=(("matched", "validation_matched"), ("mismatched", "validation_mismatched")),
        ),
        GlueTask("qnli", "QNLI", "QNLI", "question", "label", "sentence", NLI, hf_text="question", hf_pair="sentence"),
        GlueTask("rte", "RTE", "RTE", "sentence1", "label", "sentence2", NLI, hf_text="sentence1", hf_pair="sentence2"),
        GlueTask("wnli", "WNLI", "WNLI", "sentence1", "label", "sentence2", hf_text="sentence1", hf_pair="sentence2"),
    )
}
ALIASES = {"sst-2": "sst2", "sst": "sst2", "sts-b": "stsb", "sts": "stsb"}


def resolve_tasks(names: str | None) -> list[GlueTask]:
    """Tasks from a comma list (case-insensitive; "sst-2" and "sts-b" accepted); default: the paper's eight."""
    if not names:
        return [TASKS[n] for n in ("mnli", "qnli", "qqp", "rte", "sst2", "mrpc", "cola", "stsb")]
    chosen = []
    for raw in names.split(","):
        key = ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if key not in TASKS:
            raise ValueError(f"unknown GLUE task {raw.strip()!r}; choose from {', '.join(TASKS)}")
        chosen.append(TASKS[key])
    return chosen


def _read_tsv(path: Path, task: GlueTask) -> Examples:
    if not path.is_file():
        raise FinetuneDataError(f"{path}: missing (the original GLUE layout has {task.folder}/{path.name})")
    try:
        text = check_utf8(path, path.read_bytes())
    except TextEncodingError as error:
        raise FinetuneDataError(str(error)) from None
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise FinetuneDataError(f"{path}: empty (the original GLUE layout has a row per example)")
    if task.header:
        header = [name.strip() for name in rows[0]]
        wanted = [c for c in (task.text, task.pair, task.label) if c is not None]
        absent = [c for c in wanted if c not in header]
        if absent:
            raise FinetuneDataError(f"{path}: no column {', '.join(map(repr, absent))} in header {header}")
        where = {c: header.index(c) for c in wanted}
        rows = rows[1:]
    else:
        where = {c: c for c in (task.text, task.pair, task.label) if c is not None}
    texts, pairs, labels = [], [], []
    for number, row in enumerate(rows, start=2 if task.header else 1):
        if len(row) <= max(where.values()):
            raise FinetuneDataError(f"{path}:{number}: {len(row)} columns, fewer than {task.name} needs")
        texts.append(row[where[task.text]])
        if task.pair is not None:
            pairs.append(row[where[task.pair]])
        labels.append(row[where[task.label]])
    return Examples(texts=texts, labels=labels, pairs=pairs if task.pair is not None else None, source=str(path))


def _from_datasets(source: str, task: GlueTask, split: str) -> Examples:
    import datasets

    path = Path(source[3:] if source.startswith("hf:") else source)
    if path.is_dir():  # a `save_to_disk` folder per task, as `datasets` writes nyu-mll/glue's configs
        loaded = datasets.load_from_disk(str(path / task.name))[split]
    else:
        try:
            loaded = datasets.load_dataset(str(path), task.name, split=split)
        except Exception as error:  # offline, unknown name, no such config: each a different type
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise FinetuneDataError(
                f"--data {source}: could not load GLUE task {task.name} from the hub ({type(error).__name__}: "
                f"{first}); a local folder must exist, and a hub dataset is named hf:NAME, e.g. hf:nyu-mll/glue"
            ) from None
    rows = [row for row in loaded if row["label"] != -1]  # GLUE test splits carry no labels
    names = task.labels
    return Examples(
        texts=[row[task.hf_text] for row in rows],
        pairs=[row[task.hf_pair] for row in rows] if task.hf_pair else None,
        labels=[row["label"] if names is None else names[row["label"]] for row in rows],
        source=f"{source}:{task.name}:{split}",
    )


def is_glue_folder(data: str | os.PathLike) -> bool:
    path = Path(data)
    return path.is_dir() and any((path / task.folder).is_dir() for task in TASKS.values())


def check_data_source(data: str | os.PathLike) -> None:
    """A --data that names no folder here and is not a hub name (`hf:NAME`, or the `org/name` form) is a
    mistyped folder: refused at once, instead of minutes of hub lookups and a traceback."""
    from neobert.tokenizer import looks_like_a_path

    text = str(data)
    if text.startswith("hf:") or Path(text).exists():
        return
    if looks_like_a_path(text) or len(Path(text).parts) != 2:
        raise FinetuneDataError(f"--data {text}: no such folder (a hub dataset is named hf:NAME, e.g. hf:nyu-mll/glue)")


def read_task(data: str | os.PathLike, task: GlueTask) -> tuple[Examples, dict[str, Examples]]:
    """(train, {validation name: examples}) from a GLUE folder, a saved `datasets` folder or `hf:nyu-mll/glue`."""
    if is_glue_folder(data):
        folder = Path(data) / task.folder
        train = _read_tsv(folder / "train.tsv", task)
        return train, {name: _read_tsv(folder / file, task) for name, file in task.dev_files}
    source = str(data)
    train = _from_datasets(source, task, "train")
    return train, {name: _from_datasets(source, task, split) for name, split in task.hf_dev_splits}
