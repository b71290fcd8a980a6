"""The released NeoBERT written out from the specification, independently of the library.

Weights are kept in their *semantic* form (separate Wq, Wk, Wv per layer; separate gate, up and down
matrices of the SwiGLU) and packed into the released checkpoint's layout by `pack_official`, which
follows the spec's rules literally. Everything runs in float64.
"""

from __future__ import annotations

import math

import torch


def random_semantic_weights(cfg, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    h, f, v = cfg.hidden_size, cfg.ffn_hidden_size, cfg.vocab_size

    def rnd(*shape, scale=0.08):
        return torch.randn(*shape, generator=g) * scale

    layers = []
    for _ in range(cfg.num_hidden_layers):
        layers.append(
            dict(
                wq=rnd(h, h),
                wk=rnd(h, h),
                wv=rnd(h, h),
                wo=rnd(h, h),
                gate=rnd(f, h),
                up=rnd(f, h),
                down=rnd(h, f),
                att_norm=1 + rnd(h, scale=0.1),
                ffn_norm=1 + rnd(h, scale=0.1),
            )
        )
    return dict(
        embedding=rnd(v, h, scale=0.5),
        layers=layers,
        final_norm=1 + rnd(h, scale=0.1),
        decoder_w=rnd(v, h),
        decoder_b=rnd(v, scale=0.1),
    )


def pack_official(w: dict, cfg) -> dict[str, torch.Tensor]:
    """Spec A.3/A.4/A.10: qkv rows grouped per head as [q_h; k_h; v_h]; w12 = [gate; up]."""
    heads, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    state = {"model.encoder.weight": w["embedding"]}
    for n, layer in enumerate(w["layers"]):
        blocks = []
        for head in range(heads):
            rows = slice(head * d, (head + 1) * d)
            blocks += [layer["wq"][rows], layer["wk"][rows], layer["wv"][rows]]
        prefix = f"model.transformer_encoder.{n}."
        state[prefix + "qkv.weight"] = torch.cat(blocks)
        state[prefix + "wo.weight"] = layer["wo"]
        state[prefix + "ffn.w12.weight"] = torch.cat([layer["gate"], layer["up"]])
        state[prefix + "ffn.w3.weight"] = layer["down"]
        state[prefix + "attention_norm.weight"] = layer["att_norm"]
        state[prefix + "ffn_norm.weight"] = layer["ffn_norm"]
    state["model.layer_norm.weight"] = w["final_norm"]
    state["decoder.weight"] = w["decoder_w"]
    state["decoder.bias"] = w["decoder_b"]
    return {k: v.float().contiguous() for k, v in state.items()}


def unpack_official(state: dict[str, torch.Tensor], cfg) -> dict:
    """The inverse of `pack_official`, to read what the library saves."""
    heads, d, f = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads, cfg.ffn_hidden_size
    layers = []
    for n in range(cfg.num_hidden_layers):
        prefix = f"model.transformer_encoder.{n}."
        per_head = state[prefix + "qkv.weight"].view(heads, 3, d, -1)
        w12 = state[prefix + "ffn.w12.weight"]
        layers.append(
            dict(
                wq=per_head[:, 0].reshape(heads * d, -1),
                wk=per_head[:, 1].reshape(heads * d, -1),
                wv=per_head[:, 2].reshape(heads * d, -1),
                wo=state[prefix + "wo.weight"],
                gate=w12[:f],
                up=w12[f:],
                down=state[prefix + "ffn.w3.weight"],
                att_norm=state[prefix + "attention_norm.weight"],
                ffn_norm=state[prefix + "ffn_norm.weight"],
            )
        )
    return dict(
        embedding=state["model.encoder.weight"],
        layers=layers,
        final_norm=state["model.layer_norm.weight"],
        decoder_w=state["decoder.weight"],
        decoder_b=state["decoder.bias"],
    )


def rms_norm(x, weight, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def rotate_pairs(x, positions, theta=10000.0):
    """Rotate each adjacent pair (x[2i], x[2i+1]) by angle position * theta^(-2i/d)."""
    d = x.shape[-1]
    out = torch.empty_like(x)
    for i in range(d // 2):
        angle = positions.double() * theta ** (-2 * i / d)  # positions: (batch, length, heads)
        c, s = torch.cos(angle), torch.sin(angle)
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i] = a * c - b * s
        out[..., 2 * i + 1] = a * s + b * c
    return out


def reference_forward(w: dict, cfg, input_ids, attention_mask=None, positions=None):
    """Returns (final hidden states, MLM logits), float64."""
    batch, length = input_ids.shape
    heads, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    if attention_mask is None:
        attention_mask = torch.ones(batch, length, dtype=torch.bool)
    if positions is None:
        positions = torch.arange(length).expand(batch, length)
    x = w["embedding"].double()[input_ids]
    for layer in w["layers"]:
        L = {k: v.double() for k, v in layer.items()}
        h = rms_norm(x, L["att_norm"], cfg.norm_eps)

        def split(t):
            return t.view(batch, length, heads, d)

        q = rotate_pairs(split(h @ L["wq"].T), positions[..., None].expand(batch, length, heads))
        k = rotate_pairs(split(h @ L["wk"].T), positions[..., None].expand(batch, length, heads))
        v = split(h @ L["wv"].T)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        scores = scores.masked_fill(~attention_mask.bool()[:, None, None, :], float("-inf"))
        att = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(batch, length, -1)
        x = x + att @ L["wo"].T
        h = rms_norm(x, L["ffn_norm"], cfg.norm_eps)
        gate, up = h @ L["gate"].T, h @ L["up"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ L["down"].T
    x = rms_norm(x, w["final_norm"].double(), cfg.norm_eps)
    return x, x @ w["decoder_w"].double().T + w["decoder_b"].double()
