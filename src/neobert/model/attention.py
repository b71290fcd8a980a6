"""Bidirectional attention with interchangeable backends, called the way transformers calls attention.

`ATTENTION_FUNCTIONS` is the one registry of this model's backends, named as transformers'
`attn_implementation`: "sdpa" (default), "eager" (the reference), "flex_attention" and "flash_attention_2".
Each has the signature of transformers' attention interface, `fn(module, query, key, value, attention_mask,
scaling=..., dropout=..., is_causal=..., **kwargs)` over (batch, heads, length, head_dim) tensors, returning
(output (batch, length, heads, head_dim), weights or None), and reads the keyword `layout`: padded keys are
never attended to and packed documents never see each other, without a (batch, heads, L, L) mask; only the
eager reference materialises the score matrix itself. A new backend is one function added to the dict.

Any other name is looked up in transformers' `ALL_ATTENTION_FUNCTIONS` (a function registered with
`AttentionInterface.register`, vLLM's "vllm") and called with the mask transformers builds for that name
(`create_bidirectional_mask`: None where no mask function is registered, as for vLLM, whose kernels read
their own metadata), plus the packed documents' boundaries as `cu_seq_lens_q` / `cu_seq_lens_k`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask
from torch.nn.attention.flex_attention import flex_attention as flex_attention_kernel
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from neobert.model.inputs import AttentionLayout


def attention(
    module: torch.nn.Module,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: AttentionLayout,
    need_weights: bool = False,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention of q, k, v (batch, length, heads, head_dim) with the backend `module.config` names. Returns
    the output (batch, length, heads, head_dim) and, with `need_weights`, the probabilities
    (batch, heads, length, length) from the eager reference. `kwargs` reach the attention function."""
    name = "eager" if need_weights else (module.config._attn_implementation or "sdpa")
    query, key, value = (t.transpose(1, 2) for t in (q, k, v))
    fixed = dict(scaling=module.scaling, dropout=0.0, is_causal=False)
    ours = ATTENTION_FUNCTIONS.get(name)
    if ours is not None:
        return ours(module, query, key, value, None, layout=layout, **fixed, **kwargs)
    function = registered_with_transformers(name)
    mask, boundaries = _transformers_mask(module.config, q, layout)
    return function(module, query, key, value, mask, **fixed, **boundaries, **kwargs)


def known_only_here(name: str | None) -> bool:
    """Whether `name` is a backend of ATTENTION_FUNCTIONS that transformers has no function of its own for."""
    return name in ATTENTION_FUNCTIONS and name != "eager" and name not in ALL_ATTENTION_FUNCTIONS.valid_keys()


def registered_with_transformers(name: str) -> Callable:
    try:
        return ALL_ATTENTION_FUNCTIONS[name]
    except KeyError:
        known = sorted({*ATTENTION_FUNCTIONS, *ALL_ATTENTION_FUNCTIONS.valid_keys()})
        raise ValueError(f"unknown attention backend {name!r}; choose one of {known}") from None


def _transformers_mask(config, q: torch.Tensor, layout: AttentionLayout) -> tuple[object, dict]:
    """The mask transformers makes for `config._attn_implementation` and this layout, once per forward; for
    packed documents, with the rule that a query sees only its own document's keys."""
    if "transformers_mask" not in layout.cache:
        shape_source = q[:, :, 0]  # (batch, length, head_dim): transformers reads batch, length, dtype, device
        if layout.packed:
            docs = layout.document_ids()

            def same_document(batch, head, q_index, kv_index):
                return docs[q_index] == docs[kv_index]

            mask = create_bidirectional_mask(config, shape_source, None, and_mask_function=same_document)
            cu, longest = layout.cu_seqlens, layout.max_seqlen
            boundaries = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
        else:
            mask, boundaries = create_bidirectional_mask(config, shape_source, layout.key_mask), {}
        layout.cache["transformers_mask"] = (mask, boundaries)
    return layout.cache["transformers_mask"]


def _refuse_what_none_has(kwargs: dict) -> None:
    if kwargs.get("dropout") or kwargs.get("is_causal"):
        raise ValueError("NeoBERT's attention backends are bidirectional and have no attention dropout")


