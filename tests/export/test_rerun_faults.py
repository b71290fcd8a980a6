"""Faults that the re-run of issue 20's audit still found (item 5). `neobert export` on a full disk: safetensors
reports the fault in its message only ("I/O error: No space left on device (os error 28)"), which was a
traceback and exit 1; now it is the one line and exit code 4 of any full disk, and no staging folder is left
behind. `neobert glue --data org/name` that the hub cannot give (offline, unknown): a traceback after the
retries; now one line, exit 2."""

import pytest
from transformers import PreTrainedModel

from helpers.embed import exported_model
from neobert.cli import main
from neobert.errors import os_error_within

pytestmark = pytest.mark.usefixtures("one_thread")


class SafetensorLikeError(Exception):
    """As safetensors' SafetensorError: not an OSError, the errno only in the message."""


def test_a_full_disk_while_export_writes_the_weights_is_exit_4_in_one_line(tmp_path, capsys, monkeypatch):
    model = exported_model(tmp_path / "model")

    def no_space(self, *args, **kwargs):
        raise SafetensorLikeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", no_space)
    out = tmp_path / "exported"
    capsys.readouterr()
    assert main(["export", "--model", str(model), "--out", str(out)]) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"neobert export: cannot write --out {out}: {out}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder, no lock file


def test_only_a_message_naming_an_os_error_becomes_one():
    assert os_error_within(ValueError("shape mismatch")) is None
    fault = os_error_within(RuntimeError("I/O error: Disk quota exceeded (os error 122)"), "out")
    assert (fault.errno, fault.filename) == (122, "out")


def test_a_glue_dataset_the_hub_cannot_give_is_one_line(tmp_path, capsys, monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nowhere/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    model = exported_model(tmp_path / "model")
    capsys.readouterr()
    command = ["glue", "--model", str(model), "--data", "nowhere/glue", "--tasks", "rte", "--out", str(tmp_path / "g")]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "--data nowhere/glue: could not load GLUE task rte from the hub (ConnectionError: Couldn't reach" in err
    assert not (tmp_path / "g").exists()
