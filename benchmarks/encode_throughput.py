"""Embedding throughput (texts/s) on real short texts of varied length, in one run:
`neobert.embed.encode` (length-sorted, packed; padded; and ONNX int8 through onnxruntime) against
`SentenceTransformer.encode` with our model and with transformers' ModernBertModel (base config), all
randomly initialised, on the CPU. The PyTorch routes run in fp32 (`rows`, with the ONNX int8 route) and
under bf16 autocast (`rows_bf16`, with each one's speed over its fp32 row); each reports the share of that
precision's matrix-product peak, measured in the same run, that its real tokens' matrix products reach.
Beside the rows it reports each precision's bound: the texts/s of computing every real token's matrix
products at that peak, which no route in that precision can beat.

    python benchmarks/encode_throughput.py [--texts 256] [--repeats 3] [--precision fp32|bf16|both]
        [--out results/bench/encode.json] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench_common import (
    ROOT,
    add_precision_option,
    computing_in,
    cores_cell,
    measure_peaks,
    peak_key,
    peaks_line,
    precisions,
    ratio_cell,
    setup_info,
    table,
    target,
    time_calls,
    write_json,
)

REFERENCE = "SentenceTransformer(NeoBERT)"
ONNX_ROUTE = "neobert.encode (ONNX int8)"  # int8 through onnxruntime: timed with the fp32 rows, not in bf16


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
    add_precision_option(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.repeats, args.preset = 24, 1, "tiny"
    return args


def non_embedding_params(model: torch.nn.Module, embedding_prefix: str) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(embedding_prefix))


def time_routes(routes: dict, precision: str, texts: int, flops: dict[str, float], peak: float, repeats: int) -> dict:
    """`flops`: each route's real-token matrix-product FLOPs (attention left out); none for ONNX int8."""
    rows = {}
    for name, fn in routes.items():

        def call(fn=fn):
            with computing_in(precision):
                fn()

        timing = time_calls(call, repeats, warmup=1)
        row = {"precision": "int8" if name == ONNX_ROUTE else precision, **timing}
        row["texts_per_s"] = texts / timing["median_s"]
        if name in flops:
            row["gflops"] = flops[name] / timing["median_s"] / 1e9
            row["percent_of_peak"] = 100 * row["gflops"] / peak
        rows[name] = row
    return rows


def bound(flops: float, texts: int, peak: float, rows: dict) -> dict:
    """Texts/s if every real token's matrix products ran at `peak` (attention is left out: a generous bound)."""
    seconds = flops / (peak * 1e9)
    result = {"peak_gflops": peak, "seconds": seconds, "texts_per_s": texts / seconds}
    if REFERENCE in rows:
        result["over_sentence_transformers"] = result["texts_per_s"] / rows[REFERENCE]["texts_per_s"]
    return result


def fp32_targets(rows: dict) -> list[dict]:
    """The targets are set for fp32 (and int8): none when only bf16 ran."""
    if not rows:
        return []
    reference = rows[REFERENCE]["texts_per_s"]
    return [
        target(
            "encode (float32) / SentenceTransformer, same model",
            rows["neobert.encode (packed)"]["texts_per_s"] / reference,
            1.5,
        ),
        target(
            "encode (ONNX int8) / SentenceTransformer, same model", rows[ONNX_ROUTE]["texts_per_s"] / reference, 1.5
        ),
    ]


def render(report: dict) -> str:
    header = ("route", "precision", "texts/s", "x ST(NeoBERT)", "% peak", "x fp32", "median s", "cores")
    lines = []
    for rows in (report["rows"], report["rows_bf16"]):
        for name, r in rows.items():
            reference = rows[REFERENCE]["texts_per_s"]
            share = f"{r['percent_of_peak']:.1f}%" if "percent_of_peak" in r else ""
            lines.append(
                [
                    name,
                    r["precision"],
                    f"{r['texts_per_s']:.1f}",
                    f"{r['texts_per_s'] / reference:.2f}",
                    share,
                    ratio_cell(r),
                    f"{r['median_s']:.2f}",
                    cores_cell(r),
                ]
            )
    for key, precision in (("float32_bound", "fp32"), ("bf16_bound", "bf16")):
        b = report[key]
        over = f"{b['over_sentence_transformers']:.2f}" if "over_sentence_transformers" in b else ""
        label = "float32" if precision == "fp32" else precision
        lines.append([f"{label} bound at peak", precision, f"{b['texts_per_s']:.1f}", over, "100%", "", "", ""])
    setup, cosine = report["setup"], report["cosine_to_float32"]
    cosines = ", ".join(f"{name} {value:.6f}" for name, value in cosine.items() if name.endswith("_min"))
    return "\n".join(
        [
            *table(header, lines),
            f"{setup['texts']} texts, mean {setup['mean_tokens']:.1f} tokens, batch {setup['batch_size']}; "
            f"{peaks_line(report)}",
            "x ST(NeoBERT): over SentenceTransformer(NeoBERT) in the same precision (int8: over fp32's); "
            "% peak: the real tokens' matrix products, attention left out",
            f"cosine to float32 (min over texts): {cosines}",
            *([] if report["targets"] else ["no targets checked: they are set for fp32 and int8"]),
            *(
                f"{t['name']}: {t['value']:.2f}x (target {t['target']}x) {'met' if t['passed'] else 'MISSED'}"
                for t in report["targets"]
            ),
        ]
    )


