"""`system.precision`: forced fp32 / bf16, and `auto`, which on a CPU times the model's own products in both
precisions and takes the faster (the hosts here differ: bf16 is several times faster on some, slower on
others)."""

import pytest
import torch

from neobert.train import precision
from neobert.train.pretrain import pretrain
from test_train_pretrain import make_loader, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
SHAPES = ((64, 32, 96), (13, 32, 500))


def test_forced_choices_and_bad_names():
    assert precision.resolve_precision("fp32", CPU, SHAPES).dtype is None
    assert precision.resolve_precision("bf16", CPU, SHAPES).dtype is torch.bfloat16
    assert precision.resolve_precision("auto", torch.device("cuda"), SHAPES).dtype is torch.bfloat16
    with pytest.raises(ValueError, match="system.precision must be auto, fp32 or bf16, got 'fp16'"):
        precision.resolve_precision("fp16", CPU, SHAPES)


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "expected"), [(1.0, 0.5, torch.bfloat16), (1.0, 0.95, None), (1.0, 0.85, None)]
)
def test_auto_takes_bf16_only_where_it_pays(monkeypatch, fp32_s, bf16_s, expected):
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    monkeypatch.setattr(precision, "_probe_times", lambda shapes: (fp32_s, bf16_s))
    precision._probe_cpu.cache_clear()
    try:
        choice = precision.resolve_precision("auto", CPU, SHAPES)
    finally:
        precision._probe_cpu.cache_clear()
    assert choice.dtype is expected
    assert (choice.fp32_probe_s, choice.bf16_probe_s) == (fp32_s, bf16_s)
    assert choice.name in choice.reason


def test_auto_without_bf16_instructions_takes_fp32_without_timing(monkeypatch):
    def no_timing(shapes):
        raise AssertionError("timed the products on a CPU without bf16 instructions")

    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    monkeypatch.setattr(precision, "_probe_times", no_timing)
    precision._probe_cpu.cache_clear()
    try:
        choice = precision.resolve_precision("auto", CPU, SHAPES)
    finally:
        precision._probe_cpu.cache_clear()
    assert choice.dtype is None and "no bf16 matrix instructions" in choice.reason
    assert choice.fp32_probe_s is None and choice.bf16_probe_s is None


def test_the_probe_alternates_the_precisions_and_keeps_each_ones_fastest_round(monkeypatch):
    # Pass durations in call order: a warm-up round, then PROBE_ROUNDS rounds of (fp32, bf16).
    durations = [9.0, 9.0, 3.0, 8.0, 5.0, 1.0, 2.0, 7.0]
    assert len(durations) == 2 * (precision.PROBE_ROUNDS + 1)
    stamps, now = [], 0.0
    for seconds in durations:
        stamps += [now, now + seconds]
        now += seconds
    monkeypatch.setattr(precision.time, "perf_counter", iter(stamps).__next__)
    assert precision._probe_times(((4, 8, 8),)) == (2.0, 1.0)


def test_auto_on_this_host_is_consistent_with_its_own_measurement():
    precision._probe_cpu.cache_clear()
    choice = precision.resolve_precision("auto", CPU, SHAPES)
    if precision.native_bf16():
        assert (choice.dtype is torch.bfloat16) == (choice.bf16_probe_s * precision.BF16_MARGIN < choice.fp32_probe_s)
    else:
        assert choice.dtype is None and choice.bf16_probe_s is None
    assert choice.fp32_peak_gflops > 0 and choice.bf16_peak_gflops > 0
    assert precision.resolve_precision("auto", CPU, SHAPES) is choice  # measured once per process


def test_a_run_records_and_uses_its_precision(tmp_path):
    result = pretrain(tiny_config(tmp_path / "bf16", "system.precision=bf16", "budget.steps=4"), make_loader)
    assert result.precision["dtype"] == "bf16" and "system.precision=bf16" in result.precision["reason"]
    fp32 = pretrain(tiny_config(tmp_path / "fp32", "system.precision=fp32", "budget.steps=4"), make_loader)
    assert fp32.precision["dtype"] == "fp32"
    # bf16 autocast really ran: the losses differ from fp32's, by bf16 rounding only
    first = {k: v for k, v in fp32.last_metrics.items() if k == "train/loss"}
    assert first["train/loss"] != result.last_metrics["train/loss"]
    assert result.last_metrics["train/loss"] == pytest.approx(first["train/loss"], rel=2e-2)


def test_the_matrix_product_peak_is_its_products_flops_over_their_median():
    for dtype in (torch.float32, torch.bfloat16):
        timing = precision.time_matmul(dtype, size=64, repeats=3)
        assert timing.size == 64 and timing.median_s > 0 and timing.cores > 0
        assert timing.gflops == pytest.approx(2 * 64**3 / timing.median_s / 1e9, rel=1e-12)


def test_a_resumed_auto_run_keeps_the_precision_it_started_with(tmp_path, monkeypatch):
    def probe_says(faster):
        monkeypatch.setattr(precision, "native_bf16", lambda: True)
        monkeypatch.setattr(precision, "_probe_times", lambda shapes: (1.0, 0.5) if faster else (0.5, 1.0))
        precision._probe_cpu.cache_clear()

    config = tiny_config(tmp_path, "system.precision=auto", "budget.steps=4")
    try:
        probe_says(True)  # bf16 faster
        paused = pretrain(config, make_loader, stop_at_step=2)
        assert paused.precision["dtype"] == "bf16"
        probe_says(False)  # this time the probe would pick fp32
        resumed = pretrain(config, make_loader, resume=True)
    finally:
        precision._probe_cpu.cache_clear()
    assert resumed.precision["dtype"] == "bf16" and "kept from the checkpoint" in resumed.precision["reason"]
