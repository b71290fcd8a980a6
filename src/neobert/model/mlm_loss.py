"""The masked-LM decoder and its cross-entropy fused, chunk by chunk of scored rows, for training.

The dense way builds the (scored rows x vocabulary) logits, then their log-softmax, then a gradient of the
same size: for the `tiny` model on a demo batch, three or four 140 MB tensors a step, written and read back
from memory. Here each chunk of rows goes through the decoder, the log-softmax, the loss, the top-1
prediction and the gradient (softmax minus one-hot) in two chunk-sized buffers; the gradients of the hidden
states, weight and bias are complete when the forward ends, and the backward only scales them by the
incoming gradient. The loss is the dense computation's, summed in another order (fp32 rounding apart).
"""

from __future__ import annotations

import torch


def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """What the decoder's product runs in: autocast's dtype when it is on (the dense path's `nn.Linear`
    would run in it too), else the weight's."""
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _chunks(hidden, weight, bias, labels, chunk_rows, dtype, needs_grad):
    """The loss summed over rows, each row's top-1 token and, with `needs_grad`, the gradients of that sum
    (hidden in its dtype; weight and bias accumulated in fp32)."""
    rows, vocab = hidden.shape[0], weight.shape[0]
    device = hidden.device
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    predictions = torch.empty(rows, dtype=torch.long, device=device)
    weight_c = weight.to(dtype)
    bias_c = bias.to(dtype) if bias is not None else None
    grad_hidden = grad_weight = grad_bias = None
    if needs_grad:
        grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=device)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=device)
        if bias is not None:
            grad_bias = torch.zeros(vocab, dtype=torch.float32, device=device)
    # Two chunk-sized buffers serve every chunk: nothing of the logits' size is allocated per chunk.
    size = min(chunk_rows, rows)
    logits_buffer = torch.empty(size, vocab, dtype=dtype, device=device)
    log_probs_buffer = torch.empty(size, vocab, dtype=torch.float32, device=device)
    for start in range(0, rows, chunk_rows):
        end = min(start + chunk_rows, rows)
        chunk, targets = hidden[start:end].to(dtype), labels[start:end]
        logits, log_probs = logits_buffer[: end - start], log_probs_buffer[: end - start]
        if bias_c is not None:
            torch.addmm(bias_c, chunk, weight_c.t(), out=logits)
        else:
            torch.mm(chunk, weight_c.t(), out=logits)
        # In fp32 whatever the product ran in, as the dense path's `.float()` before its cross-entropy.
        if dtype == torch.float32:
            torch.log_softmax(logits, dim=1, out=log_probs)
        else:
            log_probs.copy_(torch.log_softmax(logits.float(), dim=1))
        loss_sum -= log_probs.gather(1, targets[:, None]).sum()
        predictions[start:end] = log_probs.argmax(dim=1)
        if not needs_grad:
            continue
        # d(sum of losses)/d(logits) = softmax - one-hot, computed in the log-probabilities' own buffer.
        scores = log_probs.exp_()
        scores[torch.arange(end - start, device=device), targets] -= 1.0
        if grad_bias is not None:
            grad_bias += scores.sum(dim=0)
        if dtype == torch.float32 and grad_hidden.dtype == torch.float32:
            torch.mm(scores, weight_c, out=grad_hidden[start:end])
            grad_weight.addmm_(scores.t(), chunk)
        else:
            scores = scores.to(dtype)
            grad_hidden[start:end] = scores @ weight_c
            grad_weight += (scores.t() @ chunk).float()
    return (grad_hidden, grad_weight, grad_bias), loss_sum, predictions


class _FusedDecoderCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_rows, dtype, needs_grad):
        # The dtypes are chosen explicitly (`dtype` is autocast's when it was on), so autocast stays out.
        with torch.autocast(hidden.device.type, enabled=False):
            grads, loss_sum, predictions = _chunks(hidden, weight, bias, labels, chunk_rows, dtype, needs_grad)
        count = max(hidden.shape[0], 1)  # no scored row: a zero loss, not NaN
        ctx.mark_non_differentiable(predictions)
        if needs_grad:
            ctx.save_for_backward(*grads)
            ctx.count, ctx.weight_dtype = count, weight.dtype
        return loss_sum / count, predictions

    @staticmethod
    def backward(ctx, grad_loss, _grad_predictions):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_loss / ctx.count
        grads = [
            (grad_hidden * scale).to(grad_hidden.dtype) if ctx.needs_input_grad[0] else None,
            (grad_weight * scale).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None,
            (grad_bias * scale).to(ctx.weight_dtype) if grad_bias is not None and ctx.needs_input_grad[2] else None,
        ]
        return (*grads, None, None, None, None)


# Rows per chunk: large enough that the weight-gradient accumulation (a vocabulary x hidden read and write
# per chunk) stays small beside the products, small enough that a chunk's logits stay in cache.
DEFAULT_CHUNK_ROWS = 256


@torch.compiler.disable  # a Python loop over a data-dependent row count: compiled, it would recompile each step
def fused_decoder_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of `hidden @ weight.T + bias` (n, vocab) against `labels` (n,), every label a real
    token, and each row's top-1 token; the logits are never built beyond `chunk_rows` rows at a time.

    Under autocast the product runs in its dtype and the softmax in fp32, as in the dense path. The
    gradients are computed during the forward when autograd will want them."""
    if hidden.dim() != 2 or labels.shape != hidden.shape[:1]:
        raise ValueError(f"expected hidden (n, d) and labels (n,), got {tuple(hidden.shape)} and {tuple(labels.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    dtype = _compute_dtype(weight)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    return _FusedDecoderCrossEntropy.apply(hidden, weight, bias, labels, chunk_rows, dtype, needs_grad)
