"""One writer per output folder: a second `pretrain`, `finetune` or `ablate` on a folder that a live process
writes gets a named error (exit 2) and changes nothing; a holder killed with -9 leaves no lock behind."""

import os
import signal
import subprocess
import sys
import time

import pytest

from neobert.cli import main
from neobert.demo.ablate import LadderSettings, run_ladder, select_rows
from neobert.finetune.trainer import FinetuneSettings, finetune
from neobert.run_lock import LOCK_FILE, FolderInUse, hold_folder
from neobert.train.checkpoint import find_latest_good
from test_pretrain_process import TINY, corpus, start_pretrain, train_steps  # noqa: F401 - corpus is a fixture

SAME = ("budget.steps=100000", "train.eval_every=100000", "train.checkpoint_every=100000")


def wait_for_training(process: subprocess.Popen, out) -> None:
    deadline = time.monotonic() + 600  # a hang guard only
    while not train_steps(out):
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read() if process.poll() else ""
        time.sleep(0.05)


def second_pretrain(corpus_path, out, *extra: str) -> int:
    return main(["pretrain", "demo", *TINY, f"data.path={corpus_path}", f"system.output_dir={out}", *extra])


def test_a_second_pretrain_on_a_live_runs_folder_is_refused_and_changes_nothing(corpus, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    first = start_pretrain(corpus, out, *SAME)
    try:
        wait_for_training(first, out)
        config_before = (out / "config.yaml").read_bytes()
        # Other settings, and a resume of the same folder: both refused while the first run lives.
        assert second_pretrain(corpus, out, "budget.steps=4", "train.seed=2") == 2
        assert second_pretrain(corpus, out, "budget.steps=4", "--resume") == 2
        error = capsys.readouterr().err
        assert error.count(f"system.output_dir {out} is in use by pid {first.pid}") == 2, error
        assert (out / "config.yaml").read_bytes() == config_before
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, output[-3000:]
    stopped = find_latest_good(out / "checkpoints").name
    step = int(stopped.removeprefix("step-"))
    # The folder is free once its writer has ended: the same settings now resume it.
    assert second_pretrain(corpus, out, *SAME, "--resume", "--stop-at-step", str(step + 1)) == 0
    assert find_latest_good(out / "checkpoints").name == f"step-{step + 1:08d}"


def test_a_writer_killed_with_minus_9_leaves_no_lock(corpus, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    first = start_pretrain(corpus, out, "budget.steps=100000", "train.eval_every=100000", "train.checkpoint_every=1")
    try:
        wait_for_training(first, out)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert (out / LOCK_FILE).is_file()  # the file stays; the kernel dropped the lock with its holder
    assert second_pretrain(corpus, out, "budget.steps=100000", "--resume", "--stop-at-step", "3") == 0


def test_the_lock_is_the_operating_systems_and_names_its_holder(tmp_path):
    folder = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from neobert.run_lock import hold_folder\n"
            f"with hold_folder({str(folder)!r}):\n    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(FolderInUse, match=rf"--out {folder} is in use by pid {holder.pid} on "),
            hold_folder(folder, "--out"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    # Free again, with no clean-up by anyone; a second holder in the same process is refused too.
    with hold_folder(folder, "--out"), pytest.raises(FolderInUse), hold_folder(folder, "--out"):
        pass
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(ValueError, match="is a file, not a folder"),
        hold_folder(tmp_path / "file", "system.output_dir"),
    ):
        pass


def test_finetune_and_ablate_refuse_a_folder_in_use_before_touching_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")

    def no_model():
        raise AssertionError("built a model for a folder in use")

    with hold_folder(out):
        with pytest.raises(FolderInUse, match="--out"):
            finetune(no_model, None, FinetuneSettings(), out, restart=True)
        settings = LadderSettings(corpus=str(tmp_path / "corpus"), out=str(out), quick=True)
        with pytest.raises(FolderInUse, match="--out"):
            run_ladder(select_rows(["m0"]), settings)
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_FILE, "results.json"])
    assert (out / "results.json").read_text() == "{}"
