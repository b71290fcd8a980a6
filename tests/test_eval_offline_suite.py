"""The offline suite (GLUE-style tasks on available data) on a `tiny` model with tiny budgets."""

import json

import pytest

from neobert import NeoBERTConfig, NeoBERTForMaskedLM
from neobert.cli import main
from neobert.eval.offline_suite import TASKS, SuiteBudget, task_examples


@pytest.mark.slow
def test_the_offline_suite_runs_on_tiny_beside_the_baseline(tmp_path):
    model = tmp_path / "tiny"
    NeoBERTForMaskedLM(NeoBERTConfig.from_preset("tiny")).save_pretrained(model)
    train, test = task_examples(TASKS[1], SuiteBudget(max_train=40, max_test=20))
    assert set(train.labels) == {"fresh", "rotten"} and not set(train.texts) & set(test.texts)
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model), "--suite", "offline", "--out", str(out)]
    assert main([*args, "--budget-steps", "2", "--max-train", "40", "--max-test", "20"]) == 0
    report = json.loads((out / "offline" / "offline_suite.json").read_text())
    assert set(report["scores"]) == {"0:tiny", "all-MiniLM-L6-v2"}
    for by_protocol in report["scores"].values():
        for values in by_protocol.values():
            assert set(values) == {t.name for t in TASKS}
            assert all(0.0 <= v <= 1.0 for v in values.values())
    assert "not GLUE" in (out / "offline" / "offline_suite.md").read_text()
