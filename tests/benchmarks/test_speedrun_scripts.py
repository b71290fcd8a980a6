"""The speedrun study's scripts: the run table and figure say what the runs' metrics say, on either clock;
the shape probe reports tokens/s from its own step time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

STUDIES = Path(__file__).resolve().parents[2] / "benchmarks" / "studies"


def fake_run(folder: Path, tokens_per_step: int, seconds_per_step: float, losses: list[float]) -> Path:
    folder.mkdir(parents=True)
    lines = []
    for index, loss in enumerate(losses, start=1):
        step = 100 * index
        lines.append(
            {
                "step": step,
                "train/loss": loss + 0.1,
                "train/tokens": step * tokens_per_step,
                "time/elapsed_s": step * seconds_per_step,
                "train/tokens_per_s": tokens_per_step / seconds_per_step,
            }
        )
        lines.append({"step": step, "eval/loss": loss, "eval/accuracy": 1 / loss})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = {"probe": {"scores": {"trained": {"mean": 0.61}, "random init": {"mean": 0.6}}}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_speedrun_table_and_figure(tmp_path):
    fast = fake_run(tmp_path / "fast", 4096, 0.2, [7.0, 6.5, 6.2])
    slow = fake_run(tmp_path / "slow", 4096, 0.8, [6.8, 6.0])
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps({"slow": 8192.0}))  # screened under load: put it on the quiet clock
    figure = tmp_path / "curve.png"
    done = subprocess.run(
        [
            sys.executable,
            str(STUDIES / "speedrun.py"),
            str(fast),
            str(slow),
            "--out",
            str(figure),
            "--quiet-rates",
            str(rates),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    # own clock: 300 steps at 0.2 s; quiet clock: 200 steps x 4096 tokens / 8192 tokens/s
    assert "| own wall clock | 60 | 6.200 | 0.1613 | 0.610 / 0.600 |" in rows["fast"]
    assert "| quiet rate 8,192 tokens/s | 100 | 6.000 | 0.1667 |" in rows["slow"]
    assert "20,480" in rows["fast"] and "5,120" in rows["slow"]  # each run's own tokens/s
    assert figure.stat().st_size > 10_000


@pytest.mark.usefixtures("one_thread")
def test_shape_probe_reports_tokens_per_second_from_its_step_time(tmp_path):
    out = tmp_path / "shapes.json"
    done = subprocess.run(
        [sys.executable, str(STUDIES / "speedrun_shapes.py"), "--shapes", "32x2", "--steps", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [(r["hidden"], r["layers"], r["precision"]) for r in report["rows"]] == [(32, 2, "fp32"), (32, 2, "bf16")]
    for row in report["rows"]:
        assert row["tokens_per_s"] == pytest.approx(32 * 128 / row["s_per_step"], rel=1e-12)
    assert report["peak_gflops"]["fp32"] > 0 and report["peak_gflops"]["bf16"] > 0
