"""Where a pre-training run starts: afresh, from its own latest good checkpoint (`--resume`), or from another
run's checkpoint (a phase, phase.py).

Everything a start from a checkpoint decides is here: which checkpoint (every file verified on the main
process, damaged newer ones skipped and named), whether this run folder may be written at all (`--restart`
clears it, a run that is not resumed never writes over another's checkpoints), which changed settings a
resumed run refuses (`run_settings.check_resumed_settings`), and restoring the whole training state into a
`Trainer`: weights, optimiser, schedule, data position, RNG states, step, clock. The configuration of the run
wins over the hyperparameters a checkpoint's state dicts carry, so an unchanged run continues bit for bit and a
changed learning rate or budget takes effect.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from neobert.model.heads import NeoBERTForMaskedLM
from neobert.run_settings import check_resumed_settings
from neobert.train import distributed as dist_utils
from neobert.train.budget import carry_clock_progress, check_time_left
from neobert.train.checkpoint import (
    MODEL_FILE,
    CheckpointError,
    find_latest_good,
    find_resumable,
    load_model_weights,
    no_good_checkpoint,
    read_checkpoint,
    resolve_checkpoint,
    restore_rank_state,
    saved_world_size,
)
from neobert.train.config import PretrainConfig
from neobert.train.distributed import DistributedContext
from neobert.train.held_out import in_current_keys
from neobert.train.optim import build_optimizer, schedule_from
from neobert.train.phase import PHASE_FILE, PhaseStart, plan_phase
from neobert.train.precision import PrecisionChoice, resolve_precision
from neobert.train.trainer import Trainer, initial_model

# What a pre-training run writes in its folder (the lock stays: it is held while the folder is cleared).
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.superseded.jsonl", "loss_curve.png", PHASE_FILE)
RUN_FOLDERS = ("checkpoints", "tensorboard", "wandb")


def clear_run(folder: Path) -> None:
    """Forget the run in `folder` (checkpoints, metrics, configuration, phase record), and nothing else."""
    for name in RUN_FOLDERS:
        shutil.rmtree(folder / name, ignore_errors=True)
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)


def plan_start(
    config: PretrainConfig,
    resume: bool | str,
    restart: bool,
    model: NeoBERTForMaskedLM | None,
    context: DistributedContext,
) -> tuple[PhaseStart | None, NeoBERTForMaskedLM | None]:
    """Before any model is built, with the run folder's lock held: clear the folder on `restart`, refuse to
    start afresh over another run's checkpoints, and verify a phase's source (a phase resumed from its own
    checkpoint no longer needs it: the source run's retention may have deleted it since). Returns the phase's
    start (None when resuming or not a phase) and the model to train (a phase carrying weights loads them)."""
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
    return start, model


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


def resume_run(trainer: Trainer, source: str | bool) -> Path | None:
    """Restore everything from `source` (a path) or, with True, the latest good checkpoint of this run; None
    when there is none yet. Damaged newer checkpoints skipped on the way are left in `skipped_on_resume`."""
    folder = _verified_resume_folder(trainer, source)
    if folder is None:
        return None
    restore(trainer, folder, resuming=True)
    return folder


def start_phase(trainer: Trainer, start: PhaseStart) -> None:
    """Begin this run from another run's checkpoint (verified by `plan_phase`). Carrying the state, it goes
    on from there (a decay branch); carrying the weights, `plan_start` has already loaded them."""
    if start.carry == "state":
        restore(trainer, Path(start.source))
        check_time_left(trainer.config.budget, start.step, trainer.elapsed_before, trainer.schedule.progress)
        trainer.last_good_step = None  # the source's checkpoint is not one of this run's
        if trainer.config.train.schedule == "wsd" and trainer.config.train.decay_start_step is None:
            trainer.schedule.branch_step = trainer.step
            trainer.schedule.decay_start_progress = trainer.schedule.progress
            trainer.refresh_lr()
            trainer.lr = trainer.optimizer.param_groups[0]["lr"]
    trainer.phases = [*trainer.phases, start.as_record()]


def restore(trainer: Trainer, folder: Path, resuming: bool = False) -> None:
    """Everything from a checkpoint folder already verified: weights, optimiser, schedule, data position,
    RNG states, step. `resuming` this run (not starting a phase): only with its own data, model and seeds."""
    # The same processes: each takes back its own data position and RNG states. Another number of them
    # (elastic resume): the model and optimiser states are whole in the checkpoint and are laid out for
    # this world here, and every rank continues the global sample order from the step boundary, which
    # any rank's loader state records (rank 0's is read); the RNG states stay this run's own.
    context, config = trainer.context, trainer.config
    same_world = saved_world_size(folder) == context.world_size
    saved = read_checkpoint(folder, rank=context.rank if same_world else 0, verify="marker")
    saved.config = in_current_keys(saved.config or {})  # a run saved with keys since renamed is the same run
    try:
        dist_utils.load_full_state_dicts(
            trainer.wrapped, trainer.optimizer, saved.model_state, saved.trainer_state["optimizer"]
        )
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(_misfit(trainer, folder, error)) from None
    changes = config_changes(saved.config or {}, config.resolved())
    if resuming:
        check_resumed_settings(folder, changes)
    trainer.scheduler.load_state_dict(saved.trainer_state["scheduler"])
    restore_rank_state(saved.rank_state, trainer.loader, rng=same_world)
    if not same_world:
        trainer.changed_on_resume.append(
            f"processes: {saved.world_size} -> {context.world_size} (the global sample order continues "
            "from the step boundary)"
        )
    trainer.step = saved.step
    trainer.elapsed_before = float(saved.trainer_state.get("elapsed_seconds", 0.0))
    kept = saved.trainer_state.get("precision")
    if config.system.precision == "auto" and kept in ("fp32", "bf16") and kept != trainer.precision.name:
        # A resumed run computes as it did before: the probe's timing may tip the other way this time.
        trainer.use_precision(resolve_precision(kept, context.device))
        trainer.precision = PrecisionChoice(trainer.precision.dtype, f"auto, kept from the checkpoint ({kept})")
    trainer.tokens_seen = float(saved.trainer_state.get("tokens_seen", 0.0))
    trainer.last_good_step = saved.step
    trainer.phases = list(saved.trainer_state.get("phases", []))
    trainer.changed_on_resume += changes
    _apply_current_recipe(trainer, saved.config or {})


def config_changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: old -> new` for every dotted key whose value differs between two resolved configurations."""
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def _verified_resume_folder(trainer: Trainer, source: str | bool) -> Path | None:
    """The checkpoint to resume from, every file checked on the main process (the others wait for its
    answer). With True, damaged newer checkpoints are skipped and listed in `skipped_on_resume`; when
    checkpoints exist but none verifies, nothing is deleted and the run stops."""
    root = trainer.checkpoint_root
    answer: tuple[str | None, list[str], str | None] = (None, [], None)
    if trainer.context.is_main:
        try:
            if source is True:
                found, skipped = find_resumable(root)
                error = None
                if found is None and skipped:
                    error = (
                        f"{no_good_checkpoint(root, skipped)}; nothing was deleted. Put back a good copy of one "
                        "(or --resume a checkpoint kept elsewhere), or choose another system.output_dir to start "
                        "afresh"
                    )
                answer = (str(found) if found else None, [s.describe() for s in skipped], error)
            else:
                answer = (str(resolve_checkpoint(source)), [], None)
        except CheckpointError as failure:
            answer = (None, [], str(failure))
    folder, trainer.skipped_on_resume, error = dist_utils.broadcast_object(answer, trainer.context)
    if error is not None:
        raise CheckpointError(error)
    return Path(folder) if folder is not None else None


def _misfit(trainer: Trainer, folder: Path, error: BaseException) -> str:
    """One line for a checkpoint whose weights do not fit this configuration's model: the architecture
    fields that differ, read from the checkpoint's config.json (torch's own message lists every tensor)."""
    try:
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    current = trainer.model_config.to_dict()
    ignored = {"transformers_version", "architectures", "auto_map", "dtype", "torch_dtype", "_name_or_path"}
    changes = [
        f"{key}: {saved[key]!r} -> {current[key]!r}"
        for key in sorted(set(saved) & set(current) - ignored)
        if saved[key] != current[key]
    ]
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    differs = "; ".join(changes[:8]) if changes else first
    return (
        f"{folder} holds a model of another shape than this configuration builds ({differs}); resume with "
        "the run's own model settings, or start a new run in another system.output_dir"
    )


def _apply_current_recipe(trainer: Trainer, saved_config: dict[str, Any]) -> None:
    """Optimiser and scheduler state dicts carry their own hyperparameters; the run's configuration wins,
    so a run resumed with another lr, weight decay or budget uses the new values (and an unchanged one
    continues exactly)."""
    config, train = trainer.config, trainer.config.train
    reference = build_optimizer(trainer.wrapped, **train.adamw_settings())
    for group, wanted in zip(trainer.optimizer.param_groups, reference.param_groups, strict=True):
        group.update({k: v for k, v in wanted.items() if k not in ("params", "lr", "initial_lr")})
    fresh = schedule_from(train, config.total_steps())
    carry_clock_progress(fresh, trainer.schedule, saved_config, config.budget)
    # A decay branch's start is part of its history, which no configuration restates.
    fresh.branch_step = trainer.schedule.branch_step
    fresh.check_total(fresh.total_steps)
    vars(trainer.schedule).update(vars(fresh))
    trainer.scheduler.base_lrs = [train.lr] * len(trainer.optimizer.param_groups)
    trainer.refresh_lr()
    trainer.lr = trainer.optimizer.param_groups[0]["lr"]
