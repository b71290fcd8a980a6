"""The paper's ablation ladder (Table 2) at small scale, and the modern recipe's changes against it: each
row is the paper's preset for that step (`ablations/m0` ... `m5`) with its own changes, laid under
`ablations/small`, trained on the demo corpus for the same number of token slots, with several seeds, and
scored the same way: held-out masked-LM loss and accuracy under one fixed masking rule, and the offline
suite's linear probe on frozen embeddings. Each row is compared with the row it changes: the difference,
its seed spread, and whether the seeds separate."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from neobert.errors import Interrupted
from neobert.files import write_json_atomically
from neobert.run_lock import hold_folder
from neobert.run_settings import SETTINGS_FILE, check_same_run, folder_digest, record_run


@dataclass(frozen=True)
class Row:
    name: str
    preset: str  # under configs/pretrain/ablations
    change: str
    compare_to: str | None  # the row this one changes
    paper_delta: str  # the paper's GLUE change for this step (Table 2), or where the change comes from
    overrides: tuple[str, ...] = ()
    # Config keys the row sets that an older build may not know: the ladder names them before anything trains.
    needs: tuple[str, ...] = ()
    # Batch-size warm-up: the global batch starts at a quarter and grows over this share of the run's tokens;
    # the run then trains on the base row's tokens (budget.tokens), not its steps.
    batch_warmup_share: float = 0.0


PACK = "data.sequence=pack"
DEEP = "model.overrides={hidden_size: 96, num_hidden_layers: 7, num_attention_heads: 3, intermediate_size: 392, max_length: 512}"  # noqa: E501
BATCH_WARMUP_KEYS = ("data.batch_warmup_tokens", "data.batch_warmup_start")

# Every row packs documents end to end, each attending only to itself (a truncated 128-token row is 21% real
# tokens on the demo corpus, and truncated rows never passed the unigram baseline), except the naive-packing
# row. m5 is then the paper's M6 preset (M5 packed) and the base of every comparison after it.
ROWS = (
    Row(
        "m0",
        "m0",
        "BERT-like: learned positions, LayerNorm, GELU; Adam, linear decay; 15% 80/10/10; packed",
        None,
        "79.2 GLUE (base)",
        (PACK,),
    ),
    Row("m1", "m1", "RoPE, SwiGLU, RMSNorm", "m0", "+2.4%", (PACK,)),
    Row("m4", "m4", "Adam -> AdamW (decay 0.01), linear -> cosine", "m1", "-0.5% (M4)", (PACK,)),
    Row("m5", "m5", "15% 80/10/10 -> 20% all-[MASK]", "m4", "-0.7%", (PACK,)),
    Row(
        "m6_naive",
        "m5",
        "naive packing: documents attend to each other (m5 keeps each to itself)",
        "m5",
        "M6 packed naively: -2.9% (against truncated M5)",
        ("data.sequence=pack_naive",),
    ),
    Row(
        "m8_deep",
        "m5",
        "depth over width at equal non-embedding parameters: 4 x 128 -> 7 x 96",
        "m5",
        "+0.8% (M7 16x1056 -> M8 28x768)",
        (PACK, DEEP),
    ),
    Row(
        "wsd",
        "m5",
        "cosine -> warmup-stable-decay (linear decay over the last 20% to the same floor)",
        "m5",
        "not in Table 2 (ModernBERT, Ettin)",
        (PACK, "train.schedule=wsd", "train.wsd_decay_fraction=0.2", "train.decay_shape=linear"),
    ),
    Row(
        "mask30",
        "m5",
        "20% -> 30% masking (all [MASK])",
        "m5",
        "not in Table 2 (ModernBERT; Wettig et al. 2023)",
        (PACK, "data.mlm_probability=0.3"),
    ),
    Row(
        "batch_warmup",
        "m5",
        "batch-size warm-up: a quarter of the batch, growing to all of it over the first 12.5% of the tokens",
        "m5",
        "not in Table 2 (ModernBERT, mmBERT)",
        (PACK,),
        needs=BATCH_WARMUP_KEYS,
        batch_warmup_share=0.125,
    ),
)
# Not in the default ladder (its three hours): a mask rate that falls from 30% to 20% half-way.
EXTRA_ROWS = (
    Row(
        "mask_schedule",
        "m5",
        "mask rate 30% for the first half of the run, then 20%",
        "m5",
        "not in Table 2 (mmBERT: 25% -> 15% -> 5%)",
        (PACK, "data.mlm_schedule=[[0.0, 0.3], [0.5, 0.2]]"),
        needs=("data.mlm_schedule",),
    ),
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
    "data.eval.batch_size=8",
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


def unknown_keys(row: Row) -> list[str]:
    """The keys among `row.needs` that this build's config does not have."""
    from neobert.train import config as train_config  # torch: not imported until a ladder runs

    sections = {"data": train_config.DataSection, "train": train_config.TrainSection}
    known = {section: {field.name for field in fields(cls)} for section, cls in sections.items()}
    return [key for key in row.needs if key.partition(".")[2] not in known.get(key.partition(".")[0], ())]


