"""`neobert ablate`: the ladder's rows are the paper's steps, every row is scored by one held-out rule, seeds
are summarised honestly, a diverged row is reported and the others go on, bad input is refused."""

import json
import math
import statistics

import pytest

from helpers.data import sample_texts
from neobert.cli import main
from neobert.demo import ablate, offline_suite
from neobert.finetune.data import Examples
from neobert.model.flops import non_embedding_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(prepared_corpus):
    return prepared_corpus(sample_texts(300, long_every=4, long_words=120), max_length=128, heldout_fraction=0.1)


@pytest.fixture
def small_probe(monkeypatch):
    """Two word tasks in place of the offline suite's archives (the probe itself runs for real)."""
    words = ["table", "river", "window", "garden", "paper"]

    def task(n, offset):
        texts = [f"{words[(i + offset) % 5]} {'good' if i % 2 else 'bad'}" for i in range(n)]
        return Examples(texts, ["pos" if i % 2 else "neg" for i in range(n)], source="words")

    data = {"a": (task(30, 0), task(20, 1)), "b": (task(30, 2), task(20, 3))}
    monkeypatch.setattr(offline_suite, "task_examples", lambda t, budget: data[t.name])
    monkeypatch.setattr(offline_suite, "TASKS", [offline_suite.SuiteTask(name, "x", None) for name in data])


def settings(corpus, out, **kw):
    return ablate.LadderSettings(corpus=str(corpus), out=str(out), **kw)


RUNNABLE = [row.name for row in ablate.ROWS if not ablate.unknown_keys(row)]


def test_rows_are_the_papers_steps_under_one_held_out_rule(corpus, tmp_path):
    configs = {name: ablate.row_config(row, settings(corpus, tmp_path), seed=0) for name, row in _rows(RUNNABLE)}
    m0, m1, m4, m5 = configs["m0"], configs["m1"], configs["m4"], configs["m5"]
    assert (m0.model.neobert_config().rope, m0.model.neobert_config().rms_norm) == (False, False)
    assert m0.model.neobert_config().hidden_act == "gelu" and m1.model.neobert_config().hidden_act == "swiglu"
    assert (m0.data.mlm_probability, m0.data.mask_mode) == (0.15, "bert")
    assert (m0.train.schedule, m0.train.weight_decay) == ("linear", 0.0) == (m1.train.schedule, m1.train.weight_decay)
    assert (m4.train.schedule, m4.train.weight_decay, m4.data.mask_mode) == ("cosine", 0.01, "bert")
    assert (m5.data.mlm_probability, m5.data.mask_mode) == (0.2, "all")
    # every row packs without cross-document attention but the naive-packing one
    assert {name: c.data.sequence for name, c in configs.items() if c.data.sequence != "pack"} == {
        "m6_naive": "pack_naive"
    }
    wide, deep = (configs[n].model.neobert_config() for n in ("m5", "m8_deep"))
    assert (wide.num_hidden_layers, wide.hidden_size, deep.num_hidden_layers, deep.hidden_size) == (4, 128, 7, 96)
    assert non_embedding_parameters(deep) == pytest.approx(non_embedding_parameters(wide), rel=0.01)
    # the same token slots per run and the same held-out sequences and masked positions for every row
    rule = {
        (
            c.data.eval.max_length,
            c.data.eval.sequence,
            c.data.eval.mlm_probability,
            c.data.eval.mask_mode,
            c.data.eval.batch_size,
            c.data.eval.seed,
            c.data.eval_batches,
            c.budget.total_steps(c.tokens_per_step) * c.tokens_per_step,
            c.system.precision,
        )
        for c in configs.values()
    }
    assert rule == {(128, "pack", 0.2, "all", 32, 0, 20, 1000 * 32 * 128, "fp32")}


def _rows(names):
    return [(row.name, row) for row in ablate.select_rows(list(names))]


def _plain(row, corpus, tmp_path):
    resolved = ablate.row_config(row, settings(corpus, tmp_path), seed=0).resolved()
    resolved["system"].pop("output_dir")
    return resolved


@pytest.mark.parametrize(
    ("name", "changed"),
    [
        ("m6_naive", {("data", "sequence"): "pack_naive"}),
        ("wsd", {("train", "schedule"): "wsd"}),
        ("mask30", {("data", "mlm_probability"): 0.3}),
    ],
)
def test_each_recipe_row_differs_from_its_base_in_its_own_change_only(corpus, tmp_path, name, changed):
    (_, row), (_, base) = _rows([name])[0], _rows(["m5"])[0]
    assert row.compare_to == "m5"
    mine, theirs = _plain(row, corpus, tmp_path), _plain(base, corpus, tmp_path)
    for (section, key), value in changed.items():
        assert mine[section].pop(key) == value and theirs[section].pop(key) != value
    assert mine == theirs


