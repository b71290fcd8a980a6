"""Every command that reads a checkpoint verifies it first: a damaged one (same size, other bytes) is refused
with one line naming the file and exit 3, and nothing is written from it."""

import re
import shutil

import pytest

from neobert.cli import main
from neobert.embed import load_embedder
from neobert.finetune.model import model_folder
from neobert.train.checkpoint import CheckpointError, find_latest_good
from test_commands import pretrain


@pytest.fixture(scope="module")
def damaged(corpus, tmp_path_factory):
    """A finished run's checkpoint, and a copy whose model.safetensors has one byte flipped in the middle."""
    out = tmp_path_factory.mktemp("run")
    assert pretrain(corpus, out, "budget.steps=2") == 0
    good = find_latest_good(out / "checkpoints")
    bad = out / "damaged-step"
    shutil.copytree(good, bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    return good, bad


MESSAGE = "model.safetensors does not match its checksum (the file is damaged)"


def test_export_refuses_a_damaged_checkpoint_and_writes_nothing(damaged, tmp_path, capsys):
    good, bad = damaged
    assert main(["export", "--model", str(bad), "--out", str(tmp_path / "x")]) == 3
    error = capsys.readouterr().err
    assert error.startswith(f"neobert export: {bad}: {MESSAGE}") and error.count("\n") == 1
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []
    assert main(["export", "--model", str(good), "--out", str(tmp_path / "x")]) == 0  # the intact one exports


def test_export_onnx_refuses_a_damaged_checkpoint(damaged, tmp_path, capsys):
    _, bad = damaged
    assert main(["export-onnx", "--model", str(bad), "--out", str(tmp_path / "onnx")]) == 3
    assert MESSAGE in capsys.readouterr().err and not (tmp_path / "onnx").exists()


def test_init_from_a_damaged_checkpoint_is_refused_before_training(corpus, damaged, tmp_path, capsys):
    good, bad = damaged
    out = tmp_path / "run"
    assert pretrain(corpus, out, "budget.steps=2", f"model.init_from={bad}") == 3
    assert f"neobert pretrain: model.init_from: {bad}: {MESSAGE}" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written, the folder included
    assert pretrain(corpus, out, "budget.steps=2", f"model.init_from={good}") == 0


def test_the_finetune_and_encode_readers_verify_the_checkpoint(damaged):
    good, bad = damaged
    for reader in (model_folder, load_embedder):
        with pytest.raises(CheckpointError, match=re.escape(f"{bad}: {MESSAGE}")):
            reader(bad)
    assert model_folder(good).samefile(good) and load_embedder(good).model is not None
