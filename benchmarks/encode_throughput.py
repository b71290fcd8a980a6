"""Embedding throughput (texts/s) on real short texts of varied length, in one run:
`neobert.embed.encode` (length-sorted, packed) against `SentenceTransformer.encode` with our model and with
transformers' ModernBertModel (base config), all randomly initialised, fp32 on the CPU.

    python benchmarks/encode_throughput.py [--texts 256] [--repeats 3] [--out results/bench/encode.json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench_common import ROOT, cores_cell, setup_info, table, target, time_calls, write_json


def short_texts(count: int) -> list[str]:
    """Reserved health-news tweets and news headlines (never pre-trained on), interleaved."""
    from neobert.data.demo_corpus import evaluation_records

    tweets = [r["text"] for r in evaluation_records("health_tweets") if r["text"].strip()]
    titles = [r["title"] for r in evaluation_records("news_articles") if r.get("title", "").strip()]
    mixed = [t for pair in zip(tweets, titles, strict=False) for t in pair]
    return mixed[:count]


def neobert_folder(root: Path, preset: str) -> Path:
    import neobert
    from neobert.export import export_model

    torch.manual_seed(0)
    raw = root / "neobert-raw"
    neobert.NeoBERTForMaskedLM(neobert.NeoBERTConfig.from_preset(preset)).save_pretrained(raw)
    neobert.load_tokenizer().save_pretrained(raw)
    return export_model(raw, root / "neobert")


def modernbert_sentence_transformer(root: Path):
    from sentence_transformers import SentenceTransformer, models
    from transformers import ModernBertConfig, ModernBertModel

    import neobert

    torch.manual_seed(0)
    folder = root / "modernbert"
    ModernBertModel(ModernBertConfig(vocab_size=30522, pad_token_id=0)).save_pretrained(folder)
    neobert.load_tokenizer().save_pretrained(folder)
    transformer = models.Transformer(str(folder), max_seq_length=512)
    return SentenceTransformer(modules=[transformer, models.Pooling(768, "mean")], device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--preset", default="neobert-250m")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "encode_throughput.json")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from neobert.embed import encode, load_embedder

    texts = short_texts(args.texts)
    with tempfile.TemporaryDirectory() as scratch:
        folder = neobert_folder(Path(scratch), args.preset)
        embedder = load_embedder(folder)
        ours_st = SentenceTransformer(str(folder), device="cpu")
        modernbert_st = modernbert_sentence_transformer(Path(scratch))
        routes = {
            "neobert.encode (packed)": lambda: encode(embedder, texts, batch_size=args.batch_size, show_progress=False),
            "neobert.encode (padded)": lambda: encode(
                embedder, texts, batch_size=args.batch_size, packed=False, show_progress=False
            ),
            "SentenceTransformer(NeoBERT)": lambda: ours_st.encode(
                texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False
            ),
            "SentenceTransformer(ModernBertModel)": lambda: modernbert_st.encode(
                texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False
            ),
        }
        rows = {}
        with torch.inference_mode():
            for name, fn in routes.items():
                timing = time_calls(fn, args.repeats, warmup=1)
                rows[name] = {**timing, "texts_per_s": len(texts) / timing["median_s"]}
    tokens = load_embedder_tokens(texts)
    speedup = rows["neobert.encode (packed)"]["texts_per_s"] / rows["SentenceTransformer(NeoBERT)"]["texts_per_s"]
    report = {
        "setup": {**setup_info("default", quick=False), "texts": len(texts), "mean_tokens": tokens},
        "rows": rows,
        "targets": [target("encode / SentenceTransformer, same model", speedup, 1.5)],
    }
    header = ("route", "texts/s", "median s", "cores")
    lines = [[n, f"{r['texts_per_s']:.1f}", f"{r['median_s']:.2f}", cores_cell(r)] for n, r in rows.items()]
    print("\n".join(table(header, lines)))
    print(f"encode / SentenceTransformer (same model): {speedup:.2f}x (target 1.5x); mean {tokens:.1f} tokens/text")
    write_json(report, args.out)


def load_embedder_tokens(texts: list[str]) -> float:
    from neobert import load_tokenizer

    ids = load_tokenizer()(texts)["input_ids"]
    return sum(map(len, ids)) / len(ids)


if __name__ == "__main__":
    main()
