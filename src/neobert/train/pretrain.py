"""The pre-training loop: one explicit loop over optimiser steps, from one CPU to many GPUs.

It is written against a minimal loader protocol (`trainer.Loader`), so it knows nothing of files: the caller
passes a factory that builds the loader for this process. `_run` reads top to bottom and takes every decision
of a run in sight: where it starts, then after each step whether to stop (the schedule complete, the job's
`stop_at_step`, a signal or the hours spent), to log, to evaluate and to save (`train.*_every`), and at the end
its last checkpoint and evaluation. What it calls: `Trainer` (trainer.py) takes a step, saves, evaluates;
`RunBudget` (budget.py) is the budget, the clock and the wall-clock schedule's progress; resume.py restores a
run's state from its own checkpoint or a phase's source.
"""

from __future__ import annotations

import gc
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neobert.model.heads import NeoBERTForMaskedLM
from neobert.train import distributed as dist_utils
from neobert.train.budget import RunBudget
from neobert.train.checkpoint import find_latest_good
from neobert.train.config import PretrainConfig
from neobert.train.metrics import ConsoleProgress, MetricsLogger, mfu, plot_loss_curve
from neobert.train.phase import PHASE_FILE, PhaseStart, check_phase_folder, write_phase_record
from neobert.train.resume import plan_start, resume_run, start_phase
from neobert.train.trainer import EvalFactory, Loader, LoaderFactory, Trainer, TrainingDiverged, build_model

__all__ = [
    "EvalFactory",
    "Loader",
    "LoaderFactory",
    "PretrainResult",
    "StopSignals",
    "Trainer",
    "TrainingDiverged",
    "build_model",
    "pretrain",
]


@dataclass
class PretrainResult:
    status: str  # "completed", "interrupted" (signal), "paused" (stop_at_step) or "data_exhausted"
    step: int
    output_dir: Path
    checkpoint: Path | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    # How much of the learning-rate schedule the run covered (1.0: it ended at the floor), and the rate of its
    # last step.
    schedule_fraction: float = 0.0
    final_lr: float = 0.0
    precision: dict[str, Any] = field(default_factory=dict)  # what the run computed in, and why
    # The branch points this run descends from, oldest first (phase.py): name, carry, source, step,
    # manifest_sha256.
    phases: list[dict[str, Any]] = field(default_factory=list)


class StopRequested(Exception):
    """A signal during the final evaluation, when the checkpoint is already saved."""


class StopSignals:
    """SIGINT / SIGTERM ask the loop to save and stop at the next step boundary; a second one aborts."""

    def __init__(self):
        self.received: int | None = None
        self.raise_at_once = False  # after the final checkpoint: a signal ends the evaluation there and then
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second signal {number}: stopping without a checkpoint")
        self.received = number
        if self.raise_at_once:
            raise StopRequested(number)

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def pretrain(
    config: PretrainConfig,
    make_loader: LoaderFactory,
    make_eval_batches: EvalFactory | None = None,
    resume: bool | str = False,
    stop_at_step: int | None = None,
    model: NeoBERTForMaskedLM | None = None,
    restart: bool = False,
) -> PretrainResult:
    """Train until the budget is spent. `resume=True` continues from the run's latest good checkpoint
    (starting afresh when there is none); a path resumes from that checkpoint. `stop_at_step` checkpoints
    and returns at that step without changing the schedule (a job that must end before the run does).
    `restart` deletes the run that `system.output_dir` holds first (`resume.clear_run`)."""
    if restart and resume is not False:
        raise ValueError("--restart starts afresh and --resume continues: give one of them")
    context = dist_utils.init_distributed(config.system.device, config.system.backend)
    trainer = None
    try:
        check_phase_folder(config)
        with dist_utils.hold_output_folder(config.system.output_dir, context, "system.output_dir"):
            start, model = plan_start(config, resume, restart, model, context)
            trainer = Trainer(config, make_loader, make_eval_batches, context, model)
            return _run(trainer, resume, stop_at_step, start)
    finally:
        if trainer is not None and hasattr(trainer.loader, "close"):
            trainer.loader.close()  # data worker processes stop here, on success or error, not at interpreter exit
        # DDP's reducer goes while the process group is still registered. Freed after it, the reducer drops
        # the group's last reference with the GIL held, which joins gloo's threads; one of them may be waiting
        # for the GIL to free a finished collective's tensors, and neither moves (seen under load: a finished
        # torchrun worker that never exited).
        trainer = None
        gc.collect()
        dist_utils.teardown(context)


