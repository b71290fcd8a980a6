"""Embedding throughput (texts/s) on real short texts of varied length, in one run:
`neobert.embed.encode` (length-sorted, packed; padded; and ONNX int8 through onnxruntime) against
`SentenceTransformer.encode` with our model and with transformers' ModernBertModel (base config), all
randomly initialised, on the CPU. Beside the measured rows it reports the float32 bound: the texts/s of
computing every real token's matrix products at the machine's measured matrix-product peak, which no exact
float32 route can beat.

    python benchmarks/encode_throughput.py [--texts 256] [--repeats 3] [--out results/bench/encode.json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench_common import ROOT, cores_cell, measure_peak, setup_info, table, target, time_calls, write_json


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


def modernbert_sentence_transformer(root: Path, quick: bool):
    from sentence_transformers import SentenceTransformer, models
    from transformers import ModernBertConfig, ModernBertModel

    import neobert

    torch.manual_seed(0)
    folder = root / "modernbert"
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if quick else {}
    config = ModernBertConfig(vocab_size=30522, pad_token_id=0, **small)
    ModernBertModel(config).save_pretrained(folder)
    neobert.load_tokenizer().save_pretrained(folder)
    transformer = models.Transformer(str(folder), max_seq_length=512)
    return SentenceTransformer(modules=[transformer, models.Pooling(config.hidden_size, "mean")], device="cpu")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--preset", default="neobert-250m")
    parser.add_argument(
        "--quick", action="store_true", help="a seconds-long check of the script (tiny NeoBERT, small ModernBERT)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "encode_throughput.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.repeats, args.preset = 24, 1, "tiny"
    return args


def float32_bound(model: torch.nn.Module, token_count: int, quick: bool) -> dict:
    """Texts/s if every real token's matrix products ran at the measured peak (attention is left out, so
    the bound is generous)."""
    params = sum(p.numel() for name, p in model.named_parameters() if name.split(".")[0] != "encoder")
    peak = measure_peak((256,) if quick else (1024, 2048), repeats=1 if quick else 5)["gflops"]
    seconds = 2 * params * token_count / (peak * 1e9)
    return {"non_embedding_params": params, "peak_gflops": peak, "seconds": seconds}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from sentence_transformers import SentenceTransformer

    from neobert.embed import encode, load_embedder
    from neobert.onnx_export import export_onnx

    texts = short_texts(args.texts)
    token_count = count_tokens(texts)
    common = dict(batch_size=args.batch_size, show_progress=False)
    st_common = dict(batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
    with tempfile.TemporaryDirectory() as scratch:
        folder = neobert_folder(Path(scratch), args.preset)
        export_onnx(folder, int8=True)
        embedder, int8 = load_embedder(folder), load_embedder(folder, backend="onnx-int8")
        ours_st = SentenceTransformer(str(folder), device="cpu")
        modernbert_st = modernbert_sentence_transformer(Path(scratch), args.quick)
        routes = {
            "neobert.encode (packed)": lambda: encode(embedder, texts, **common),
            "neobert.encode (padded)": lambda: encode(embedder, texts, packed=False, **common),
            "neobert.encode (ONNX int8)": lambda: encode(int8, texts, **common),
            "SentenceTransformer(NeoBERT)": lambda: ours_st.encode(texts, **st_common),
            "SentenceTransformer(ModernBertModel)": lambda: modernbert_st.encode(texts, **st_common),
        }
        rows = {}
        with torch.inference_mode():
            for name, fn in routes.items():
                timing = time_calls(fn, args.repeats, warmup=1)
                rows[name] = {**timing, "texts_per_s": len(texts) / timing["median_s"]}
            exact = encode(embedder, texts, **common)
            cosines = (encode(int8, texts, **common) * exact).sum(1)
            through_st = ours_st.encode(texts, **st_common)
            st_cosines = (through_st * exact).sum(1)
        bound = float32_bound(embedder.model, token_count, args.quick)
    reference = rows["SentenceTransformer(NeoBERT)"]["texts_per_s"]
    bound_rate = len(texts) / bound["seconds"]
    report = {
        "setup": {
            **setup_info("default", quick=args.quick),
            "preset": args.preset,
            "batch_size": args.batch_size,
            "texts": len(texts),
            "mean_tokens": token_count / len(texts),
        },
        "rows": rows,
        "float32_bound": {**bound, "texts_per_s": bound_rate, "over_sentence_transformers": bound_rate / reference},
        "cosine_to_float32": {
            "onnx_int8_min": float(np.min(cosines)),
            "onnx_int8_mean": float(np.mean(cosines)),
            "sentence_transformers_min": float(np.min(st_cosines)),
            "sentence_transformers_max_abs_diff": float(np.max(np.abs(through_st - exact))),
        },
        "targets": [
            target(
                "encode (float32) / SentenceTransformer, same model",
                rows["neobert.encode (packed)"]["texts_per_s"] / reference,
                1.5,
            ),
            target(
                "encode (ONNX int8) / SentenceTransformer, same model",
                rows["neobert.encode (ONNX int8)"]["texts_per_s"] / reference,
                1.5,
            ),
        ],
    }
    header = ("route", "texts/s", "x ST(NeoBERT)", "median s", "cores")
    lines = [
        [n, f"{r['texts_per_s']:.1f}", f"{r['texts_per_s'] / reference:.2f}", f"{r['median_s']:.2f}", cores_cell(r)]
        for n, r in rows.items()
    ]
    lines.append(["float32 bound at peak", f"{bound_rate:.1f}", f"{bound_rate / reference:.2f}", "", ""])
    print("\n".join(table(header, lines)))
    print(
        f"{len(texts)} texts, mean {token_count / len(texts):.1f} tokens, batch {args.batch_size}, "
        f"peak {bound['peak_gflops']:.1f} GFLOP/s; cosine to float32: ONNX int8 min {np.min(cosines):.5f}, "
        f"SentenceTransformer min {np.min(st_cosines):.6f}"
    )
    for item in report["targets"]:
        print(
            f"{item['name']}: {item['value']:.2f}x (target {item['target']}x) {'met' if item['passed'] else 'MISSED'}"
        )
    write_json(report, args.out)
    return report


def count_tokens(texts: list[str]) -> int:
    from neobert import load_tokenizer

    return sum(map(len, load_tokenizer()(texts)["input_ids"]))


if __name__ == "__main__":
    main()
