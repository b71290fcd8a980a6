"""Checkpoints: round trip, killed writers, corrupt folders, retention, RNG restore, from_pretrained."""

import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM

from helpers.model import random_ids, small_config
from neobert import NeoBERTForMaskedLM
from neobert.train import checkpoint as ckpt
from neobert.train.checkpoint import (
    CheckpointError,
    RankState,
    apply_retention,
    find_latest_good,
    list_checkpoints,
    load_model_weights,
    read_checkpoint,
    resolve_checkpoint,
    restore_rank_state,
    save_checkpoint,
    verify_checkpoint,
)
from neobert.train.config import TrainSection
from neobert.train.optim import LRSchedule, build_optimizer, build_scheduler


class CountingLoader:
    """Stands in for the data loader: any object with state_dict / load_state_dict."""

    def __init__(self):
        self.position = 0

    def state_dict(self):
        return {"position": self.position, "identity": ("corpus", np.int64(7))}

    def load_state_dict(self, state):
        self.position = state["position"]


def trained_setup(steps=2):
    model = NeoBERTForMaskedLM(small_config(num_hidden_layers=1))
    optimizer = build_optimizer(model, **TrainSection(lr=1e-3, warmup_steps=2).adamw_settings())
    scheduler = build_scheduler(optimizer, LRSchedule(warmup_steps=2, total_steps=20))
    ids = random_ids(2, 8)
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def save(root, step, model, optimizer, scheduler, loader=None):
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    return save_checkpoint(root, step, model, state, [RankState.capture(loader)], config={"train": {"lr": 1e-3}})


def test_round_trip_restores_model_optimizer_scheduler_loader_and_rng(tmp_path):
    model, optimizer, scheduler = trained_setup()
    loader = CountingLoader()
    loader.position = 42
    folder = save(tmp_path, 2, model, optimizer, scheduler, loader)
    expected = (random.random(), np.random.rand(), torch.rand(3))

    fresh_model, fresh_optimizer, fresh_scheduler = trained_setup(steps=0)
    fresh_loader = CountingLoader()
    loaded = read_checkpoint(tmp_path / "latest")
    assert loaded.folder == folder.resolve() and loaded.step == 2 and loaded.config == {"train": {"lr": 1e-3}}
    load_model_weights(fresh_model, loaded.model_state)
    fresh_optimizer.load_state_dict(loaded.trainer_state["optimizer"])
    fresh_scheduler.load_state_dict(loaded.trainer_state["scheduler"])
    restore_rank_state(loaded.rank_state, fresh_loader)

    assert fresh_loader.position == 42 and loaded.rank_state["loader"]["identity"] == ("corpus", 7)
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])
    for a, b in zip(model.state_dict().values(), fresh_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fresh_scheduler.last_epoch == 2 and fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    moment = next(iter(optimizer.state.values()))["exp_avg_sq"]
    assert torch.equal(next(iter(fresh_optimizer.state.values()))["exp_avg_sq"], moment)


def test_checkpoint_folder_is_a_transformers_model(tmp_path):
    model, optimizer, scheduler = trained_setup(steps=1)
    save(tmp_path, 1, model, optimizer, scheduler)
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "latest").eval()
    ids = random_ids(1, 6)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_killed_writer_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model, optimizer, scheduler = trained_setup()
    first = save(tmp_path, 1, model, optimizer, scheduler)

    real_save = torch.save

    def dies_midway(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        if str(path).endswith(ckpt.TRAINER_FILE):
            raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ckpt.torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2, model, optimizer, scheduler)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert find_latest_good(tmp_path) == first and resolve_checkpoint(tmp_path / "latest") == first.resolve()

    # kill -9 gives no chance to clean up: a temporary folder stays behind, without a manifest.
    leftover = tmp_path / ".tmp-step-00000002-999"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    assert find_latest_good(tmp_path) == first
    assert read_checkpoint(tmp_path).step == 1
    # The next save clears the leftover.
    save(tmp_path, 3, model, optimizer, scheduler)
    assert not leftover.exists() and read_checkpoint(tmp_path / "latest").step == 3


def test_corrupt_or_unfinished_checkpoints_are_skipped(tmp_path):
    model, optimizer, scheduler = trained_setup()
    first = save(tmp_path, 1, model, optimizer, scheduler)
    second = save(tmp_path, 2, model, optimizer, scheduler)
    weights = second / ckpt.MODEL_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one flipped bit: only the checksum sees it
    weights.write_bytes(bytes(data))
    assert find_latest_good(tmp_path, verify="size") == second
    assert find_latest_good(tmp_path, verify="full") == first
    weights.write_bytes(bytes(data[:-10]))  # truncated
    assert find_latest_good(tmp_path) == first
    with pytest.raises(CheckpointError, match="wrong size"):
        verify_checkpoint(second)
    # A folder renamed into place without a manifest (should not happen, but never trust it).
    (tmp_path / "step-00000009").mkdir()
    assert find_latest_good(tmp_path) == first
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        read_checkpoint(tmp_path / "step-00000009")


def test_retention_keeps_the_last_k_and_every_mth(tmp_path):
    model, optimizer, scheduler = trained_setup(steps=1)
    for step in range(1, 8):
        save(tmp_path, step, model, optimizer, scheduler)
        apply_retention(tmp_path, keep_last=2, keep_every=3)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3, 6, 7]
    assert read_checkpoint(tmp_path / "latest").step == 7
    with pytest.raises(ValueError, match="keep_last"):
        apply_retention(tmp_path, keep_last=0)


def test_saving_a_step_again_replaces_it_atomically(tmp_path):
    model, optimizer, scheduler = trained_setup(steps=1)
    save(tmp_path, 5, model, optimizer, scheduler)
    with torch.no_grad():
        model.decoder.bias.fill_(0.5)
    save(tmp_path, 5, model, optimizer, scheduler)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [5]
    assert torch.all(read_checkpoint(tmp_path).model_state["decoder.bias"] == 0.5)


def test_bad_requests_fail_clearly(tmp_path):
    model, optimizer, scheduler = trained_setup(steps=1)
    save(tmp_path, 1, model, optimizer, scheduler)
    with pytest.raises(CheckpointError, match="no state for rank 1"):
        read_checkpoint(tmp_path, rank=1)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model_weights(NeoBERTForMaskedLM(small_config(num_hidden_layers=2)), read_checkpoint(tmp_path).model_state)
    with pytest.raises(CheckpointError, match="no data-loader state"):
        restore_rank_state(read_checkpoint(tmp_path).rank_state, CountingLoader())
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        read_checkpoint(tmp_path / "nowhere")
