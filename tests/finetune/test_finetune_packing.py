"""Fine-tuning batches packed into one row: the same losses and predictions as padded batches, and used
only for NeoBERT models."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from helpers.finetune import tiny_model_folder
from neobert.finetune import trainer as trainer_module
from neobert.finetune.data import Encoded, LabelSpace, collate, real_tokens
from neobert.finetune.model import load_task_model
from neobert.finetune.trainer import FinetuneSettings, packs, predict

LENGTHS = [5, 9, 3, 12, 7, 4]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("model"))


def encoded(problem: str) -> tuple[Encoded, LabelSpace]:
    generator = torch.Generator().manual_seed(0)
    ids = [[101, *torch.randint(1000, 5000, (n - 2,), generator=generator).tolist(), 102] for n in LENGTHS]
    if problem == "token":
        space = LabelSpace("token", ["B-PER", "I-PER", "O"])
        targets = [[-100] + [i % 3 for i in range(n - 2)] + [-100] for n in LENGTHS]
    elif problem == "multi":
        space = LabelSpace("multi", ["a", "b", "c"])
        targets = [[i % 2, 1, (i + 1) % 2] for i in range(len(LENGTHS))]
    elif problem == "regression":
        space = LabelSpace("regression", [])
        targets = [0.5 * i for i in range(len(LENGTHS))]
    else:
        space = LabelSpace("single", ["x", "y", "z"])
        targets = [i % 3 for i in range(len(LENGTHS))]
    return Encoded(ids, targets), space


@pytest.mark.parametrize("problem", ["single", "regression", "multi", "token"])
def test_packed_batches_give_the_padded_losses_and_predictions(model_dir, problem):
    data, space = encoded(problem)
    model = load_task_model(model_dir, space, 0.0).eval()
    indices = list(range(len(LENGTHS)))
    padded, packed = (collate(data, indices, 0, problem, packed=flag) for flag in (False, True))
    assert "attention_mask" not in packed and packed["input_ids"].shape == (1, sum(LENGTHS))
    assert real_tokens(packed) == real_tokens(padded) == sum(LENGTHS)
    with torch.no_grad():
        padded_loss, packed_loss = model(**padded).loss, model(**packed).loss
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-5, rtol=1e-5)
    by_padding = predict(model, data, space, batch_size=4, pad_id=0, packed=False)
    by_packing = predict(model, data, space, batch_size=4, pad_id=0, packed=True)
    if problem == "regression":
        assert by_packing == pytest.approx(by_padding, abs=1e-5)
    else:
        assert by_packing == by_padding
    if problem == "token":
        assert [len(p) for p in by_packing] == [n - 2 for n in LENGTHS]


def test_only_neobert_models_are_fed_packed_batches(model_dir, monkeypatch, tmp_path):
    settings = FinetuneSettings(progress=False)
    neobert_model = load_task_model(model_dir, LabelSpace("single", ["x", "y"]), 0.0)
    bert = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2))
    assert packs(neobert_model, settings) and not packs(bert, settings)
    assert not packs(neobert_model, FinetuneSettings(packed=False))

    seen = []
    real_collate = trainer_module.collate

    def recording_collate(*args, **kwargs):
        batch = real_collate(*args, **kwargs)
        seen.append("cu_seqlens" in batch)
        return batch

    monkeypatch.setattr(trainer_module, "collate", recording_collate)
    data, space = encoded("single")
    task = trainer_module.TaskData(train=data, validation={"validation": data}, space=space, pad_id=0)
    config = FinetuneSettings(progress=False, max_steps=2, eval_every=2, batch_size=3, lr=1e-3)
    result = trainer_module.finetune(lambda: load_task_model(model_dir, space, 0.0), task, config, tmp_path / "run")
    assert seen == [True, True] and result.steps == 2
