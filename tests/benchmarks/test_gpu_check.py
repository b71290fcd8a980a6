"""benchmarks/gpu/gpu_check.py without a GPU (`--device cpu --quick`): every stage runs, each figure follows
from what was measured, a failing stage or run is recorded while the rest still run, and compilation in
the timed steps is caught."""

import json
from pathlib import Path

import pytest
import torch

import neobert
from helpers.benchmarks import run_quick_benchmark
from neobert.model.flops import forward_flops, non_embedding_parameters

GPU_SCRIPTS = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"
STAGES = ("peak", "tests", "train", "inference")
# The target pair first, as the script runs them (what a short budget leaves out comes last).
TRAIN_RUNS = [("neobert", True), ("modernbert", True), ("neobert", False), ("modernbert", False)]
TRAIN_RUNS += [("bert", True), ("bert", False)]
UNLIMITED_S = 100_000.0


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    # No time budget: this run checks every stage and figure, and a busy CPU must not shrink it (the budget's
    # own behaviour is tested below with a spent one).
    report, stdout = run_quick_benchmark("gpu/gpu_check.py", out, "--device", "cpu", "--budget-s", str(UNLIMITED_S))
    return report, stdout


@pytest.fixture
def benchmarks(monkeypatch):
    """The benchmark scripts importable, and dynamo's caches fresh around an in-process run."""
    monkeypatch.syspath_prepend(str(GPU_SCRIPTS))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def run(report: dict, model: str, compiled: bool) -> dict:
    return next(r for r in report["stages"]["train"]["runs"] if (r["model"], r["compiled"]) == (model, compiled))


def test_gpu_check_dry_run_runs_every_stage_on_the_cpu(dry_run, benchmarks):
    from gpu_pretrain import synthetic_batch

    report, stdout = dry_run
    assert {name: stage["status"] for name, stage in report["stages"].items()} == dict.fromkeys(STAGES, "ok")
    assert stdout.count("stage ") == 1 and "tokens/s" in stdout
    for t in report["targets"]:
        assert f"{'PASS' if t['passed'] else 'FAIL'} {t['name']}" in stdout
    assert report["stages"]["peak"]["flops"] > 0

    sizes, runs = report["setup"]["sizes"], report["stages"]["train"]["runs"]
    assert [(r["model"], r["compiled"]) for r in runs] == TRAIN_RUNS
    for r in runs:
        assert r["status"] == "ok", r.get("error")
        assert r["steps"] == sizes["steps"] and r["tokens_per_s"] > 0
        # One fixed batch: the loss falls clearly (from ~ln(vocab)), not by noise.
        assert r["finite"] and r["losses"][-1] < r["losses"][0] - 0.3, r["losses"]
        if r["compiled"]:
            assert r["recompiles"] == 0 and r["uncompiled_frames"] == 0 and r["graphs"] > 0
    for model in ("neobert", "modernbert", "bert"):
        # dynamo's eager backend runs the same operations: compiled and eager steps agree.
        torch.testing.assert_close(run(report, model, True)["losses"], run(report, model, False)["losses"])
    # The harness's FLOPs are the library's count for the batch it trained on.
    config = neobert.NeoBERTConfig.from_preset("tiny")
    packed, _ = synthetic_batch(sizes["batch"], sizes["length"], config.vocab_size)
    masked = int((packed["labels"] != -100).sum())
    tokens = sizes["batch"] * sizes["length"]
    library_flops = 3 * forward_flops(
        config, tokens, tokens * sizes["length"], masked, non_embedding_parameters(config)
    )
    assert run(report, "neobert", True)["flops_per_step"] == pytest.approx(library_flops, rel=1e-12)
    assert {"aten::mm", "aten::addmm"} & {r["name"] for r in run(report, "neobert", True)["profile"]["top"]}

    for name, entry in report["stages"]["inference"]["models"].items():
        assert entry["status"] == "ok" and entry["finite"] and entry["tokens_per_s"] > 0, name

    # The gpu-marked tests, found in every test folder, ran in pytest and skipped for want of CUDA.
    tests = report["stages"]["tests"]
    assert "tests/model/test_backends.py" in tests["files"] and tests["returncode"] == 0
    assert (tests["passed"], tests["failed"], tests["error"]) == (0, 0, 0)
    assert tests["skipped"] == len(tests["cases"]) > 0 and all(c["message"] == "needs CUDA" for c in tests["cases"])


