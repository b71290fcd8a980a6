"""Why frozen embeddings of a checkpoint compare with a random initialisation as they do: for the token
embeddings, the middle layer and the final layer, mean-pooled, the offline retrieval suite's recall@1 and
nDCG@10 (raw and centred), the mean cosine between documents (anisotropy), the share of the three largest
dimensions, and the offline suite's linear probe.

    python benchmarks/studies/embedding_diagnostics.py CHECKPOINT [--random-init [--seed 0]] --out diag.json

`--random-init` scores the initialisation a run with that seed starts from, built from the checkpoint's
config (the MLM model is built as the trainer builds it, and its encoder is taken).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from neobert.pooling import pool_padded

BATCH = 64


def load_encoder(folder: str, random_init: bool, seed: int):
    from transformers import AutoConfig, AutoModel

    import neobert

    if not random_init:
        return AutoModel.from_pretrained(folder).eval()
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(seed)
    return neobert.NeoBERTForMaskedLM(config).model.eval()


@torch.no_grad()
def pooled_by_layer(model, tokenizer, texts: list[str], max_length: int = 128) -> dict[str, np.ndarray]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(texts), BATCH):
        chunk = order[start : start + BATCH]
        encoded = tokenizer(
            [texts[i] for i in chunk], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        out = model(**{k: encoded[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
        states = out.hidden_states
        for name, hidden in (("embeddings", states[0]), ("middle", states[len(states) // 2]), ("final", states[-1])):
            parts.setdefault(name, []).append(pool_padded(hidden.float(), encoded["attention_mask"], "mean").numpy())
    inverse = np.argsort(np.asarray(order))
    return {name: np.concatenate(chunks)[inverse] for name, chunks in parts.items()}


def anisotropy(vectors: np.ndarray, count: int = 500) -> float:
    unit = vectors[:count] / np.linalg.norm(vectors[:count], axis=1, keepdims=True)
    cosines = unit @ unit.T
    n = len(unit)
    return float((cosines.sum() - n) / (n * n - n))


def top3_share(vectors: np.ndarray) -> float:
    energy = np.sort((vectors**2).mean(0))[::-1]
    return float(energy[:3].sum() / energy.sum())


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from neobert.demo.offline_suite import TASKS, SuiteBudget, task_examples
    from neobert.demo.retrieval_offline import headline_article_pairs, retrieval_metrics
    from neobert.tokenizer import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/embedding_diagnostics.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    model, tokenizer = load_encoder(args.checkpoint, args.random_init, args.seed), load_tokenizer()
    report: dict = {"checkpoint": args.checkpoint, "random_init": args.random_init}
    headlines, articles = headline_article_pairs(max_articles=1000)
    queries, documents = pooled_by_layer(model, tokenizer, headlines), pooled_by_layer(model, tokenizer, articles)
    for layer in queries:
        raw = retrieval_metrics(queries[layer], documents[layer])
        mean = documents[layer].mean(0)
        centred = retrieval_metrics(queries[layer] - mean, documents[layer] - mean)
        report[f"retrieval/{layer}"] = {
            "recall_at_1": raw["recall_at_1"],
            "ndcg_at_10": raw["ndcg_at_10"],
            "recall_at_1_centred": centred["recall_at_1"],
            "anisotropy": anisotropy(documents[layer]),
            "top3_share": top3_share(documents[layer]),
        }
    budget = SuiteBudget(max_train=1000, max_test=400)
    for task in TASKS:
        train, test = task_examples(task, budget)
        x_train, x_test = pooled_by_layer(model, tokenizer, train.texts), pooled_by_layer(model, tokenizer, test.texts)
        for layer in x_train:
            classifier = LogisticRegression(max_iter=2000).fit(x_train[layer], train.labels)
            report.setdefault(f"probe/{layer}", {})[task.name] = float(classifier.score(x_test[layer], test.labels))
    for key in [k for k in report if k.startswith("probe/")]:
        report[key]["mean"] = float(np.mean(list(report[key].values())))
    report["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for key, value in report.items():
        print(key, value)


if __name__ == "__main__":
    main()
