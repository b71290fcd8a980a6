"""Task metrics through scikit-learn and scipy, and which GLUE task reports which (spec D.1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as sk


def accuracy(labels: Sequence, predictions: Sequence) -> float:
    return float(sk.accuracy_score(labels, predictions))


def f1(labels: Sequence, predictions: Sequence, average: str = "binary") -> float:
    return float(sk.f1_score(labels, predictions, average=average, zero_division=0))


def matthews(labels: Sequence, predictions: Sequence) -> float:
    return float(sk.matthews_corrcoef(labels, predictions))


def _correlation(function, labels: Sequence, predictions: Sequence) -> float:
    # A constant prediction has no defined correlation; report 0 rather than NaN so model selection works.
    if np.ptp(np.asarray(predictions, dtype=float)) == 0 or np.ptp(np.asarray(labels, dtype=float)) == 0:
        return 0.0
    return float(function(labels, predictions)[0])


def pearson(labels: Sequence, predictions: Sequence) -> float:
    return _correlation(stats.pearsonr, labels, predictions)


def spearman(labels: Sequence, predictions: Sequence) -> float:
    return _correlation(stats.spearmanr, labels, predictions)


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], num_labels: int) -> dict[str, float]:
    result = {"accuracy": accuracy(labels, predictions), "f1_macro": f1(labels, predictions, "macro")}
    if num_labels == 2:
        result["f1"] = f1(labels, predictions)
        result["matthews"] = matthews(labels, predictions)
    else:
        result["matthews"] = matthews(labels, predictions)
    return result


def regression_metrics(labels: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    return {
        "pearson": pearson(labels, predictions),
        "spearman": spearman(labels, predictions),
        "mse": float(sk.mean_squared_error(labels, predictions)),
    }


def multilabel_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return {
        "f1_micro": f1(labels, predictions, "micro"),
        "f1_macro": f1(labels, predictions, "macro"),
        "subset_accuracy": accuracy(labels, predictions),
    }


CHUNK_PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")


def is_chunk_tagging(tags: Sequence[str]) -> bool:
    """Whether every tag is "O" or PREFIX-TYPE (IOB1, IOB2, IOE, BIOES, BILOU): entity spans can be read."""
    named = [t for t in tags if t != "O"]
    return bool(named) and all(t.startswith(CHUNK_PREFIXES) and len(t) > 2 for t in named)


def token_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Per-sentence tag sequences (names) in, scores out.

    `accuracy` counts every scored token; `token_f1` is micro F1 over tokens whose tag is not "O". With
    chunk tags (B-PER, I-LOC, ...) `f1`, `precision` and `recall` are entity-level as in CoNLL's
    conlleval (an entity counts when its type and both ends match; seqeval's default mode), the figure NER
    papers report; with other tag sets (POS tags) `f1` is the token-level one.
    """
    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted, strict=False)):
        raise ValueError("gold and predicted tag sequences must have the same number and lengths")
    flat_gold = [t for row in gold for t in row]
    flat_predicted = [t for row in predicted for t in row]
    named = sorted({t for t in flat_gold + flat_predicted if t != "O"})
    result = {
        "accuracy": accuracy(flat_gold, flat_predicted),
        "token_f1": float(sk.f1_score(flat_gold, flat_predicted, labels=named, average="micro", zero_division=0))
        if named
        else 0.0,
    }
    if is_chunk_tagging(flat_gold + flat_predicted):
        from seqeval import metrics as entity

        rows = dict(y_true=[list(row) for row in gold], y_pred=[list(row) for row in predicted], zero_division=0)
        result.update(
            f1=float(entity.f1_score(**rows)),
            precision=float(entity.precision_score(**rows)),
            recall=float(entity.recall_score(**rows)),
        )
    else:
        result["f1"] = result["token_f1"]
    return result


# Paper metrics per task (what the results table reports) and the code's single selection metric.
GLUE_METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "cola": (("matthews",), "matthews"),
    "sst2": (("accuracy",), "accuracy"),
    "mrpc": (("accuracy", "f1"), "accuracy"),
    "stsb": (("pearson", "spearman"), "pearson"),
    "qqp": (("accuracy", "f1"), "f1"),
    "mnli": (("matched_accuracy", "mismatched_accuracy"), "matched_accuracy"),
    "qnli": (("accuracy",), "accuracy"),
    "rte": (("accuracy",), "accuracy"),
    "wnli": (("accuracy",), "accuracy"),
}


def glue_score(task: str, results: dict[str, float]) -> float:
    """The task's number in the paper's table: the mean of its official metrics."""
    names, _ = GLUE_METRICS[task]
    return float(np.mean([results[name] for name in names]))
