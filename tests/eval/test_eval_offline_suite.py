"""The offline suite (GLUE-style tasks on available data) on `tiny` models with tiny budgets, beside a
compared checkpoint and the baseline."""

import json

import numpy as np
import pytest
import torch

from neobert import NeoBERTConfig, NeoBERTForMaskedLM, load_tokenizer
from neobert.cli import main
from neobert.demo.offline_suite import TASKS, SuiteBudget, task_examples


def probe_accuracy_by_hand(folder, train, test) -> float:
    """Mean of the last hidden states over real tokens (128 at most), a logistic regression on the
    training texts, accuracy on the test texts."""
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel

    model, tokenizer = AutoModel.from_pretrained(folder).eval(), load_tokenizer()

    def features(texts):
        rows = []
        for text in texts:
            batch = tokenizer([text], truncation=True, max_length=128, return_tensors="pt")
            with torch.no_grad():
                rows.append(model(input_ids=batch["input_ids"]).last_hidden_state[0].mean(0).numpy())
        return np.stack(rows)

    classifier = LogisticRegression(max_iter=2000).fit(features(train.texts), train.labels)
    return float(classifier.score(features(test.texts), test.labels))


@pytest.mark.slow
def test_the_offline_suite_runs_on_tiny_beside_the_baseline(tmp_path):
    models = []
    for seed, name in ((0, "tiny"), (1, "other")):
        torch.manual_seed(seed)
        NeoBERTForMaskedLM(NeoBERTConfig.from_preset("tiny")).save_pretrained(tmp_path / name)
        models.append(tmp_path / name)
    budget = SuiteBudget(max_train=40, max_test=20)
    train, test = task_examples(TASKS[1], budget)
    assert set(train.labels) == {"fresh", "rotten"} and not set(train.texts) & set(test.texts)
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(models[0]), "--suite", "offline", "--out", str(out), "--compare", str(models[1])]
    assert main([*args, "--budget-steps", "2", "--max-train", "40", "--max-test", "20"]) == 0
    report = json.loads((out / "offline" / "offline_suite.json").read_text())
    assert set(report["scores"]) == {"0:tiny", "1:other", "all-MiniLM-L6-v2"}
    for name, by_protocol in report["scores"].items():
        for values in by_protocol.values():
            assert set(values) == {t.name for t in TASKS}
            for task, value in values.items():  # a share of this task's test examples
                count = value * report["sizes"][task]["test"]
                assert count == pytest.approx(round(count), abs=1e-9), task
        # The fine-tuned figure is the accuracy of the predictions it wrote.
        for task in TASKS:
            lines = (out / "offline" / name / task.name / "predictions-test.jsonl").read_text().splitlines()
            rows = [json.loads(line) for line in lines]
            accuracy = np.mean([row["prediction"] == row["label"] for row in rows])
            assert by_protocol["fine-tuned"][task.name] == pytest.approx(accuracy), (name, task.name)
    # The compared checkpoint is another model: its probe differs somewhere, and each probe is what a
    # logistic regression on mean-pooled states gives.
    tiny, other = report["scores"]["0:tiny"]["linear probe"], report["scores"]["1:other"]["linear probe"]
    assert tiny != other
    assert tiny[TASKS[1].name] == pytest.approx(probe_accuracy_by_hand(models[0], train, test))
    assert "not GLUE" in (out / "offline" / "offline_suite.md").read_text()