def eager_attention(
    module, query, key, value, attention_mask=None, *, layout: AttentionLayout, scaling=None, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: explicit scores in float32, -inf on forbidden keys, softmax, weighted sum."""
    _refuse_what_none_has(kwargs)
    scaling = scaling if scaling is not None else 1 / math.sqrt(query.shape[-1])
    scores = (query.float() @ key.float().transpose(-1, -2)) * scaling
    if layout.packed:
        docs = layout.document_ids()
        scores = scores.masked_fill((docs[:, None] != docs[None, :])[None, None], float("-inf"))
    elif layout.key_mask is not None:
        scores = scores.masked_fill(~layout.key_mask[:, None, None, :], float("-inf"))
    probs = scores.softmax(dim=-1)
    out = (probs @ value.float()).transpose(1, 2).to(query.dtype)
    return out, probs.to(query.dtype)


def sdpa_attention(
    module, query, key, value, attention_mask=None, *, layout: AttentionLayout, scaling=None, **kwargs
) -> tuple[torch.Tensor, None]:
    _refuse_what_none_has(kwargs)
    if query.device.type == "cpu" and query.dtype == torch.bfloat16:
        return _sdpa_in_float32(query, key, value, layout, scaling), None
    return _sdpa(query, key, value, layout, scaling), None


def _sdpa(query, key, value, layout: AttentionLayout, scale: float | None) -> torch.Tensor:
    """(batch, heads, length, head_dim) in, (batch, length, heads, head_dim) out."""
    if layout.packed:  # the packed path slices documents out of (batch, length, heads, head_dim) views
        return sdpa_packed(*(t.transpose(1, 2) for t in (query, key, value)), layout, scale)
    return sdpa_padded(query, key, value, layout, scale)


def flex_attention(
    module, query, key, value, attention_mask=None, *, layout: AttentionLayout, scaling=None, **kwargs
) -> tuple[torch.Tensor, None]:
    _refuse_what_none_has(kwargs)
    if not layout.packed and layout.key_mask is None:
        return F.scaled_dot_product_attention(query, key, value, scale=scaling).transpose(1, 2), None
    out = _compiled_flex_attention()(query, key, value, block_mask=_block_mask(layout, query.device), scale=scaling)
    return out.transpose(1, 2), None


def flash_attention(
    module, query, key, value, attention_mask=None, *, layout: AttentionLayout, scaling=None, **kwargs
) -> tuple[torch.Tensor, None]:
    _refuse_what_none_has(kwargs)
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    return flash_varlen(q, k, v, layout, scaling), None


def _sdpa_in_float32(query, key, value, layout: AttentionLayout, scale: float | None = None) -> torch.Tensor:
    """CPU bf16 (autocast): the fused CPU attention kernels' bf16 backward is the slow part of a small
    model's step (0.37 against 0.28 s for the demo's `tiny` step, measured with torch 2.13 on AVX512-BF16),
    while attention's share of the FLOPs is small; so the scores are computed in float32 and the output
    handed back in bf16, which is also the more exact of the two."""
    with torch.autocast("cpu", enabled=False):
        out = _sdpa(query.float(), key.float(), value.float(), layout, scale)
    return out.to(query.dtype)


def sdpa_padded(query, key, value, layout: AttentionLayout, scale: float | None = None) -> torch.Tensor:
    # A (batch, 1, 1, L) key mask broadcasts over heads and queries; SDPA's fused CPU kernel takes it.
    mask = None if layout.key_mask is None else layout.key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale).transpose(1, 2)


def sdpa_packed(q, k, v, layout: AttentionLayout, scale: float | None = None) -> torch.Tensor:
    """No work on cross-document pairs, and few calls. Runs of consecutive equal-length documents (what
    length-sorted batches are made of) are viewed as batches in place, one call each, when there are few
    such runs; otherwise documents are grouped by length (see `_length_groups`) and each group runs as one
    padded batch with a key mask (none when its lengths agree).

    The pieces are joined with one `cat` (and, for groups, one gather in and one gather out), never written
    into the row piece by piece: each such write, or each group's own gather from the whole row, costs a
    row-sized zeroed gradient and a row-sized sum in the backward, which for a batch of many short
    documents took more time than the attention itself."""
    heads, dim = q.shape[2:]
    runs = _equal_length_runs(layout)
    pieces = []
    if len(runs) <= MAX_RUN_CALLS:
        start = 0
        for n, count in runs:
            piece = slice(start, start + n * count)
            qs, ks, vs = (t[0, piece].reshape(count, n, heads, dim).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(qs, ks, vs, scale=scale)
            pieces.append(out.transpose(1, 2).reshape(n * count, heads, dim))
            start += n * count
        return torch.cat(pieces).unsqueeze(0)
    gather, groups, take = _length_groups(layout)
    slots = [t[0].index_select(0, gather) for t in (q, k, v)]
    for offset, count, longest, keep in groups:
        span = slice(offset, offset + count * longest)
        qs, ks, vs = (t[span].view(count, longest, heads, dim).transpose(1, 2) for t in slots)
        mask = None if keep is None else keep[:, None, None, :]
        grouped = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale)
        pieces.append(grouped.transpose(1, 2).reshape(count * longest, heads, dim))
    return torch.cat(pieces).index_select(0, take).unsqueeze(0)


# Up to this many runs of equal-length documents, calls on in-place views beat gathering into groups.
MAX_RUN_CALLS = 8


def _equal_length_runs(layout: AttentionLayout) -> list[tuple[int, int]]:
    """(length, how many in a row) over the packed documents, cached on the layout for every layer."""
    if "runs" not in layout.cache:
        runs: list[list[int]] = []
        for n in layout.seqlens:
            if runs and runs[-1][0] == n:
                runs[-1][1] += 1
            else:
                runs.append([n, 1])
        layout.cache["runs"] = [(n, count) for n, count in runs]
    return layout.cache["runs"]


# A group may grow while padding adds at most this fraction to its attention work (sum of length^2).
GROUP_SLACK = 1.25


def _length_groups(
    layout: AttentionLayout,
) -> tuple[torch.Tensor, list[tuple[int, int, int, torch.Tensor | None]], torch.Tensor]:
    """Documents of similar length grouped into padded batches: `gather`, the packed-row token behind every
    slot of every group laid end to end (padding slots repeat token 0); per group its first slot, number of
    documents, longest length and key mask (None without padding); and `take`, the slot holding each token
    of the row. One call per document costs ~100 us of overhead on a CPU, which dominates small models and
    short documents; one padded call per group keeps the overhead and the wasted work both small. Cached on
    the layout, so every layer reuses it."""
    if "length_groups" in layout.cache:
        return layout.cache["length_groups"]
    lengths, device = layout.seqlens, layout.cu_seqlens.device
    starts = layout.cu_seqlens.tolist()
    groups: list[list[int]] = []
    work = 0  # sum of length^2 over the current group: its attention work without padding
    for doc in sorted(range(len(lengths)), key=lengths.__getitem__):
        square = lengths[doc] ** 2
        if groups and (len(groups[-1]) + 1) * square <= GROUP_SLACK * (work + square):
            groups[-1].append(doc)
            work += square
        else:
            groups.append([doc])
            work = square
    gather, plan = [], []
    take = torch.empty(starts[-1], dtype=torch.long)
    offset = 0
    for group in groups:
        longest = lengths[group[-1]]  # sorted by length
        index = torch.zeros(len(group), longest, dtype=torch.long)
        keep = torch.zeros(len(group), longest, dtype=torch.bool)
        for row, doc in enumerate(group):
            index[row, : lengths[doc]] = torch.arange(starts[doc], starts[doc] + lengths[doc])
            keep[row, : lengths[doc]] = True
        take[index[keep]] = offset + torch.nonzero(keep.flatten()).flatten()
        gather.append(index.flatten())
        plan.append((offset, len(group), longest, None if bool(keep.all()) else keep.to(device)))
        offset += index.numel()
    layout.cache["length_groups"] = (torch.cat(gather).to(device), plan, take.to(device))
    return layout.cache["length_groups"]


@functools.cache
def _compiled_flex_attention():
    return torch.compile(flex_attention_kernel, dynamic=False)


def _block_mask(layout: AttentionLayout, device: torch.device):
    if "block_mask" not in layout.cache:
        if layout.packed:
            docs = layout.document_ids()

            def mask_mod(b, h, q_idx, kv_idx):
                return docs[q_idx] == docs[kv_idx]

            batch = None
        else:
            keys = layout.key_mask

            def mask_mod(b, h, q_idx, kv_idx):
                return keys[b, kv_idx]

            batch = layout.batch_size
        layout.cache["block_mask"] = create_block_mask(
            mask_mod, batch, None, layout.length, layout.length, device=device
        )
    return layout.cache["block_mask"]


def flash_varlen(q, k, v, layout: AttentionLayout, scale: float | None = None) -> torch.Tensor:
    """flash-attn's variable-length kernel; padded input is unpadded first and scattered back."""
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError as error:
        raise ImportError("attn_implementation='flash_attention_2' needs `pip install flash-attn`") from error
    if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError("flash-attn runs on CUDA in float16 or bfloat16 only; use 'sdpa' elsewhere")
    batch, length, heads, dim = q.shape
    if layout.packed:
        cu, longest = layout.cu_seqlens, layout.max_seqlen
        out = flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, longest, longest, softmax_scale=scale, causal=False)
        return out.unsqueeze(0)
    keep = layout.key_mask
    if keep is None:
        keep = torch.ones(batch, length, dtype=torch.bool, device=q.device)
    if "unpad" not in layout.cache:
        lengths = keep.sum(dim=1, dtype=torch.int32)
        cu = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
        layout.cache["unpad"] = (torch.nonzero(keep.flatten()).flatten(), cu, int(lengths.max()))
    index, cu, longest = layout.cache["unpad"]
    flat = [t.reshape(batch * length, heads, dim)[index] for t in (q, k, v)]
    out = flash_attn_varlen_func(*flat, cu, cu, longest, longest, softmax_scale=scale, causal=False)
    full = q.new_zeros(batch * length, heads, dim)
    full[index] = out
    return full.view(batch, length, heads, dim)


# The backends, by `attn_implementation` name. BACKENDS, the configuration's choices, is a live view of the
# keys, so a backend added here (in this file or at run time) is a valid `model.attention` at once.
ATTENTION_FUNCTIONS: dict[str, Callable] = {
    "sdpa": sdpa_attention,
    "eager": eager_attention,
    "flex_attention": flex_attention,
    "flash_attention_2": flash_attention,
}
BACKENDS = ATTENTION_FUNCTIONS.keys()