def _run(trainer: Trainer, resume: bool | str, stop_at_step: int | None, start: PhaseStart | None) -> PretrainResult:
    """The run, top to bottom: its start, the step loop with every decision it takes, its end."""
    config, context, system, train = trainer.config, trainer.context, trainer.config.system, trainer.config.train
    resumed_from = resume_run(trainer, resume) if resume else None
    if resumed_from is None and start is not None:
        start_phase(trainer, start)
    if context.is_main:
        trainer.output_dir.mkdir(parents=True, exist_ok=True)
        (trainer.output_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        if start is not None and resumed_from is None:
            write_phase_record(trainer.output_dir, trainer.phases)
    logger = MetricsLogger(
        trainer.output_dir,
        system.log_sinks,
        context.is_main,
        system.wandb_project,
        config.resolved(),
        resumed_at=trainer.step if resumed_from is not None or start is not None else None,
    )
    progress = ConsoleProgress(trainer.schedule.total_steps, trainer.step, system.progress_bar, not context.is_main)
    budget = RunBudget(config.budget, trainer.schedule, trainer.elapsed_before, trainer.step)
    log = _RunLog(trainer, logger, progress, budget)
    _announce_start(progress, trainer, resume, resumed_from, start)
    last_saved_step = trainer.step if trainer.last_good_step is not None else None
    try:
        with StopSignals() as signals:
            while True:
                # Stop before the next step: the schedule is complete, the job's last step is reached, or (all
                # ranks agreeing) a signal came or the hours are spent.
                if budget.schedule_complete(trainer.step):
                    status = "completed"
                    break
                if stop_at_step is not None and trainer.step >= stop_at_step:
                    status = "paused"
                    break
                agreed = _agreed_stop(trainer, budget, signals)
                if agreed is not None:
                    status = agreed
                    break
                try:
                    trainer.train_step()
                except StopIteration:
                    progress.message(f"the training data ran out at step {trainer.step}")
                    status = "data_exhausted"
                    break
                log.stepped()
                if budget.by_clock:  # an hours budget sets the schedule's progress after every step
                    refined = budget.follow(trainer.step, context.enabled)
                    if refined is not None:
                        progress.set_total(refined.estimate)
                        if refined.first:
                            progress.message(refined.describe())
                    trainer.refresh_lr()
                step = trainer.step
                if step % train.log_every == 0:
                    log.train_window()
                if step % train.eval_every == 0:
                    log.evaluation()
                if step % train.checkpoint_every == 0:
                    trainer.save(budget.elapsed())
                    last_saved_step = step
            # The end: a checkpoint of the last step (unless it has one), then the held-out evaluation of it.
            checkpoint = None
            if trainer.step != last_saved_step:
                checkpoint = trainer.save(budget.elapsed())
            elif trainer.last_good_step is not None:
                checkpoint = find_latest_good(trainer.checkpoint_root)
            if status == "completed" and log.last_eval.get("step") != trainer.step:
                status = _final_evaluation(log, signals)
        if log.pending_window:
            log.train_window()
        if status == "interrupted":
            progress.message(f"stopped by a signal at step {trainer.step}; checkpoint saved")
        fraction, floor = trainer.schedule.fraction_reached(trainer.step), train.lr * train.floor_fraction
        progress.message(
            f"schedule: {fraction:.0%} reached by step {trainer.step}, last learning rate "
            f"{trainer.lr:.3g} (peak {train.lr:.3g}, floor {floor:.3g})"
        )
    finally:
        logger.close()
        progress.close()
    if context.is_main and "jsonl" in system.log_sinks and (log.last_metrics or log.last_eval):
        plot_loss_curve(trainer.output_dir / "metrics.jsonl", trainer.output_dir / "loss_curve.png")
    return PretrainResult(
        status,
        trainer.step,
        trainer.output_dir,
        checkpoint,
        log.last_metrics,
        log.last_eval,
        trainer.schedule.fraction_reached(trainer.step),
        trainer.lr,
        trainer.precision.as_record(),
        trainer.phases,
    )


def _agreed_stop(trainer: Trainer, budget: RunBudget, signals: StopSignals) -> str | None:
    """Stop for a signal ("interrupted") or a spent hours budget ("completed"). Ranks must agree, so with
    several processes this is decided (one small collective) only every log_every steps."""
    context = trainer.context
    if context.enabled and trainer.step % trainer.config.train.log_every:
        return None
    flags = torch.tensor([float(signals.received is not None), budget.elapsed()], device=context.device)
    interrupted, elapsed = dist_utils.all_reduce_max(flags, context).tolist()
    if interrupted:
        return "interrupted"
    return "completed" if budget.hours_spent(trainer.step, elapsed, context.enabled) else None


def _final_evaluation(log: _RunLog, signals: StopSignals) -> str:
    """The last held-out evaluation; a signal now (the checkpoint is saved) stops it, not the whole run."""
    signals.raise_at_once = True
    try:
        if signals.received is None:
            log.evaluation()
            return "completed"
    except StopRequested:
        pass
    finally:
        signals.raise_at_once = False
    log.progress.message(f"a signal stopped the final evaluation; the checkpoint of step {log.trainer.step} is saved")
    return "interrupted"


def _announce_start(
    progress: ConsoleProgress,
    trainer: Trainer,
    resume: bool | str,
    resumed_from: Path | None,
    start: PhaseStart | None,
) -> None:
    progress.message(f"precision: {trainer.precision.name}, {trainer.precision.reason}")
    if trainer.ramp.active:
        progress.message(trainer.ramp.describe())
    for skipped in trainer.skipped_on_resume:
        progress.message(f"resume: {skipped}")
    if resume is True and resumed_from is None:
        progress.message(f"resume: no checkpoint in {trainer.checkpoint_root} yet; starting from step 0")
    if resumed_from is not None:
        progress.message(f"resumed from {resumed_from} at step {trainer.step}")
        for change in trainer.changed_on_resume:
            progress.message(f"  changed since the checkpoint: {change}")
    if start is None or resumed_from is not None:
        return
    label = f"phase {start.name!r}" if start.name else "phase"
    progress.message(
        f"{label}: from {start.source} (step {start.step}, manifest sha256 {start.manifest_sha256[:16]}...), "
        f"carrying its {start.carry}; recorded in {trainer.output_dir / PHASE_FILE}"
    )
    if start.carry == "state":
        schedule = trainer.schedule
        if schedule.kind == "wsd" and schedule.total_steps is not None:
            decay = schedule.wsd_decay_start(schedule.total_steps)
            progress.message(f"  WSD decay from step {decay} to step {schedule.total_steps}")
        for change in trainer.changed_on_resume:
            if not change.startswith(("phase.", "system.output_dir:")):  # those differ for every branch
                progress.message(f"  changed from the branch point: {change}")


class _RunLog:
    """What the loop logs: a window of training steps (the metrics' keys are fixed here) and a held-out
    evaluation; the loop decides when."""

    def __init__(self, trainer: Trainer, logger: MetricsLogger, progress: ConsoleProgress, budget: RunBudget):
        self.trainer, self.logger, self.progress, self.budget = trainer, logger, progress, budget
        self.window_start = budget.session_start
        self.pending_window = False  # steps taken since the last window was logged
        self.last_metrics: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}

    def stepped(self) -> None:
        self.pending_window = True
        self.progress.update(1, self.last_metrics and {"loss": self.last_metrics["train/loss"]})

    def train_window(self) -> None:
        trainer = self.trainer
        sums = trainer.metrics.read(trainer.context)
        trainer.check_finite()
        seconds = max(self.budget.now() - self.window_start, 1e-9)
        self.window_start = self.budget.now()
        self.pending_window = False
        if not sums:
            return
        trainer.tokens_seen += sums["tokens"]
        masked = max(sums["masked"], 1.0)
        efficiency = getattr(trainer.loader, "packing_efficiency", None)
        record = {
            "step": trainer.step,
            "train/loss": sums["loss_x_masked"] / masked,
            "train/accuracy": sums["correct"] / masked,
            "train/lr": trainer.lr,
            "train/grad_norm": sums["grad_norm"] / sums["steps"],
            "train/tokens_per_s": sums["tokens"] / seconds,
            "train/tokens": trainer.tokens_seen,
            "train/packing_efficiency": efficiency if efficiency is not None else sums["tokens"] / sums["slots"],
            "train/flops_per_s": sums["flops"] / seconds,
            "time/elapsed_s": self.budget.elapsed(),
            "train/schedule_fraction": trainer.schedule.fraction_reached(trainer.step),
            # The last step's global batch and mask rate (a batch warm-up or mask-rate schedule changes them).
            "train/batch_sequences": trainer.batch_sequences,
            "train/mlm_probability": trainer.mlm_probability,
        }
        utilisation = mfu(sums["flops"], seconds, trainer.peak)
        if utilisation is not None:
            record["train/mfu"] = utilisation
        self.last_metrics = record
        self.logger.log(record)

    def evaluation(self) -> None:
        record = self.trainer.evaluate()
        if record:
            self.last_eval = record
            self.logger.log(record)
            self.progress.message(
                f"step {record['step']}: held-out loss {record['eval/loss']:.4f}, "
                f"accuracy {record['eval/accuracy']:.4f}"
            )
