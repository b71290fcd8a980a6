"""Every task metric against scikit-learn / scipy on fixed inputs, and the GLUE task -> metric mapping."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk

from neobert.finetune import metrics

LABELS = [0, 1, 1, 0, 1, 1, 0, 0, 1, 0]
PREDICTIONS = [0, 1, 0, 0, 1, 1, 1, 0, 1, 1]
GOLD_SCORES = [0.0, 1.2, 2.5, 3.1, 4.8, 2.2, 0.4, 3.9]
PREDICTED_SCORES = [0.3, 1.0, 2.9, 2.7, 4.1, 2.6, 0.1, 4.4]


def test_classification_metrics_match_scikit_learn():
    assert metrics.accuracy(LABELS, PREDICTIONS) == pytest.approx(0.7)
    assert metrics.f1(LABELS, PREDICTIONS) == pytest.approx(sk.f1_score(LABELS, PREDICTIONS))
    assert metrics.matthews(LABELS, PREDICTIONS) == pytest.approx(sk.matthews_corrcoef(LABELS, PREDICTIONS))
    # By hand: tp=4 fp=2 fn=1 tn=3 -> F1 = 8/11; MCC = (12 - 2) / sqrt(6 * 5 * 5 * 4).
    assert metrics.f1(LABELS, PREDICTIONS) == pytest.approx(8 / 11)
    assert metrics.matthews(LABELS, PREDICTIONS) == pytest.approx(10 / math.sqrt(6 * 5 * 5 * 4))
    three = metrics.classification_metrics([0, 1, 2, 2], [0, 2, 2, 1], 3)
    assert three["f1_macro"] == pytest.approx(sk.f1_score([0, 1, 2, 2], [0, 2, 2, 1], average="macro"))
    assert "f1" not in three


def test_correlations_match_scipy():
    assert metrics.pearson(GOLD_SCORES, PREDICTED_SCORES) == pytest.approx(
        stats.pearsonr(GOLD_SCORES, PREDICTED_SCORES)[0]
    )
    assert metrics.spearman(GOLD_SCORES, PREDICTED_SCORES) == pytest.approx(
        stats.spearmanr(GOLD_SCORES, PREDICTED_SCORES)[0]
    )
    assert metrics.pearson(GOLD_SCORES, [1.0] * len(GOLD_SCORES)) == 0.0  # constant: no NaN


def test_multilabel_and_token_metrics():
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    predicted = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1]])
    result = metrics.multilabel_metrics(gold, predicted)
    assert result["f1_micro"] == pytest.approx(sk.f1_score(gold, predicted, average="micro"))
    assert result["subset_accuracy"] == pytest.approx(1 / 3)


def test_ner_scores_are_entity_level_and_pos_scores_token_level():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "B-MISC"]]
    scores = metrics.token_metrics(gold, predicted)
    # Gold entities: PER(0-1), LOC(3), ORG; predicted: PER(0), LOC(3), ORG, MISC. Two match exactly.
    assert scores["precision"] == pytest.approx(2 / 4) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # Token level: gold non-O tokens B-PER I-PER B-LOC B-ORG, predicted B-PER B-LOC B-ORG B-MISC; 3 agree.
    assert scores["token_f1"] == pytest.approx(3 / 4)
    # A type mismatch over the right span is no match; a continuation tag after O opens an entity (conlleval).
    assert metrics.token_metrics([["B-PER", "I-PER"]], [["B-LOC", "I-LOC"]])["f1"] == 0.0
    assert metrics.token_metrics([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])["f1"] == 1.0
    pos = metrics.token_metrics([["NN", "VB", "O"]], [["NN", "NN", "O"]])
    assert "precision" not in pos and pos["f1"] == pos["token_f1"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="same number and lengths"):
        metrics.token_metrics([["O"]], [["O", "O"]])


def test_glue_scores_are_the_papers_means():
    assert metrics.GLUE_METRICS["cola"] == (("matthews",), "matthews")
    assert metrics.GLUE_METRICS["stsb"][1] == "pearson" and metrics.GLUE_METRICS["qqp"][1] == "f1"
    assert metrics.glue_score("mrpc", {"accuracy": 0.8, "f1": 0.9}) == pytest.approx(0.85)
    assert metrics.glue_score("stsb", {"pearson": 0.9, "spearman": 0.8}) == pytest.approx(0.85)
    assert metrics.glue_score("mnli", {"matched_accuracy": 0.7, "mismatched_accuracy": 0.8}) == pytest.approx(0.75)
    assert metrics.glue_score("rte", {"accuracy": 0.6}) == pytest.approx(0.6)
