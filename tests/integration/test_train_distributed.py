"""Two CPU processes over gloo: collectives, DDP gradient averaging and FSDP2 state dicts."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from helpers.model import small_config
from neobert import NeoBERTForMaskedLM
from neobert.train.distributed import (
    DistributedContext,
    all_reduce_max,
    all_reduce_sum,
    broadcast_object,
    full_state_dicts,
    gather_objects,
    init_distributed,
    load_full_state_dicts,
    resolve_strategy,
    teardown,
    wrap_model,
)

WORLD = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def global_batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 30000, (2 * WORLD, 8), generator=generator)
    labels = torch.where(torch.rand(ids.shape, generator=generator) < 0.3, ids, torch.full_like(ids, -100))
    labels[:, 0] = ids[:, 0]  # at least one masked token per row
    return ids, labels


def fresh_model():
    torch.manual_seed(0)
    return NeoBERTForMaskedLM(small_config(num_hidden_layers=1))


def gradients_on_my_rows(model, context, strategy):
    model = wrap_model(model, context, strategy)
    ids, labels = global_batch()
    rows = slice(2 * context.rank, 2 * context.rank + 2)
    # Each rank's loss is the mean over its masked tokens; weight it so that averaging the gradients over
    # ranks gives the gradient of the mean over the whole global batch.
    local = int((labels[rows] != -100).sum())
    weight = local * WORLD / int((labels != -100).sum())
    (model(input_ids=ids[rows], labels=labels[rows]).loss * weight).backward()
    grads = {
        name.removeprefix("module."): (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
        for name, p in model.named_parameters()
    }
    model_state, _ = full_state_dicts(model, torch.optim.AdamW(model.parameters()))
    return grads, sorted(model_state)


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    context = init_distributed(device="cpu")
    try:
        result = {
            "sum": all_reduce_sum(torch.tensor([rank + 1.0]), context),
            "max": all_reduce_max(torch.tensor([rank + 1.0]), context),
            "gathered": gather_objects({"rank": rank}, context),
            "shared": broadcast_object("from rank 0" if rank == 0 else None, context),
        }
        for strategy in ("ddp", "fsdp"):
            result[strategy] = gradients_on_my_rows(fresh_model(), context, strategy)
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        teardown(context)


def test_two_processes_average_gradients_like_one_process_on_the_global_batch(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert all(r["sum"].item() == 3.0 and r["max"].item() == 2.0 for r in results)
    assert results[0]["gathered"] == [{"rank": 0}, {"rank": 1}] and results[1]["gathered"] is None
    assert results[1]["shared"] == "from rank 0"

    reference = fresh_model()
    ids, labels = global_batch()
    reference(input_ids=ids, labels=labels).loss.backward()
    for rank_result in results:
        for strategy in ("ddp", "fsdp"):
            grads, state_keys = rank_result[strategy]
            assert set(grads) == {name for name, _ in reference.named_parameters()}
            for name, parameter in reference.named_parameters():
                torch.testing.assert_close(grads[name], parameter.grad, atol=1e-6, rtol=1e-5)
            # Full state dicts carry the plain parameter names, without DDP's "module." prefix.
            if rank_result is results[0]:
                assert state_keys == sorted(reference.state_dict()), strategy


def test_single_process_needs_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed(device="cpu")
    assert context == DistributedContext() and context.is_main and not context.enabled
    model = fresh_model()
    assert wrap_model(model, context, "auto") is model and resolve_strategy("fsdp", context) == "none"
    assert all_reduce_sum(torch.tensor([3.0]), context).item() == 3.0
    assert all_reduce_max(torch.tensor([3.0]), context).item() == 3.0
    optimizer = torch.optim.AdamW(model.parameters())
    model(input_ids=torch.tensor([[1000, 1001]]), labels=torch.tensor([[1000, -100]])).loss.backward()
    optimizer.step()
    model_state, optimizer_state = full_state_dicts(model, optimizer)
    copy = fresh_model()
    copy_optimizer = torch.optim.AdamW(copy.parameters())
    load_full_state_dicts(copy, copy_optimizer, model_state, optimizer_state)
    for a, b in zip(model.parameters(), copy.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(
        copy_optimizer.state[next(copy.parameters())]["exp_avg"], optimizer.state[next(model.parameters())]["exp_avg"]
    )


def test_bad_launch_environment_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        init_distributed(device="cpu")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5"):
        init_distributed(device="cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        init_distributed(device="cpu")
