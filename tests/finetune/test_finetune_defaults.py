"""`neobert finetune` with its defaults: 6% warmup then linear decay to 10%, evaluation every
min(500, steps per epoch // 10) steps, early stopping after 15 evaluations without improvement; `--no-pack`."""

import json

import pytest
from torch.optim.optimizer import register_optimizer_step_pre_hook

from helpers.finetune import tiny_model_folder, word_rows, write_table
from neobert.cli import main
from neobert.finetune import trainer as trainer_module


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("model"))


def expected_lr(step: int, peak: float, total: int) -> float:
    """The documented schedule at 0-based `step`: linear warmup over 6% of the steps, then linear decay to
    10% of the peak at 90% of the steps, then constant."""
    warmup, end = int(0.06 * total), round(0.9 * total)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (1 - 0.9 * min(1.0, (step - warmup) / (end - warmup)))


@pytest.mark.usefixtures("one_thread")
def test_default_schedule_evaluation_interval_and_patience(model_dir, tmp_path):
    # 320 rows at batch 16: 20 steps an epoch, so evaluation every 2 steps; 3 epochs: 60 steps, 3 of warmup.
    train = write_table(tmp_path / "train.csv", word_rows(320))
    valid = write_table(tmp_path / "dev.csv", word_rows(16, seed=1))
    out = tmp_path / "run"
    rates = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: rates.append(optimizer.param_groups[0]["lr"])
    )
    try:
        # A learning rate too small to change a prediction: no evaluation improves on the first one.
        command = ["finetune", "--model", str(model_dir), "--train", str(train), "--validation", str(valid)]
        assert main([*command, "--out", str(out), "--epochs", "3", "--lr", "1e-9", "--max-length", "16"]) == 0
    finally:
        hook.remove()
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["warmup_fraction"] == 0.06 and results["settings"]["patience"] == 15
    assert results["total_steps"] == 60 and results["eval_every"] == 2
    # The first evaluation is the best; 15 more without improvement stop the run at step 2 x 16.
    assert [entry["step"] for entry in results["history"]] == list(range(2, 33, 2))
    assert results["stopped_early"] and results["steps"] == 32 and results["best_step"] == 2
    assert rates == pytest.approx([expected_lr(step, 1e-9, 60) for step in range(32)], rel=1e-9)


def test_no_pack_pads_the_batches_and_trains_the_same_model(model_dir, tmp_path, monkeypatch):
    train = write_table(tmp_path / "train.csv", word_rows(48))
    valid = write_table(tmp_path / "dev.csv", word_rows(16, seed=1))
    layouts = []
    real_collate = trainer_module.collate

    def recording_collate(*args, **kwargs):
        batch = real_collate(*args, **kwargs)
        layouts.append("packed" if "cu_seqlens" in batch else "padded")
        return batch

    monkeypatch.setattr(trainer_module, "collate", recording_collate)
    command = ["finetune", "--model", str(model_dir), "--train", str(train), "--validation", str(valid)]
    command += ["--max-steps", "6", "--eval-every", "3", "--lr", "1e-3", "--no-progress"]
    predictions, losses = {}, {}
    for name, extra in (("packed", []), ("padded", ["--no-pack"])):
        layouts.clear()
        assert main([*command, "--out", str(tmp_path / name), *extra]) == 0
        assert layouts == [name] * 6  # every training batch
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert results["settings"]["packed"] is (name == "packed")
        lines = (tmp_path / name / "predictions-validation.jsonl").read_text().splitlines()
        predictions[name] = [json.loads(line)["prediction"] for line in lines]
        losses[name] = [entry["loss"] for entry in results["history"]]  # the training loss at each evaluation
    assert predictions["packed"] == predictions["padded"] and len(predictions["packed"]) == 16
    assert losses["packed"] == pytest.approx(losses["padded"], rel=1e-5)
