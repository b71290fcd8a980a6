import pytest
import torch

from neobert import NeoBERTConfig, load_tokenizer


def small_config(**overrides) -> NeoBERTConfig:
    """Big enough to exercise every code path (several heads, two layers), small enough to be instant."""
    fields = dict(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_length=256,
        classifier_dropout=0.0,
    )
    fields.update(overrides)
    return NeoBERTConfig(**fields)


@pytest.fixture
def config() -> NeoBERTConfig:
    return small_config()


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared machine a busy core stalls every
    two-thread operation at its barrier (10x slower); one thread keeps such tests fast either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_ids(batch: int, length: int, low: int = 1000, high: int = 30000) -> torch.Tensor:
    return torch.randint(low, high, (batch, length))


def run_quick_benchmark(script: str, out, *options: str) -> tuple[dict, str]:
    """Run `benchmarks/<script> --quick [options]` in its own process (benchmarks tune the process's
    allocator, which must not leak into the test run); returns its JSON report and its standard output. The
    timeout only stops a hung run: a busy 2-core machine takes minutes for what a quiet one does in one."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / script
    done = subprocess.run(
        [sys.executable, str(path), "--quick", "--out", str(out), *options],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(Path(out).read_text()), done.stdout
