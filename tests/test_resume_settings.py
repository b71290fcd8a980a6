"""`pretrain --resume` continues only the same run (issue 20, item 3): a resume with other data, masking, model
or seed settings is refused with exit 2 naming them, before anything is written; the recipe and the budget
(train.*, budget.*, system.*) may change, as documented; a phase starts a new run, so it may change anything.
`--restart` deletes the earlier run and starts afresh, the same flag as in `finetune`, `glue` and `ablate`."""

import json

from data_helpers import prepare_files, sample_texts, write_jsonl
from round3_helpers import one_line_error, pretrain


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
        ("data.mlm_probability=0.3", "data.mlm_probability: 0.2 -> 0.3"),  # before: only reported, then trained
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
    assert pretrain(corpus, out, "budget.steps=3", "data.mlm_probability=0.3", "--resume", "--restart") == 2
    assert "give one of them" in one_line_error(capsys)
    assert pretrain(corpus, out, "budget.steps=3", "data.mlm_probability=0.3", "--restart") == 0
    assert "completed at step 3" in capsys.readouterr().out
    assert max(p.name for p in (out / "checkpoints").iterdir() if p.name != "latest") == "step-00000003"  # not 5
    assert "mlm_probability: 0.3" in (out / "config.yaml").read_text()
    assert max(json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_phase_taking_a_checkpoints_weights_may_change_the_masking(tmp_path, capsys):
    corpus = tmp_path / "prepared"
    prepare_files([write_jsonl(tmp_path / "docs.jsonl", sample_texts(120, long_every=0))], corpus, max_length=32)
    source = tmp_path / "main"
    _paused_run(corpus, source)
    branch = tmp_path / "branch"
    start = f"phase.from_checkpoint={source / 'checkpoints' / 'step-00000002'}", "phase.carry=weights"
    assert pretrain(corpus, branch, "budget.steps=4", *start, "data.mlm_probability=0.3") == 0
    assert "completed at step 4" in capsys.readouterr().out
    # Its own resume holds it to its own settings.
    assert pretrain(corpus, branch, "budget.steps=5", *start, "data.mlm_probability=0.3", "--resume") == 0
    capsys.readouterr()
    assert pretrain(corpus, branch, "budget.steps=6", *start, "--resume") == 2
    assert "data.mlm_probability: 0.3 -> 0.2" in one_line_error(capsys)
