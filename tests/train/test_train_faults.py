"""Faults that do not kill the process: damaged checkpoints, a full disk, bad YAML, a late signal, redone steps."""

import errno
import os
import shutil
import signal
from types import SimpleNamespace

import pytest
import torch

from neobert.cli import main
from neobert.train import checkpoint as ckpt
from neobert.train.checkpoint import CheckpointError, DiskFullError, apply_retention, list_checkpoints
from neobert.train.metrics import read_jsonl
from neobert.train.pretrain import pretrain
from test_commands import TINY
from test_train_pretrain import SyntheticLoader, make_loader, tiny_config, weights

pytestmark = pytest.mark.usefixtures("one_thread")


def damage(path):
    """One flipped byte in the middle: the size stays, only the checksum sees it."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    replacement = path.with_name(path.name + ".new")
    replacement.write_bytes(bytes(data))
    os.replace(replacement, path)


def steps(root):
    return [step for step, _ in list_checkpoints(root)]


def test_resume_skips_a_damaged_latest_checkpoint_and_says_so(tmp_path, capsys):
    straight = pretrain(tiny_config(tmp_path / "straight", "train.checkpoint_every=2"), make_loader)
    out = tmp_path / "run"
    pretrain(tiny_config(out, "train.checkpoint_every=2", "train.keep_last=3"), make_loader, stop_at_step=4)
    for name in (ckpt.TRAINER_FILE, ckpt.MODEL_FILE):  # the first damaged file in the manifest is named
        damage(out / "checkpoints" / "step-00000004" / name)
        capsys.readouterr()
        with pytest.raises(CheckpointError, match=f"{name} does not match its checksum"):
            pretrain(tiny_config(out, "train.checkpoint_every=2"), make_loader, resume=str(out / "checkpoints/latest"))
    capsys.readouterr()
    resumed = pretrain(tiny_config(out, "train.checkpoint_every=2", "train.keep_last=3"), make_loader, resume=True)
    printed = capsys.readouterr().out
    assert "skipped the checkpoint of step 4 (step-00000004)" in printed and ckpt.MODEL_FILE in printed
    assert "resumed from" in printed and "step-00000002 at step 2" in printed
    assert resumed.step == 6
    for name, tensor in weights(straight).items():
        assert torch.equal(tensor, weights(resumed)[name]), name
    # The resumed run saved step 4 again in place of the damaged folder; keep_last=3 kept all three.
    assert steps(out / "checkpoints") == [2, 4, 6]


def test_retention_never_lets_damaged_checkpoints_push_out_good_ones(tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_config(out, "train.checkpoint_every=1", "train.keep_last=5"), make_loader, stop_at_step=4)
    root = out / "checkpoints"
    for step in (3, 4):
        damage(root / f"step-0000000{step}" / ckpt.MODEL_FILE)
    apply_retention(root, keep_last=2)
    assert steps(root) == [1, 2, 3, 4]  # 1 and 2 are the two newest that verify; 3 and 4 are left to look at
    shutil.rmtree(root / "step-00000004")
    apply_retention(root, keep_last=1)
    assert steps(root) == [2, 3]


def test_resume_with_every_checkpoint_damaged_stops_and_deletes_nothing(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    run = ["pretrain", "demo", *TINY, f"data.path={corpus}", f"system.output_dir={out}", "budget.steps=6"]
    assert main([*run, "--stop-at-step", "4"]) == 0
    before = steps(out / "checkpoints")
    assert before == [2, 4]
    for step in before:
        damage(out / "checkpoints" / f"step-0000000{step}" / ckpt.MODEL_FILE)
    capsys.readouterr()
    assert main([*run, "--resume"]) == 3
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "holds no checkpoint that verifies" in error
    assert "step 4: model.safetensors does not match its checksum" in error and "nothing was deleted" in error
    assert steps(out / "checkpoints") == before
    # A checkpoint named on the command line that is damaged: the same one line and code, no traceback.
    assert main([*run, "--resume", str(out / "checkpoints" / "step-00000002")]) == 3
    assert "step-00000002: model.safetensors does not match its checksum" in capsys.readouterr().err


def test_a_yaml_syntax_error_is_one_line_naming_the_file(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  lr: 1e-3\n  warmup_steps: [1, 2\n", encoding="utf-8")
    assert main(["pretrain", str(broken), f"system.output_dir={tmp_path / 'run'}"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"{broken}: YAML syntax error at line 4" in error


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save

    def disk_fills_at_step_4(obj, path, *args, **kwargs):
        if "step-00000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", disk_fills_at_step_4)
    run = ["pretrain", "demo", *TINY, f"data.path={corpus}", f"system.output_dir={out}", "budget.steps=6"]
    assert main(run) == 4
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "is full" in error
    assert "checkpoint of step 4 was not written; the previous checkpoint is kept (step-00000002)" in error
    assert steps(out / "checkpoints") == [2] and not list((out / "checkpoints").glob(".tmp-*"))
    assert ckpt.read_checkpoint(out / "checkpoints" / "latest").step == 2


def test_torch_zip_writer_failure_on_a_nearly_full_disk_is_a_full_disk(tmp_path, monkeypatch):
    def zip_writer_fails(obj, path, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4288 vs 4176")

    monkeypatch.setattr(ckpt.torch, "save", zip_writer_fails)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: SimpleNamespace(total=1 << 30, used=1 << 30, free=4096))
    model = torch.nn.Linear(2, 2)
    with pytest.raises(DiskFullError, match=r"is full \(0 MB free\).*there was none"):
        ckpt.save_checkpoint(tmp_path, 1, _Saveable(model), {}, [ckpt.RankState(None, {})])
    monkeypatch.undo()
    monkeypatch.setattr(ckpt.torch, "save", zip_writer_fails)  # plenty of room: not put down to the disk
    with pytest.raises(RuntimeError, match="unexpected pos") as raised:
        ckpt.save_checkpoint(tmp_path, 1, _Saveable(model), {}, [ckpt.RankState(None, {})])
    assert not isinstance(raised.value, DiskFullError)


class _Saveable(torch.nn.Module):
    """Just enough of a transformers model for save_checkpoint: `save_pretrained` writing model.safetensors."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def save_pretrained(self, folder, state_dict=None):
        from safetensors.torch import save_file

        save_file(self.state_dict(), os.path.join(folder, ckpt.MODEL_FILE))


