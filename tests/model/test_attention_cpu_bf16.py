"""sdpa under CPU bf16: the scores are computed in float32 (the fused CPU kernels' bf16 backward is slow),
padded and packed, forward and backward; other dtypes and devices take the plain path."""

import pytest
import torch
import torch.nn.functional as F

from neobert.model import attention as attention_module
from neobert.model.inputs import build_layout

pytestmark = pytest.mark.usefixtures("one_thread")


def layouts():
    cpu = torch.device("cpu")
    packed = build_layout((1, 20), cpu, None, None, torch.tensor([0, 5, 12, 20], dtype=torch.int32), None)
    keys = torch.ones(2, 10, dtype=torch.long)
    keys[1, 7:] = 0
    padded = build_layout((2, 10), cpu, keys, None, None, None)
    return {"packed": packed, "padded": padded}


def backend(name, q, k, v, layout):
    """The registered backend called as transformers calls attention: (batch, heads, length, head_dim) in."""
    function = attention_module.ATTENTION_FUNCTIONS[name]
    return function(None, *(t.transpose(1, 2) for t in (q, k, v)), None, layout=layout)


@pytest.mark.parametrize("kind", ["packed", "padded"])
def test_bf16_sdpa_on_cpu_is_the_float32_computation_rounded(kind, monkeypatch):
    layout = layouts()[kind]
    batch, length = (1, 20) if kind == "packed" else (2, 10)
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, length, 2, 8).to(torch.bfloat16).requires_grad_() for _ in range(3))
    seen = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: seen.append(a[0].dtype) or real(*a, **kw))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = backend("sdpa", q, k, v, layout)
    assert out.dtype == torch.bfloat16 and set(seen) == {torch.float32}
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    reference = backend("eager", q32, k32, v32, layout)[0]
    torch.testing.assert_close(out.float(), reference, rtol=0, atol=1e-2)  # bf16 rounding of the output only
    out.float().sum().backward()
    reference.sum().backward()
    for ours, theirs in ((q, q32), (k, k32), (v, v32)):
        torch.testing.assert_close(ours.grad.float(), theirs.grad, rtol=0, atol=2e-2)


def test_float32_inputs_keep_the_plain_path(monkeypatch):
    layout = layouts()["padded"]
    q, k, v = (torch.randn(2, 10, 2, 8) for _ in range(3))
    monkeypatch.setattr(attention_module, "_sdpa_in_float32", lambda *a: pytest.fail("upcast path taken"))
    out, _ = backend("sdpa", q, k, v, layout)
    torch.testing.assert_close(out, backend("eager", q, k, v, layout)[0], rtol=1e-5, atol=1e-5)
