"""All attention backends agree, on padded and on packed input."""

import pytest
import torch
import torch.nn.functional as F

from helpers.model import random_ids, small_config
from neobert import NeoBERTModel

LENGTHS = [9, 3, 14, 6]


def padded_and_packed():
    width = max(LENGTHS)
    ids = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    mask = torch.zeros(len(LENGTHS), width, dtype=torch.bool)
    for row, n in enumerate(LENGTHS):
        ids[row, :n] = random_ids(1, n)[0]
        mask[row, :n] = True
    cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    return ids, mask, ids[mask][None], cu


def outputs(model, backend, inputs):
    model.config._attn_implementation = backend
    ids, mask, flat, cu = inputs
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).last_hidden_state[mask]
        packed = model(input_ids=flat, cu_seqlens=cu, max_seqlen=max(LENGTHS)).last_hidden_state[0]
    return padded, packed


@pytest.fixture
def model():
    return NeoBERTModel(small_config()).eval()


@pytest.mark.parametrize("backend", ["sdpa", "flex_attention"])
def test_backend_agrees_with_the_eager_reference(model, backend):
    inputs = padded_and_packed()
    ref_padded, ref_packed = outputs(model, "eager", inputs)
    torch.testing.assert_close(ref_packed, ref_padded, atol=1e-5, rtol=1e-5)
    padded, packed = outputs(model, backend, inputs)
    torch.testing.assert_close(padded, ref_padded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed, ref_packed, atol=1e-5, rtol=1e-5)


def test_sdpa_gets_a_key_mask_never_a_square_one(model, monkeypatch):
    seen = []
    original = F.scaled_dot_product_attention

    def recording_sdpa(q, k, v, attn_mask=None, **kwargs):
        seen.append(None if attn_mask is None else tuple(attn_mask.shape))
        return original(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_sdpa)
    outputs(model, "sdpa", padded_and_packed())
    batch, width = len(LENGTHS), max(LENGTHS)
    padded_calls = seen[: model.config.num_hidden_layers]
    packed_calls = seen[model.config.num_hidden_layers :]
    assert padded_calls == [(batch, 1, 1, width)] * model.config.num_hidden_layers
    # Packed input runs one unmasked call per document and layer.
    assert packed_calls == [None] * (len(LENGTHS) * model.config.num_hidden_layers)


def packed_sdpa_calls(model, monkeypatch, lengths):
    """(eager reference, sdpa output, SDPA calls as (batch, length, mask shape or None), ids, cu_seqlens)
    for random documents of `lengths` packed into one row."""
    flat = random_ids(1, sum(lengths))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        reference = model(input_ids=flat, cu_seqlens=cu).last_hidden_state
    calls = []
    original = F.scaled_dot_product_attention

    def recording_sdpa(q, k, v, attn_mask=None, **kwargs):
        calls.append((q.shape[0], q.shape[2], None if attn_mask is None else tuple(attn_mask.shape)))
        return original(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_sdpa)
    model.config._attn_implementation = "sdpa"
    with torch.no_grad():
        output = model(input_ids=flat, cu_seqlens=cu).last_hidden_state
    monkeypatch.setattr(F, "scaled_dot_product_attention", original)
    return reference, output, calls, flat, cu


def test_similar_length_documents_share_one_sdpa_call_and_stay_apart(model, monkeypatch):
    from neobert.model import attention

    monkeypatch.setattr(attention, "MAX_RUN_CALLS", 0)  # group even these few runs
    # Sorted: 4 4 | 7 7 7 7 8 | 20. Padding four 7s to 8 adds 23% to that group's attention work (within
    # the 25% slack); a 7 padded with the 4s, or 20 with anything, would add far more.
    reference, grouped, calls, flat, cu = packed_sdpa_calls(model, monkeypatch, [7, 7, 20, 7, 4, 4, 8, 7])
    # Equal lengths need no mask; the mixed group gets a key mask (never a square one).
    assert calls[:3] == [(2, 4, None), (5, 8, (5, 1, 1, 8)), (1, 20, None)]
    assert len(calls) == 3 * model.config.num_hidden_layers
    torch.testing.assert_close(grouped, reference, atol=1e-5, rtol=1e-5)
    # Each document is still its own: changing one leaves its group mates untouched.
    changed = flat.clone()
    changed[0, 7:14] = random_ids(1, 7)[0]
    with torch.no_grad():
        again = model(input_ids=changed, cu_seqlens=cu).last_hidden_state
    torch.testing.assert_close(again[0, :7], grouped[0, :7])
    torch.testing.assert_close(again[0, 14:], grouped[0, 14:])
    assert not torch.allclose(again[0, 7:14], grouped[0, 7:14])


