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


def token_metrics(labels: Sequence[int], predictions: Sequence[int], outside: int | None) -> dict[str, float]:
    """Accuracy over scored tokens, and micro F1 over the tags that are not `outside` (the "O" tag)."""
    result = {"accuracy": accuracy(labels, predictions)}
    tags = sorted(set(labels) | set(predictions))
    named = [t for t in tags if t != outside]
    result["f1"] = float(sk.f1_score(labels, predictions, labels=named, average="micro", zero_division=0))
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
