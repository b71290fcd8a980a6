"""Masked-LM, sequence- and token-classification heads against their formulas."""

import torch
import torch.nn.functional as F

from helpers.model import random_ids, small_config
from neobert import NeoBERTForMaskedLM, NeoBERTForSequenceClassification, NeoBERTForTokenClassification


def masked_labels(ids, positions):
    labels = torch.full_like(ids, -100)
    for row, col in positions:
        labels[row, col] = ids[row, col]
    return labels


def test_mlm_loss_is_cross_entropy_over_masked_positions_only():
    model = NeoBERTForMaskedLM(small_config()).eval()
    ids = random_ids(2, 8)
    labels = masked_labels(ids, [(0, 1), (0, 5), (1, 7)])
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    picked = out.logits[labels != -100]
    expected = F.cross_entropy(picked, labels[labels != -100])
    torch.testing.assert_close(out.loss, expected)
    assert out.logits.shape == (2, 8, model.config.vocab_size)


def test_training_runs_the_decoder_only_on_masked_positions():
    model = NeoBERTForMaskedLM(small_config())
    ids = random_ids(2, 8)
    labels = masked_labels(ids, [(0, 1), (0, 5), (1, 7)])
    calls = []
    model.decoder.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    model.train()
    fused = model(input_ids=ids, labels=labels)  # the decoder fused with the loss: no logits at all
    assert calls == [] and fused.logits is None and fused.predictions.shape == (3,)
    model.loss_chunk_rows = 0  # the logits path, which evaluation (without gradients) takes too
    sparse = model(input_ids=ids, labels=labels)
    assert calls == [(3, model.config.hidden_size)] and sparse.logits.shape == (3, model.config.vocab_size)
    torch.testing.assert_close(fused.loss, sparse.loss, atol=1e-6, rtol=1e-6)
    model.eval()
    with torch.no_grad():
        dense = model(input_ids=ids, labels=labels)
    torch.testing.assert_close(sparse.loss, dense.loss, atol=1e-6, rtol=1e-6)
    sparse.loss.backward()
    assert model.decoder.weight.grad is not None


def test_a_batch_without_masked_tokens_has_zero_loss_not_nan():
    model = NeoBERTForMaskedLM(small_config()).train()
    ids = random_ids(1, 5)
    out = model(input_ids=ids, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0


def test_sequence_classifier_is_first_token_dense_tanh_classifier():
    model = NeoBERTForSequenceClassification(small_config(num_labels=3)).eval()
    ids = random_ids(2, 6)
    with torch.no_grad():
        out = model(input_ids=ids)
        first = model.model(input_ids=ids).last_hidden_state[:, 0]
    expected = torch.tanh(first @ model.dense.weight.T + model.dense.bias) @ model.classifier.weight.T
    torch.testing.assert_close(out.logits, expected + model.classifier.bias)


def test_sequence_classification_losses_follow_the_problem_type():
    ids = random_ids(4, 5)
    single = NeoBERTForSequenceClassification(small_config(num_labels=3)).eval()
    labels = torch.tensor([0, 2, 1, 2])
    out = single(input_ids=ids, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    assert single.config.problem_type == "single_label_classification"

    regression = NeoBERTForSequenceClassification(small_config(num_labels=1)).eval()
    targets = torch.tensor([0.5, 1.0, -2.0, 3.0])
    out = regression(input_ids=ids, labels=targets)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), targets))

    multi = NeoBERTForSequenceClassification(small_config(num_labels=3)).eval()
    hot = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    out = multi(input_ids=ids, labels=hot)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, hot))


def test_packed_sequence_classification_gives_one_row_per_document():
    model = NeoBERTForSequenceClassification(small_config(num_labels=2)).eval()
    a, b = random_ids(1, 5), random_ids(1, 8)
    with torch.no_grad():
        packed = model(input_ids=torch.cat([a, b], 1), cu_seqlens=torch.tensor([0, 5, 13], dtype=torch.int32))
        separate = torch.cat([model(input_ids=a).logits, model(input_ids=b).logits])
        positions = torch.cat([torch.arange(5), torch.arange(8)])[None]
        by_positions = model(input_ids=torch.cat([a, b], 1), position_ids=positions)
        as_tuple = model(input_ids=a, return_dict=False)
    torch.testing.assert_close(packed.logits, separate, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(by_positions.logits, separate, atol=1e-5, rtol=1e-5)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], separate[:1])


def test_token_classifier_logits_and_ignored_labels():
    model = NeoBERTForTokenClassification(small_config(num_labels=5)).eval()
    ids = random_ids(2, 6)
    labels = torch.tensor([[0, 1, 2, -100, -100, -100], [4, 3, 2, 1, 0, -100]])
    out = model(input_ids=ids, labels=labels)
    assert out.logits.shape == (2, 6, 5)
    keep = labels != -100
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits[keep], labels[keep]))


def test_head_initialisation_follows_the_release():
    cfg = small_config(num_labels=2, hidden_size=256)
    model = NeoBERTForSequenceClassification(cfg)
    qkv = model.model.transformer_encoder[0].qkv.weight
    assert qkv.abs().max() <= cfg.decoder_init_range  # uniform(-0.02, 0.02)
    assert abs(qkv.std().item() - 0.02 / 3**0.5) < 1e-3
    dense = model.dense.weight  # normal(0, 0.02): tails beyond 0.02, std 0.02
    assert dense.abs().max() > cfg.classifier_init_range and abs(dense.std().item() - 0.02) < 1e-3
    assert torch.all(model.dense.bias == 0) and torch.all(model.classifier.bias == 0)
    assert torch.all(model.model.layer_norm.weight == 1)


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = random_ids(2, 9)
    labels = masked_labels(ids, [(0, 2), (1, 4), (1, 8)])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = NeoBERTForMaskedLM(small_config()).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        calls = []
        model.model.transformer_encoder[0].qkv.register_forward_hook(lambda *args, calls=calls: calls.append(1))
        model(input_ids=ids, labels=labels).loss.backward()
        assert len(calls) == (2 if checkpointing else 1)  # recomputed in the backward pass
        grads.append(model.model.transformer_encoder[0].qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0


def test_the_sequence_heads_hidden_layer_keeps_its_released_name_on_disk(tmp_path):
    """In the model it is `pre_classifier` (so PEFT saves it with an adapter); files and raw state dicts
    with the release's `dense` load into it, and saved files use `dense`."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = NeoBERTForSequenceClassification(small_config(num_labels=3)).eval()
    assert model.dense is model.pre_classifier
    model.save_pretrained(tmp_path / "saved")
    on_disk = load_file(tmp_path / "saved" / "model.safetensors")
    assert {"dense.weight", "dense.bias"} <= set(on_disk) and not any("pre_classifier" in key for key in on_disk)
    reloaded = NeoBERTForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    torch.testing.assert_close(reloaded.pre_classifier.weight, model.pre_classifier.weight, rtol=0, atol=0)
    raw = NeoBERTForSequenceClassification(small_config(num_labels=3))
    raw.load_state_dict(on_disk, strict=True)  # the raw route the training checkpoints take
    ids = random_ids(2, 7)
    with torch.no_grad():
        torch.testing.assert_close(raw.eval()(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)
