"""The pre-training loop: one explicit loop over optimiser steps, from one CPU to many GPUs.

It is written against a minimal loader protocol (`trainer.Loader`), so it knows nothing of files: the caller
passes a factory that builds the loader for this process. This module decides when to stop, log, evaluate
and save; `trainer.Trainer` does the steps.
"""

from __future__ import annotations

import gc
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from neobert.model.heads import NeoBERTForMaskedLM
from neobert.train import distributed as dist_utils
from neobert.train.budget import WallClockBudget
from neobert.train.checkpoint import MODEL_FILE, CheckpointError, find_latest_good, load_model_weights
from neobert.train.config import PretrainConfig
from neobert.train.metrics import ConsoleProgress, MetricsLogger, mfu, plot_loss_curve
from neobert.train.phase import PHASE_FILE, PhaseStart, check_phase_folder, plan_phase, write_phase_record
from neobert.train.trainer import (
    EvalFactory,
    Loader,
    LoaderFactory,
    Trainer,
    TrainingDiverged,
    build_model,
    initial_model,
)

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
    `restart` deletes the run that `system.output_dir` holds first (`clear_run`)."""
    if restart and resume is not False:
        raise ValueError("--restart starts afresh and --resume continues: give one of them")
    context = dist_utils.init_distributed(config.system.device, config.system.backend)
    trainer = None
    try:
        check_phase_folder(config)
        with dist_utils.hold_output_folder(config.system.output_dir, context, "system.output_dir"):
            # A phase's source is verified before any model is built; a phase resumed from its own checkpoint
            # no longer needs it (the source run's retention may have deleted it since).
            own_root = Path(config.system.output_dir) / "checkpoints"
            if restart:
                if context.is_main:
                    clear_run(Path(config.system.output_dir))
                dist_utils.barrier(context)
            has_own = find_latest_good(own_root, "marker") is not None
            if resume is False and has_own:
                raise CheckpointError(
                    f"{own_root} already holds checkpoints of another run: resume it, pass --restart to start "
                    "afresh in it (this deletes that run), or choose another system.output_dir"
                )
            resuming_own = resume is not False and (resume is not True or has_own)
            start = None if resuming_own else plan_phase(config, context)
            if start is not None and start.carry == "weights" and model is None:
                model = _model_with_weights_of(config, Path(start.source))
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


def _model_with_weights_of(config: PretrainConfig, folder: Path) -> NeoBERTForMaskedLM:
    model = initial_model(config)
    try:
        load_model_weights(model, load_file(folder / MODEL_FILE))
    except (CheckpointError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"phase.from_checkpoint: the weights of {folder} do not fit this run's model: {first_line}"
        ) from None
    return model


# What a pre-training run writes in its folder (the lock stays: it is held while the folder is cleared).
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.superseded.jsonl", "loss_curve.png", PHASE_FILE)
RUN_FOLDERS = ("checkpoints", "tensorboard", "wandb")


def clear_run(folder: Path) -> None:
    """Forget the run in `folder` (checkpoints, metrics, configuration, phase record), and nothing else."""
    for name in RUN_FOLDERS:
        shutil.rmtree(folder / name, ignore_errors=True)
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)


def _run(trainer: Trainer, resume: bool | str, stop_at_step: int | None, start: PhaseStart | None) -> PretrainResult:
    config, context, system = trainer.config, trainer.context, trainer.config.system
    resumed_from = trainer.resume(resume) if resume else None
    if resumed_from is None and start is not None:
        trainer.start_phase(start)
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
    loop = _Loop(trainer, logger, progress, stop_at_step)
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
    if start is not None and resumed_from is None:
        _announce_phase(progress, trainer, start)
    try:
        with StopSignals() as signals:
            status = loop.run(signals)
            checkpoint = None
            if trainer.step != loop.last_saved_step:
                checkpoint = trainer.save(loop.elapsed())
            elif trainer.last_good_step is not None:
                checkpoint = find_latest_good(trainer.checkpoint_root)
            if status == "completed" and loop.last_eval.get("step") != trainer.step:
                status = _final_evaluation(loop, signals)
        if loop.pending_window:
            loop.log_window()
        if status == "interrupted":
            progress.message(f"stopped by a signal at step {trainer.step}; checkpoint saved")
        fraction, floor = (
            trainer.schedule.fraction_reached(trainer.step),
            config.train.lr * config.train.floor_fraction,
        )
        progress.message(
            f"schedule: {fraction:.0%} reached by step {trainer.step}, last learning rate "
            f"{trainer.lr:.3g} (peak {config.train.lr:.3g}, floor {floor:.3g})"
        )
    finally:
        logger.close()
        progress.close()
    if context.is_main and "jsonl" in system.log_sinks and (loop.last_metrics or loop.last_eval):
        plot_loss_curve(trainer.output_dir / "metrics.jsonl", trainer.output_dir / "loss_curve.png")
    return PretrainResult(
        status,
        trainer.step,
        trainer.output_dir,
        checkpoint,
        loop.last_metrics,
        loop.last_eval,
        trainer.schedule.fraction_reached(trainer.step),
        trainer.lr,
        trainer.precision.as_record(),
        trainer.phases,
    )


def _announce_phase(progress: ConsoleProgress, trainer: Trainer, start: PhaseStart) -> None:
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


def _final_evaluation(loop: _Loop, signals: StopSignals) -> str:
    """The last held-out evaluation; a signal now (the checkpoint is saved) stops it, not the whole run."""
    signals.raise_at_once = True
    try:
        if signals.received is None:
            loop.log_eval()
            return "completed"
    except StopRequested:
        pass
    finally:
        signals.raise_at_once = False
    loop.progress.message(f"a signal stopped the final evaluation; the checkpoint of step {loop.trainer.step} is saved")
    return "interrupted"


class _Loop:
    """The step loop's bookkeeping: when to stop, log, evaluate and save."""

    def __init__(self, trainer: Trainer, logger: MetricsLogger, progress: ConsoleProgress, stop_at_step: int | None):
        self.trainer, self.logger, self.progress, self.stop_at_step = trainer, logger, progress, stop_at_step
        self.session_start = time.perf_counter()
        self.window_start = self.session_start
        hours = trainer.config.budget.hours
        self.clock = (
            WallClockBudget(hours * 3600, trainer.config.budget.calibration_steps, trainer.schedule.total_steps)
            if hours is not None
            else None
        )
        self.session_first_step = trainer.step
        self.last_saved_step = trainer.step if trainer.last_good_step is not None else None
        self.last_metrics: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self.pending_window = False

    def elapsed(self) -> float:
        return self.trainer.elapsed_before + time.perf_counter() - self.session_start

    def run(self, signals: StopSignals) -> str:
        trainer, train = self.trainer, self.trainer.config.train
        while True:
            if self._schedule_complete():
                return "completed"
            if self.stop_at_step is not None and trainer.step >= self.stop_at_step:
                return "paused"
            reason = self._agreed_stop(signals)
            if reason is not None:
                return reason
            try:
                trainer.train_step()
            except StopIteration:
                self.progress.message(f"the training data ran out at step {trainer.step}")
                return "data_exhausted"
            self.pending_window = True
            self.progress.update(1, self.last_metrics and {"loss": self.last_metrics["train/loss"]})
            self._follow_clock()
            step = trainer.step
            if step % train.log_every == 0:
                self.log_window()
            if step % train.eval_every == 0:
                self.log_eval()
            if step % train.checkpoint_every == 0:
                trainer.save(self.elapsed())
                self.last_saved_step = step

    def _agreed_stop(self, signals: StopSignals) -> str | None:
        """Stop for a signal or a spent hours budget. Ranks must agree, so with several processes this is
        decided (one small collective) only every log_every steps."""
        trainer = self.trainer
        if trainer.context.enabled and trainer.step % trainer.config.train.log_every:
            return None
        flags = torch.tensor([float(signals.received is not None), self.elapsed()], device=trainer.context.device)
        interrupted, elapsed = dist_utils.all_reduce_max(flags, trainer.context).tolist()
        if interrupted:
            return "interrupted"
        if self.clock is None:
            return None
        if trainer.context.enabled and trainer.step > self.session_first_step:
            self.clock.observe(trainer.step, elapsed)
        return "completed" if elapsed >= self.clock.seconds else None

    def _schedule_complete(self) -> bool:
        schedule = self.trainer.schedule
        if self.clock is not None:
            return schedule.progress is not None and schedule.progress >= 1.0
        return schedule.total_steps is not None and self.trainer.step >= schedule.total_steps

    def _follow_clock(self) -> None:
        """With an hours budget, move the schedule to the budget's progress after each step. The step count
        is estimated from the speed of the steps since the session's first (allocation, compilation) and
        refined every `calibration_steps` steps; the learning rate follows max(step / estimate, time)."""
        trainer, clock = self.trainer, self.clock
        if clock is None:
            return
        if not trainer.context.enabled and trainer.step > self.session_first_step:
            clock.observe(trainer.step, self.elapsed())
        calibrating = clock.estimate is None
        estimate = clock.refine(trainer.step)
        if estimate is not None:
            if calibrating:  # a later refinement only moves the progress bar: the warmup is under way
                try:
                    trainer.schedule.check_total(estimate)
                except ValueError as error:
                    budget = trainer.config.budget.hours
                    raise ValueError(f"budget.hours={budget} allows about {estimate} steps here: {error}") from None
            trainer.schedule.total_steps = estimate
            self.progress.set_total(estimate)
            if calibrating:
                self.progress.message(
                    f"hours budget: {clock.seconds_per_step():.3f} s a step, so about {estimate} steps in all "
                    "(refined as the run goes; the schedule follows the clock)"
                )
        trainer.schedule.advance(clock.progress(trainer.step), trainer.step)
        trainer.refresh_lr()

    def log_window(self) -> None:
        trainer = self.trainer
        sums = trainer.metrics.read(trainer.context)
        trainer.check_finite()
        seconds = max(time.perf_counter() - self.window_start, 1e-9)
        self.window_start = time.perf_counter()
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
            "time/elapsed_s": self.elapsed(),
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

    def log_eval(self) -> None:
        record = self.trainer.evaluate()
        if record:
            self.last_eval = record
            self.logger.log(record)
            self.progress.message(
                f"step {record['step']}: held-out loss {record['eval/loss']:.4f}, "
                f"accuracy {record['eval/accuracy']:.4f}"
            )
