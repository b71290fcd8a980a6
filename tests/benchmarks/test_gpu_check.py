"""benchmarks/gpu_check.py without a GPU (`--device cpu --quick`): every stage runs, each figure follows
from what was measured, a failing stage or run is recorded while the rest still run, and compilation in
the timed steps is caught."""

import json
from pathlib import Path

import pytest
import torch

import neobert
from helpers.benchmarks import run_quick_benchmark
from neobert.model.flops import forward_flops, non_embedding_parameters

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
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
    report, stdout = run_quick_benchmark("gpu_check.py", out, "--device", "cpu", "--budget-s", str(UNLIMITED_S))
    return report, stdout


@pytest.fixture
def benchmarks(monkeypatch):
    """The benchmark scripts importable, and dynamo's caches fresh around an in-process run."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def run(report: dict, model: str, compiled: bool) -> dict:
    return next(r for r in report["stages"]["train"]["runs"] if (r["model"], r["compiled"]) == (model, compiled))


def test_every_stage_runs_and_prints_one_table(dry_run):
    report, stdout = dry_run
    assert {name: stage["status"] for name, stage in report["stages"].items()} == dict.fromkeys(STAGES, "ok")
    assert report["setup"]["sizes"]["budget_s"] == UNLIMITED_S
    assert stdout.count("stage ") == 1 and "tokens/s" in stdout
    for t in report["targets"]:
        assert f"{'PASS' if t['passed'] else 'FAIL'} {t['name']}" in stdout


def test_the_peak_is_the_timed_matrix_products_rate(dry_run):
    peak = dry_run[0]["stages"]["peak"]
    (row,) = peak["sizes"]
    assert peak["dtype"] == "bfloat16"
    assert peak["flops"] == pytest.approx(2 * row["size"] ** 3 / row["median_s"], rel=1e-9)


def test_training_figures_follow_from_the_timed_steps(dry_run, benchmarks):
    from gpu_pretrain import synthetic_batch

    report = dry_run[0]
    sizes, peak = report["setup"]["sizes"], report["stages"]["peak"]["flops"]
    runs = report["stages"]["train"]["runs"]
    assert [(r["model"], r["compiled"]) for r in runs] == TRAIN_RUNS
    config = neobert.NeoBERTConfig.from_preset("tiny")
    packed, _ = synthetic_batch(sizes["batch"], sizes["length"], config.vocab_size)
    masked = int((packed["labels"] != -100).sum())
    assert report["stages"]["train"]["masked_tokens"] == masked
    tokens = sizes["batch"] * sizes["length"]
    library_flops = 3 * forward_flops(
        config, tokens, sizes["batch"] * sizes["length"] ** 2, masked, non_embedding_parameters(config)
    )
    for r in runs:
        assert r["status"] == "ok", r.get("error")
        assert r["steps"] == sizes["steps"] and len(r["losses"]) == sizes["warmup"] + sizes["steps"]
        assert r["real_tokens_per_step"] == tokens
        assert r["tokens_per_s"] == pytest.approx(tokens * r["steps"] / r["seconds"], rel=1e-9)
        assert r["mfu"] == pytest.approx(r["flops_per_step"] * r["steps"] / r["seconds"] / peak, rel=1e-9)
        # One fixed batch: the loss falls clearly (from ~ln(vocab)), not by noise.
        assert r["finite"] and r["losses"][-1] < r["losses"][0] - 0.3, r["losses"]
        if r["compiled"]:
            assert r["recompiles"] == 0 and r["uncompiled_frames"] == 0 and r["graphs"] > 0
        else:
            assert r["recompiles"] is None
    for model in ("neobert", "modernbert", "bert"):
        # dynamo's eager backend runs the same operations: compiled and eager steps agree.
        torch.testing.assert_close(run(report, model, True)["losses"], run(report, model, False)["losses"])
    assert run(report, "neobert", True)["flops_per_step"] == pytest.approx(library_flops, rel=1e-12)
    assert run(report, "neobert", True)["layout"] == "packed" and run(report, "bert", True)["layout"] == "padded"


def test_the_profile_ranks_where_the_compiled_neobert_steps_spend_time(dry_run):
    report = dry_run[0]
    profile = run(report, "neobert", True)["profile"]
    assert profile["steps"] == report["setup"]["sizes"]["profile_steps"]
    rows = profile["top"]
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
    for r in rows:
        assert r["share"] == pytest.approx(r["ms"] / profile["total_ms"], rel=1e-9) and r["calls"] > 0
    assert sum(r["share"] for r in rows) <= 1 + 1e-9
    assert {"aten::mm", "aten::addmm"} & {r["name"] for r in rows}
    assert all("profile" not in r for r in report["stages"]["train"]["runs"][1:])


def test_inference_keeps_the_best_batch_and_compares_it_with_the_paper(dry_run):
    report = dry_run[0]
    stage, sizes, peak = report["stages"]["inference"], report["setup"]["sizes"], report["stages"]["peak"]["flops"]
    config = neobert.NeoBERTConfig.from_preset("tiny")
    for name, entry in stage["models"].items():
        assert entry["status"] == "ok" and entry["finite"] and entry["length"] == sizes["infer_length"]
        rows = entry["rows"]
        assert [r["batch"] for r in rows] == list(sizes["infer_batches"][: len(rows)])
        for r in rows:
            assert r["tokens_per_s"] == pytest.approx(r["batch"] * entry["length"] / r["median_s"], rel=1e-9)
        best = max(rows, key=lambda r: r["tokens_per_s"])
        assert (entry["batch"], entry["tokens_per_s"]) == (best["batch"], best["tokens_per_s"])
        assert entry["times_paper_a100"] == pytest.approx(best["tokens_per_s"] / stage["paper_a100_tokens_per_s"][name])
        if name == "neobert":
            tokens = best["batch"] * entry["length"]
            flops = forward_flops(
                config, tokens, best["batch"] * entry["length"] ** 2, 0, non_embedding_parameters(config)
            )
            assert entry["mfu"] == pytest.approx(flops / best["median_s"] / peak, rel=1e-9)
    assert stage["paper_a100_tokens_per_s"] == {"neobert": 17.2e3, "modernbert": 11.7e3}


def test_the_gpu_tests_run_in_pytest_and_skip_without_cuda(dry_run):
    tests = dry_run[0]["stages"]["tests"]
    assert "tests/model/test_backends.py" in tests["files"] and tests["returncode"] == 0
    equivalence = {c["test"].split("[")[1].rstrip("]") for c in tests["cases"] if "test_bf16_matches_fp32" in c["test"]}
    assert equivalence == {
        f"{b}-{p}" for b in ("sdpa", "flex_attention", "eager") for p in ("autocast", "bf16 weights")
    }
    assert (tests["passed"], tests["failed"], tests["error"]) == (0, 0, 0)
    assert tests["skipped"] == len(tests["cases"]) and all(c["message"] == "needs CUDA" for c in tests["cases"])


def test_targets_judge_the_reported_figures(dry_run):
    report = dry_run[0]
    targets = {t["name"]: t for t in report["targets"]}
    neo, modern = run(report, "neobert", True), run(report, "modernbert", True)
    values = [t["value"] for t in report["targets"]]
    assert values == [
        neo["mfu"],
        pytest.approx(neo["tokens_per_s"] / modern["tokens_per_s"]),
        report["stages"]["inference"]["models"]["neobert"]["times_paper_a100"],
        None,  # no CUDA case ran: not a pass
        0,
        0,
        0,
    ]
    for t in targets.values():
        expected = t["value"] is not None and (t["value"] <= t["target"] if t["at_most"] else t["value"] >= t["target"])
        assert t["passed"] == expected, t
    assert targets["NeoBERT training MFU (compiled, of the measured peak)"]["target"] == 0.45
    assert targets["NeoBERT inference tokens/s over the paper's A100"]["target"] == 30


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


def test_a_frame_past_the_recompile_limit_is_reported(benchmarks, monkeypatch):
    from gpu_pretrain import train_run

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    model, batch = tiny_training()
    # The first block fills the layout's per-forward cache, which the others then see: a second variant.
    result = train_run(model, batch, torch.device("cpu"), steps=2, warmup=1, lr=3e-4, compile_backend="eager")
    assert result["uncompiled_frames"] >= 1 and result["recompiles"] == 0
    assert "Dynamo recompile limit exceeded" in result["dynamo_unsupported"]
