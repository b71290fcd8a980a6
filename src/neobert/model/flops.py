"""The model's arithmetic, counted from its config: FLOPs of a forward pass and of a training step (what MFU
is computed from) and the matrix products of one step (what `train.precision=auto` times).

FLOPs follow the usual count (design notes): a forward pass costs 2 x non-embedding parameters per token
(every weight multiplies and adds once) plus 4 x layers x L^2 x hidden per sequence of length L for the
two attention products; a training step costs 3x the forward (the backward pass is about twice the
forward). The MLM decoder runs only on masked positions, so it is counted per masked token.
"""

from __future__ import annotations

import torch

from neobert.config import NeoBERTConfig
from neobert.model.heads import NeoBERTForMaskedLM

_EMBEDDING_NAMES = ("model.encoder.weight", "model.positional_embedding.weight")
_DECODER_PREFIX = "decoder."


def non_embedding_parameters(config: NeoBERTConfig) -> int:
    """Parameters of the encoder blocks and final norm: those every token multiplies through.

    Counted on a meta-device model, so even the largest preset costs no memory."""
    with torch.device("meta"):
        model = NeoBERTForMaskedLM(config)
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if name not in _EMBEDDING_NAMES and not name.startswith(_DECODER_PREFIX)
    )


def forward_flops(
    config: NeoBERTConfig,
    tokens: float,
    sum_squared_lengths: float,
    masked_tokens: float = 0.0,
    parameters: int | None = None,
) -> float:
    """Model FLOPs of one forward pass over `tokens` tokens whose sequences have the given sum of squared
    lengths (L^2 per sequence; for a packed row, per document), with the decoder on `masked_tokens`."""
    if parameters is None:
        parameters = non_embedding_parameters(config)
    dense = 2.0 * parameters * tokens
    attention = 4.0 * config.num_hidden_layers * config.hidden_size * sum_squared_lengths
    decoder = 2.0 * config.hidden_size * config.vocab_size * masked_tokens
    return dense + attention + decoder


def training_flops(
    config: NeoBERTConfig,
    tokens: float,
    sum_squared_lengths: float,
    masked_tokens: float = 0.0,
    parameters: int | None = None,
) -> float:
    """Model FLOPs of one training step (forward and backward, 3x the forward) over the same batch shape."""
    return 3.0 * forward_flops(config, tokens, sum_squared_lengths, masked_tokens, parameters)


def model_shapes(config: NeoBERTConfig, tokens: int, masked: int) -> tuple[tuple[int, int, int], ...]:
    """One micro-batch's matrix products of one encoder layer and the MLM decoder: what dominates the step."""
    hidden, inner = config.hidden_size, config.intermediate_size
    products = [(tokens, hidden, 3 * hidden), (tokens, hidden, hidden)]
    if config.hidden_act == "swiglu":
        products += [(tokens, hidden, 2 * config.ffn_hidden_size), (tokens, config.ffn_hidden_size, hidden)]
    else:
        products += [(tokens, hidden, inner), (tokens, inner, hidden)]
    layers = [shape for shape in products for _ in range(config.num_hidden_layers)]
    return tuple(layers + [(max(masked, 1), hidden, config.vocab_size)])
