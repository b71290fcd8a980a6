"""How long a run goes on, in one place: its step count, or its wall-clock hours and the clock that reads them.

`RunBudget` is what the loop asks (is the schedule complete? are the hours spent?) and what moves a
wall-clock run's learning-rate schedule on with the clock; it also reads the run's one clock (elapsed time, with
the earlier sessions' seconds that a checkpoint keeps). `carry_clock_progress` and `check_time_left` are the
budget's part of a resume and of a decay branch. `WallClockBudget` is the estimate itself:

Progress is max(step / estimated steps, elapsed / budget). The estimate comes from the speed of the recent
steps and is refined as the run goes, so a machine that slows down (another job, thermal limits) moves the
schedule on with the clock instead of cutting it short: a run that ends on its budget ends with the
learning rate at its floor. Every rank must see the same progress, so the clock only takes elapsed times that
the ranks agreed on (one small collective the loop already makes), and between two of them extrapolates at
the last measured speed; with one process every step is a sample.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neobert.train.config import BudgetSection
    from neobert.train.optim import LRSchedule


class WallClockBudget:
    def __init__(self, seconds: float, window_steps: int, estimate: int | None = None):
        if seconds <= 0:
            raise ValueError(f"a wall-clock budget must be positive, got {seconds} s")
        self.seconds = seconds
        self.window_steps = max(1, window_steps)
        self.estimate = estimate  # total steps the budget allows, None until calibrated
        self._samples: deque[tuple[int, float]] = deque()  # (step, agreed elapsed seconds)
        self._estimated_at: int | None = None

    def observe(self, step: int, elapsed: float) -> None:
        """An elapsed time that every rank agrees on, after `step` updates."""
        if self._samples and step <= self._samples[-1][0]:
            self._samples[-1] = (step, max(elapsed, self._samples[-1][1]))
            return
        self._samples.append((step, elapsed))
        while len(self._samples) > 2 and self._samples[-1][0] - self._samples[1][0] >= self.window_steps:
            self._samples.popleft()

    def seconds_per_step(self) -> float | None:
        """The recent speed, over at most `window_steps` steps; None before two samples."""
        if len(self._samples) < 2:
            return None
        (first_step, first_time), (last_step, last_time) = self._samples[0], self._samples[-1]
        return max(last_time - first_time, 0.0) / (last_step - first_step)

    def elapsed_at(self, step: int) -> float:
        """The agreed elapsed time, extrapolated to `step` at the recent speed."""
        if not self._samples:
            return 0.0
        last_step, last_time = self._samples[-1]
        rate = self.seconds_per_step() or 0.0
        return last_time + max(0, step - last_step) * rate

    def calibrated_span(self) -> int:
        """Steps the speed measurement covers so far."""
        return self._samples[-1][0] - self._samples[0][0] if len(self._samples) >= 2 else 0

    def refine(self, step: int) -> int | None:
        """A new step estimate when a window's worth of steps has passed since the last one, else None."""
        rate = self.seconds_per_step()
        if rate is None or self.calibrated_span() < self.window_steps:
            return None
        if self._estimated_at is not None and step - self._estimated_at < self.window_steps:
            return None
        remaining = max(0.0, self.seconds - self.elapsed_at(step))
        self.estimate = step + max(1, int(remaining / rate)) if rate > 0 else step + 1
        self._estimated_at = step
        return self.estimate

    def progress(self, step: int) -> float:
        by_time = self.elapsed_at(step) / self.seconds
        by_steps = step / self.estimate if self.estimate else 0.0
        return min(1.0, max(by_time, by_steps))


@dataclass
class Refined:
    """A new step estimate of an hours budget; `first` when it is the calibration's (the schedule's length)."""

    estimate: int
    first: bool
    seconds_per_step: float

    def describe(self) -> str:
        return (
            f"hours budget: {self.seconds_per_step:.3f} s a step, so about {self.estimate} steps in all "
            "(refined as the run goes; the schedule follows the clock)"
        )


