"""One writer per output (issue 20, item 1) for `glue`, `contrastive`, `export` and `export-onnx`: a second
command on an output that a live process writes exits 2 naming the holder's pid, before any work, and
changes nothing. Exported folders are written elsewhere and renamed into place, so their lock is a file
beside them (`.NAME.neobert.lock`), gone again when the holder ends."""

import os
import subprocess
import sys

import pytest

from helpers.cli import one_line_error
from neobert.cli import main
from neobert.run_lock import LOCK_FILE, FolderInUse, hold_beside

HOLDER = """
import contextlib, sys, time
from neobert.run_lock import hold_beside, hold_folder
with contextlib.ExitStack() as stack:
    for target in sys.argv[2:]:
        stack.enter_context(hold_beside(target, "--out"))
    stack.enter_context(hold_folder(sys.argv[1], "--out"))
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_of_an_output_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    glue_out, exported, embedder = tmp_path / "glue", tmp_path / "exported", tmp_path / "embedder"
    model = tmp_path / "model"  # not there: the lock is checked first, so nothing else is looked at
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(glue_out), str(exported), str(embedder), str(model)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        commands = {
            "export": ["export", "--model", str(model), "--out", str(exported)],
            "export --restart": ["export", "--model", str(model), "--out", str(exported), "--restart"],
            "export --onnx": ["export", "--model", str(model), "--out", str(embedder), "--onnx"],
            "export --onnx into the model": ["export", "--model", str(model), "--onnx"],
            "contrastive": ["contrastive", "--model", str(model), "--data", str(tmp_path / "p.jsonl")]
            + ["--out", str(embedder), "--restart"],
            "glue": ["glue", "--model", str(model), "--data", str(tmp_path / "glue-data"), "--out", str(glue_out)]
            + ["--tasks", "rte", "--restart"],
        }
        for name, command in commands.items():
            assert main(command) == 2, name
            error = one_line_error(capsys)
            assert f"is in use by pid {holder.pid} on " in error, (name, error)
    finally:
        holder.kill()
        holder.wait()
    # Nothing was written by the refused commands; the holder killed with -9 left only its unheld lock files.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".exported" + LOCK_FILE, ".embedder" + LOCK_FILE, ".model" + LOCK_FILE, "glue"]
    )
    assert [p.name for p in glue_out.iterdir()] == [LOCK_FILE]
    with hold_beside(exported), hold_beside(embedder):  # free again without anyone's clean-up
        pass


def test_a_lock_beside_is_held_again_by_its_holder_and_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "b" / "exported"
    with hold_beside(out, "--out"):
        assert (tmp_path / "a" / "b" / f".exported{LOCK_FILE}").is_file()
        with hold_beside(out, "--out"):  # train_contrastive's export takes the lock its run holds
            pass
        assert (tmp_path / "a" / "b" / f".exported{LOCK_FILE}").is_file()
    assert list(tmp_path.iterdir()) == []  # the lock file and the folders made for it alone are gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"), hold_beside(tmp_path / "file" / "out"):
        pass
    assert FolderInUse.__mro__[1] is ValueError  # exit 2 in every command that reports a ValueError
