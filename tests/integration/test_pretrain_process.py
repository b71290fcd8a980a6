"""`neobert pretrain` as its own process: Ctrl-C saves and exits cleanly; the Weights & Biases sink offline."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.data import sample_texts
from neobert.train.checkpoint import find_latest_good, read_checkpoint
from neobert.train.metrics import read_jsonl

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = [
    "model.preset=tiny",
    "system.precision=fp32",  # pinned: `auto` measures the host
    "model.overrides.num_hidden_layers=1",
    "model.overrides.hidden_size=32",
    "model.overrides.num_attention_heads=2",
    "model.overrides.intermediate_size=64",
    "data.max_length=32",
    "data.batch_size=4",
    "data.eval_batches=1",
    "train.warmup_steps=1",
    "train.log_every=1",
    "system.progress_bar=false",
]


@pytest.fixture(scope="module")
def corpus(prepared_corpus):
    return prepared_corpus(sample_texts(200, long_every=0), max_length=32, heldout_fraction=0.1)


def start_pretrain(corpus: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "neobert", "pretrain", "demo", *TINY, f"data.path={corpus}"]
    environment = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [*command, f"system.output_dir={out}", *extra],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def train_steps(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [r["step"] for r in read_jsonl(path) if "train/loss" in r]


def test_sigint_saves_a_checkpoint_at_the_step_reached_and_exits_0(corpus, tmp_path):
    out = tmp_path / "run"
    process = start_pretrain(
        corpus, out, "budget.steps=100000", "train.eval_every=100000", "train.checkpoint_every=100000"
    )
    try:
        deadline = time.monotonic() + 600  # a hang guard only: a busy machine is slow to start
        while not train_steps(out):
            assert process.poll() is None and time.monotonic() < deadline, (
                process.stdout.read() if process.poll() else ""
            )
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output[-3000:]
    reached = train_steps(out)[-1]
    assert reached < 100000 and f"interrupted at step {reached}" in output
    checkpoint = read_checkpoint(find_latest_good(out / "checkpoints"))
    assert checkpoint.step == reached  # the step under way when the signal came was finished, then saved


def wandb_records(run_file: Path) -> list:
    """The protobuf records of an offline run's .wandb file: a 7-byte header, then LevelDB-style log blocks
    of 32 KiB whose chunks (4-byte checksum, 2-byte length, 1-byte type) are joined into records."""
    from wandb.proto import wandb_internal_pb2

    raw, block, position = run_file.read_bytes(), 32768, 7
    assert raw[:4] == b":W&B"
    payloads, pending = [], b""
    while position + 7 <= len(raw):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", raw[position : position + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):  # block trailer or padding
            position += left
            continue
        chunk, position = raw[position + 7 : position + 7 + length], position + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a whole record, or the last chunk of one
            payloads.append(pending)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


@pytest.mark.slow
def test_the_wandb_sink_logs_every_record_offline(corpus, tmp_path):
    """About 10 s, most of it W&B's service process starting."""
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}
    sinks = ["system.log_sinks=[jsonl,wandb]", "system.wandb_project=neobert-test"]
    process = start_pretrain(corpus, out, "budget.steps=3", "train.eval_every=3", *sinks, env=env)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "neobert-test"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["budget"]["steps"] == 3 and config["model"]["preset"] == "tiny"  # the resolved config
    logged = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            values = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
            }
            logged.setdefault(values["_step"], {}).update(values)
    # Every JSONL record reached W&B at its step with the same values.
    for line in read_jsonl(out / "metrics.jsonl"):
        step = line.pop("step")
        assert {key: logged[step][key] for key in line} == line, step
    assert sorted(logged) == [1, 2, 3] and "eval/loss" in logged[3]
