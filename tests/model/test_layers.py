"""Each building block against a formula written out here."""

import math

import pytest
import torch
import torch.nn.functional as F

from neobert import NeoBERTConfig
from neobert.config import swiglu_hidden_size
from neobert.model.layers import RotaryTable, SwiGLU, apply_rotary, make_ffn, make_norm


def test_swiglu_hidden_size_rule():
    assert swiglu_hidden_size(3072) == 2048  # the released model
    assert swiglu_hidden_size(4032) == 2688  # the repo's 16 x 1008 preset
    assert swiglu_hidden_size(100) == 72  # int(66.67) = 66, rounded up to a multiple of 8


def test_swiglu_applies_silu_to_the_first_half_of_w12():
    ffn = SwiGLU(6, 8)
    gate, up, down = torch.randn(8, 6), torch.randn(8, 6), torch.randn(6, 8)
    with torch.no_grad():
        ffn.w12.weight.copy_(torch.cat([gate, up]))
        ffn.w3.weight.copy_(down)
    x = torch.randn(3, 6)
    g, u = x @ gate.T, x @ up.T
    expected = (g / (1 + torch.exp(-g)) * u) @ down.T
    torch.testing.assert_close(ffn(x), expected)
    with torch.no_grad():  # the in-place inference path gives the same numbers
        torch.testing.assert_close(ffn(x), expected)


def test_rmsnorm_uses_the_config_epsilon():
    norm = make_norm(NeoBERTConfig(hidden_size=8, num_attention_heads=2, norm_eps=0.5))
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 9.0))
    x = torch.randn(4, 8)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 0.5) * torch.arange(1.0, 9.0)
    torch.testing.assert_close(norm(x), expected)


def test_ablation_switches_build_layernorm_and_gelu():
    cfg = NeoBERTConfig.from_preset("bert-like-m0")
    assert isinstance(make_norm(cfg), torch.nn.LayerNorm) and make_norm(cfg).eps == 1e-8
    ffn = make_ffn(cfg)
    x = torch.randn(2, 768)
    expected = F.gelu(x @ ffn[0].weight.T) @ ffn[2].weight.T
    torch.testing.assert_close(ffn(x), expected)


def test_rotary_rotates_adjacent_pairs_with_theta_10000():
    head_dim, length = 8, 6
    table = RotaryTable(head_dim, 10000.0).get(length, torch.device("cpu"))
    x = torch.randn(length, head_dim)
    out = apply_rotary(x, torch.view_as_real(table))
    for pos in range(length):
        for i in range(head_dim // 2):
            angle = pos / 10000.0 ** (2 * i / head_dim)
            a, b = x[pos, 2 * i].item(), x[pos, 2 * i + 1].item()
            assert out[pos, 2 * i].item() == pytest.approx(a * math.cos(angle) - b * math.sin(angle), abs=1e-5)
            assert out[pos, 2 * i + 1].item() == pytest.approx(a * math.sin(angle) + b * math.cos(angle), abs=1e-5)


def test_rotary_table_is_float32_and_grows_without_changing_existing_rows():
    rotary = RotaryTable(64, 10000.0)
    small = rotary.get(16, torch.device("cpu")).clone()
    big = rotary.get(5000, torch.device("cpu"))
    assert big.dtype == torch.complex64 and big.shape[0] >= 5000
    assert torch.equal(big[:16], small)
    angle = 4999 / 10000.0 ** (2 * 3 / 64)
    assert big[4999, 3].real.item() == pytest.approx(math.cos(angle), abs=1e-4)


def test_rotary_computes_in_float32_for_half_precision_inputs():
    table = torch.view_as_real(RotaryTable(8, 10000.0).get(4, torch.device("cpu")))
    x = torch.randn(4, 8)
    out = apply_rotary(x.bfloat16(), table)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), apply_rotary(x.bfloat16().float(), table), atol=1e-2, rtol=0)


def test_rotary_real_arithmetic_path_for_torch_compile_matches(monkeypatch):
    table = torch.view_as_real(RotaryTable(16, 10000.0).get(6, torch.device("cpu")))
    x = torch.randn(2, 6, 3, 16)
    rotation = table[None, :, None]
    eager = apply_rotary(x, rotation)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.testing.assert_close(apply_rotary(x, rotation), eager, atol=1e-6, rtol=1e-6)
