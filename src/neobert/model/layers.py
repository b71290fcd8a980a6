"""The building blocks of a NeoBERT layer: norms, feed-forward networks and the rotary table."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neobert.config import NeoBERTConfig


def make_norm(config: NeoBERTConfig) -> nn.Module:
    if config.rms_norm:
        return nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


class SwiGLU(nn.Module):
    """`w3(silu(x W1) * (x W2))` with W1 and W2 packed in `w12`, gate rows first (xformers' layout)."""

    def __init__(self, hidden_size: int, ffn_hidden_size: int):
        super().__init__()
        self.w12 = nn.Linear(hidden_size, 2 * ffn_hidden_size, bias=False)
        self.w3 = nn.Linear(ffn_hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w12(x).chunk(2, dim=-1)
        if torch.is_grad_enabled() and x.requires_grad:
            return self.w3(F.silu(gate) * up)
        # Inference: multiply in place, one large temporary fewer.
        return self.w3(F.silu(gate).mul_(up))


def make_ffn(config: NeoBERTConfig) -> nn.Module:
    if config.hidden_act == "swiglu":
        return SwiGLU(config.hidden_size, config.ffn_hidden_size)
    # The BERT-like ablation: Linear -> GELU -> Linear, no biases.
    return nn.Sequential(
        nn.Linear(config.hidden_size, config.intermediate_size, bias=False),
        nn.GELU(),
        nn.Linear(config.intermediate_size, config.hidden_size, bias=False),
    )


class RotaryTable:
    """Unit complex numbers exp(i * position * theta^(-2j/d)), computed in float32 and grown on demand.

    Deliberately not a module buffer: it is never saved, never loaded (the released code's
    non-persistent complex buffer can come back uninitialised) and has no length limit.
    """

    def __init__(self, head_dim: int, theta: float):
        self.head_dim = head_dim
        self.theta = theta
        self._tables: dict[torch.device, torch.Tensor] = {}

    def get(self, length: int, device: torch.device) -> torch.Tensor:
        """complex64 (at least `length`, head_dim / 2) on `device`."""
        cached = self._tables.get(device)
        if cached is None or cached.shape[0] < length:
            # Grow geometrically so that a stream of slowly growing inputs rebuilds the table rarely.
            size = max(length, 2 * cached.shape[0]) if cached is not None else length
            # Built on the CPU explicitly: transformers may construct models under a meta-device context.
            exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device="cpu") / self.head_dim
            inv_freq = 1.0 / (self.theta**exponents)
            angles = torch.outer(torch.arange(size, dtype=torch.float32, device="cpu"), inv_freq)
            cached = torch.polar(torch.ones_like(angles), angles).to(device)
            self._tables[device] = cached
        return cached


def apply_rotary(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i+1) of the last dimension, in float32; returns x's dtype.

    `rotation` holds (cos, sin) in its last dimension (a real view of `RotaryTable`'s complex numbers) and
    must broadcast against x viewed as (..., head_dim / 2, 2).
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        # Inductor generates no code for complex numbers and ONNX has none; the same rotation in real
        # arithmetic fuses and exports.
        cos, sin = rotation.unbind(-1)
        even, odd = pairs.unbind(-1)
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).to(x.dtype)
    # Eagerly, one complex multiplication is several times faster than the real formula on the CPU.
    rotated = torch.view_as_complex(pairs) * torch.view_as_complex(rotation)
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)
