"""Embedding throughput (texts/s) on real short texts of varied length, in one run:
`neobert.embed.encode` (length-sorted, packed; padded; ONNX int8 through onnxruntime, with the graph
`backend="onnx-int8"` chooses for this CPU (the VNNI one where it has VNNI) and with the portable 7-bit one;
the exported ONNX graphs compiled by OpenVINO when it is installed: fp32, bf16 where the CPU has bf16 units,
and int8) against
`SentenceTransformer.encode` with our model and with transformers' ModernBertModel (base config), all
randomly initialised, on the CPU. The PyTorch routes run in fp32 (`rows`, with the ONNX and OpenVINO routes) and
under bf16 autocast (`rows_bf16`, with each one's speed over its fp32 row); each reports the share of that
precision's matrix-product peak, measured in the same run, that its real tokens' matrix products reach.
Beside the rows it reports each precision's bound: the texts/s of computing every real token's matrix
products at that peak, which no route in that precision can beat. The load average (before and after) is
recorded: the figures are only comparable between runs on an equally quiet machine.

    python benchmarks/peers/encode_throughput.py [--texts 256] [--repeats 3] [--precision fp32|bf16|both]
        [--out results/bench/encode.json] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_common, one folder up

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
ONNX_7BIT_ROUTE = "neobert.encode (ONNX int8, 7-bit)"  # the portable graph, whatever the CPU
OPENVINO_ROUTE = "neobert.encode (OpenVINO fp32)"
OPENVINO_BF16_ROUTE = "neobert.encode (OpenVINO bf16)"
OPENVINO_INT8_ROUTE = "neobert.encode (OpenVINO int8)"
INT8_ROUTES = (ONNX_ROUTE, ONNX_7BIT_ROUTE, OPENVINO_INT8_ROUTE)
# Routes outside PyTorch: bf16 autocast does not reach them, so they are timed with the fp32 rows only.
RUNTIME_ROUTES = (ONNX_ROUTE, ONNX_7BIT_ROUTE, OPENVINO_ROUTE, OPENVINO_BF16_ROUTE, OPENVINO_INT8_ROUTE)
# Each route's key in `cosine_to_float32`.
COSINE_KEYS = {
    ONNX_ROUTE: "onnx_int8",
    ONNX_7BIT_ROUTE: "onnx_int8_7bit",
    OPENVINO_ROUTE: "openvino",
    OPENVINO_BF16_ROUTE: "openvino_bf16",
    OPENVINO_INT8_ROUTE: "openvino_int8",
    "neobert.encode (packed)": None,
    "neobert.encode (padded)": None,
}
BEST_ROUTE_SPEEDUP, BEST_ROUTE_COSINE = 3.0, 0.999  # issue 19: the best CPU route against SentenceTransformer


def short_texts(count: int) -> list[str]:
    """Reserved health-news tweets and news headlines (never pre-trained on), interleaved."""
    from neobert.demo.corpus import evaluation_records

    tweets = [r["text"] for r in evaluation_records("health_tweets") if r["text"].strip()]
    titles = [r["title"] for r in evaluation_records("news_articles") if r.get("title", "").strip()]
    mixed = [t for pair in zip(tweets, titles, strict=False) for t in pair]
    return mixed[:count]


def neobert_folder(root: Path, preset: str) -> Path:
    import neobert
    from neobert.export.folder import export_model

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
    """`flops`: each route's real-token matrix-product FLOPs (attention left out); none for the int8 routes,
    nor for OpenVINO's bf16 route, timed with the fp32 rows (whose peak is fp32's)."""
    rows = {}
    for name, fn in routes.items():

        def call(fn=fn):
            with computing_in(precision):
                fn()

        timing = time_calls(call, repeats, warmup=1)
        own = "int8" if name in INT8_ROUTES else "bf16" if name == OPENVINO_BF16_ROUTE else precision
        row = {"precision": own, **timing}
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


def best_route(rows: dict, cosine: dict) -> dict | None:
    """The fastest of our routes whose smallest cosine to the float32 vectors is at least BEST_ROUTE_COSINE
    (packed and padded fp32 PyTorch are the float32 vectors)."""
    eligible = []
    for name, key in COSINE_KEYS.items():
        if name not in rows:
            continue
        smallest = 1.0 if key is None else cosine.get(f"{key}_min")
        if smallest is not None and smallest >= BEST_ROUTE_COSINE:
            eligible.append((rows[name]["texts_per_s"], name, smallest))
    if not eligible:
        return None
    speed, name, smallest = max(eligible)
    return {"route": name, "texts_per_s": speed, "cosine_min": smallest}


def fp32_targets(rows: dict, cosine: dict) -> list[dict]:
    """The targets are set for fp32 (and int8): none when only bf16 ran."""
    if not rows:
        return []
    reference = rows[REFERENCE]["texts_per_s"]
    best = best_route(rows, cosine)
    return [
        target(
            f"best CPU route with cosine >= {BEST_ROUTE_COSINE} ({best['route'] if best else 'none'}) "
            "/ SentenceTransformer fp32, same model",
            best["texts_per_s"] / reference if best else None,
            BEST_ROUTE_SPEEDUP,
        ),
        target(
            "encode (float32) / SentenceTransformer, same model",
            rows["neobert.encode (packed)"]["texts_per_s"] / reference,
            1.5,
        ),
        target(
            "encode (ONNX int8) / SentenceTransformer, same model", rows[ONNX_ROUTE]["texts_per_s"] / reference, 1.5
        ),
    ]


def speedup_cell(value: float | None) -> str:
    return "unmeasured" if value is None else f"{value:.2f}x"


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
    load = f"load average {setup['load_average_before'][0]:.2f} before, {setup['load_average_after'][0]:.2f} after"
    cosines = ", ".join(
        f"{name.removesuffix('_min')} {value:.6f}"
        + (f" (mean {cosine[mean]:.6f})" if (mean := name.replace("_min", "_mean")) in cosine else "")
        for name, value in cosine.items()
        if name.endswith("_min")
    )
    return "\n".join(
        [
            *table(header, lines),
            f"{setup['texts']} texts, mean {setup['mean_tokens']:.1f} tokens, batch {setup['batch_size']}, "
            f"preset {setup['preset']}; {peaks_line(report)}; {load} (1 min; {setup['logical_cpus']} logical CPUs)",
            f"ONNX int8 ran {setup['onnx_int8_graph']} (CPU with VNNI: {'yes' if setup['cpu_vnni'] else 'no'})",
            "x ST(NeoBERT): over SentenceTransformer(NeoBERT) in the same precision (int8: over fp32's); "
            "% peak: the real tokens' matrix products, attention left out",
            f"cosine to float32 (min over texts): {cosines}",
            *([] if report["targets"] else ["no targets checked: they are set for fp32 and int8"]),
            *(
                f"{t['name']}: {speedup_cell(t['value'])} (target {t['target']}x) {'met' if t['passed'] else 'MISSED'}"
                for t in report["targets"]
            ),
        ]
    )


def cosines_to(exact: np.ndarray, routes: dict) -> dict:
    """Each route's smallest and mean cosine to the float32 vectors (and SentenceTransformer's largest
    difference); `bf16_*` under autocast."""
    cosine = {}
    for name, fn in routes.items():
        with computing_in("bf16" if name.startswith("bf16") else "fp32"):
            vectors = fn()
        values = (vectors * exact).sum(1)
        cosine[f"{name}_min"] = float(np.min(values))
        cosine[f"{name}_mean"] = float(np.mean(values))
        if name == "sentence_transformers":
            cosine[f"{name}_max_abs_diff"] = float(np.max(np.abs(vectors - exact)))
    return cosine


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from sentence_transformers import SentenceTransformer

    from neobert.embed import encode, load_embedder
    from neobert.export.onnx_export import export_onnx
    from neobert.export.onnx_files import cpu_has_vnni, onnx_int8_file, onnx_session

    try:
        import openvino  # noqa: F401
    except ImportError:
        openvino = None
        print("openvino is not installed: its routes are left out (pip install 'neobert[openvino]')")

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
            "load_average_before": list(os.getloadavg()),
            "openvino": None if openvino is None else openvino.__version__,
        },
        **peaks,
    }
    with tempfile.TemporaryDirectory() as scratch:
        folder = neobert_folder(Path(scratch), args.preset)
        export_onnx(folder, int8=True)
        embedder, int8 = load_embedder(folder), load_embedder(folder, backend="onnx-int8")
        int8_7bit = replace(int8, onnx_session=onnx_session(folder, backend="onnx-int8", vnni=False))
        report["setup"]["cpu_vnni"] = cpu_has_vnni()
        report["setup"]["onnx_int8_graph"] = onnx_int8_file(folder).relative_to(folder).as_posix()
        openvino_fp32 = openvino_bf16 = openvino_int8 = None
        if openvino is not None:
            openvino_fp32 = load_embedder(folder, backend="openvino")
            openvino_bf16 = load_embedder(folder, backend="openvino-bf16")
            openvino_int8 = load_embedder(folder, backend="openvino-int8")
        ours_st = SentenceTransformer(str(folder), device="cpu")
        modernbert_st = modernbert_sentence_transformer(Path(scratch), args.quick)
        routes = {
            "neobert.encode (packed)": lambda: encode(embedder, texts, **common),
            "neobert.encode (padded)": lambda: encode(embedder, texts, packed=False, **common),
            ONNX_ROUTE: lambda: encode(int8, texts, **common),
            ONNX_7BIT_ROUTE: lambda: encode(int8_7bit, texts, **common),
            **(
                {
                    OPENVINO_ROUTE: lambda: encode(openvino_fp32, texts, **common),
                    OPENVINO_BF16_ROUTE: lambda: encode(openvino_bf16, texts, **common),
                    OPENVINO_INT8_ROUTE: lambda: encode(openvino_int8, texts, **common),
                }
                if openvino is not None
                else {}
            ),
            REFERENCE: lambda: ours_st.encode(texts, **st_common),
            "SentenceTransformer(ModernBertModel)": lambda: modernbert_st.encode(texts, **st_common),
        }
        neobert_params = non_embedding_params(embedder.model, "encoder.")
        modernbert_params = non_embedding_params(modernbert_st[0].auto_model, "embeddings.")
        neobert_flops = 2 * neobert_params * token_count
        flops = {name: neobert_flops for name in routes if name not in (*INT8_ROUTES, OPENVINO_BF16_ROUTE)}
        flops["SentenceTransformer(ModernBertModel)"] = 2 * modernbert_params * token_count
        report["rows"], report["rows_bf16"] = {}, {}
        with torch.inference_mode():
            for precision in chosen:
                timed = routes if precision == "fp32" else {k: v for k, v in routes.items() if k not in RUNTIME_ROUTES}
                peak = report[peak_key(precision)]["gflops"]
                key = "rows" if precision == "fp32" else "rows_bf16"
                report[key] = time_routes(timed, precision, len(texts), flops, peak, args.repeats)
            exact = encode(embedder, texts, **common)
            others = {}
            if "fp32" in chosen:
                others["onnx_int8"] = lambda: encode(int8, texts, **common)
                others["onnx_int8_7bit"] = lambda: encode(int8_7bit, texts, **common)
                if openvino is not None:
                    others["openvino"] = lambda: encode(openvino_fp32, texts, **common)
                    others["openvino_bf16"] = lambda: encode(openvino_bf16, texts, **common)
                    others["openvino_int8"] = lambda: encode(openvino_int8, texts, **common)
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
    report["setup"]["load_average_after"] = list(os.getloadavg())
    report["best_route"] = best_route(report["rows"], cosine)
    report["targets"] = fp32_targets(report["rows"], cosine)
    write_json(report, args.out)  # before printing, so a closed stdout cannot lose the figures
    print(render(report))
    print(f"\nwrote {args.out}")
    return report


def count_tokens(texts: list[str]) -> int:
    from neobert import load_tokenizer

    return sum(map(len, load_tokenizer()(texts)["input_ids"]))


if __name__ == "__main__":
    main()
