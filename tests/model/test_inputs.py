"""Inputs as transformers users pass them, padded and packed, give the same per-token outputs."""

import pytest
import torch

from helpers.model import random_ids, small_config
from neobert import NeoBERTModel


@pytest.fixture
def model():
    return NeoBERTModel(small_config()).eval()


def run(model, **inputs):
    with torch.no_grad():
        return model(**inputs)


def padded_batch(lengths, width=None):
    width = width or max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = random_ids(1, n)[0]
        mask[row, :n] = 1
    return ids, mask


def test_every_mask_convention_gives_the_same_output(model):
    ids, mask = padded_batch([7, 4, 9])
    reference = run(model, input_ids=ids, attention_mask=mask).last_hidden_state
    additive = torch.zeros(mask.shape).masked_fill(mask == 0, float("-inf"))  # the released training code's
    for variant in (mask.bool(), mask.float(), mask.int(), additive):
        out = run(model, input_ids=ids, attention_mask=variant).last_hidden_state
        torch.testing.assert_close(out, reference, atol=0, rtol=0)


def test_padding_never_changes_a_real_tokens_output(model):
    lengths = [5, 11, 3]
    ids, mask = padded_batch(lengths, width=16)
    batched = run(model, input_ids=ids, attention_mask=mask).last_hidden_state
    for row, n in enumerate(lengths):
        alone = run(model, input_ids=ids[row : row + 1, :n]).last_hidden_state
        torch.testing.assert_close(batched[row, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_packed_equals_padded_equals_one_at_a_time(model):
    lengths = [6, 13, 1, 8]
    ids, mask = padded_batch(lengths)
    padded = run(model, input_ids=ids, attention_mask=mask).last_hidden_state
    flat = ids[mask.bool()][None]
    cu = torch.tensor([0, 6, 19, 20, 28], dtype=torch.int32)
    packed = run(model, input_ids=flat, cu_seqlens=cu, max_seqlen=13).last_hidden_state
    torch.testing.assert_close(packed[0], padded[mask.bool()], atol=1e-5, rtol=1e-5)
    # transformers' flattening collator marks documents with restarting position_ids instead.
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    by_positions = run(model, input_ids=flat, position_ids=positions).last_hidden_state
    torch.testing.assert_close(by_positions, packed, atol=1e-6, rtol=1e-6)
    # A 1-D packed row is accepted too.
    torch.testing.assert_close(run(model, input_ids=flat[0], cu_seqlens=cu).last_hidden_state, packed)


def test_packed_documents_never_see_each_other(model):
    ids = random_ids(1, 10)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    base = run(model, input_ids=ids, cu_seqlens=cu).last_hidden_state
    changed = ids.clone()
    changed[0, 5:] = random_ids(1, 5)  # rewrite most of the second document
    out = run(model, input_ids=changed, cu_seqlens=cu).last_hidden_state
    torch.testing.assert_close(out[0, :4], base[0, :4], atol=0, rtol=0)
    assert not torch.allclose(out[0, 4:], base[0, 4:])


def test_inputs_embeds_position_ids_and_token_type_ids(model):
    ids, mask = padded_batch([6, 4])
    reference = run(model, input_ids=ids, attention_mask=mask).last_hidden_state
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(run(model, inputs_embeds=embeds, attention_mask=mask).last_hidden_state, reference)
    positions = torch.arange(6).expand(2, 6)
    explicit = run(model, input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    torch.testing.assert_close(explicit, reference, atol=1e-6, rtol=1e-6)
    with_types = run(model, input_ids=ids, attention_mask=mask, token_type_ids=torch.ones_like(ids))
    torch.testing.assert_close(with_types.last_hidden_state, reference, atol=0, rtol=0)


def test_hidden_states_attentions_and_return_dict(model):
    ids, mask = padded_batch([5, 3])
    out = run(model, input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    torch.testing.assert_close(out.hidden_states[0], model.get_input_embeddings()(ids))
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert len(out.attentions) == model.config.num_hidden_layers
    weights = out.attentions[0]
    assert weights.shape == (2, model.config.num_attention_heads, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, model.config.num_attention_heads, 5))
    assert torch.all(weights[1, :, :, 3:] == 0)  # padded keys get no weight
    as_tuple = run(model, input_ids=ids, attention_mask=mask, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_learned_position_ablation_runs_and_differs_by_position():
    model = NeoBERTModel(small_config(rope=False, rms_norm=False, hidden_act="gelu")).eval()
    assert hasattr(model, "positional_embedding")
    ids = torch.full((1, 4), 2000)
    out = run(model, input_ids=ids).last_hidden_state
    assert not torch.allclose(out[0, 0], out[0, 1])
    with pytest.raises(ValueError, match="learned position embeddings cover 256"):
        run(model, input_ids=random_ids(1, 300))


def long_input_references():
    """5,000 tokens for a model configured for 256, as one row and packed (a long document beside a
    short one), with the eager reference for each (the packed one computed a document at a time)."""
    model = NeoBERTModel(small_config(num_hidden_layers=1)).eval()
    ids = random_ids(1, 5000)
    cu = torch.tensor([0, 4990, 5000], dtype=torch.int32)
    model.config._attn_implementation = "eager"
    row = run(model, input_ids=ids).last_hidden_state
    documents = [run(model, input_ids=ids[:, a:b]).last_hidden_state for a, b in ((0, 4990), (4990, 5000))]
    return model, ids, cu, row, torch.cat(documents, dim=1)


def agrees_past_max_length(backend: str, model, ids, cu, row, packed) -> None:
    model.config._attn_implementation = backend
    torch.testing.assert_close(run(model, input_ids=ids).last_hidden_state, row, atol=1e-5, rtol=1e-5)
    out = run(model, input_ids=ids, cu_seqlens=cu, max_seqlen=4990).last_hidden_state
    torch.testing.assert_close(out, packed, atol=1e-5, rtol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_inputs_longer_than_max_length_work():
    """No length cliff: sdpa agrees with eager far past `max_length`, padded-free and packed."""
    model, ids, cu, row, packed = long_input_references()
    assert row.shape == (1, 5000, 64) and torch.isfinite(row).all()
    agrees_past_max_length("sdpa", model, ids, cu, row, packed)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_flex_attention_past_max_length():
    """The same for flex_attention (about 10 s: it compiles for this length). flash_attention_2 needs
    CUDA; test_backends checks it there."""
    agrees_past_max_length("flex_attention", *long_input_references())


def test_unchecked_inputs_give_the_same_outputs(model):
    """With checks off (training loops, torch.compile) every mask convention still means the same."""
    ids, mask = padded_batch([7, 4, 9])
    positions = torch.arange(9).expand(3, 9)
    reference = run(model, input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    unmasked = run(model, input_ids=ids, position_ids=positions).last_hidden_state
    additive = torch.zeros(mask.shape).masked_fill(mask == 0, float("-inf"))
    model.check_inputs = False
    for variant in (mask, mask.bool(), mask.float(), additive):
        out = run(model, input_ids=ids, attention_mask=variant, position_ids=positions).last_hidden_state
        torch.testing.assert_close(out[mask.bool()], reference[mask.bool()], atol=1e-6, rtol=1e-6)
    all_ones = run(model, input_ids=ids, attention_mask=torch.ones_like(mask), position_ids=positions)
    torch.testing.assert_close(all_ones.last_hidden_state, unmasked, atol=1e-6, rtol=1e-6)
