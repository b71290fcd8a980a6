"""Two recipe schedules that change the data a step sees: the mask rate by training progress, and the global
batch size over the first tokens (batch-size warm-up).

The mask rate (`data.mlm_schedule`) is piecewise constant: a list of (progress, rate) pairs, the first at
progress 0, each rate holding from its progress until the next pair's. The progress is the learning-rate
schedule's own (step / total steps, or a wall-clock budget's progress), read at the start of each step, so a
resumed run, whose schedule state comes back with its checkpoint, masks each step at the same rate.

The batch warm-up (`data.batch_warmup_tokens` T, `data.batch_warmup_start` B0) grows the global batch in
multiples of B0: B0, 2 B0, ..., B - B0, each held for an equal share T / (B / B0 - 1) of the first T tokens
(counted as token slots, sequences x max_length, as `budget.tokens` is), then B. A step's size is fixed by
the tokens taken before it, so it is a function of the step alone: the plan below lists the few steps where
the size changes, which gives any step's size and the sequences taken before it exactly, whatever the world
size. The micro-batch stays fixed and the number of accumulation steps follows the size: `batch_split` (here
because it splits each step's batch) checks that the first batch splits over processes x micro-batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def check_mlm_schedule(pairs: Sequence[Sequence[float]], identity_rate: float = 0.0) -> None:
    """A named error for a schedule that is not (progress, rate) pairs from progress 0, strictly increasing
    in [0, 1), with rates in (0, 1) that leave room for the identity share."""
    if not pairs:
        return
    for index, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"data.mlm_schedule[{index}] must be a [progress, probability] pair, got {pair!r}")
        progress, rate = pair
        if not 0 < rate < 1:
            raise ValueError(f"data.mlm_schedule[{index}]: the mask probability must lie in (0, 1), got {rate}")
        if not 0 <= identity_rate < 1 - rate:
            raise ValueError(
                f"data.mlm_schedule[{index}]: a mask probability of {rate} leaves no room for "
                f"data.mlm_identity_probability {identity_rate} (their sum must stay below 1)"
            )
        if not 0 <= progress < 1:
            raise ValueError(f"data.mlm_schedule[{index}]: progress must lie in [0, 1), got {progress}")
    if pairs[0][0] != 0:
        raise ValueError(f"data.mlm_schedule must start at progress 0.0, not {pairs[0][0]}")
    for index in range(1, len(pairs)):
        if pairs[index][0] <= pairs[index - 1][0]:
            raise ValueError(
                f"data.mlm_schedule progress must strictly increase: {pairs[index - 1][0]} then {pairs[index][0]} "
                f"(pairs {index - 1} and {index})"
            )


def mlm_probability_at(pairs: Sequence[Sequence[float]], default: float, progress: float) -> float:
    """The rate in force at `progress`: the last pair that starts at or before it (`default` without pairs)."""
    rate = default
    for start, value in pairs:
        if start <= progress:
            rate = float(value)
    return rate


@dataclass(frozen=True)
class RampSegment:
    first_step: int
    size: int  # global sequences per step from `first_step` on
    sequences_before: int  # global sequences taken before `first_step`


@dataclass(frozen=True)
class BatchRamp:
    """The global batch of each step, in sequences: `start` growing to `full` over the first `tokens` token
    slots (sequences of `sequence_tokens`); `tokens=0` holds `full` from the first step."""

    start: int
    full: int
    tokens: int
    sequence_tokens: int
    segments: tuple[RampSegment, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            raise ValueError(f"data.batch_warmup_tokens must be non-negative, got {self.tokens}")
        if self.start <= 0 or self.full % self.start:
            raise ValueError(
                f"data.batch_warmup_start ({self.start} sequences) must divide data.batch_size ({self.full} sequences)"
            )
        object.__setattr__(self, "segments", self._plan())

    @property
    def active(self) -> bool:
        return self.tokens > 0 and self.start < self.full

    def size_after(self, tokens_before: int) -> int:
        """The global batch of a step that follows `tokens_before` token slots."""
        if not self.active:
            return self.full
        rises = self.full // self.start - 1  # stages below the full batch
        return self.start * (1 + min(rises, tokens_before * rises // self.tokens))

    def _plan(self) -> tuple[RampSegment, ...]:
        step, sequences = 0, 0
        segments = []
        while True:
            size = self.size_after(sequences * self.sequence_tokens)
            segments.append(RampSegment(step, size, sequences))
            if size == self.full:
                return tuple(segments)
            # The first token count of the next stage: t with t * rises // tokens >= stage + 1.
            rises, stage = self.full // self.start - 1, size // self.start - 1
            next_stage_tokens = -(-(stage + 1) * self.tokens // rises)
            next_stage_sequences = -(-next_stage_tokens // self.sequence_tokens)
            steps = max(1, -(-(next_stage_sequences - sequences) // size))
            step, sequences = step + steps, sequences + steps * size

    def _segment(self, step: int) -> RampSegment:
        found = self.segments[0]
        for segment in self.segments:
            if segment.first_step <= step:
                found = segment
        return found

    def size(self, step: int) -> int:
        """Global sequences of step `step` (the first step is 0)."""
        return self._segment(step).size

    def sequences_before(self, step: int) -> int:
        segment = self._segment(step)
        return segment.sequences_before + (step - segment.first_step) * segment.size

    def steps_for_tokens(self, tokens: int) -> int:
        """The fewest steps whose token slots reach `tokens` (at least one)."""
        sequences = -(-tokens // self.sequence_tokens)
        for index, segment in enumerate(self.segments):
            last = index == len(self.segments) - 1
            if last or self.segments[index + 1].sequences_before >= sequences:
                needed = max(0, sequences - segment.sequences_before)
                return max(1, segment.first_step + math.ceil(needed / segment.size))
        raise AssertionError("the last segment always answers")

    def describe(self) -> str:
        if not self.active:
            return f"{self.full} sequences a step"
        stages = ", ".join(f"{s.size} from step {s.first_step}" for s in self.segments)
        return f"batch warm-up over {self.tokens} tokens: {stages} sequences a step"


def ramp_from(data) -> BatchRamp:
    """The batch plan of a `DataSection`, with a named error for a warm-up it cannot form."""
    warmup, start = data.batch_warmup_tokens, data.batch_warmup_start
    if warmup < 0:
        raise ValueError(f"data.batch_warmup_tokens must be non-negative, got {warmup}")
    full = data.global_batch_sequences
    if warmup == 0:
        return BatchRamp(full, full, 0, data.max_length)
    if start is None or start <= 0:
        raise ValueError(f"data.batch_warmup_tokens={warmup} needs data.batch_warmup_start, a positive batch size")
    if data.batch_unit == "tokens" and start % data.max_length:
        raise ValueError(
            f"data.batch_warmup_start of {start} tokens is not a whole number of {data.max_length}-token sequences"
        )
    start_sequences = start // data.max_length if data.batch_unit == "tokens" else start
    if full % start_sequences:
        raise ValueError(
            f"data.batch_warmup_start ({start} {data.batch_unit}) does not divide data.batch_size "
            f"({data.batch_size} {data.batch_unit}): the batch grows in multiples of its start"
        )
    return BatchRamp(start_sequences, full, warmup, data.max_length)


# ---- splitting each step's batch over processes and micro-batches ----------------------------------------


class BatchSplitError(ValueError):
    """The global batch cannot be formed on this number of processes; the message lists the ones that work."""


def batch_split(data, train, world_size: int, warmup: bool = True) -> tuple[int, int]:
    """(sequences per rank per forward pass, accumulation steps) that make up the global batch exactly. Under a
    batch warm-up the micro-batch must also form its first batch (the accumulation returned is the full
    batch's; smaller steps accumulate fewer micro-batches); `warmup=False`: as if there were none."""
    try:
        split = _batch_split(data, train, world_size)
        return _warmup_split(data, train, world_size, *split) if warmup else split
    except ValueError as error:
        sizes = range(1, data.global_batch_sequences + 1)
        working = [size for size in sizes if _splits(data, train, size, warmup)]
        raise BatchSplitError(
            f"{error}; numbers of processes that form this global batch: {', '.join(map(str, working)) or 'none'}"
        ) from None


def _splits(data, train, world_size: int, warmup: bool) -> bool:
    try:
        split = _batch_split(data, train, world_size)
        if warmup:
            _warmup_split(data, train, world_size, *split)
    except ValueError:
        return False
    return True


def _batch_split(data, train, world_size: int) -> tuple[int, int]:
    sequences = data.global_batch_sequences
    if sequences % world_size:
        raise ValueError(f"the global batch of {sequences} sequences does not split over {world_size} processes")
    per_rank = sequences // world_size
    if train.grad_accumulation is not None:
        if per_rank % train.grad_accumulation:
            raise ValueError(
                f"{per_rank} sequences per process do not split into {train.grad_accumulation} accumulation steps"
            )
        micro = per_rank // train.grad_accumulation
        if data.micro_batch_size is not None and data.micro_batch_size != micro:
            raise ValueError(
                f"data.micro_batch_size ({data.micro_batch_size}) contradicts train.grad_accumulation "
                f"({train.grad_accumulation}): {sequences} sequences over {world_size} processes need {micro}"
            )
        return micro, train.grad_accumulation
    micro = data.micro_batch_size or per_rank
    if per_rank % micro:
        raise ValueError(
            f"data.micro_batch_size ({micro}) does not divide the {per_rank} sequences each of "
            f"{world_size} processes takes per step"
        )
    return micro, per_rank // micro


def _warmup_split(data, train, world_size: int, micro: int, accumulation: int):
    ramp = data.batch_ramp()
    if not ramp.active:
        return micro, accumulation
    if data.micro_batch_size is None and train.grad_accumulation is None:
        micro = max(1, ramp.start // world_size)  # the first batch's share of each process in one pass
    if ramp.start % (world_size * micro):
        raise ValueError(
            f"the batch warm-up's first batch of {ramp.start} sequences (data.batch_warmup_start) does not split "
            f"over {world_size} processes x micro-batches of {micro} sequences"
        )
    return micro, ramp.full // (world_size * micro)
