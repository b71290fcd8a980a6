"""A run that starts from another run's checkpoint: a decay branch (the whole training state goes on) or a new
stage (the weights only, e.g. stage 2's longer context).

The source checkpoint is verified against its manifest (every SHA-256) before any model is built, and is only
ever read: the phase writes its own run folder. Where it branched (the source folder, its step and the
SHA-256 of its manifest, which names every file's checksum) goes into `phase.json` in that folder, into every
checkpoint the phase writes (a resumed phase keeps it, and a phase of a phase adds to the chain) and into the
run's result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from neobert.files import sha256_file, write_json_atomically
from neobert.train import distributed as dist_utils
from neobert.train.checkpoint import MANIFEST, CheckpointError, resolve_checkpoint, verify_checkpoint
from neobert.train.config import PretrainConfig
from neobert.train.distributed import DistributedContext

PHASE_FILE = "phase.json"


@dataclass
class PhaseStart:
    name: str | None
    carry: str  # "state" or "weights"
    source: str  # the verified checkpoint folder
    step: int  # the source's step
    manifest_sha256: str

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def check_phase_folder(config: PretrainConfig) -> None:
    """A phase must not write where its source lives (checked before anything, --resume included: resuming
    there would carry on the source run itself)."""
    if config.phase.from_checkpoint is None:
        return
    source = Path(config.phase.from_checkpoint).resolve()
    own = (Path(config.system.output_dir) / "checkpoints").resolve()
    if source == own or own in source.parents:
        raise ValueError(
            f"phase.from_checkpoint {config.phase.from_checkpoint} lies in system.output_dir's own checkpoints: "
            "a phase writes a new run folder and leaves its source as it is; choose another system.output_dir"
        )


def plan_phase(config: PretrainConfig, context: DistributedContext) -> PhaseStart | None:
    """The verified branch point of `phase.from_checkpoint`, checked against this run's configuration; None
    when the run is not a phase. The main process reads the files; the others take its answer."""
    if config.phase.from_checkpoint is None:
        return None
    answer: tuple[PhaseStart | None, Exception | None] = (None, None)
    if context.is_main:
        try:
            answer = (_checked_start(config), None)
        except (CheckpointError, ValueError) as error:
            answer = (None, error)
    start, error = dist_utils.broadcast_object(answer, context)
    if error is not None:
        raise error
    return start


def _checked_start(config: PretrainConfig) -> PhaseStart:
    phase = config.phase
    try:
        folder = Path(resolve_checkpoint(phase.from_checkpoint, "full")).resolve()
    except CheckpointError as error:
        raise CheckpointError(f"phase.from_checkpoint: {error}") from None
    step = int(verify_checkpoint(folder, "marker")["step"])
    if phase.carry == "state":
        _check_branch_step(config, step)
    return PhaseStart(phase.name, phase.carry, str(folder), step, sha256_file(folder / MANIFEST))


def _check_branch_step(config: PretrainConfig, step: int) -> None:
    """A branch that goes on from `step` must have steps left, and a decay that starts after it."""
    budget, train = config.budget, config.train
    total = config.total_steps()
    if total is not None and step >= total:
        raise ValueError(
            f"phase.from_checkpoint is at step {step}, at or past the end of this run ({total} steps by "
            f"budget.{budget.kind}): the phase would have nothing to do; raise the budget"
        )
    if train.decay_start_step is not None and train.decay_start_step < step:
        raise ValueError(
            f"train.decay_start_step ({train.decay_start_step}) comes before the branch point (step {step}); "
            "leave it unset to decay from the branch point"
        )


def write_phase_record(output_dir: Path, phases: list[dict[str, Any]]) -> None:
    write_json_atomically(output_dir / PHASE_FILE, {"phases": phases})
