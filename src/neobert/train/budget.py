"""A wall-clock budget's progress: how far a run is through its schedule when time, not steps, sets its length.

Progress is max(step / estimated steps, elapsed / budget). The estimate comes from the speed of the recent
steps and is refined as the run goes, so a machine that slows down (another job, thermal limits) moves the
schedule on with the clock instead of cutting it short: a run that ends on its budget ends with the
learning rate at its floor. Every rank must see the same progress, so the clock only takes elapsed times that
the ranks agreed on (one small collective the loop already makes), and between two of them extrapolates at
the last measured speed; with one process every step is a sample.
"""

from __future__ import annotations

from collections import deque


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
