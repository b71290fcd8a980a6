"""Two nodes as torchrun launches them: two agents (`--nnodes 2`, one process each) meeting at a c10d rendezvous
on 127.0.0.1, sharing the run folder as nodes share a file system, end where one process does."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch

from test_train_real_loader import RUN, corpus, environment, final_weights, neobert, train_losses

__all__ = ["corpus"]  # the prepared corpus fixture, shared with the single-node tests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agent(port: int, arguments: list[str]) -> subprocess.Popen:
    """One node's `torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d ...`, as the README's Slurm line
    starts it on each node."""
    launcher = [
        *("-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"),
        *("--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "neobert-test"),
        *("--max-restarts", "0"),
    ]
    command = [sys.executable, *launcher, "-m", "neobert", "pretrain", "demo", *arguments]
    return subprocess.Popen(command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_torchrun_agents_with_one_process_each_match_one_process(corpus, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = neobert(*RUN, f"data.path={corpus}", f"system.output_dir={one}", "data.micro_batch_size=2")
    assert single.returncode == 0, single.stderr

    port = free_port()
    arguments = [*RUN, f"data.path={corpus}", f"system.output_dir={two}"]
    nodes = [agent(port, arguments) for _ in range(2)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr[-4000:]
    assert sum(stdout.count("completed at step 6") for stdout, _ in outputs) == 1  # global rank 0 alone

    one_losses, two_losses = train_losses(one), train_losses(two)
    assert sorted(two_losses) == [1, 2, 3, 4, 5, 6]
    for step, loss in one_losses.items():
        assert two_losses[step] == pytest.approx(loss, rel=1e-5), step
    expected = final_weights(one)
    got = final_weights(two)
    assert sorted(got) == sorted(expected)
    for name, tensor in got.items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-5, rtol=0)
