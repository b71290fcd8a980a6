"""The targets of `gpu_check.py`, judged on its report, and the one table it prints."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_common, one folder up

from bench_common import table, target

MFU_TARGET = 0.45
PAPER_A100_TOKENS_PER_S = {"neobert": 17.2e3, "modernbert": 11.7e3}  # 4,096 tokens, one A100
INFERENCE_TARGET = 30.0  # times the paper's A100 figure
EQUIVALENCE_TEST = "test_bf16_matches_fp32_on_cuda"


def ok_runs(report: dict, stage: str) -> list[dict]:
    entry = report["stages"].get(stage, {})
    items = entry.get("runs", []) if stage == "train" else list(entry.get("models", {}).values())
    return [r for r in items if r.get("status") == "ok"]


def find_run(report: dict, model: str, compiled: bool) -> dict | None:
    return next((r for r in ok_runs(report, "train") if r["model"] == model and r["compiled"] == compiled), None)


def targets(report: dict) -> list[dict]:
    neo = find_run(report, "neobert", True)
    # Like with like: compiled against compiled where both ran, else eager against eager.
    pair = next(
        (
            (find_run(report, "neobert", c), find_run(report, "modernbert", c))
            for c in (True, False)
            if find_run(report, "neobert", c) and find_run(report, "modernbert", c)
        ),
        (None, None),
    )
    inference = report["stages"].get("inference", {}).get("models", {}).get("neobert", {})
    tests = report["stages"].get("tests", {})
    equivalence = [c for c in tests.get("cases", []) if EQUIVALENCE_TEST in c["test"]]
    ran = [c for c in equivalence if c["outcome"] != "skipped"]
    train, infer = ok_runs(report, "train"), ok_runs(report, "inference")
    measured = train + infer
    compiled = [r for r in train if r["compiled"]]
    return [
        target("NeoBERT training MFU (compiled, of the measured peak)", neo and neo["mfu"], MFU_TARGET),
        target(
            "NeoBERT / ModernBERT real training tokens/s (same batch)",
            pair[0] and pair[0]["tokens_per_s"] / pair[1]["tokens_per_s"],
            1.0,
        ),
        target("NeoBERT inference tokens/s over the paper's A100", inference.get("times_paper_a100"), INFERENCE_TARGET),
        target(
            "bf16 backends within tolerance of fp32 (share of CUDA cases passed)",
            sum(c["outcome"] == "passed" for c in ran) / len(ran) if ran else None,
            1.0,
        ),
        target(
            "non-finite losses or outputs (runs)",
            sum(not r["finite"] for r in measured) if measured else None,
            0,
            at_most=True,
        ),
        target("runs whose loss did not fall", sum(not r["loss_decreased"] for r in train) if train else None, 0, True),
        target(
            "compilations in timed steps, and frames left eager (recompile limit)",
            sum(r["recompiles"] + r["uncompiled_frames"] for r in compiled) if compiled else None,
            0,
            at_most=True,
        ),
    ]


def number(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = ("batch", "tokens/s", "TFLOP/s", "MFU %", "peak GiB", "loss", "recompiles")


def row(label: str, note: str, cells: dict[str, str] | None = None) -> list[str]:
    """A table row: `cells` by column title, "-" in the others."""
    cells = cells or {}
    unknown = set(cells) - set(COLUMNS)
    if unknown:
        raise KeyError(f"no column {sorted(unknown)}; the columns are {COLUMNS}")
    return [label, *(cells.get(column, "-") for column in COLUMNS), note]


def not_ok(label: str, entry: dict) -> list[str]:
    return row(label, f"{entry['status'].upper()}: {entry.get('error') or entry.get('reason')}"[:100])


def stage_rows(report: dict) -> list[list[str]]:
    rows = []
    for name, stage in report["stages"].items():
        if stage["status"] != "ok":  # a whole stage; runs within a stage carry their own status
            rows.append(not_ok(name, stage))
        elif name == "peak":
            note = f"{stage['sizes'][-1]['size']}^3"
            if stage.get("datasheet_flops"):
                note += f", {stage['flops'] / stage['datasheet_flops']:.0%} of the datasheet's bf16 peak"
            rows.append(row("bf16 matmul peak", note, {"TFLOP/s": number(stage["flops"] / 1e12)}))
        elif name == "tests":
            counts = ", ".join(f"{stage[k]} {k}" for k in ("passed", "failed", "error", "skipped"))
            rows.append(row("tests -m gpu", counts))
        elif name == "train":
            rows += [train_row(run) for run in stage["runs"]]
        elif name == "inference":
            rows += [inference_row(model, entry) for model, entry in stage["models"].items()]
    return rows


def train_row(run: dict) -> list[str]:
    label = f"train {run['model']}{' compiled' if run['compiled'] else ''}"
    if run["status"] != "ok":
        return not_ok(label, run)
    return row(
        label,
        f"{run['steps']} steps, {run['layout']}, {run['attention'] or 'sdpa'}",
        {
            "batch": f"{run['batch']}x{run['length']}",
            "tokens/s": number(run["tokens_per_s"], ",.0f"),
            "TFLOP/s": number(run["model_tflops_per_s"]),
            "MFU %": number(run["mfu"] and 100 * run["mfu"], ".1f"),
            "peak GiB": number(run["peak_memory_gib"], ".1f"),
            "loss": f"{run['losses'][0]:.3f}->{run['losses'][-1]:.3f}",
            "recompiles": number(run["recompiles"], "d"),
        },
    )


def inference_row(model: str, entry: dict) -> list[str]:
    label = f"inference {model}"
    if entry["status"] != "ok":
        return not_ok(label, entry)
    return row(
        label,
        f"{entry['times_paper_a100']:.1f}x the paper's A100 ({PAPER_A100_TOKENS_PER_S[model]:,.0f}/s)",
        {
            "batch": f"{entry['batch']}x{entry['length']}",
            "tokens/s": number(entry["tokens_per_s"], ",.0f"),
            "MFU %": number(entry.get("mfu") and 100 * entry["mfu"], ".1f"),
        },
    )


def render(report: dict) -> str:
    setup = report["setup"]
    lines = [
        f"{setup['device_name']}; torch {setup['torch']} (CUDA {setup['cuda']}), transformers "
        f"{setup['transformers']}; commit {setup['git_commit']}; {report['elapsed_s']:.0f} s",
        "",
    ]
    lines += table(("stage", *COLUMNS, "note"), stage_rows(report))
    profile = (find_run(report, "neobert", True) or {}).get("profile", {})
    if profile.get("top"):
        lines += ["", f"top {profile['kind']} of {profile['steps']} compiled NeoBERT steps:"]
        lines += [f"  {k['share']:6.1%}  {k['ms']:9.2f} ms  {k['name'][:90]}" for k in profile["top"][:8]]
    lines.append("")
    for t in report["targets"]:
        sign = "<=" if t["at_most"] else ">="
        lines.append(
            f"{'PASS' if t['passed'] else 'FAIL'} {t['name']}: {number(t['value'])} (target {sign} {t['target']:g})"
        )
    return "\n".join(lines)