def check_rows_known(rows: list[Row]) -> None:
    """A named error for a row whose keys this build does not know, before anything trains."""
    for row in rows:
        missing = unknown_keys(row)
        if missing:
            others = ",".join(r.name for r in rows if not unknown_keys(r))
            raise ValueError(
                f"ablation row {row.name} needs {', '.join(missing)}, which this build of neobert does not know "
                f"yet; leave the row out with --rows {others}"
            )


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
    if row.batch_warmup_share:
        config = load_config(paths, overrides + batch_warmup_overrides(config, row.batch_warmup_share))
    from neobert.train.optim import schedule_from

    schedule_from(config.train, config.total_steps())  # a budget too small fails here
    return config


def batch_warmup_overrides(config, share: float) -> list[str]:
    """A batch-size warm-up from a quarter of the global batch over `share` of the run's token slots (whole
    full batches, at least one), and the run set by those tokens, so that it sees as many as the row it is
    compared with."""
    tokens = config.budget.total_steps(config.tokens_per_step) * config.tokens_per_step
    full_batch_tokens = config.tokens_per_step
    warmup = max(1, round(share * tokens / full_batch_tokens)) * full_batch_tokens
    start = max(1, config.data.batch_size // 4)
    return [
        f"data.batch_warmup_start={start}",
        f"data.batch_warmup_tokens={warmup}",
        "budget.steps=null",
        f"budget.tokens={tokens}",
    ]


class LadderInterrupted(Interrupted, RuntimeError):
    """A run was stopped by a signal; it has saved its checkpoint, and rerunning the ladder resumes it."""


def run_one(row: Row, settings: LadderSettings, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    from neobert.train.data import make_eval_batches, make_loader
    from neobert.train.pretrain import TrainingDiverged, pretrain

    config = row_config(row, settings, seed)
    out = Path(config.system.output_dir)
    record: dict[str, Any] = {"row": row.name, "seed": seed, "steps": config.total_steps()}
    try:
        # A run an earlier ladder left part-way continues from its checkpoint (bit for bit); else it starts.
        result = pretrain(config, make_loader, make_eval_batches, resume=True)
    except TrainingDiverged as error:
        losses = _train_losses(out / "metrics.jsonl")
        log(f"{row.name} seed {seed}: diverged ({error})")
        return {**record, "status": "diverged", "last_good_loss": losses[-1] if losses else None}
    if result.status == "interrupted":
        raise LadderInterrupted(
            f"{row.name} seed {seed} was interrupted at step {result.step}; the same command resumes it"
        )
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

    from neobert.demo.offline_suite import SuiteBudget, probe_suite
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
    check_rows_known(rows)
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
    commit = code_commit()
    for row in rows:
        for seed in range(settings.seeds):
            if (row.name, seed) in have:
                continue
            log(f"ablate: {row.name} seed {seed} ({row.change})")
            started = time.perf_counter()
            record = run_one(row, settings, seed, log)
            runs.append({**record, "seconds": round(time.perf_counter() - started, 1), "commit": commit})
            write_json_atomically(results_path, {"settings": asdict(settings), "runs": runs}, indent=1)
    summary = summarise(rows, runs)
    seconds = sum(r.get("seconds", 0.0) for r in runs)
    # A ladder resumed in another session may span commits: each run records its own, and the report all.
    commits = sorted({r["commit"] for r in runs if r.get("commit")})
    report = {
        "settings": asdict(settings),
        "commits": commits,
        "runs": runs,
        "summary": summary,
        "seconds": round(seconds, 1),
    }
    write_json_atomically(results_path, report, indent=1)
    (Path(settings.out) / "ablations.md").write_text(format_table(rows, summary) + "\n", encoding="utf-8")
    plot_ladder(rows, summary, Path(settings.out) / "ablations.png")
    return report


def code_commit() -> str | None:
    """The commit of the checkout this package is imported from, "+dirty" when it has uncommitted changes;
    None outside a git checkout."""

    here = Path(__file__).resolve().parent.parent  # the whole package, not only demo/
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# What each comparison reads from a run, and whether a larger value is better.
COMPARED = (("accuracy", "eval_accuracy", True), ("loss", "eval_loss", False), ("probe", "probe_mean", True))


def _run_value(run: dict, key: str) -> float | None:
    if key == "probe_mean":
        return run["probe"]["mean"] if "probe" in run else None
    return run.get(key)


def compare(mine: list[float], base: list[float]) -> dict[str, Any]:
    """A row against the row it changes: the difference of the means, its seed spread (the standard
    deviation of the difference of one seed of each, sqrt(s_a^2 + s_b^2)), and whether the seeds separate:
    "above" when every seed of the row is above every seed of its base, "below" when every one is below."""
    (mean, std), (base_mean, base_std) = _mean_std(mine), _mean_std(base)
    if min(mine) > max(base):
        separate = "above"
    elif max(mine) < min(base):
        separate = "below"
    else:
        separate = "no"
    return {"delta": mean - base_mean, "spread": math.hypot(std, base_std), "separate": separate}


def summarise(rows: list[Row], runs: list[dict]) -> dict[str, dict]:
    summary, values = {}, {}
    for row in rows:
        mine = [r for r in runs if r["row"] == row.name]
        good = [r for r in mine if r.get("status") != "diverged" and r.get("eval_loss") is not None]
        values[row.name] = {
            key: [v for v in (_run_value(r, key) for r in good) if v is not None] for _, key, _ in COMPARED
        }
        summary[row.name] = {
            "seeds": len(mine),
            "diverged": len(mine) - len(good),
            **{key: _mean_std(values[row.name][key]) for _, key, _ in COMPARED},
        }
    for row in rows:
        if row.compare_to not in values:
            continue
        mine, comparisons = summary[row.name], {}
        for label, key, _ in COMPARED:
            if values[row.name][key] and values[row.compare_to][key]:
                comparisons[label] = compare(values[row.name][key], values[row.compare_to][key])
                mine[f"delta_{label}"] = comparisons[label]["delta"]
        if comparisons:
            mine["compared_to"] = row.compare_to
            mine["compare"] = comparisons
    return summary


def _cell(pair: tuple[float | None, float | None], digits: int = 3) -> str:
    mean, std = pair
    return "" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _delta_cell(summary: dict, label: str, digits: int) -> str:
    found = summary.get("compare", {}).get(label)
    if found is None:
        return ""
    mark = {"above": ", seeds separate (all above)", "below": ", seeds separate (all below)", "no": ""}
    return f"{found['delta']:+.{digits}f} ± {found['spread']:.{digits}f}{mark[found['separate']]}"


def format_table(rows: list[Row], summary: dict[str, dict]) -> str:
    head = (
        "| row | change (from the row named) | held-out loss | held-out accuracy | Δ accuracy ± spread | "
        "Δ loss ± spread | probe mean | Δ probe ± spread | paper (GLUE) |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for row in rows:
        s = summary[row.name]
        change = row.change + (f" (from {row.compare_to})" if row.compare_to else "")
        diverged = f" ({s['diverged']} diverged)" if s["diverged"] else ""
        lines.append(
            f"| {row.name}{diverged} | {change} | {_cell(s['eval_loss'])} | {_cell(s['eval_accuracy'], 4)} | "
            f"{_delta_cell(s, 'accuracy', 4)} | {_delta_cell(s, 'loss', 3)} | {_cell(s['probe_mean'])} | "
            f"{_delta_cell(s, 'probe', 3)} | {row.paper_delta} |"
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
