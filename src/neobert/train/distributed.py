"""torch.distributed for pre-training: start from torchrun's environment, wrap the model, talk between ranks.

One process per device. torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without
them (or with WORLD_SIZE=1) everything here degrades to a single process and no collective is issued.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from neobert.run_lock import hold_folder

STRATEGIES = ("auto", "none", "ddp", "fsdp")


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(choice: str, local_rank: int = 0, option: str = "system.device") -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            # A user's choice that this machine cannot honour: a ValueError, refused before any work (exit 2).
            raise ValueError(f"{option}=cuda, but no CUDA device is available here; use cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if choice != "cpu":
        raise ValueError(f"{option} must be auto, cpu or cuda, got {choice!r}")
    return torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(
    device: str = "auto", backend: str = "auto", timeout_minutes: float = 30, option: str = "system.device"
) -> DistributedContext:
    """The process's place in the job, with the default process group started when there is more than one
    process (gloo on CPU, NCCL on CUDA unless `backend` says otherwise)."""
    rank, world_size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world_size} do not describe a process of the job")
    torch_device = resolve_device(device, local_rank, option)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size == 1:
        return DistributedContext(device=torch_device)
    if backend == "auto":
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
    if backend == "nccl" and torch_device.type != "cuda":
        raise ValueError("the nccl backend needs CUDA devices; use gloo on CPU")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world_size} but {', '.join(missing)} unset: launch with torchrun")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            # Binding the group to the device lets NCCL set up eagerly and fail early on a bad GPU.
            device_id=torch_device if torch_device.type == "cuda" else None,
        )
    return DistributedContext(rank, local_rank, world_size, torch_device, backend)


def teardown(context: DistributedContext | None = None) -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---- wrapping ----------------------------------------------------------------------------------------------


def resolve_strategy(strategy: str, context: DistributedContext) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"system.distributed must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "auto":
        return "ddp" if context.enabled else "none"
    if strategy in ("ddp", "fsdp") and not context.enabled:
        return "none"  # one process: nothing to replicate or shard
    if strategy == "none" and context.enabled:
        raise ValueError("system.distributed=none with several processes would train unsynchronised replicas")
    return strategy


def wrap_model(model: nn.Module, context: DistributedContext, strategy: str = "auto") -> nn.Module:
    """DDP (a full replica per process, gradients averaged) or FSDP2 (parameters, gradients and optimiser
    state sharded, one unit per encoder block). Move the model to `context.device` first."""
    strategy = resolve_strategy(strategy, context)
    if strategy == "ddp":
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # Each block is its own unit so only one block's full parameters exist at a time; the root unit
        # holds the embedding, final norm and decoder.
        for module in model.modules():
            if type(module).__name__ == "EncoderBlock":
                fully_shard(module)
        fully_shard(model)
    return model


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def no_sync(model: nn.Module, skip: bool):
    """A context where DDP / FSDP2 do not reduce gradients (all micro-batches but the last of a step)."""
    if not skip:
        return contextlib.nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if is_fsdp(model):

        @contextlib.contextmanager
        def _fsdp_no_sync():
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return _fsdp_no_sync()
    return contextlib.nullcontext()


# ---- state dicts that work the same for one process, DDP and FSDP2 -----------------------------------------


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimiser state dicts, on the CPU, keyed by parameter name. Under FSDP2 this is a
    collective (every rank must call it) and only rank 0 receives the contents."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    sharded = is_fsdp(model)
    options = StateDictOptions(full_state_dict=True, cpu_offload=sharded)
    return get_state_dict(_inner(model), optimizer, options=options)


def load_full_state_dicts(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict, optimizer_state: dict | None
) -> None:
    """The inverse of `full_state_dicts`; under FSDP2 rank 0's copies are scattered to every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    sharded = is_fsdp(model)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=sharded, strict=True)
    if optimizer is None or optimizer_state is None:
        set_model_state_dict(_inner(model), model_state, options=options)
    else:
        set_state_dict(
            _inner(model), optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state, options=options
        )


def _inner(model: nn.Module) -> nn.Module:
    # DDP's state dict names carry a `module.` prefix; the checkpoint should not.
    while isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model._orig_mod
    return model


# ---- collectives -------------------------------------------------------------------------------------------


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum over ranks, in place (no host sync; the result is read whenever the caller reads it)."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def gather_objects(obj: Any, context: DistributedContext) -> list[Any] | None:
    """Every rank's `obj` on rank 0 (in rank order); None elsewhere."""
    if not context.enabled:
        return [obj]
    gathered = [None] * context.world_size if context.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_object(obj: Any, context: DistributedContext) -> Any:
    """Rank 0's `obj` on every rank."""
    if not context.enabled:
        return obj
    holder = [obj if context.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


@contextlib.contextmanager
def hold_output_folder(folder: str | os.PathLike, context: DistributedContext, option: str) -> Iterator[None]:
    """`run_lock.hold_folder`, taken by rank 0 for the group; its verdict is shared, so every rank of a
    refused launch fails with the same named error instead of waiting for rank 0."""
    if not context.enabled:
        with hold_folder(folder, option):
            yield
        return
    with contextlib.ExitStack() as stack:
        refusal = None
        if context.is_main:
            try:
                stack.enter_context(hold_folder(folder, option))
            except ValueError as error:
                refusal = error
        refusal = broadcast_object(refusal, context)
        if refusal is not None:
            raise refusal
        yield