def test_few_runs_of_equal_lengths_are_called_in_place_without_masks(model, monkeypatch):
    # Length-sorted, as `encode` batches are: three runs.
    reference, runs, calls, _, _ = packed_sdpa_calls(model, monkeypatch, [9, 9, 9, 6, 6, 2])
    assert calls[:3] == [(3, 9, None), (2, 6, None), (1, 2, None)]
    assert len(calls) == 3 * model.config.num_hidden_layers
    torch.testing.assert_close(runs, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("max_run_calls", [0, 8])
def test_packed_sdpa_gradients_match_the_eager_reference(model, monkeypatch, max_run_calls):
    from neobert.model import attention

    monkeypatch.setattr(attention, "MAX_RUN_CALLS", max_run_calls)
    lengths = [5, 6, 6, 13]
    flat = random_ids(1, sum(lengths))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    grads = []
    for backend in ("eager", "sdpa"):
        model.zero_grad()
        model.config._attn_implementation = backend
        model(input_ids=flat, cu_seqlens=cu).last_hidden_state.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


def test_unknown_backend_is_named(model):
    model.config._attn_implementation = "bogus"
    with pytest.raises(ValueError, match="unknown attention backend 'bogus'"):
        model(input_ids=random_ids(1, 4))


def test_flash_attention_outside_cuda_is_a_clear_error(model):
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises((ImportError, ValueError), match="flash"):
        model(input_ids=random_ids(1, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_flash_and_sdpa_agree_on_cuda():
    pytest.importorskip("flash_attn")
    model = NeoBERTModel(small_config()).eval().cuda().bfloat16()
    ids, mask, flat, cu = (t.cuda() for t in padded_and_packed())
    results = {}
    for backend in ("sdpa", "flash_attention_2"):
        model.config._attn_implementation = backend
        with torch.no_grad():
            results[backend] = (
                model(input_ids=ids, attention_mask=mask).last_hidden_state[mask].float(),
                model(input_ids=flat, cu_seqlens=cu).last_hidden_state[0].float(),
            )
    for a, b in zip(results["sdpa"], results["flash_attention_2"], strict=True):
        torch.testing.assert_close(a, b, atol=3e-2, rtol=3e-2)


# bf16 keeps 8 significant bits (eps 7.8e-3): a few roundings per layer leave outputs of magnitude ~2
# within about 3 eps of fp32, while a wrong mask or document boundary is off by O(1).
BF16_TOLERANCE = dict(atol=3e-2, rtol=3e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["autocast", "bf16 weights"])
@pytest.mark.parametrize("backend", ["sdpa", "flex_attention", "eager"])
def test_bf16_matches_fp32_on_cuda(backend, precision):
    """Each backend in bf16 (autocast as in training, or bf16 weights as in inference) against the fp32
    eager reference, padded and packed, on CUDA."""
    model = NeoBERTModel(small_config()).eval().cuda()
    inputs = tuple(t.cuda() for t in padded_and_packed())
    reference = outputs(model, "eager", inputs)
    if precision == "autocast":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            results = outputs(model, backend, inputs)
    else:
        results = outputs(model.bfloat16(), backend, inputs)
    for result, expected in zip(results, reference, strict=True):
        assert torch.isfinite(result).all()
        torch.testing.assert_close(result.float(), expected, **BF16_TOLERANCE)
