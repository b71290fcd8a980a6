"""The paper's GLUE protocol (spec D.1): a grid per task, the best run on the dev set, RTE / STS-B / MRPC / QNLI
started from the best MNLI model, and the results table in the paper's layout."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from neobert.files import write_json_atomically
from neobert.finetune.glue_data import GlueTask, check_data_source, read_task
from neobert.finetune.metrics import GLUE_METRICS, glue_score
from neobert.finetune.model import load_task_model, model_folder, tokenizer_for
from neobert.finetune.run import effective_max_length, sequence_task
from neobert.finetune.trainer import FinetuneSettings, finetune, run_fingerprint
from neobert.run_lock import hold_folder, holding
from neobert.run_settings import check_same_run, model_digest


@dataclass(frozen=True)
class Grid:
    lrs: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    weight_decays: tuple[float, ...]

    def points(self) -> list[tuple[float, int, float]]:
        return list(itertools.product(self.lrs, self.batch_sizes, self.weight_decays))


GRIDS = {
    # Table 6's caption and the released launcher (60 runs a task); the paper's text lists a smaller grid.
    "paper": Grid((5e-6, 6e-6, 8e-6, 1e-5, 2e-5, 3e-5), (2, 4, 8, 16, 32), (1e-2, 1e-5)),
    "paper-text": Grid((5e-6, 6e-6, 1e-5, 2e-5, 3e-5), (4, 8, 16, 32), (1e-2, 1e-5)),
    "small": Grid((1e-5, 2e-5, 3e-5), (16, 32), (1e-2,)),
}
TRANSFER_FROM_MNLI = ("rte", "stsb", "mrpc", "qnli")
# The paper's table columns.
TABLE_ORDER = ("mnli", "qnli", "qqp", "rte", "sst2", "mrpc", "cola", "stsb")
TABLE_NAMES = {"mnli": "MNLI", "qnli": "QNLI", "qqp": "QQP", "rte": "RTE", "sst2": "SST", "mrpc": "MRPC"}
TABLE_NAMES |= {"cola": "CoLA", "stsb": "STS", "wnli": "WNLI"}


def run_name(lr: float, batch_size: int, weight_decay: float) -> str:
    return f"lr{lr:g}-bs{batch_size}-wd{weight_decay:g}"


def _task_data(task: GlueTask, data_source, tokenizer, max_length: int):
    train, validations = read_task(data_source, task)
    # The task's fixed label order (as `nyu-mll/glue` numbers them), not the order seen in the files.
    return sequence_task(train, validations, tokenizer, max_length, space=task.label_space())


def run_task(
    task: GlueTask, start_from: Path, data_source, grid: Grid, base: FinetuneSettings, out: Path, log=print
) -> dict[str, Any]:
    """Every grid point (finished ones of the same settings are read back, an interrupted one resumes, one of
    other settings or data is refused: RunMismatch); the best kept."""
    tokenizer = tokenizer_for(start_from)
    data = _task_data(task, data_source, tokenizer, effective_max_length(start_from, base.max_length))
    _, selection = GLUE_METRICS[task.name]
    runs, best = [], None
    points = grid.points()
    for number, (lr, batch_size, weight_decay) in enumerate(points, 1):
        folder = out / run_name(lr, batch_size, weight_decay)
        log(f"{task.display}: run {number}/{len(points)}, {folder.name}")
        results_file = folder / "results.json"
        settings = replace(base, lr=lr, batch_size=batch_size, weight_decay=weight_decay, metric=selection)
        origin = {"model": model_digest(start_from)}
        if results_file.is_file():
            check_same_run(folder, run_fingerprint(data, settings, origin))
            results = json.loads(results_file.read_text())
        else:
            finetune(
                lambda: load_task_model(start_from, data.space, base.classifier_dropout),
                data,
                settings,
                folder,
                origin=origin,
            )
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # resume state; the run is finished
            results = json.loads(results_file.read_text())
        scores = dict(results["best_metrics"])
        entry = {"run": folder.name, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay}
        entry |= {"selection": scores[selection], "score": glue_score(task.name, scores), "metrics": scores}
        runs.append(entry)
        if best is None or entry["selection"] > best["selection"]:
            if best is not None:
                shutil.rmtree(out / best["run"] / "best", ignore_errors=True)  # only the winner's model is kept
            best = entry
        else:
            shutil.rmtree(folder / "best", ignore_errors=True)
    summary = {
        "task": task.name,
        "started_from": str(start_from),
        "best": best,
        "best_model": str((out / best["run"] / "best" / "latest").resolve()),
        "runs": runs,
    }
    write_json_atomically(out / "summary.json", summary)
    return summary


def format_table(scores: dict[str, float], model_name: str) -> str:
    """The paper's Table 3 layout (x100, one decimal); the average over the tasks run."""
    columns = [t for t in TABLE_ORDER if t in scores] + [t for t in scores if t not in TABLE_ORDER]
    header = "| Model | " + " | ".join(TABLE_NAMES.get(t, t) for t in columns) + " | Avg |"
    rule = "|---" * (len(columns) + 2) + "|"
    values = [100 * scores[t] for t in columns]
    row = f"| {model_name} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {sum(values) / len(values):.1f} |"
    note = "" if set(TABLE_ORDER) <= set(scores) else f"\nAvg over {len(columns)} of the paper's 8 tasks."
    return "\n".join([header, rule, row]) + note + "\n"


@holding(hold_folder, lambda arguments: arguments["out"])  # one process at a time writes `out`
def run_glue(
    model: str | os.PathLike,
    data_source: str | os.PathLike,
    tasks: list[GlueTask],
    grid: Grid,
    base: FinetuneSettings,
    out: str | os.PathLike,
    mnli_model: str | os.PathLike | None = None,
    log=print,
    restart: bool = False,
) -> dict[str, Any]:
    """Every task's grid in `out/<task>`; `restart` deletes the earlier runs of the tasks asked for, once
    every task's data has been checked."""
    out = Path(out)
    check_data_source(data_source)
    pretrained = model_folder(model)
    ordered = sorted(tasks, key=lambda t: t.name != "mnli")  # MNLI first: four tasks start from its best model
    summaries: dict[str, Any] = {}
    mnli_best = model_folder(mnli_model) if mnli_model else None
    for task in ordered:
        read_task(data_source, task)  # every task's files checked before the first run starts
    if restart:
        for task in ordered:
            shutil.rmtree(out / task.name, ignore_errors=True)
    for task in ordered:
        start = pretrained
        if task.name in TRANSFER_FROM_MNLI:
            if "mnli" in summaries:
                mnli_best = Path(summaries["mnli"]["best_model"])
            if mnli_best is None:
                log(f"{task.display}: no MNLI model (run mnli too, or pass --mnli-model); starting from {pretrained}")
            else:
                start = mnli_best
        log(f"{task.display}: {len(grid.points())} runs from {start}")
        summaries[task.name] = run_task(task, start, data_source, grid, base, out / task.name, log)
        log(f"{task.display}: best {summaries[task.name]['best']['metrics']}")
    scores = {name: summary["best"]["score"] for name, summary in summaries.items()}
    table = format_table(scores, Path(model).name)
    report = {"model": str(pretrained), "grid": grid.__dict__, "scores": scores, "tasks": summaries, "table": table}
    write_json_atomically(out / "glue_results.json", report)
    (out / "glue_table.md").write_text(table, encoding="utf-8")
    return report
