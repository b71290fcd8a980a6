"""`pretrain --resume` continues only the same run (issue 20, item 3): a resume with other data, masking, model
or seed settings is refused with exit 2 naming them, before anything is written; the recipe and the budget
(train.*, budget.*, system.*) may change, as documented; a phase starts a new run, so it may change anything.
`--restart` deletes the earlier run and starts afresh, the same flag as in `finetune`, `glue` and `ablate`."""

import json
import shutil

import torch
import yaml

from helpers.cli import one_line_error, pretrain
from helpers.data import prepare_files, sample_texts, write_jsonl
from neobert.files import sha256_file


def _paused_run(corpus, out):
    assert pretrain(corpus, out, "budget.steps=4", "--stop-at-step", "2") == 0
    return {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".neobert.lock"}


def test_a_resume_with_other_data_model_or_seed_settings_is_refused_and_changes_nothing(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "prepared"
    prepare_files([write_jsonl(tmp_path / "docs.jsonl", sample_texts(120, long_every=0))], corpus, max_length=32)
    out = tmp_path / "run"
    before = _paused_run(corpus, out)
    capsys.readouterr()
    for change, named in [
        ("data.mlm_probability=0.25", "data.mlm_probability: 0.3 -> 0.25"),  # before: only reported, then trained
        ("train.seed=5", "train.seed: 0 -> 5"),
        ("model.overrides.rope_theta=5000", "model.overrides.rope_theta"),  # not a shape: the weights fit
    ]:
        assert pretrain(corpus, out, "budget.steps=4", "--resume", change) == 2, change
        error = one_line_error(capsys)
        assert f"{out / 'checkpoints' / 'step-00000002'} was saved by a run with other settings ({named}" in error
        assert "pass --restart to start afresh in it (this deletes the earlier run)" in error
    after = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".neobert.lock"}
    assert after == before
    # The same corpus named another way is the same data; the recipe and the budget may change.
    monkeypatch.chdir(tmp_path)
    assert pretrain("prepared", out, "budget.steps=5", "train.lr=5e-4", "--resume") == 0
    assert "completed at step 5" in capsys.readouterr().out
    # --restart: the earlier run is deleted, and the folder holds this run's alone.
    assert pretrain(corpus, out, "budget.steps=3", "data.mlm_probability=0.25", "--resume", "--restart") == 2
    assert "give one of them" in one_line_error(capsys)
    assert pretrain(corpus, out, "budget.steps=3", "data.mlm_probability=0.25", "--restart") == 0
    assert "completed at step 3" in capsys.readouterr().out
    assert max(p.name for p in (out / "checkpoints").iterdir() if p.name != "latest") == "step-00000003"  # not 5
    assert "mlm_probability: 0.25" in (out / "config.yaml").read_text()
    assert max(json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_phase_taking_a_checkpoints_weights_may_change_the_masking(tmp_path, capsys):
    corpus = tmp_path / "prepared"
    prepare_files([write_jsonl(tmp_path / "docs.jsonl", sample_texts(120, long_every=0))], corpus, max_length=32)
    source = tmp_path / "main"
    _paused_run(corpus, source)
    branch = tmp_path / "branch"
    start = f"phase.from_checkpoint={source / 'checkpoints' / 'step-00000002'}", "phase.carry=weights"
    assert pretrain(corpus, branch, "budget.steps=4", *start, "data.mlm_probability=0.25") == 0
    assert "completed at step 4" in capsys.readouterr().out
    # Its own resume holds it to its own settings.
    assert pretrain(corpus, branch, "budget.steps=5", *start, "data.mlm_probability=0.25", "--resume") == 0
    capsys.readouterr()
    assert pretrain(corpus, branch, "budget.steps=6", *start, "--resume") == 2
    assert "data.mlm_probability: 0.25 -> 0.3" in one_line_error(capsys)


def _in_old_words(checkpoint):
    """A checkpoint as the neobert before the data.eval section wrote it: the held-out rule as flat data.eval_*
    keys in config.yaml, and a loader state naming its setup with scheme, layout and a nested masking."""
    config_file = checkpoint / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    data = config["data"]
    data.update({f"eval_{name}": value for name, value in data.pop("eval").items()})
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    rank_file = checkpoint / "rank-00000.pt"
    rank_state = torch.load(rank_file, weights_only=True)
    loader = rank_state["loader"]["identity"]["config"]
    sequence = loader.pop("sequence")
    loader["scheme"], loader["layout"] = {"truncate": ("truncate", "padded"), "pack": ("pack", "packed")}[sequence]
    loader["masking"] = {
        "rate": loader.pop("mlm_probability"),
        "strategy": {"all": "all_mask", "bert": "80_10_10"}[loader.pop("mask_mode")],
        "identity_rate": loader.pop("mlm_identity_probability"),
    }
    torch.save(rank_state, rank_file)
    manifest = json.loads((checkpoint / "manifest.json").read_text(encoding="utf-8"))
    for name in ("config.yaml", "rank-00000.pt"):
        manifest["files"][name] = {
            "bytes": (checkpoint / name).stat().st_size,
            "sha256": sha256_file(checkpoint / name),
        }
    (checkpoint / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return config


def test_a_run_saved_with_the_flat_held_out_keys_resumes_as_the_same_run(tmp_path, capsys):
    corpus = tmp_path / "prepared"
    prepare_files([write_jsonl(tmp_path / "docs.jsonl", sample_texts(120, long_every=0))], corpus, max_length=32)
    old, new = tmp_path / "old", tmp_path / "new"
    _paused_run(corpus, old)
    shutil.copytree(old, new, symlinks=True)
    for checkpoint in (old / "checkpoints").glob("step-*"):
        config = _in_old_words(checkpoint)
    assert config["data"]["eval_sequence"] == "pack" and "eval" not in config["data"]  # the demo preset's rule
    (old / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    capsys.readouterr()
    assert pretrain(corpus, old, "budget.steps=4", "--resume") == 0
    printed = capsys.readouterr().out
    assert "completed at step 4" in printed and "changed since the checkpoint" not in printed
    assert pretrain(corpus, new, "budget.steps=4", "--resume") == 0
    final = [run / "checkpoints" / "step-00000004" / "model.safetensors" for run in (old, new)]
    assert final[0].read_bytes() == final[1].read_bytes()
    # Its settings are still held to, under their current names: the held-out rule may change (as the flat
    # keys could), the training masking may not.
    assert pretrain(corpus, old, "budget.steps=5", "--resume", "data.mask_mode=all") == 2
    assert "data.mask_mode: 'bert' -> 'all'" in one_line_error(capsys)
    assert pretrain(corpus, old, "budget.steps=5", "--resume", "data.eval.seed=1") == 0
    assert "changed since the checkpoint: data.eval.seed: 0 -> 1" in capsys.readouterr().out
