"""The real command and the real loader on a prepared corpus: the global batch does not depend on the world size
(torchrun, two processes), and a run killed inside a checkpoint write then resumed ends bit for bit where an
uninterrupted run does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.data import sample_texts
from neobert.data.loader import LoaderConfig, PretrainingLoader
from neobert.data.masking import IGNORE_INDEX
from neobert.train.checkpoint import list_checkpoints
from neobert.train.metrics import read_jsonl
from test_commands import TINY

SRC = str(Path(__file__).resolve().parents[2] / "src")
RUN = [*TINY, "system.device=cpu", "budget.steps=6", "train.eval_every=1000"]
# The command line, with a SIGKILL at the moment a checkpoint's files are written and its manifest is not.
KILLED_IN_A_CHECKPOINT_WRITE = """
import os, signal, sys
from neobert.train import checkpoint
from neobert.cli import main

real_write_manifest, kill_at = checkpoint._write_manifest, int(os.environ["KILL_AT_STEP"])

def killed(folder, step, world_size):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_write_manifest(folder, step, world_size)

checkpoint._write_manifest = killed
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def corpus(prepared_corpus):
    return prepared_corpus(sample_texts(300, seed=4, long_every=9, long_words=60), max_length=32, heldout_fraction=0.1)


def environment(**extra) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **extra}


def neobert(*arguments, launcher=(), script=None, **extra) -> subprocess.CompletedProcess:
    entry = ["-c", script] if script else ["-m", "neobert"]
    command = [sys.executable, *launcher, *entry, "pretrain", "demo", *arguments]
    return subprocess.run(command, env=environment(**extra), capture_output=True, text=True, timeout=600)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoints" / "latest" / "model.safetensors")


def train_losses(out: Path) -> dict[int, float]:
    records = [r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r]
    assert len({r["step"] for r in records}) == len(records), "one record per step"
    return {r["step"]: r["train/loss"] for r in records}


def global_batches(corpus: Path, world: int, micro: int, steps: int) -> list[Counter]:
    """Per step, the (sequence, labels) pairs of the whole global batch of 8 sequences."""
    accumulation = 8 // world // micro
    config = LoaderConfig(str(corpus), sequence="pack", batch_size=micro, seed=3, block_documents=10, window_blocks=4)
    loaders = [PretrainingLoader(config, rank, world) for rank in range(world)]
    out = []
    for _ in range(steps):
        seen = Counter()
        for loader in loaders:
            for _ in range(accumulation):
                batch = next(loader)
                bounds = batch["cu_seqlens"].tolist()
                for start, end in zip(bounds[:-1], bounds[1:], strict=True):
                    ids, labels = batch["input_ids"][0, start:end], batch["labels"][0, start:end]
                    seen[(tuple(ids.tolist()), tuple(labels.tolist()))] += 1
        out.append(seen)
    return out


def test_the_global_batch_holds_the_same_documents_and_masks_whatever_the_world_size(corpus):
    reference = global_batches(corpus, world=1, micro=8, steps=12)
    assert global_batches(corpus, world=1, micro=2, steps=12) == reference  # accumulation 4
    assert global_batches(corpus, world=2, micro=2, steps=12) == reference
    assert global_batches(corpus, world=4, micro=1, steps=12) == reference
    assert all(any(set(labels) - {IGNORE_INDEX} for _, labels in step) for step in reference)  # masks drawn
    assert len(set().union(*reference)) == sum(sum(step.values()) for step in reference)  # no sample twice


def test_torchrun_with_two_processes_matches_one_process_with_accumulation(corpus, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = neobert(*RUN, f"data.path={corpus}", f"system.output_dir={one}", "data.micro_batch_size=2")
    assert single.returncode == 0, single.stderr
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = neobert(*RUN, f"data.path={corpus}", f"system.output_dir={two}", launcher=launcher)
    assert double.returncode == 0, double.stderr
    assert double.stdout.count("completed at step 6") == 1  # rank 0 alone prints the summary

    one_losses, two_losses = train_losses(one), train_losses(two)
    assert sorted(two_losses) == [1, 2, 3, 4, 5, 6]
    for step, loss in one_losses.items():
        assert two_losses[step] == pytest.approx(loss, rel=1e-5), step
    expected = final_weights(one)
    for name, tensor in final_weights(two).items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-5, rtol=1e-5)


def test_killed_inside_a_checkpoint_write_then_resumed_is_bit_for_bit_the_straight_run(corpus, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    done = neobert(*RUN, f"data.path={corpus}", f"system.output_dir={straight}")
    assert done.returncode == 0, done.stderr

    arguments = [*RUN, f"data.path={corpus}", f"system.output_dir={interrupted}"]
    killed = neobert(*arguments, script=KILLED_IN_A_CHECKPOINT_WRITE, KILL_AT_STEP="4")
    assert killed.returncode == -9, killed.stderr
    assert [step for step, _ in list_checkpoints(interrupted / "checkpoints")] == [2]
    assert list((interrupted / "checkpoints").glob(".tmp-step-00000004-*"))  # the write it was killed in
    resumed = neobert(*arguments, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 2" in resumed.stdout

    expected = final_weights(straight)
    got = final_weights(interrupted)
    assert sorted(got) == sorted(expected)
    for name, tensor in got.items():
        assert torch.equal(tensor, expected[name]), name
    assert train_losses(interrupted) == train_losses(straight)
    trainer_state = json.loads((interrupted / "checkpoints" / "latest" / "manifest.json").read_text())
    assert trainer_state["step"] == 6
