"""Phases: a decay branch from a saved checkpoint equals, bit for bit on CPU, a run configured to decay at that
step; the source is only read; the branch point is recorded; stage 2 carries the weights only; bad phases get
named errors before training."""

import json
import shutil

import pytest
import torch

from neobert.cli import main
from neobert.files import sha256_file
from neobert.train.checkpoint import CheckpointError, read_checkpoint
from neobert.train.metrics import read_jsonl
from neobert.train.pretrain import pretrain
from test_train_pretrain import (
    fake_clock,  # noqa: F401 - a fixture
    losses,
    make_loader,
    tiny_config,
    weights,
)
from test_train_schedule import SlowingLoader

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, BRANCH = 8, 4
WSD = ["train.schedule=wsd", f"budget.steps={STEPS}", "system.precision=fp32"]


def learning_rates(out) -> dict[int, float]:
    return {r["step"]: r["train/lr"] for r in read_jsonl(out / "metrics.jsonl") if "train/lr" in r}


def snapshot(folder) -> dict[str, str]:
    """Every file under `folder` with its SHA-256, and where each link points."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[key] = "-> " + str(path.readlink())
        elif path.is_file():
            found[key] = sha256_file(path)
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A WSD source run (its own decay late, at step 6) with checkpoints every 2 steps, and a run configured
    from the start to decay at step 4."""
    root = tmp_path_factory.mktemp("phases")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the `one_thread` fixture does for each test
    try:
        source = pretrain(
            tiny_config(root / "source", *WSD, "train.checkpoint_every=2", "train.keep_last=10"), make_loader
        )
        configured = pretrain(tiny_config(root / "configured", *WSD, f"train.decay_start_step={BRANCH}"), make_loader)
    finally:
        torch.set_num_threads(threads)
    assert source.step == configured.step == STEPS
    return root, source, configured


def branch_config(out, source_checkpoint, *extra):
    return tiny_config(out, *WSD, f"phase.from_checkpoint={source_checkpoint}", "phase.name=decay", *extra)


def test_a_decay_branch_equals_a_run_configured_to_decay_there(runs, tmp_path):
    root, source, configured = runs
    checkpoint = root / "source" / "checkpoints" / f"step-{BRANCH:08d}"
    before = snapshot(root / "source")

    branch = pretrain(branch_config(tmp_path / "branch", checkpoint), make_loader)

    assert branch.status == "completed" and branch.step == STEPS
    for name, tensor in weights(configured).items():
        assert torch.equal(weights(branch)[name], tensor), name
    after_branch = range(BRANCH + 1, STEPS + 1)
    assert losses(tmp_path / "branch") == {s: losses(root / "configured")[s] for s in after_branch}
    rates = learning_rates(tmp_path / "branch")
    assert rates == {s: learning_rates(root / "configured")[s] for s in after_branch}
    # The branch decayed from its branch point, where the source still held the peak (this test can fail),
    # and its last update used the floor.
    assert rates[BRANCH + 1] < 3e-3 == learning_rates(root / "source")[BRANCH + 1]
    assert branch.final_lr == pytest.approx(3e-3 * 0.1, rel=1e-12)

    assert snapshot(root / "source") == before  # the source run is only read
    record = {
        "name": "decay",
        "carry": "state",
        "source": str(checkpoint.resolve()),
        "step": BRANCH,
        "manifest_sha256": sha256_file(checkpoint / "manifest.json"),
    }
    assert json.loads((tmp_path / "branch" / "phase.json").read_text()) == {"phases": [record]}
    assert branch.phases == [record]
    assert read_checkpoint(branch.checkpoint).trainer_state["phases"] == [record]
    assert not (tmp_path / "branch" / "checkpoints" / f"step-{BRANCH:08d}").exists()


def test_an_interrupted_branch_resumes_from_its_own_checkpoint(runs, tmp_path):
    root, _, configured = runs
    copy = tmp_path / "source-copy"
    shutil.copytree(root / "source" / "checkpoints" / f"step-{BRANCH:08d}", copy)
    config = branch_config(tmp_path / "branch", copy)
    paused = pretrain(config, make_loader, stop_at_step=BRANCH + 2)
    assert paused.status == "paused" and paused.step == BRANCH + 2
    shutil.rmtree(copy)  # the source run's retention may delete it: the branch no longer needs it
    torch.manual_seed(999)
    resumed = pretrain(config, make_loader, resume=True)
    assert resumed.step == STEPS
    for name, tensor in weights(configured).items():
        assert torch.equal(weights(resumed)[name], tensor), name
    assert resumed.phases == paused.phases and resumed.phases[0]["step"] == BRANCH


