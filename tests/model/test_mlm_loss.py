"""The fused, chunked decoder + cross-entropy of training against the dense computation it replaces."""

import pytest
import torch
import torch.nn.functional as F

from helpers.model import random_ids, small_config
from neobert import NeoBERTForMaskedLM
from neobert.model.mlm_loss import fused_decoder_cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")


def operands(rows: int, vocab: int = 500, width: int = 24, bias: bool = True):
    hidden = torch.randn(rows, width, requires_grad=True)
    weight = (0.3 * torch.randn(vocab, width)).requires_grad_()
    bias_ = (0.1 * torch.randn(vocab)).requires_grad_() if bias else None
    labels = torch.randint(0, vocab, (rows,))
    return hidden, weight, bias_, labels


def gradients(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("chunk_rows", [1, 7, 16, 64])  # 16 divides the 48 rows, 7 does not, 64 exceeds them
@pytest.mark.parametrize("bias", [True, False])
def test_loss_gradients_and_predictions_equal_the_dense_computation(chunk_rows, bias):
    hidden, weight, bias_, labels = operands(48, bias=bias)
    dense_logits = F.linear(hidden, weight, bias_)
    dense = F.cross_entropy(dense_logits, labels)
    loss, predictions = fused_decoder_cross_entropy(hidden, weight, bias_, labels, chunk_rows)
    torch.testing.assert_close(loss, dense, rtol=1e-6, atol=1e-6)
    assert torch.equal(predictions, dense_logits.argmax(dim=-1))
    for got, want in zip(
        gradients(3.0 * loss, (hidden, weight, bias_)), gradients(3.0 * dense, (hidden, weight, bias_)), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_no_scored_row_gives_a_zero_loss_and_zero_gradients():
    hidden, weight, bias, labels = operands(0)
    loss, predictions = fused_decoder_cross_entropy(hidden, weight, bias, labels, 8)
    assert loss.item() == 0.0 and predictions.shape == (0,)
    grad_hidden, grad_weight, grad_bias = gradients(loss, (hidden, weight, bias))
    assert grad_hidden.shape == (0, 24) and not grad_weight.any() and not grad_bias.any()


def test_without_gradients_nothing_is_kept_for_a_backward():
    hidden, weight, bias, labels = operands(10)
    with torch.no_grad():
        loss, _ = fused_decoder_cross_entropy(hidden, weight, bias, labels, 4)
    torch.testing.assert_close(loss, F.cross_entropy(F.linear(hidden, weight, bias), labels), rtol=1e-6, atol=1e-6)
    assert loss.grad_fn is None


def test_bad_shapes_and_chunk_sizes_are_named():
    hidden, weight, bias, labels = operands(10)
    with pytest.raises(ValueError, match="labels"):
        fused_decoder_cross_entropy(hidden, weight, bias, labels[:5])
    with pytest.raises(ValueError, match="chunk_rows"):
        fused_decoder_cross_entropy(hidden, weight, bias, labels, 0)


def masked_batch(rows=3, length=20, rate=0.3):
    ids = random_ids(rows, length)
    selected = torch.rand(ids.shape) < rate
    return ids, torch.where(selected, ids, torch.full_like(ids, -100))


@pytest.mark.parametrize("tied", [False, True])
def test_the_model_trains_through_the_fused_loss_as_through_the_logits(tied):
    torch.manual_seed(0)
    model = NeoBERTForMaskedLM(small_config(tie_word_embeddings=tied)).train()
    ids, labels = masked_batch()
    model.loss_chunk_rows = 0  # the logits of every scored row, as evaluation builds them
    dense = model(input_ids=ids, labels=labels)
    dense.loss.backward()
    dense_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.loss_chunk_rows = 5
    fused = model(input_ids=ids, labels=labels)
    fused.loss.backward()
    assert fused.logits is None and dense.predictions is None
    torch.testing.assert_close(fused.loss, dense.loss, rtol=1e-6, atol=1e-6)
    assert torch.equal(fused.predictions, dense.logits.argmax(dim=-1))
    assert (model.decoder.weight is model.model.encoder.weight) == tied
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, dense_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_bf16_autocast_runs_the_products_in_bf16_and_stays_near_the_dense_path():
    torch.manual_seed(0)
    model = NeoBERTForMaskedLM(small_config()).train()
    ids, labels = masked_batch()
    model.loss_chunk_rows = 4
    fp32_loss = model(input_ids=ids, labels=labels).loss.detach()
    model.zero_grad(set_to_none=True)
    outputs = {}
    for chunk in (0, 4):
        model.loss_chunk_rows = chunk
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(input_ids=ids, labels=labels)
        output.loss.backward()
        outputs[chunk] = (output.loss.detach(), model.decoder.weight.grad.clone(), model.decoder.bias.grad.clone())
        model.zero_grad(set_to_none=True)
    (dense_loss, dense_weight, dense_bias), (loss, weight, bias) = outputs[0], outputs[4]
    assert loss.dtype == torch.float32 and weight.dtype == torch.float32
    # Not silently in fp32, where the two paths agree to about 1e-6.
    assert (loss - fp32_loss).abs().item() > 1e-5
    # Both products ran in bf16 (8 bits of mantissa): they agree to bf16's precision, not fp32's.
    torch.testing.assert_close(loss, dense_loss, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(weight, dense_weight, rtol=0, atol=2e-2 * dense_weight.abs().max().item())
    torch.testing.assert_close(bias, dense_bias, rtol=0, atol=2e-2 * dense_bias.abs().max().item())


def test_pretraining_through_the_fused_loss_ends_where_the_logits_path_does(tmp_path, monkeypatch):
    from neobert.train.metrics import read_jsonl
    from neobert.train.pretrain import pretrain
    from test_train_pretrain import make_loader, tiny_config, weights

    # AdamW's step is g / (sqrt(v) + eps): with the default eps a gradient of 1e-12 moves a weight by the full
    # learning rate, so an entry whose gradient is zero up to rounding (a rare token's embedding) would land
    # anywhere within lr of itself. A larger eps keeps such entries still and the comparison about the gradients.
    overrides = ("train.grad_accumulation=2", "train.eps=1e-6")
    fused = pretrain(tiny_config(tmp_path / "fused", *overrides), make_loader)
    monkeypatch.setattr(NeoBERTForMaskedLM, "loss_chunk_rows", 0)
    dense = pretrain(tiny_config(tmp_path / "dense", *overrides), make_loader)
    assert fused.step == dense.step == 6
    for name, tensor in weights(dense).items():
        torch.testing.assert_close(weights(fused)[name], tensor, rtol=1e-5, atol=1e-5, msg=name)
    records = {
        run: [r for r in read_jsonl(tmp_path / run / "metrics.jsonl") if "train/loss" in r]
        for run in ("fused", "dense")
    }
    assert len(records["fused"]) == len(records["dense"]) == 6
    for got, want in zip(records["fused"], records["dense"], strict=True):
        assert got["train/loss"] == pytest.approx(want["train/loss"], rel=1e-5)
        assert got["train/accuracy"] == want["train/accuracy"]


def test_a_decoder_that_is_not_a_plain_linear_keeps_its_own_forward():
    class Scaled(torch.nn.Linear):  # stands for an adapter-wrapped decoder, whose output is more than x W^T + b
        def forward(self, x):
            return 2.0 * super().forward(x)

    model = NeoBERTForMaskedLM(small_config()).train()
    scaled = Scaled(model.config.hidden_size, model.config.vocab_size)
    scaled.load_state_dict(model.decoder.state_dict())
    model.decoder = scaled
    ids, labels = masked_batch()
    output = model(input_ids=ids, labels=labels)
    assert output.logits is not None and output.predictions is None
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits, labels[labels != -100]))
