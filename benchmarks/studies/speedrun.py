"""The speedrun study's table and figure: held-out MLM loss against wall-clock time for `neobert demo` runs.

    python benchmarks/studies/speedrun.py runs/demo-a runs/demo-b ... --out docs/speedrun.png [--quiet-rates rates.json]

Each argument is a run folder written by `neobert demo` (its metrics.jsonl and report.json). The figure has
held-out loss against minutes (the run's own elapsed time) and against tokens seen. Runs screened on a
budget of steps while other jobs shared the machine can be put on a quiet machine's clock instead:
`--quiet-rates` maps a run's name to the tokens/s its settings reach on the quiet machine, and the axis
becomes tokens / that rate (the table says which clock each row used); `--clocked` limits the minutes
panel to the runs whose clock means something.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neobert.train.metrics import read_jsonl


def read_run(folder: Path) -> dict:
    rows = read_jsonl(folder / "metrics.jsonl")
    train = [r for r in rows if "train/loss" in r]
    evals = [r for r in rows if "eval/loss" in r]
    report_path = folder / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    by_step = {r["step"]: r for r in train}
    points = []
    for record in evals:
        train_record = by_step.get(record["step"]) or min(train, key=lambda r: abs(r["step"] - record["step"]))
        points.append(
            {
                "step": record["step"],
                "tokens": train_record["train/tokens"],
                "elapsed_s": train_record["time/elapsed_s"],
                "loss": record["eval/loss"],
                "accuracy": record["eval/accuracy"],
            }
        )
    speeds = [r["train/tokens_per_s"] for r in train[1:]]  # the first window holds start-up work
    return {
        "name": folder.name,
        "points": points,
        "tokens_per_s": sum(speeds) / len(speeds) if speeds else None,
        "report": report,
    }


def clock(run: dict, quiet_rates: dict[str, float]) -> tuple[list[float], str]:
    rate = quiet_rates.get(run["name"])
    if rate:
        return [p["tokens"] / rate for p in run["points"]], f"quiet rate {rate:,.0f} tokens/s"
    return [p["elapsed_s"] for p in run["points"]], "own wall clock"


def table(runs: list[dict], quiet_rates: dict[str, float]) -> str:
    lines = [
        "| run | tokens/s (own) | clock | final s | held-out loss | accuracy | probe mean (trained / random init) |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        seconds, which = clock(run, quiet_rates)
        last = run["points"][-1]
        probe = run["report"].get("probe", {}).get("scores", {})
        probe_cell = (
            f"{probe['trained']['mean']:.3f} / {probe['random init']['mean']:.3f}" if "trained" in probe else ""
        )
        lines.append(
            f"| {run['name']} | {run['tokens_per_s'] or 0:,.0f} | {which} | {seconds[-1]:.0f} | {last['loss']:.3f} | "
            f"{last['accuracy']:.4f} | {probe_cell} |"
        )
    return "\n".join(lines)


def plot(runs: list[dict], quiet_rates: dict[str, float], path: Path, clocked: list[str] | None = None) -> None:
    """Left: held-out loss against minutes, for the runs measured on a quiet clock (`clocked`, default all);
    right: against tokens seen, for every run (step-budgeted screens included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_time, by_tokens) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        losses = [p["loss"] for p in run["points"]]
        if clocked is None or run["name"] in clocked:
            seconds, _ = clock(run, quiet_rates)
            by_time.plot([s / 60 for s in seconds], losses, marker="o", ms=3, label=run["name"])
        by_tokens.plot([p["tokens"] / 1e6 for p in run["points"]], losses, marker="o", ms=3, label=run["name"])
    by_time.set_xlabel("minutes (quiet 2-core machine)")
    by_tokens.set_xlabel("tokens seen (millions)")
    for axis in (by_time, by_tokens):
        axis.set_ylabel("held-out MLM loss (20% all-[MASK], fixed positions)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/speedrun.png"))
    parser.add_argument("--quiet-rates", type=Path, default=None, help="JSON: run name -> quiet tokens/s")
    parser.add_argument("--clocked", default=None, help="comma-separated runs for the minutes panel (default all)")
    args = parser.parse_args()
    quiet_rates = json.loads(args.quiet_rates.read_text()) if args.quiet_rates else {}
    runs = [read_run(folder) for folder in args.runs]
    plot(runs, quiet_rates, args.out, args.clocked.split(",") if args.clocked else None)
    print(table(runs, quiet_rates))
    print(f"\nfigure: {args.out}")


if __name__ == "__main__":
    main()