def test_a_stage_phase_carries_the_weights_only(runs, tmp_path):
    root, source, _ = runs
    out = tmp_path / "stage2"
    config = tiny_config(
        out,
        f"phase.from_checkpoint={root / 'source' / 'checkpoints'}",  # its latest good checkpoint
        "phase.carry=weights",
        "phase.name=stage2",
        "data.max_length=32",
        "train.schedule=constant",
        "train.lr=3e-4",
        "train.warmup_steps=0",
        "budget.steps=3",
        "system.precision=fp32",
    )
    start = pretrain(config, make_loader, stop_at_step=0)
    saved = read_checkpoint(start.checkpoint)
    assert saved.step == 0 and saved.trainer_state["scheduler"]["last_epoch"] == 0
    moments = [m for state in saved.trainer_state["optimizer"]["state"].values() for m in state.values()]
    assert moments and all(not m.any() for m in moments if m.dim() > 0)  # a fresh optimiser: no moments
    for name, tensor in weights(source).items():
        assert torch.equal(saved.model_state[name], tensor), name
    assert start.phases[0]["step"] == STEPS and start.phases[0]["carry"] == "weights"
    finished = pretrain(config, make_loader, resume=True)
    assert finished.step == 3 and set(learning_rates(out).values()) == {3e-4}
    assert finished.last_metrics["train/tokens"] == 3 * 4 * 32  # the phase's own, longer rows from step 0


def test_a_branch_past_the_end_or_inside_its_source_run_is_refused(runs, tmp_path):
    root, _, _ = runs
    last = root / "source" / "checkpoints" / f"step-{STEPS:08d}"
    with pytest.raises(ValueError, match=f"at step {STEPS}, at or past the end of this run \\({STEPS} steps"):
        pretrain(branch_config(tmp_path / "late", last), make_loader)
    with pytest.raises(ValueError, match="at step 4, at or past the end of this run \\(4 steps"):
        pretrain(branch_config(tmp_path / "short", last.parent / "step-00000004", "budget.steps=4"), make_loader)
    with pytest.raises(ValueError, match="comes before the branch point"):
        early = branch_config(tmp_path / "early", last.parent / "step-00000004", "train.decay_start_step=2")
        pretrain(early, make_loader)
    before = snapshot(root / "source")
    for resume in (False, True):  # resuming there would carry on the source run itself
        with pytest.raises(ValueError, match="lies in system.output_dir's own checkpoints: a phase writes a new"):
            pretrain(branch_config(root / "source", last.parent / "step-00000004"), make_loader, resume=resume)
    assert snapshot(root / "source") == before
    assert not any((tmp_path / name).exists() for name in ("late", "short", "early"))


def test_a_branch_from_a_damaged_checkpoint_or_other_weights_is_refused(runs, tmp_path):
    root, _, _ = runs
    damaged = tmp_path / "damaged"
    shutil.copytree(root / "source" / "checkpoints" / f"step-{BRANCH:08d}", damaged)
    weights_file = damaged / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-10] ^= 0xFF
    weights_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors does not match its checksum"):
        pretrain(branch_config(tmp_path / "branch", damaged), make_loader)
    assert not (tmp_path / "branch").exists() and weights_file.read_bytes() == bytes(data)

    wider = tiny_config(
        tmp_path / "wide",
        f"phase.from_checkpoint={root / 'source' / 'checkpoints'}",
        "phase.carry=weights",
        "model.overrides.hidden_size=64",
    )
    with pytest.raises(CheckpointError, match="do not fit this run's model"):
        pretrain(wider, make_loader)
    assert not (tmp_path / "wide").exists()


