"""Reference points for held-out masked-LM figures: the unigram baseline a model must beat."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from neobert.data.sequences import TokenCorpus

IGNORE_INDEX = -100


def token_counts(corpus: TokenCorpus) -> np.ndarray:
    """How often each vocabulary id occurs in a prepared split (special tokens are not stored there)."""
    counts = np.zeros(corpus.vocab_size, dtype=np.int64)
    for tokens in corpus.tokens:
        counts += np.bincount(np.asarray(tokens), minlength=corpus.vocab_size)[: corpus.vocab_size]
    return counts


def unigram_baseline(counts: np.ndarray, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Always predicting the most frequent training token, and the cross-entropy of the (add-one smoothed)
    training unigram distribution, on the masked positions of `batches`."""
    probabilities = (counts + 1) / (counts.sum() + len(counts))
    top = int(np.argmax(counts))
    hits = total = 0
    nll = 0.0
    for batch in batches:
        labels = batch["labels"].numpy().ravel()
        labels = labels[labels != IGNORE_INDEX]
        hits += int((labels == top).sum())
        nll -= float(np.log(probabilities[labels]).sum())
        total += labels.size
    if total == 0:
        raise ValueError("no masked positions in the held-out batches")
    return {"loss": nll / total, "accuracy": hits / total, "perplexity": math.exp(nll / total), "top_token": top}
