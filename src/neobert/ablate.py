"""The paper's ablation ladder (Table 2) at small scale: each row is the paper's preset for that step
(`ablations/m0` ... `m6`) laid under `ablations/small`, trained on the demo corpus for the same number of
token slots, with several seeds, and scored the same way: held-out masked-LM loss and accuracy under one
fixed masking rule, and the offline suite's linear probe on frozen embeddings."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from neobert.files import write_json_atomically
from neobert.run_lock import hold_folder
from neobert.run_settings import SETTINGS_FILE, check_same_run, folder_digest, record_run


@dataclass(frozen=True)
class Row:
    name: str
    preset: str  # under configs/pretrain/ablations
    change: str
    compare_to: str | None  # the row this one changes
    paper_delta: str  # the paper's GLUE change for this step (Table 2), or why there is none
    overrides: tuple[str, ...] = ()


DEEP = "model.overrides={hidden_size: 256, num_hidden_layers: 9, num_attention_heads: 4, intermediate_size: 1024, max_length: 512}"  # noqa: E501

ROWS = (
    Row(
        "m0",
        "m0",
        "BERT-like: learned positions, LayerNorm, GELU; Adam, linear decay; 15% 80/10/10; truncated",
        None,
        "79.2 GLUE (base)",
    ),
    Row("m1", "m1", "RoPE, SwiGLU, RMSNorm", "m0", "+2.4%"),
    Row("m4", "m4", "Adam -> AdamW (decay 0.01), linear -> cosine", "m1", "-0.5% (M4)"),
    Row("m5", "m5", "15% 80/10/10 -> 20% all-[MASK]", "m4", "-0.7%"),
    Row(
        "m6_naive",
        "m5",
        "naive packing: documents end to end, attending to each other",
        "m5",
        "-2.9% (M6)",
        ("data.sequence=pack_naive",),
    ),
    Row(
        "m6_pack",
        "m6",
        "packing without cross-document attention (instead of naive)",
        "m6_naive",
        "not in Table 2 (NeoBERT dropped naive packing)",
    ),
    Row(
        "m8_deep",
        "m6",
        "depth over width at equal non-embedding parameters: 4 x 384 -> 9 x 256",
        "m6_pack",
        "+0.8% (M7 16x1056 -> M8 28x768)",
        (DEEP,),
    ),
)
# Not in the default ladder (its 90 minutes): the architecture step again on packed rows, where every run sees
# about 5 times the real tokens of a truncated one at equal slots.
EXTRA_ROWS = (
    Row(
        "m0_pack",
        "m0",
        "m0 with packing without cross-document attention",
        None,
        "not in Table 2",
        ("data.sequence=pack",),
    ),
    Row("m1_pack", "m1", "RoPE, SwiGLU, RMSNorm, packed", "m0_pack", "+2.4% (M1, truncated)", ("data.sequence=pack",)),
)
ROW_NAMES = tuple(row.name for row in ROWS)
ALL_ROW_NAMES = ROW_NAMES + tuple(row.name for row in EXTRA_ROWS)

QUICK = (
    "model.overrides={hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 256, max_length: 512}",  # noqa: E501
    "budget.steps=12",
    "train.warmup_steps=2",
    "train.log_every=4",
    "data.batch_size=8",
    "data.eval_batches=2",
    "data.eval_batch_size=8",
)
QUICK_DEEP = "model.overrides={hidden_size: 48, num_hidden_layers: 4, num_attention_heads: 2, intermediate_size: 192, max_length: 512}"  # noqa: E501


@dataclass
class LadderSettings:
    corpus: str
    out: str
    seeds: int = 3
    steps: int | None = None  # None: the overlay's
    quick: bool = False
    probe_train: int = 500
    probe_test: int = 300
    probe: bool = True
    extra: tuple[str, ...] = ()  # dotted overrides applied to every row


def select_rows(names: list[str] | None) -> list[Row]:
    if not names:
        return list(ROWS)
    unknown = [name for name in names if name not in ALL_ROW_NAMES]
    if unknown:
        raise ValueError(f"unknown ablation row(s) {', '.join(unknown)}; the rows are {', '.join(ALL_ROW_NAMES)}")
    return [row for row in ROWS + EXTRA_ROWS if row.name in names]


def row_config(row: Row, settings: LadderSettings, seed: int):
    from neobert.train.config import load_config, preset_path

    overrides = list(QUICK) if settings.quick else []
    overrides += list(row.overrides)
    if settings.quick and DEEP in row.overrides:
        overrides.append(QUICK_DEEP)
    if settings.steps is not None:
        overrides.append(f"budget.steps={settings.steps}")
    overrides += [
        f"data.path={settings.corpus}",
        f"train.seed={seed}",
        f"data.seed={seed}",
        f"system.output_dir={Path(settings.out) / 'runs' / f'{row.name}-seed{seed}'}",
        *settings.extra,
    ]
    paths = [str(preset_path(f"ablations/{row.preset}")), str(preset_path("ablations/small"))]
    config = load_config(paths, overrides)
    from neobert.train.optim import schedule_from

    schedule_from(config.train, config.total_steps())  # a budget too small fails here
    return config


class LadderInterrupted(RuntimeError):
    """A run was stopped by a signal; it has saved its checkpoint, and rerunning the ladder resumes it."""


def run_one(row: Row, settings: LadderSettings, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    from neobert.train.data import make_eval_batches, make_loader
    from neobert.train.pretrain import TrainingDiverged, pretrain

    config = row_config(row, settings, seed)
    out = Path(config.system.output_dir)
    record: dict[str, Any] = {"row": row.name, "seed": seed, "steps": config.budget.steps}
    try:
        # A run an earlier ladder left part-way continues from its checkpoint (bit for bit); else it starts.
        result = pretrain(config, make_loader, make_eval_batches, resume=True)
    except TrainingDiverged as error:
        losses = _train_losses(out / "metrics.jsonl")
        log(f"{row.name} seed {seed}: diverged ({error})")
        return {**record, "status": "diverged", "last_good_loss": losses[-1] if losses else None}
    if result.status == "interrupted":
        raise LadderInterrupted(f"{row.name} seed {seed} was interrupted at step {result.step}")
    last = result.last_metrics
    record.update(
        status=result.status,
        eval_loss=result.last_eval.get("eval/loss"),
        eval_accuracy=result.last_eval.get("eval/accuracy"),
        tokens_per_s=_mean_tokens_per_s(out / "metrics.jsonl"),
        train_loss=last.get("train/loss"),
        precision=result.precision.get("dtype"),
        non_embedding_parameters=_non_embedding(config),
    )
    if settings.probe and result.checkpoint is not None:
        record["probe"] = _probe(config, result.checkpoint, settings)
    return record


def _probe(config, checkpoint: Path, settings: LadderSettings) -> dict[str, float]:
    from transformers import AutoModel

    from neobert.eval.offline_suite import SuiteBudget, probe_suite
    from neobert.tokenizer import load_tokenizer

    budget = SuiteBudget(max_train=settings.probe_train, max_test=settings.probe_test, max_length=128)
    model = AutoModel.from_pretrained(checkpoint)
    return probe_suite({"model": model}, load_tokenizer(config.data.tokenizer), budget)["model"]


def _non_embedding(config) -> int:
    from neobert.train.metrics import non_embedding_parameters

    return int(non_embedding_parameters(config.model.neobert_config()))


def _records(path: Path) -> list[dict]:
    from neobert.train.metrics import read_jsonl

    return read_jsonl(path) if path.is_file() else []


def _train_losses(path: Path) -> list[float]:
    return [r["train/loss"] for r in _records(path) if "train/loss" in r and math.isfinite(r["train/loss"])]


def _mean_tokens_per_s(path: Path) -> float | None:
    speeds = [r["train/tokens_per_s"] for r in _records(path) if "train/tokens_per_s" in r]
    return statistics.median(speeds) if speeds else None


def run_ladder(
    rows: list[Row], settings: LadderSettings, log: Callable[[str], None] = print, restart: bool = False
) -> dict[str, Any]:
    """Every row and seed, skipping those already in the results file (an interrupted ladder resumes), when
    the folder's ladder was started with the same settings (RunMismatch otherwise); `restart` deletes an
    earlier ladder first. One process at a time runs a ladder in `settings.out` (FolderInUse otherwise)."""
    for row in rows:  # every configuration checked before anything trains
        row_config(row, settings, 0)
    with hold_folder(settings.out, "--out"):
        out = Path(settings.out)
        if restart:
            clear_ladder(out)
        fingerprint = ladder_fingerprint(settings)
        # A run left part-way without a ladder record is pretrain's to resume or refuse (its config.yaml).
        if any((out / name).exists() for name in ("results.json", SETTINGS_FILE)):
            check_same_run(out, fingerprint)
        else:
            record_run(out, fingerprint)
        return _run_rows(rows, settings, log)


def ladder_fingerprint(settings: LadderSettings) -> dict[str, Any]:
    """What every run of a ladder depends on: its settings (more seeds or other rows extend the same ladder)
    and the corpus's manifest, which lists every shard's checksum."""
    recorded = {key: value for key, value in asdict(settings).items() if key not in ("out", "seeds")}
    return {"settings": recorded, "corpus": folder_digest(settings.corpus, ("manifest.json",))}


def clear_ladder(out: Path) -> None:
    """Forget an earlier ladder in `out`: its runs, results, table, figure and settings."""
    shutil.rmtree(out / "runs", ignore_errors=True)
    for name in ("results.json", "ablations.md", "ablations.png", SETTINGS_FILE):
        (out / name).unlink(missing_ok=True)


def _run_rows(rows: list[Row], settings: LadderSettings, log: Callable[[str], None]) -> dict[str, Any]:
    results_path = Path(settings.out) / "results.json"
    done = json.loads(results_path.read_text())["runs"] if results_path.is_file() else []
    have = {(r["row"], r["seed"]) for r in done}
    runs = list(done)
    for row in rows:
        for seed in range(settings.seeds):
            if (row.name, seed) in have:
                continue
            log(f"ablate: {row.name} seed {seed} ({row.change})")
            started = time.perf_counter()
            record = run_one(row, settings, seed, log)
            runs.append({**record, "seconds": round(time.perf_counter() - started, 1)})
            write_json_atomically(results_path, {"settings": asdict(settings), "runs": runs}, indent=1)
    summary = summarise(rows, runs)
    seconds = sum(r.get("seconds", 0.0) for r in runs)
    report = {"settings": asdict(settings), "runs": runs, "summary": summary, "seconds": round(seconds, 1)}
    write_json_atomically(results_path, report, indent=1)
    (Path(settings.out) / "ablations.md").write_text(format_table(rows, summary) + "\n", encoding="utf-8")
    plot_ladder(rows, summary, Path(settings.out) / "ablations.png")
    return report


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[Row], runs: list[dict]) -> dict[str, dict]:
    summary = {}
    for row in rows:
        mine = [r for r in runs if r["row"] == row.name]
        good = [r for r in mine if r.get("status") != "diverged" and r.get("eval_loss") is not None]
        probes = [r["probe"]["mean"] for r in good if "probe" in r]
        summary[row.name] = {
            "seeds": len(mine),
            "diverged": len(mine) - len(good),
            "eval_loss": _mean_std([r["eval_loss"] for r in good]),
            "eval_accuracy": _mean_std([r["eval_accuracy"] for r in good]),
            "probe_mean": _mean_std(probes),
        }
    for row in rows:
        base = summary.get(row.compare_to) if row.compare_to else None
        mine = summary[row.name]
        if base and base["eval_accuracy"][0] is not None and mine["eval_accuracy"][0] is not None:
            mine["delta_accuracy"] = mine["eval_accuracy"][0] - base["eval_accuracy"][0]
            mine["delta_loss"] = mine["eval_loss"][0] - base["eval_loss"][0]
            if mine["probe_mean"][0] is not None and base["probe_mean"][0] is not None:
                mine["delta_probe"] = mine["probe_mean"][0] - base["probe_mean"][0]
    return summary


def _cell(pair: tuple[float | None, float | None], digits: int = 3) -> str:
    mean, std = pair
    return "" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(rows: list[Row], summary: dict[str, dict]) -> str:
    head = (
        "| row | change (from the row named) | held-out loss | held-out accuracy | Δ accuracy | probe mean | "
        "Δ probe | paper (GLUE) |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for row in rows:
        s = summary[row.name]
        delta = f"{s['delta_accuracy']:+.4f}" if "delta_accuracy" in s else ""
        delta_probe = f"{s['delta_probe']:+.3f}" if "delta_probe" in s else ""
        change = row.change + (f" (from {row.compare_to})" if row.compare_to else "")
        diverged = f" ({s['diverged']} diverged)" if s["diverged"] else ""
        lines.append(
            f"| {row.name}{diverged} | {change} | {_cell(s['eval_loss'])} | {_cell(s['eval_accuracy'], 4)} | "
            f"{delta} | {_cell(s['probe_mean'])} | {delta_probe} | {row.paper_delta} |"
        )
    return "\n".join(lines)


def plot_ladder(rows: list[Row], summary: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row.name for row in rows if summary[row.name]["eval_accuracy"][0] is not None]
    if not names:
        return
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, key, label in ((axes[0], "eval_accuracy", "held-out MLM accuracy"), (axes[1], "probe_mean", "probe")):
        values = [summary[n][key] for n in names]
        present = [(n, v) for n, v in zip(names, values, strict=True) if v[0] is not None]
        if not present:
            continue
        axis.bar([n for n, _ in present], [v[0] for _, v in present], yerr=[v[1] for _, v in present], capsize=4)
        low = min(v[0] - v[1] for _, v in present)
        high = max(v[0] + v[1] for _, v in present)
        axis.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
        axis.set_ylabel(label)
        axis.tick_params(axis="x", rotation=30)
    figure.suptitle("Ablation ladder at small scale (mean ± std over seeds)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
