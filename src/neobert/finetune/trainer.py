"""The fine-tuning loop: AdamW, warmup then linear decay, evaluation every n steps, early stopping, the best
model kept, resume from the last checkpoint, predictions and a results JSON.

Layout of the output folder:
    best/step-XXXXXXXX, best/latest   the best model so far (`from_pretrained` reads it), written atomically
    checkpoints/step-XXXXXXXX         the last state of the run (model, optimiser, schedule, loop), for resume
    predictions-<split>.jsonl         the best model's predictions on each validation split
    results.json                      settings, label space, evaluation history, best metrics, speed
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neobert.files import write_bytes_atomically, write_json_atomically
from neobert.finetune import metrics as task_metrics
from neobert.finetune.data import Encoded, LabelSpace, collate, epoch_order, eval_batches, real_tokens
from neobert.run_lock import hold_folder
from neobert.run_settings import SETTINGS_FILE, check_same_run, record_run
from neobert.train.checkpoint import (
    RankState,
    apply_retention,
    find_latest_good,
    read_checkpoint,
    restore_rank_state,
    save_checkpoint,
)
from neobert.train.metrics import ConsoleProgress
from neobert.train.optim import LRSchedule, build_scheduler

DEFAULT_METRIC = {"single": "accuracy", "regression": "pearson", "multi": "f1_micro", "token": "f1"}


@dataclass
class FinetuneSettings:
    """Defaults follow the released GLUE code (spec D.1): AdamW β (0.9, 0.95), ε 1e-8, 6% warmup, then
    linear decay to 10% of the peak over 90% of the steps, evaluation every min(500, steps/epoch // 10)
    steps, early stopping after 15 evaluations without improvement."""

    lr: float = 2e-5
    batch_size: int = 16
    eval_batch_size: int = 32
    weight_decay: float = 0.01
    epochs: float = 10.0
    max_steps: int | None = None
    warmup_fraction: float = 0.06
    eval_every: int | None = None
    patience: int = 15
    max_length: int = 512
    seed: int = 0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    metric: str | None = None
    classifier_dropout: float = 0.1
    packed: bool = True  # NeoBERT models take each batch as one packed row (other models are padded)
    progress: bool = True
    keep_checkpoints: bool = True

    def __post_init__(self) -> None:
        """Settings that cannot train (a batch of 0, patience 0, a NaN learning rate) refused before any work,
        named by their command-line flags."""
        problems = []
        for name in ("batch_size", "eval_batch_size", "patience"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 3:
            problems.append(f"--max-length must leave room for [CLS], a token and [SEP] (3), got {self.max_length}")
        if self.max_steps is None and not (math.isfinite(self.epochs) and self.epochs > 0):
            problems.append(f"--epochs must be a positive number, got {self.epochs}")
        for name in ("lr", "weight_decay"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                problems.append(f"--{name.replace('_', '-')} must be a finite number >= 0, got {getattr(self, name)}")
        for name in ("warmup_fraction", "classifier_dropout"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class TaskData:
    """Encoded splits; the first validation split is the one the metric is selected on."""

    train: Encoded
    validation: dict[str, Encoded]
    space: LabelSpace
    pad_id: int
    validation_texts: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class FinetuneResult:
    best_metric: float
    best_step: int
    best_metrics: dict[str, float]
    steps: int
    stopped_early: bool
    model_dir: Path
    results_file: Path


def plan_steps(train_size: int, settings: FinetuneSettings) -> tuple[int, int, int]:
    """(steps per epoch, total steps, evaluate every n steps)."""
    per_epoch = max(1, math.ceil(train_size / settings.batch_size))
    total = settings.max_steps or max(1, math.ceil(per_epoch * settings.epochs))
    every = settings.eval_every or max(1, min(500, per_epoch // 10))
    return per_epoch, total, every


def optimizer_for(model: torch.nn.Module, settings: FinetuneSettings) -> torch.optim.AdamW:
    # The released code exempts only names with "bias" or "LayerNorm.weight": RMSNorm weights are decayed.
    decayed, exempt = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (exempt if "bias" in name or "LayerNorm.weight" in name else decayed).append(parameter)
    groups = [{"params": decayed, "weight_decay": settings.weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=tuple(settings.betas), eps=settings.eps)


def packs(model: torch.nn.Module, settings: FinetuneSettings) -> bool:
    """Whether batches go to this model packed: asked for, and a NeoBERT model (which takes `cu_seqlens`)."""
    return settings.packed and getattr(getattr(model, "config", None), "model_type", None) == "neobert"


@torch.no_grad()
def predict(
    model: torch.nn.Module, data: Encoded, space: LabelSpace, batch_size: int, pad_id: int, packed: bool = False
) -> list[Any]:
    """Per example: a class id, a number, a 0/1 vector (multi-label) or a list of tag ids on scored tokens."""
    was_training = model.training
    model.eval()
    out: list[Any] = [None] * len(data)
    try:
        for indices, batch in eval_batches(data, batch_size, pad_id, space.problem, packed):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            logits = model(**inputs).logits.float()
            if space.problem == "token":
                if packed:  # one row: split it back into examples
                    sizes = [len(data.input_ids[i]) for i in indices]
                    pieces = zip(logits[0].split(sizes), batch["labels"][0].split(sizes), strict=True)
                else:
                    pieces = zip(logits, batch["labels"], strict=True)
                for index, (row_logits, row_labels) in zip(indices, pieces, strict=True):
                    out[index] = row_logits[row_labels != -100].argmax(-1).tolist()
                continue
            for row, index in enumerate(indices):
                if space.problem == "single":
                    out[index] = int(logits[row].argmax())
                elif space.problem == "regression":
                    out[index] = float(logits[row, 0])
                else:
                    out[index] = (logits[row] > 0).int().tolist()
    finally:
        model.train(was_training)
    return out


def score(space: LabelSpace, targets: list[Any], predictions: list[Any]) -> dict[str, float]:
    if space.problem == "single":
        return task_metrics.classification_metrics(targets, predictions, space.num_labels)
    if space.problem == "regression":
        return task_metrics.regression_metrics(targets, predictions)
    if space.problem == "multi":
        return task_metrics.multilabel_metrics(np.asarray(targets), np.asarray(predictions))
    gold = [[space.names[t] for t in row if t != -100] for row in targets]
    return task_metrics.token_metrics(gold, [[space.names[p] for p in row] for row in predictions])


def metric_names(data: TaskData) -> list[str]:
    """The names `evaluate_splits` reports for this task, from scoring the gold labels against themselves."""
    names = []
    for name, split in data.validation.items():
        targets = split.targets
        guesses = [[t for t in row if t != -100] for row in targets] if data.space.problem == "token" else targets
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant column's correlation warns; only the names count here
            keys = score(data.space, targets, guesses)
        names += [f"{name}_{key}" if len(data.validation) > 1 else key for key in keys]
    return names


def evaluate_splits(model, data: TaskData, settings: FinetuneSettings) -> tuple[dict[str, float], dict[str, list]]:
    """Metrics on every validation split; with several splits (MNLI) names are prefixed by the split."""
    results, predictions = {}, {}
    for name, split in data.validation.items():
        predicted = predict(model, split, data.space, settings.eval_batch_size, data.pad_id, packs(model, settings))
        metrics = score(data.space, split.targets, predicted)
        prefix = f"{name}_" if len(data.validation) > 1 else ""
        results.update({prefix + key: value for key, value in metrics.items()})
        predictions[name] = predicted
    return results, predictions


def _label_name(space: LabelSpace, value: Any) -> Any:
    if space.problem == "single":
        return space.names[value]
    if space.problem == "multi":
        return [space.names[i] for i, on in enumerate(value) if on]
    if space.problem == "token":
        return [space.names[i] for i in value]
    return value


def write_predictions(out: Path, data: TaskData, predictions: dict[str, list]) -> None:
    for name, predicted in predictions.items():
        split = data.validation[name]
        texts = data.validation_texts.get(name, [None] * len(split))
        lines = []
        for i, value in enumerate(predicted):
            gold = split.targets[i]
            if data.space.problem == "token":
                gold = [t for t in gold if t != -100]
            record = {"index": i, "text": texts[i], "label": _label_name(data.space, gold)}
            record["prediction"] = _label_name(data.space, value)
            lines.append(json.dumps(record))
        write_bytes_atomically(out / f"predictions-{name}.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))


def finetune(
    model_factory: Callable[[], torch.nn.Module],
    data: TaskData,
    settings: FinetuneSettings,
    out: str | os.PathLike,
    extra_results: dict[str, Any] | None = None,
    restart: bool = False,
    origin: dict[str, Any] | None = None,
) -> FinetuneResult:
    """Train, select on the validation metric, keep the best model; resumes when `out` holds a checkpoint of
    the same run (same settings, data and `origin`, e.g. the starting model's digest; RunMismatch otherwise),
    and `restart` clears an earlier run first. One process at a time writes `out` (FolderInUse otherwise)."""
    with hold_folder(out, "--out"):
        if restart:
            clear_run(out)
        return _finetune(
            model_factory, data, settings, Path(out), extra_results, run_fingerprint(data, settings, origin)
        )


def _split_digest(split: Encoded) -> str:
    digest = hashlib.sha256()
    lengths = np.fromiter((len(row) for row in split.input_ids), dtype=np.int64, count=len(split))
    digest.update(lengths.tobytes())
    digest.update(np.fromiter(itertools.chain.from_iterable(split.input_ids), dtype=np.int64).tobytes())
    digest.update(json.dumps(split.targets).encode("utf-8"))
    return digest.hexdigest()


# Settings that change what is computed; progress bars, checkpoint keeping and the evaluation batch do not.
UNRECORDED = ("progress", "keep_checkpoints", "eval_batch_size")


def run_fingerprint(data: TaskData, settings: FinetuneSettings, origin: dict[str, Any] | None = None) -> dict:
    """What makes two runs the same run: the settings, the label space, the encoded data, where it started."""
    recorded = {key: value for key, value in asdict(settings).items() if key not in UNRECORDED}
    splits = {"train": _split_digest(data.train)} | {
        f"validation {n}": _split_digest(s) for n, s in data.validation.items()
    }
    return {"settings": recorded, "label_space": data.space.as_dict(), "data": splits, **(origin or {})}


def _finetune(
    model_factory: Callable[[], torch.nn.Module],
    data: TaskData,
    settings: FinetuneSettings,
    out: Path,
    extra_results: dict[str, Any] | None,
    fingerprint: dict[str, Any],
) -> FinetuneResult:
    metric_name = settings.metric or DEFAULT_METRIC[data.space.problem]
    if len(data.validation) > 1 and "_" not in metric_name:
        metric_name = f"{next(iter(data.validation))}_{metric_name}"
    known = metric_names(data)
    if metric_name not in known:  # before any training: a typo must not cost the first evaluation interval
        raise ValueError(f"--metric {metric_name!r} is not a metric of this task; choose one of {', '.join(known)}")
    previous = find_latest_good(out / "checkpoints")
    if previous is None:
        clear_run(out)  # results left by an earlier, finished run must not pass for this run's
        record_run(out, fingerprint)
    else:
        check_same_run(out, fingerprint)  # before any model is built
    per_epoch, total, every = plan_steps(len(data.train), settings)
    torch.manual_seed(settings.seed)
    model = model_factory()
    model.train()
    optimizer = optimizer_for(model, settings)
    schedule = LRSchedule(
        warmup_steps=int(settings.warmup_fraction * total), total_steps=total, kind="linear", final_fraction=0.1
    )
    scheduler = build_scheduler(optimizer, schedule)
    loop = {"step": 0, "best": -math.inf, "best_step": 0, "best_metrics": {}, "stale": 0, "history": [], "tokens": 0}
    if previous is not None:
        saved = read_checkpoint(previous)
        model.load_state_dict(saved.model_state, strict=False)
        optimizer.load_state_dict(saved.trainer_state["optimizer"])
        scheduler.load_state_dict(saved.trainer_state["scheduler"])
        loop = dict(saved.trainer_state["loop"])
        restore_rank_state(saved.rank_state)
    progress = ConsoleProgress(total, initial=loop["step"], enabled=settings.progress)
    if previous is not None:
        progress.message(f"resuming from {previous} (step {loop['step']})")
    stopped_early = loop["stale"] >= settings.patience
    packed = packs(model, settings)
    train_seconds = 0.0
    start_tokens = loop["tokens"]
    while loop["step"] < total and not stopped_early:
        epoch, position = divmod(loop["step"] * settings.batch_size, per_epoch * settings.batch_size)
        order = epoch_order(len(data.train), settings.seed, epoch)
        indices = order[position : position + settings.batch_size]
        batch = collate(data.train, indices, data.pad_id, data.space.problem, packed)
        started = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        train_seconds += time.perf_counter() - started
        loop["tokens"] += real_tokens(batch)
        loop["step"] += 1
        progress.update(1, {"loss": float(loss.detach()), "best": loop["best"]})
        if loop["step"] % every and loop["step"] != total:
            continue
        metrics, _ = evaluate_splits(model, data, settings)
        current = metrics[metric_name]
        loop["history"].append({"step": loop["step"], "loss": float(loss.detach()), **metrics})
        if current > loop["best"]:
            loop.update(best=current, best_step=loop["step"], best_metrics=metrics, stale=0)
            _save_best(out / "best", loop["step"], model)
        else:
            loop["stale"] += 1
        stopped_early = loop["stale"] >= settings.patience
        if settings.keep_checkpoints:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "loop": loop}
            save_checkpoint(out / "checkpoints", loop["step"], model, state, [RankState.capture()])
            apply_retention(out / "checkpoints", keep_last=1)
    progress.close()
    best_dir = (out / "best" / "latest").resolve()
    best_model = type(model).from_pretrained(best_dir)
    _, predictions = evaluate_splits(best_model, data, settings)
    write_predictions(out, data, predictions)
    results = {
        "settings": asdict(settings),
        "label_space": data.space.as_dict(),
        "metric": metric_name,
        "best_metric": loop["best"],
        "best_step": loop["best_step"],
        "best_metrics": loop["best_metrics"],
        "steps": loop["step"],
        "total_steps": total,
        "eval_every": every,
        "stopped_early": stopped_early,
        "train_examples": len(data.train),
        "train_tokens_per_second": (loop["tokens"] - start_tokens) / train_seconds if train_seconds else None,
        "history": loop["history"],
        "best_model": str(best_dir),
        **(extra_results or {}),
    }
    write_json_atomically(out / "results.json", results)
    return FinetuneResult(
        best_metric=loop["best"],
        best_step=loop["best_step"],
        best_metrics=loop["best_metrics"],
        steps=loop["step"],
        stopped_early=stopped_early,
        model_dir=best_dir,
        results_file=out / "results.json",
    )


def _save_best(root: Path, step: int, model: torch.nn.Module) -> None:
    save_checkpoint(root, step, model, {}, [RankState.capture()])
    apply_retention(root, keep_last=1)


def clear_run(out: str | os.PathLike) -> None:
    """Forget a previous run in `out` (its state, best model, results and settings) so the next one starts
    from scratch."""
    out = Path(out)
    for name in ("checkpoints", "best"):
        shutil.rmtree(out / name, ignore_errors=True)
    for path in [out / "results.json", out / SETTINGS_FILE, *out.glob("predictions-*.jsonl")]:
        path.unlink(missing_ok=True)