def test_the_batch_warmup_row_starts_at_a_quarter_and_trains_on_the_base_rows_tokens(corpus, tmp_path):
    row = dict(_rows(["batch_warmup"]))["batch_warmup"]
    assert row.needs == ("data.batch_warmup_tokens", "data.batch_warmup_start") and row.compare_to == "m5"
    base = ablate.row_config(dict(_rows(["m5"]))["m5"], settings(corpus, tmp_path), seed=0)
    # 12.5% of 1,000 steps of 32 x 128 token slots: 125 full batches' worth; the run set by tokens, not steps
    assert ablate.batch_warmup_overrides(base, row.batch_warmup_share) == [
        "data.batch_warmup_start=8",
        "data.batch_warmup_tokens=512000",
        "budget.steps=null",
        "budget.tokens=4096000",
    ]
    if ablate.unknown_keys(row):  # before the batch-size warm-up lands, the ladder names what it misses
        with pytest.raises(ValueError, match="row batch_warmup needs data.batch_warmup_tokens"):
            ablate.run_ladder([row], settings(corpus, tmp_path / "ladder", quick=True, seeds=1, probe=False))
        assert not (tmp_path / "ladder").exists()
    else:
        config = ablate.row_config(row, settings(corpus, tmp_path), seed=0)
        assert (config.data.batch_warmup_start, config.data.batch_warmup_tokens) == (8, 512000)
        assert (config.budget.steps, config.budget.tokens) == (None, 1000 * 32 * 128)