class RunBudget:
    """The budget of one session of a run: `budget.steps` / `budget.tokens` end on the schedule's step count,
    `budget.hours` on the clock, which then also sets the schedule's progress after every step."""

    def __init__(self, budget: BudgetSection, schedule: LRSchedule, elapsed_before: float, first_step: int):
        self.hours, self.schedule = budget.hours, schedule
        self.clock = (
            WallClockBudget(budget.hours * 3600, budget.calibration_steps, schedule.total_steps)
            if budget.hours is not None
            else None
        )
        self.elapsed_before = elapsed_before  # seconds of earlier sessions, from the checkpoint
        self.session_start = self.now()
        self.session_first_step = first_step  # its speed counts from the step after (allocation, compilation)

    @staticmethod
    def now() -> float:
        """The run's clock (the metrics' windows read it too)."""
        return time.perf_counter()

    @property
    def by_clock(self) -> bool:
        return self.clock is not None

    def elapsed(self) -> float:
        """Wall-clock seconds of the whole run: this session's and the earlier ones'."""
        return self.elapsed_before + self.now() - self.session_start

    def schedule_complete(self, step: int) -> bool:
        if self.clock is not None:
            return self.schedule.progress is not None and self.schedule.progress >= 1.0
        return self.schedule.total_steps is not None and step >= self.schedule.total_steps

    def hours_spent(self, step: int, agreed_elapsed: float, several_processes: bool) -> bool:
        """Whether an hours budget is spent by an elapsed time every rank agreed on (with several processes,
        that agreed time is also the clock's speed sample)."""
        if self.clock is None:
            return False
        if several_processes and step > self.session_first_step:
            self.clock.observe(step, agreed_elapsed)
        return agreed_elapsed >= self.clock.seconds

    def follow(self, step: int, several_processes: bool) -> Refined | None:
        """After each step of an hours budget, move the schedule to the budget's progress. The step count is
        estimated from the speed of the steps since the session's first and refined every `calibration_steps`
        steps; the learning rate follows max(step / estimate, time). Returns the new estimate, if any."""
        clock = self.clock
        if clock is None:
            return None
        if not several_processes and step > self.session_first_step:
            clock.observe(step, self.elapsed())
        calibrating = clock.estimate is None
        estimate = clock.refine(step)
        refined = None
        if estimate is not None:
            if calibrating:  # a later refinement only moves the progress bar: the warmup is under way
                try:
                    self.schedule.check_total(estimate)
                except ValueError as error:
                    raise ValueError(f"budget.hours={self.hours} allows about {estimate} steps here: {error}") from None
            self.schedule.total_steps = estimate
            refined = Refined(estimate, calibrating, clock.seconds_per_step() or 0.0)
        self.schedule.advance(clock.progress(step), step)
        return refined


def carry_clock_progress(
    fresh: LRSchedule, saved: LRSchedule, saved_config: dict[str, Any], budget: BudgetSection
) -> None:
    """A resumed wall-clock run keeps its calibrated step count and its progress (`saved`, the checkpoint's
    schedule), rescaled if the budget changed since `saved_config`: the elapsed time is part of the checkpoint,
    so the schedule goes on from where the clock stands."""
    saved_hours = saved_config.get("budget", {}).get("hours")
    if budget.hours is None or saved_hours is None:
        return
    scale = saved_hours / budget.hours
    fresh.total_steps = saved.total_steps if scale == 1 else None
    if saved.progress is not None:
        fresh.progress = min(1.0, saved.progress * scale)
    if saved.warmup_end_progress is not None:
        fresh.warmup_end_progress = saved.warmup_end_progress * scale
    if saved.decay_start_progress is not None:
        fresh.decay_start_progress = saved.decay_start_progress * scale


def check_time_left(budget: BudgetSection, branch_step: int, elapsed_seconds: float, progress: float | None) -> None:
    """For an hours budget, a branch must start with some of it left (known only once the state is read): time,
    and progress (which also counts steps against the calibrated estimate)."""
    hours = budget.hours
    if hours is not None and (elapsed_seconds >= hours * 3600 or (progress or 0.0) >= 1.0):
        raise ValueError(
            f"phase.from_checkpoint (step {branch_step}) was saved {elapsed_seconds / 3600:.3g} hours and "
            f"{progress or 0.0:.0%} of the schedule into its run, at or past the end of budget.hours={hours:g}: "
            "raise the budget"
        )