def test_a_signal_during_the_final_evaluation_stops_it_and_keeps_the_checkpoint(tmp_path, capsys):
    class SignalsOnFirstBatch:
        def __init__(self, config, micro_batch):
            self.loader = SyntheticLoader(config, micro_batch)

        def __iter__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            return iter([next(self.loader)])

    previous = signal.getsignal(signal.SIGTERM)
    result = pretrain(tiny_config(tmp_path), make_loader, lambda c, m, ctx: SignalsOnFirstBatch(c, m))
    assert result.status == "interrupted" and result.step == 6 and result.last_eval == {}
    assert ckpt.read_checkpoint(result.checkpoint).step == 6
    assert "a signal stopped the final evaluation; the checkpoint of step 6 is saved" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is previous


def test_steps_redone_after_a_resume_appear_once_in_the_metrics(tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_config(out, "train.checkpoint_every=4"), make_loader)
    first = read_jsonl(out / "metrics.jsonl")
    shutil.rmtree(out / "checkpoints" / "step-00000006")  # as if killed after step 6 was logged, before its save
    (out / "checkpoints" / "latest").unlink()
    pretrain(tiny_config(out, "train.checkpoint_every=4"), make_loader, resume=True)
    records = read_jsonl(out / "metrics.jsonl")
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    superseded = read_jsonl(out / "metrics.superseded.jsonl")
    assert [r["step"] for r in superseded if "train/loss" in r] == [5, 6]
    # The redone steps are the same steps: an exact resume logs the same losses again.
    assert [r["train/loss"] for r in records if "train/loss" in r] == [
        r["train/loss"] for r in first if "train/loss" in r
    ]
