"""Running a benchmark script the way its smoke test needs it."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_quick_benchmark(script: str, out, *options: str) -> tuple[dict, str]:
    """Run `benchmarks/<folder>/<script> --quick [options]` in its own process (benchmarks tune the process's
    allocator, which must not leak into the test run); returns its JSON report and its standard output. The
    timeout only stops a hung run: a busy 2-core machine takes minutes for what a quiet one does in one."""
    path = BENCHMARKS / script
    done = subprocess.run(
        [sys.executable, str(path), "--quick", "--out", str(out), *options],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(Path(out).read_text()), done.stdout