def test_a_failing_stage_and_a_failing_run_are_recorded_and_the_rest_still_run(tmp_path, benchmarks, monkeypatch):
    import gpu_check

    def broken_peak(ctx):
        raise RuntimeError("no peak on this machine")

    monkeypatch.setitem(gpu_check.STAGE_FUNCTIONS, "peak", broken_peak)
    out = tmp_path / "gpu_check.json"
    # flash-attn's kernel needs CUDA (and the package): NeoBERT's run fails, ModernBERT's still runs.
    argv = ["--device", "cpu", "--quick", "--stages", "peak,inference", "--attention", "flash_attention_2"]
    report = gpu_check.main([*argv, "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert set(report["stages"]) == {"peak", "inference"}
    peak = report["stages"]["peak"]
    assert peak["status"] == "error" and peak["error"] == "RuntimeError: no peak on this machine"
    assert "broken_peak" in peak["traceback"]
    models = report["stages"]["inference"]["models"]
    assert models["neobert"]["status"] == "error"
    assert "flash" in models["neobert"]["error"].lower()
    modern = models["modernbert"]
    assert modern["status"] == "ok" and modern["tokens_per_s"] > 0
    inference_target = next(t for t in report["targets"] if "inference" in t["name"])
    assert inference_target["value"] is None and not inference_target["passed"]


def test_a_spent_budget_skips_the_stages_left(tmp_path, benchmarks):
    import gpu_check

    report = gpu_check.main(["--device", "cpu", "--quick", "--budget-s", "0", "--out", str(tmp_path / "r.json")])
    assert report["stages"] == dict.fromkeys(STAGES, {"status": "skipped", "reason": "time budget"})
    assert not any(t["passed"] for t in report["targets"])


def test_an_unknown_stage_or_backend_is_named(benchmarks, capsys):
    import gpu_check

    with pytest.raises(SystemExit):
        gpu_check.main(["--stages", "peak,warp"])
    assert "unknown stage(s) warp" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check.main(["--attention", "bogus"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(benchmarks, capsys):
    import gpu_check

    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cuda"])
    assert "no CUDA device here" in capsys.readouterr().err


def tiny_training():
    from gpu_pretrain import synthetic_batch

    config = neobert.NeoBERTConfig.from_preset("tiny")
    packed, _ = synthetic_batch(2, 32, config.vocab_size)
    return neobert.NeoBERTForMaskedLM(config), packed


def test_compiling_in_every_timed_step_is_counted(benchmarks, monkeypatch):
    from gpu_pretrain import train_run
    from neobert.model import attention

    model, batch = tiny_training()
    # Each forward changes a module global the compiled blocks read (keeping its meaning: few runs stay
    # in-place calls), so every timed step compiles them afresh.
    monkeypatch.setattr(attention, "MAX_RUN_CALLS", attention.MAX_RUN_CALLS)
    model.register_forward_pre_hook(lambda *_: setattr(attention, "MAX_RUN_CALLS", attention.MAX_RUN_CALLS + 1))
    result = train_run(model, batch, torch.device("cpu"), steps=3, warmup=1, lr=3e-4, compile_backend="eager")
    assert result["recompiles"] >= 3


def test_a_frame_past_the_recompile_limit_is_reported(benchmarks):
    from gpu_pretrain import train_run

    model, batch = tiny_training()
    # The first block fills the layout's per-forward cache, which the others then see: a second variant.
    # Dynamo's own patch, not monkeypatch: undoing a setattr on its config module hides the key for later tests.
    with torch._dynamo.config.patch(recompile_limit=1):
        result = train_run(model, batch, torch.device("cpu"), steps=2, warmup=1, lr=3e-4, compile_backend="eager")
    assert result["uncompiled_frames"] >= 1 and result["recompiles"] == 0
    assert "Dynamo recompile limit exceeded" in result["dynamo_unsupported"]
