"""The fine-tuning loop: heads learn separable toy problems, early stopping, best model, resume, the command."""

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers.finetune import tiny_model_folder, word_rows, write_table
from neobert.cli import main
from neobert.finetune.data import Columns, examples_from_rows
from neobert.finetune.model import load_task_model
from neobert.finetune.run import sequence_task
from neobert.finetune.trainer import FinetuneSettings, finetune

FAST = dict(lr=3e-3, batch_size=8, eval_batch_size=64, max_length=16, progress=False, classifier_dropout=0.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("model"))


def _task(rows, tokenizer, problem="auto"):
    train = examples_from_rows(rows, Columns(), "train")
    valid = examples_from_rows(rows[:16], Columns(), "validation")
    return sequence_task(train, {"validation": valid}, tokenizer, 16, problem, "|")


def _run(model_dir, data, out, **settings):
    config = FinetuneSettings(**{**FAST, **settings})
    return finetune(lambda: load_task_model(model_dir, data.space, 0.0), data, config, out)


def test_regression_head_learns_a_separable_problem(model_dir, tokenizer, tmp_path):
    rows = [{"text": r["text"], "label": 1.5 if r["label"] == "pos" else -0.5} for r in word_rows(64)]
    data = _task(rows, tokenizer)
    assert data.space.problem == "regression"
    result = _run(model_dir, data, tmp_path, max_steps=40, eval_every=20)
    assert result.best_metrics["pearson"] > 0.9
    assert json.loads(result.results_file.read_text())["metric"] == "pearson"


def test_multi_label_head_learns_a_separable_problem(model_dir, tokenizer, tmp_path):
    words = {"red": "r", "blue": "b"}
    rows = []
    for i in range(64):
        chosen = [w for j, w in enumerate(words) if (i >> j) & 1] or ["red"]
        rows.append({"text": "a " + " and ".join(chosen) + " car", "label": "|".join(words[w] for w in chosen)})
    data = _task(rows, tokenizer)
    assert data.space.problem == "multi"
    result = _run(model_dir, data, tmp_path, max_steps=80, eval_every=20)
    assert result.best_metrics["f1_micro"] > 0.9


def test_early_stopping_and_the_best_model_kept(model_dir, tokenizer, tmp_path):
    data = _task(word_rows(64), tokenizer)
    # A zero learning rate never improves on the first evaluation: the run stops after 1 + patience of them.
    result = _run(model_dir, data, tmp_path, lr=0.0, max_steps=50, eval_every=2, patience=3)
    history = json.loads(result.results_file.read_text())["history"]
    assert result.stopped_early and result.steps == 8 and len(history) == 4
    assert result.best_step == 2
    best = load_file(result.model_dir / "model.safetensors")
    assert torch.equal(
        best["classifier.weight"],
        load_file(tmp_path / "checkpoints" / "latest" / "model.safetensors")["classifier.weight"],
    )
    predictions = (tmp_path / "predictions-validation.jsonl").read_text().splitlines()
    assert len(predictions) == 16 and json.loads(predictions[0])["prediction"] in ("pos", "neg")


def test_an_interrupted_run_resumes_to_the_same_model(model_dir, tokenizer, tmp_path):
    data = _task(word_rows(64), tokenizer)
    settings = dict(max_steps=12, eval_every=4, classifier_dropout=0.1)
    whole = _run(model_dir, data, tmp_path / "whole", **settings)

    calls = {"n": 0}

    def failing_factory():
        model = load_task_model(model_dir, data.space, 0.0)
        original = model.forward

        def forward(*args, **kwargs):
            if model.training:
                calls["n"] += 1
                if calls["n"] == 7:
                    raise KeyboardInterrupt  # killed between the checkpoints of steps 4 and 8
            return original(*args, **kwargs)

        model.forward = forward
        return model

    config = FinetuneSettings(**{**FAST, **settings})
    with pytest.raises(KeyboardInterrupt):
        finetune(failing_factory, data, config, tmp_path / "cut")
    resumed = _run(model_dir, data, tmp_path / "cut", **settings)
    assert resumed.steps == whole.steps == 12
    a = load_file(whole.model_dir.parent / "latest" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "latest" / "model.safetensors")
    c = load_file(tmp_path / "whole" / "checkpoints" / "latest" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in c:
        torch.testing.assert_close(b[name], c[name], rtol=0, atol=1e-6)


def test_the_command_trains_and_refuses_bad_input(model_dir, tmp_path, capsys):
    train = write_table(tmp_path / "train.csv", word_rows(48))
    valid = write_table(tmp_path / "dev.csv", word_rows(16, seed=1))
    out = tmp_path / "run"
    common = ["finetune", "--model", str(model_dir), "--train", str(train), "--out", str(out), "--no-progress"]
    assert main([*common, "--validation", str(valid), "--max-steps", "6", "--eval-every", "3", "--lr", "1e-3"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["label_space"]["names"] == ["neg", "pos"] and results["steps"] == 6
    assert len(results["history"]) == 2 and results["train_tokens_per_second"] > 0
    bad = write_table(tmp_path / "bad.csv", [{"text": "x", "label": "maybe"}])
    assert main([*common, "--validation", str(bad)]) == 2
    assert "'maybe' never occurs in the training data" in capsys.readouterr().err
    assert main([*common, "--validation", str(valid), "--label-column", "gold"]) == 2
    assert "no column 'gold'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["finetune", "--model", str(empty), "--train", str(train), "--validation", str(valid), "--out", str(out)])
        == 2
    )
    assert "no model here" in capsys.readouterr().err


def test_token_classification_from_conll_files(model_dir, tmp_path):
    lines = []
    for i in range(24):
        name = ["Alice", "Bob", "Carol"][i % 3]
        lines += [f"{name} B-PER", "went O", "home O", ""]
    (tmp_path / "train.conll").write_text("\n".join(lines))
    (tmp_path / "dev.conll").write_text("\n".join(lines[:12]))
    out = tmp_path / "ner"
    args = ["finetune", "--task", "token-classification", "--model", str(model_dir), "--no-progress"]
    args += ["--train", str(tmp_path / "train.conll"), "--validation", str(tmp_path / "dev.conll"), "--out", str(out)]
    assert main([*args, "--max-steps", "30", "--eval-every", "10", "--lr", "3e-3", "--batch-size", "8"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "f1" and results["best_metrics"]["accuracy"] > 0.9
    first = json.loads((out / "predictions-validation.jsonl").read_text().splitlines()[0])
    assert first["label"] == ["B-PER", "O", "O"] and len(first["prediction"]) == 3
