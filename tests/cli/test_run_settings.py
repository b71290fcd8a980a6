"""Hardening, round three (issue 20, item 3): a folder's results always match its settings. finetune, glue and
ablate resume or read back only a run of the same settings, data and starting model; otherwise exit 2
naming what differs, and `--restart` starts afresh. Each test is the audit's command and what it must do."""

import json

import pytest

from helpers.cli import FAST_FINETUNE, one_line_error
from helpers.data import sample_texts
from helpers.embed import exported_model
from helpers.finetune import tiny_model_folder, word_rows, write_table
from helpers.glue_files import write_glue_folder
from neobert.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("model"))


def test_finetune_into_a_finished_folder_with_other_settings_is_refused_until_restart(model_dir, tmp_path, capsys):
    train = write_table(tmp_path / "train.csv", word_rows(32))
    other_train = write_table(tmp_path / "other.csv", word_rows(32, seed=5))
    valid = write_table(tmp_path / "dev.csv", word_rows(16, seed=1))
    out = tmp_path / "run"
    command = ["finetune", "--model", str(model_dir), "--validation", str(valid), "--out", str(out), *FAST_FINETUNE]
    assert main([*command, "--train", str(train), "--lr", "1e-3"]) == 0
    finished = (out / "results.json").read_bytes()
    capsys.readouterr()

    # Before: exit 0, "resuming from step 4", nothing trained, the old results kept under the new settings.
    assert main([*command, "--train", str(train), "--lr", "2e-3"]) == 2
    err = one_line_error(capsys)
    assert "holds a run started with other settings (settings.lr: 0.001 -> 0.002)" in err and "--restart" in err
    assert main([*command, "--train", str(other_train), "--lr", "1e-3"]) == 2
    assert "data.train: other contents" in one_line_error(capsys)
    assert (out / "results.json").read_bytes() == finished

    # The same command again is the same run: it resumes (there is nothing left to train) and agrees.
    assert main([*command, "--train", str(train), "--lr", "1e-3"]) == 0
    assert json.loads((out / "results.json").read_text())["best_metric"] == json.loads(finished)["best_metric"]

    # --restart: the earlier run is gone and the results are this run's.
    assert main([*command, "--train", str(train), "--lr", "2e-3", "--restart"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["lr"] == 2e-3 and results["steps"] == 4


def test_finetune_with_another_label_space_in_a_finished_folder_is_refused(model_dir, tmp_path, capsys):
    train = write_table(tmp_path / "train.csv", word_rows(32))
    valid = write_table(tmp_path / "dev.csv", word_rows(16, seed=1))
    three = [{**row, "label": ["pos", "neg", "meh"][i % 3]} for i, row in enumerate(word_rows(32))]
    out = tmp_path / "run"
    command = ["finetune", "--model", str(model_dir), "--out", str(out), *FAST_FINETUNE]
    assert main([*command, "--train", str(train), "--validation", str(valid)]) == 0
    capsys.readouterr()
    three_train = write_table(tmp_path / "three.csv", three)
    three_valid = write_table(tmp_path / "three-dev.csv", three[:12])
    # Before: a traceback from loading a 2-label classifier into a 3-label one.
    assert main([*command, "--train", str(three_train), "--validation", str(three_valid)]) == 2
    err = one_line_error(capsys)
    assert "label_space.names" in err and "--restart" in err


def test_a_checkpoint_without_recorded_settings_is_not_resumed(model_dir, tmp_path, capsys):
    train = write_table(tmp_path / "train.csv", word_rows(32))
    valid = write_table(tmp_path / "dev.csv", word_rows(16, seed=1))
    out = tmp_path / "run"
    command = ["finetune", "--model", str(model_dir), "--train", str(train), "--validation", str(valid)]
    assert main([*command, "--out", str(out), *FAST_FINETUNE]) == 0
    (out / "run-settings.json").unlink()  # as a folder from before the record existed
    capsys.readouterr()
    assert main([*command, "--out", str(out), *FAST_FINETUNE]) == 2
    assert "settings were not recorded (run-settings.json is missing)" in one_line_error(capsys)


@pytest.fixture(scope="module")
def ladder_corpus(prepared_corpus):
    return prepared_corpus(sample_texts(200, long_every=0), max_length=128, heldout_fraction=0.1)


def test_ablate_into_a_finished_folder_with_other_steps_is_refused_until_restart(ladder_corpus, tmp_path, capsys):
    out = tmp_path / "ladder"
    command = ["ablate", "--quick", "--rows", "m0", "--seeds", "1", "--no-probe", "--corpus", str(ladder_corpus)]
    command += ["--out", str(out)]
    assert main(command) == 0
    finished = (out / "results.json").read_bytes()
    capsys.readouterr()

    # Before: exit 0 in seconds, the old 12-step table printed, results.json claiming 14 steps.
    assert main([*command, "--steps", "14"]) == 2
    err = one_line_error(capsys)
    assert "settings.steps: null -> 14" in err and "--restart" in err
    assert (out / "results.json").read_bytes() == finished

    assert main([*command, "--steps", "14", "--restart"]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["settings"]["steps"] == 14 and [run["steps"] for run in report["runs"]] == [14]


def test_contrastive_takes_restart_and_keeps_overwrite(tmp_path, capsys):
    model = exported_model(tmp_path)
    capsys.readouterr()  # its progress bars
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}"}) + "\n" for i in range(4)))
    out = tmp_path / "embedder"
    command = ["contrastive", "--model", str(model), "--data", str(pairs), "--out", str(out), "--batch-size", "4"]
    assert main([*command, "--steps", "1"]) == 0
    capsys.readouterr()
    assert main([*command, "--steps", "2"]) == 2
    assert "exists; pass --restart to replace it" in one_line_error(capsys)
    before = (out / "model.safetensors").read_bytes()
    assert main([*command, "--steps", "2", "--restart"]) == 0
    assert (out / "model.safetensors").read_bytes() != before
    assert main([*command, "--steps", "1", "--overwrite"]) == 0


def test_glue_does_not_read_back_a_grid_point_of_other_settings(model_dir, tmp_path, capsys):
    glue = write_glue_folder(tmp_path / "data")
    out = tmp_path / "glue"
    command = ["glue", "--model", str(model_dir), "--data", str(glue), "--out", str(out), "--no-progress"]
    command += ["--tasks", "sst2", "--grid", "small", "--lrs", "1e-4", "--batch-sizes", "8", "--eval-every", "1"]
    command += ["--max-length", "32"]
    assert main([*command, "--max-steps", "2"]) == 0
    finished = (out / "sst2" / "lr0.0001-bs8-wd0.01" / "results.json").read_bytes()
    capsys.readouterr()
    # Before: the 2-step run's results read back as those of a 3-step run.
    assert main([*command, "--max-steps", "3"]) == 2
    err = one_line_error(capsys)
    assert "settings.max_steps: 2 -> 3" in err and "--restart" in err
    assert (out / "sst2" / "lr0.0001-bs8-wd0.01" / "results.json").read_bytes() == finished
    assert main([*command, "--max-steps", "2"]) == 0  # the same settings: read back
    assert main([*command, "--max-steps", "3", "--restart"]) == 0
    results = json.loads((out / "sst2" / "lr0.0001-bs8-wd0.01" / "results.json").read_text())
    assert results["steps"] == 3


def test_mteb_does_not_read_back_the_scores_of_another_model_of_the_same_name(tmp_path, monkeypatch, capsys):
    mteb = pytest.importorskip("mteb")
    from test_embed_mteb import LocalRetrieval, expected_scores

    monkeypatch.setattr(mteb, "get_tasks", lambda tasks: [LocalRetrieval() for _ in tasks])
    first, second = exported_model(tmp_path / "a", seed=0), exported_model(tmp_path / "b", seed=1)
    assert first.name == second.name  # both "exported": one name for mteb, other weights
    out = tmp_path / "mteb"
    scores = {}
    for folder in (first, second):
        assert main(["mteb", "--model", str(folder), "--tasks", "Local", "--out", str(out), "--no-prompts"]) == 0
        scores[folder] = json.loads((out / "summary.json").read_text())["main_scores"]["NeoBERTLocalRetrieval"]
    # Before: the second model's "scores" were the first's, read from mteb's cache (revision "local").
    expected = {folder: expected_scores(folder)["ndcg_at_10"] for folder in (first, second)}
    assert expected[first] != pytest.approx(expected[second], abs=1e-3)
    for folder in (first, second):
        assert scores[folder] == pytest.approx(expected[folder], abs=1e-5)
