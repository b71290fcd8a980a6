"""`tie_word_embeddings=True`: the MLM decoder shares the token embedding (the release keeps them apart)."""

import pytest
import torch

from neobert import NeoBERTConfig, NeoBERTForMaskedLM
from neobert.train.checkpoint import read_checkpoint
from neobert.train.pretrain import pretrain
from test_train_pretrain import make_loader, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def small(tied: bool) -> NeoBERTConfig:
    return NeoBERTConfig.from_preset(
        "tiny",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=500,
        tie_word_embeddings=tied,
    )


def test_tied_decoder_shares_the_embedding_and_survives_a_round_trip(tmp_path):
    torch.manual_seed(0)
    model = NeoBERTForMaskedLM(small(True)).eval()
    assert model.decoder.weight is model.model.encoder.weight
    untied = NeoBERTForMaskedLM(small(False))
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters()) == 500 * 32
    model.save_pretrained(tmp_path)
    loaded = NeoBERTForMaskedLM.from_pretrained(tmp_path).eval()
    assert loaded.config.tie_word_embeddings and loaded.decoder.weight is loaded.model.encoder.weight
    ids = torch.randint(5, 500, (2, 9))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=1e-6)
    # the logits really use the embedding matrix
    hidden = model.model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(
        model(input_ids=ids).logits, hidden @ model.model.encoder.weight.T + model.decoder.bias, rtol=0, atol=1e-5
    )


def test_pretraining_a_tied_model_checkpoints_and_resumes_bit_for_bit(tmp_path):
    tie = "model.overrides={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, "
    tie += "max_length: 64, vocab_size: 2000, tie_word_embeddings: true}"
    straight = pretrain(tiny_config(tmp_path / "a", tie), make_loader)
    pretrain(tiny_config(tmp_path / "b", tie), make_loader, stop_at_step=3)
    resumed = pretrain(tiny_config(tmp_path / "b", tie), make_loader, resume=True)
    first, second = read_checkpoint(straight.checkpoint).model_state, read_checkpoint(resumed.checkpoint).model_state
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    model = NeoBERTForMaskedLM.from_pretrained(resumed.checkpoint)
    assert model.decoder.weight is model.model.encoder.weight
    assert torch.equal(model.model.encoder.weight, second["model.encoder.weight"])