def cosines_to(exact: np.ndarray, routes: dict) -> dict:
    """Each route's smallest (and for int8 mean) cosine to the float32 vectors; `bf16_*` under autocast."""
    cosine = {}
    for name, fn in routes.items():
        with computing_in("bf16" if name.startswith("bf16") else "fp32"):
            vectors = fn()
        values = (vectors * exact).sum(1)
        cosine[f"{name}_min"] = float(np.min(values))
        if name == "sentence_transformers":
            cosine[f"{name}_max_abs_diff"] = float(np.max(np.abs(vectors - exact)))
        if name == "onnx_int8":
            cosine[f"{name}_mean"] = float(np.mean(values))
    return cosine


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from sentence_transformers import SentenceTransformer

    from neobert.embed import encode, load_embedder
    from neobert.onnx_export import export_onnx

    texts = short_texts(args.texts)
    token_count = count_tokens(texts)
    chosen = precisions(args.precision)
    common = dict(batch_size=args.batch_size, show_progress=False)
    st_common = dict(batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
    peaks = measure_peaks((256,) if args.quick else (1024, 2048), repeats=1 if args.quick else 5)
    report: dict = {
        "setup": {
            **setup_info("default", quick=args.quick),
            "preset": args.preset,
            "batch_size": args.batch_size,
            "texts": len(texts),
            "mean_tokens": token_count / len(texts),
        },
        **peaks,
    }
    with tempfile.TemporaryDirectory() as scratch:
        folder = neobert_folder(Path(scratch), args.preset)
        export_onnx(folder, int8=True)
        embedder, int8 = load_embedder(folder), load_embedder(folder, backend="onnx-int8")
        ours_st = SentenceTransformer(str(folder), device="cpu")
        modernbert_st = modernbert_sentence_transformer(Path(scratch), args.quick)
        routes = {
            "neobert.encode (packed)": lambda: encode(embedder, texts, **common),
            "neobert.encode (padded)": lambda: encode(embedder, texts, packed=False, **common),
            ONNX_ROUTE: lambda: encode(int8, texts, **common),
            REFERENCE: lambda: ours_st.encode(texts, **st_common),
            "SentenceTransformer(ModernBertModel)": lambda: modernbert_st.encode(texts, **st_common),
        }
        neobert_params = non_embedding_params(embedder.model, "encoder.")
        modernbert_params = non_embedding_params(modernbert_st[0].auto_model, "embeddings.")
        neobert_flops = 2 * neobert_params * token_count
        flops = {name: neobert_flops for name in routes if name != ONNX_ROUTE}
        flops["SentenceTransformer(ModernBertModel)"] = 2 * modernbert_params * token_count
        report["rows"], report["rows_bf16"] = {}, {}
        with torch.inference_mode():
            for precision in chosen:
                timed = routes if precision == "fp32" else {k: v for k, v in routes.items() if k != ONNX_ROUTE}
                peak = report[peak_key(precision)]["gflops"]
                key = "rows" if precision == "fp32" else "rows_bf16"
                report[key] = time_routes(timed, precision, len(texts), flops, peak, args.repeats)
            exact = encode(embedder, texts, **common)
            others = {}
            if "fp32" in chosen:
                others["onnx_int8"] = lambda: encode(int8, texts, **common)
                others["sentence_transformers"] = lambda: ours_st.encode(texts, **st_common)
            if "bf16" in chosen:
                others["bf16_packed"] = lambda: encode(embedder, texts, **common)
            cosine = cosines_to(exact, others)
    for name, row in report["rows_bf16"].items():
        if name in report["rows"]:
            row["bf16_over_fp32"] = row["texts_per_s"] / report["rows"][name]["texts_per_s"]
    report["float32_bound"] = {
        "non_embedding_params": neobert_params,
        **bound(neobert_flops, len(texts), report["peak"]["gflops"], report["rows"]),
    }
    report["bf16_bound"] = {
        "non_embedding_params": neobert_params,
        **bound(neobert_flops, len(texts), report["peak_bf16"]["gflops"], report["rows_bf16"]),
    }
    report["cosine_to_float32"] = cosine
    report["targets"] = fp32_targets(report["rows"])
    write_json(report, args.out)  # before printing, so a closed stdout cannot lose the figures
    print(render(report))
    print(f"\nwrote {args.out}")
    return report


def count_tokens(texts: list[str]) -> int:
    from neobert import load_tokenizer

    return sum(map(len, load_tokenizer()(texts)["input_ids"]))


if __name__ == "__main__":
    main()