def test_a_row_with_keys_this_build_lacks_is_named_before_anything_trains(corpus, tmp_path, capsys, monkeypatch):
    future = ablate.Row("future", "m5", "a key from a later build", "m5", "", ("data.sequence=pack",), ("data.nope",))
    monkeypatch.setattr(ablate, "ROWS", ablate.ROWS + (future,))
    monkeypatch.setattr(ablate, "ALL_ROW_NAMES", ablate.ALL_ROW_NAMES + ("future",))
    out = tmp_path / "ladder"
    assert main(["ablate", "--rows", "m0,future", "--quick", "--corpus", str(corpus), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ablation row future needs data.nope, which this build of neobert does not know yet" in err
    assert "leave the row out with --rows m0" in err and not out.exists()


def test_compare_reports_the_difference_its_seed_spread_and_whether_the_seeds_separate():
    above = ablate.compare([0.30, 0.32, 0.31], [0.20, 0.22, 0.21])
    assert above["delta"] == pytest.approx(0.10, abs=1e-12) and above["separate"] == "above"
    assert above["spread"] == pytest.approx(math.hypot(0.01, 0.01), abs=1e-12)
    assert ablate.compare([0.20, 0.22], [0.30, 0.32])["separate"] == "below"
    overlapping = ablate.compare([0.20, 0.25, 0.30], [0.24, 0.26, 0.28])
    assert overlapping["separate"] == "no" and overlapping["delta"] == pytest.approx(-0.01, abs=1e-12)


def test_quick_ladder_runs_every_row_and_summarises_its_seeds(corpus, tmp_path, small_probe, capsys):
    out = tmp_path / "ladder"
    command = ["ablate", "--quick", "--seeds", "2", "--rows", ",".join(RUNNABLE), "--corpus", str(corpus)]
    assert main([*command, "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    runs = report["runs"]
    assert sorted((r["row"], r["seed"]) for r in runs) == sorted((n, s) for n in RUNNABLE for s in (0, 1))
    assert all(r["status"] == "completed" for r in runs)
    # 12 steps a run; the batch-size warm-up row trains on the same tokens in more, smaller steps at first
    # (2, 4, 6 sequences over its first 2,048 token slots, then 8: 16 steps)
    assert all(r["steps"] == (16 if r["row"] == "batch_warmup" else 12) for r in runs)
    # the commit the ladder ran on, with each run (a resumed ladder may span commits)
    assert report["commits"] == sorted({r["commit"] for r in runs}) and len(report["commits"]) == 1
    # each run's wall time is recorded, and the ladder's total is their sum
    assert all(r["seconds"] > 0 for r in runs)
    assert report["seconds"] == pytest.approx(sum(r["seconds"] for r in runs), abs=0.2)
    for name, summary in report["summary"].items():
        losses = [r["eval_loss"] for r in runs if r["row"] == name]
        assert summary["eval_loss"] == pytest.approx([statistics.fmean(losses), statistics.stdev(losses)], abs=1e-12)
        assert math.isfinite(summary["probe_mean"][0]) and 0 <= summary["probe_mean"][0] <= 1
    m1, m0 = report["summary"]["m1"], report["summary"]["m0"]
    assert m1["delta_accuracy"] == pytest.approx(m1["eval_accuracy"][0] - m0["eval_accuracy"][0], abs=1e-12)
    by_seed = {name: [r["eval_accuracy"] for r in runs if r["row"] == name] for name in ("m0", "m1")}
    assert m1["compare"]["accuracy"] == ablate.compare(by_seed["m1"], by_seed["m0"]) and m1["compared_to"] == "m0"
    assert {row for row, s in report["summary"].items() if "compare" in s} == set(RUNNABLE) - {"m0"}
    # seeds differ: the same row with another seed trains on another order and initialisation
    assert len({r["eval_loss"] for r in runs if r["row"] == "m5"}) == 2
    table = (out / "ablations.md").read_text()
    assert len(table.strip().splitlines()) == 2 + len(RUNNABLE) and "+2.4%" in table
    expected = f"{m1['delta_accuracy']:+.4f} ± {m1['compare']['accuracy']['spread']:.4f}"
    assert expected in table.splitlines()[3]
    assert (out / "ablations.png").stat().st_size > 10_000
    # an interrupted or repeated ladder resumes: nothing is trained again
    before = (out / "results.json").read_text()
    assert main([*command, "--out", str(out)]) == 0
    assert json.loads(before)["runs"] == json.loads((out / "results.json").read_text())["runs"]
    assert "ablate: m0 seed 0" not in capsys.readouterr().out.split("| row |")[-1]


def test_a_diverging_row_is_reported_and_the_others_go_on(corpus, tmp_path, monkeypatch):
    original = ablate.row_config

    def explosive(row, settings, seed):
        config = original(row, settings, seed)
        if row.name == "m1":
            config.train.lr = 1e6
            config.train.clip_grad_norm = 0.0
            config.train.log_every = 1  # a good first step is logged before the blow-up
        return config

    monkeypatch.setattr(ablate, "row_config", explosive)
    rows = ablate.select_rows(["m0", "m1", "m4"])
    report = ablate.run_ladder(rows, settings(corpus, tmp_path / "nan", quick=True, seeds=1, probe=False))
    status = {r["row"]: r for r in report["runs"]}
    assert status["m1"]["status"] == "diverged" and math.isfinite(status["m1"]["last_good_loss"])
    assert status["m0"]["status"] == status["m4"]["status"] == "completed"
    assert report["summary"]["m1"]["diverged"] == 1
    assert "m1 (1 diverged)" in (tmp_path / "nan" / "ablations.md").read_text()


def test_bad_rows_and_budgets_are_refused_before_training(corpus, tmp_path, capsys):
    assert main(["ablate", "--rows", "m0,m99", "--corpus", str(corpus), "--out", str(tmp_path / "a")]) == 2
    assert "unknown ablation row(s) m99; the rows are m0, m1" in capsys.readouterr().err
    assert main(["ablate", "--quick", "--steps", "1", "--corpus", str(corpus), "--out", str(tmp_path / "b")]) == 2
    assert "warmup" in capsys.readouterr().err
    assert not (tmp_path / "b" / "runs").exists()


def test_a_run_left_part_way_resumes_and_ends_as_an_uninterrupted_one(corpus, tmp_path):
    from neobert.train.data import make_eval_batches, make_loader
    from neobert.train.pretrain import pretrain

    row = ablate.select_rows(["m1"])
    straight = ablate.run_ladder(row, settings(corpus, tmp_path / "a", seeds=1, quick=True, probe=False))
    left = settings(corpus, tmp_path / "b", seeds=1, quick=True, probe=False)
    partial = pretrain(ablate.row_config(row[0], left, 0), make_loader, make_eval_batches, stop_at_step=5)
    assert partial.status == "paused" and partial.step == 5
    resumed = ablate.run_ladder(row, left)
    first, second = straight["runs"][0], resumed["runs"][0]
    assert second["status"] == "completed" and second["steps"] == 12
    assert second["eval_loss"] == first["eval_loss"] and second["eval_accuracy"] == first["eval_accuracy"]


def test_an_interrupted_run_stops_the_ladder_and_is_not_recorded(corpus, tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    import neobert.train.pretrain as pretrain_module

    monkeypatch.setattr(pretrain_module, "pretrain", lambda *a, **k: SimpleNamespace(status="interrupted", step=3))
    out = tmp_path / "ladder"
    command = ["ablate", "--quick", "--seeds", "1", "--no-probe", "--rows", ",".join(RUNNABLE), "--corpus", str(corpus)]
    code = main([*command, "--out", str(out)])
    assert code == 130
    assert "m0 seed 0 was interrupted at step 3; the same command resumes it" in capsys.readouterr().err
    assert not (out / "results.json").exists()  # nothing recorded: the rerun trains (resumes) it