def test_a_decay_branch_on_a_wall_clock_decays_from_its_branch_point_to_the_end(tmp_path, fake_clock):  # noqa: F811
    """The decay runs from the progress at the branch point to the end of the whole run's budget; a branch
    from a finished run has nothing left."""
    hours = ["budget.steps=null", "budget.hours=0.0005", "budget.calibration_steps=3", "train.schedule=wsd"]
    hours.append("system.precision=fp32")

    def slow_loader(config, micro_batch, context):
        return SlowingLoader(config, micro_batch, clock=fake_clock, after=0, delay=0.02)

    source = pretrain(tiny_config(tmp_path / "source", *hours), slow_loader, stop_at_step=10)
    assert set(learning_rates(tmp_path / "source").values()) - {3e-3 * k / 2 for k in (1, 2)} == set()
    config = tiny_config(tmp_path / "branch", *hours, f"phase.from_checkpoint={source.checkpoint}")
    branch = pretrain(config, slow_loader)
    assert branch.status == "completed" and branch.schedule_fraction == 1.0
    rates = [rate for _, rate in sorted(learning_rates(tmp_path / "branch").items())]
    # The first update of the branch uses the peak, then the rate follows the clock down (it may hold for a
    # step while the clock re-estimates, never rise) and ends near the floor.
    assert rates[0] == 3e-3 and all(b <= a for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] < 0.5 * 3e-3 and branch.final_lr == rates[-1]
    assert branch.phases[0]["step"] == 10

    done = read_checkpoint(branch.checkpoint).folder
    with pytest.raises(ValueError, match="at or past the end of budget.hours=0.0005"):
        pretrain(tiny_config(tmp_path / "late", *hours, f"phase.from_checkpoint={done}"), slow_loader)
    assert not (tmp_path / "late").exists()


def test_the_command_line_names_bad_phases_with_their_exit_codes(runs, tmp_path, capsys):
    root, _, _ = runs
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(tiny_config(tmp_path / "cli", *WSD).to_yaml())
    damaged = tmp_path / "damaged"
    shutil.copytree(root / "source" / "checkpoints" / f"step-{BRANCH:08d}", damaged)
    (damaged / "trainer.pt").write_bytes(b"not the saved state")
    assert main(["pretrain", str(config_file), f"phase.from_checkpoint={damaged}"]) == 3
    assert "phase.from_checkpoint:" in capsys.readouterr().err
    late = root / "source" / "checkpoints" / f"step-{STEPS:08d}"
    assert main(["pretrain", str(config_file), f"phase.from_checkpoint={late}"]) == 2
    assert "at or past the end of this run" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_a_decay_branch_on_the_command_line_with_a_prepared_corpus(tmp_path, capsys):
    """The real loader: the branch continues the source's data order from the checkpoint's position."""
    from helpers.data import prepare_files, sample_texts, write_jsonl
    from test_commands import TINY

    source_file = write_jsonl(tmp_path / "docs.jsonl", sample_texts(200, long_every=0))
    corpus = tmp_path / "prepared"
    prepare_files([source_file], corpus, max_length=32, heldout_fraction=0.1)
    common = ["pretrain", "demo", *TINY, f"data.path={corpus}", *WSD[:1], "budget.steps=6", "system.device=cpu"]
    common += ["system.precision=fp32", "data.eval_batches=1"]
    out = {name: tmp_path / name for name in ("configured", "source", "branch")}
    assert main([*common, f"system.output_dir={out['configured']}", "train.decay_start_step=2"]) == 0
    assert main([*common, f"system.output_dir={out['source']}", "train.keep_last=5"]) == 0
    source_checkpoint = out["source"] / "checkpoints" / "step-00000002"
    capsys.readouterr()
    assert main([*common, f"system.output_dir={out['branch']}", f"phase.from_checkpoint={source_checkpoint}"]) == 0
    manifest_sha256 = sha256_file(source_checkpoint / "manifest.json")
    assert f"  phase from {source_checkpoint.resolve()} (step 2, manifest sha256 {manifest_sha256})" in (
        capsys.readouterr().out
    )
    configured = read_checkpoint(out["configured"] / "checkpoints" / "latest")
    branch = read_checkpoint(out["branch"] / "checkpoints" / "latest")
    assert branch.step == configured.step == 6
    for name, tensor in configured.model_state.items():
        assert torch.equal(branch.model_state[name], tensor), name
    assert losses(out["branch"]) == {s: losses(out["configured"])[s] for s in range(3, 7)}
    assert learning_rates(out["branch"])[3] < learning_rates(out["source"])[3] == 3e-3  # the decay is the branch's
