"""ONNX export: onnxruntime matches PyTorch (max difference 1e-4) and serves `encode` as a backend."""

import numpy as np
import pytest
import torch
from transformers import AutoModel

from embed_helpers import exported_model
from neobert.cli import main
from neobert.embed import encode

onnxruntime = pytest.importorskip("onnxruntime")


def test_onnx_matches_pytorch_and_backs_encode(tmp_path):
    folder = exported_model(tmp_path)
    out = tmp_path / "onnx"
    assert main(["export-onnx", str(folder), "--out", str(out)]) == 0
    from neobert.onnx_export import onnx_session

    session = onnx_session(out)
    model = AutoModel.from_pretrained(folder).eval()
    # Dynamic batch and length, beyond the traced shape and beyond config.max_length (256): the rotary table
    # is computed in the graph, so the exported model has no length limit of its own.
    for batch, length in ((1, 5), (3, 41), (2, 130), (2, 600)):
        ids = torch.randint(1000, 30000, (batch, length))
        mask = torch.ones_like(ids)
        mask[-1, length // 2 :] = 0
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        (got,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        keep = mask.bool().numpy()
        assert np.abs(got - expected)[keep].max() < 1e-4
    texts = ["hello world", "", "a longer text about something rather different " * 4]
    np.testing.assert_allclose(
        encode(out, texts, backend="onnx", show_progress=False), encode(folder, texts, show_progress=False), atol=1e-4
    )
    with pytest.raises(FileNotFoundError, match="export-onnx"):
        encode(folder, texts, backend="onnx", show_progress=False)
    assert main(["export-onnx", str(tmp_path / "absent")]) == 2


def test_int8_onnx_is_quantised_close_to_float32_and_backs_encode(tmp_path):
    import onnx

    folder = exported_model(tmp_path)
    assert main(["export", str(folder), "--out", str(tmp_path / "x"), "--int8"]) == 2  # --int8 needs --onnx
    out = tmp_path / "onnx"
    assert main(["export-onnx", str(folder), "--out", str(out), "--int8"]) == 0
    graph = onnx.load(str(out / "model_int8.onnx")).graph
    integer_ops = [node.op_type for node in graph.node if node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    float_matmuls = [node for node in graph.node if node.op_type == "MatMul"]
    assert len(integer_ops) >= 4 * AutoModel.from_pretrained(folder).config.num_hidden_layers
    assert len(float_matmuls) < len(integer_ops)  # only the attention products stay in float
    int8_weights = [w for w in graph.initializer if w.data_type == onnx.TensorProto.INT8 and len(w.dims) == 2]
    assert len(int8_weights) == len(integer_ops)
    texts = ["hello world", "", "a longer text about something rather different " * 4, "short one"]
    exact = encode(folder, texts, show_progress=False)
    int8 = encode(out, texts, backend="onnx-int8", show_progress=False)
    cosine = (int8 * exact).sum(1)
    assert cosine.min() > 0.99
    assert not np.allclose(int8, exact, atol=1e-6)  # it really is the quantised graph
    with pytest.raises(FileNotFoundError, match="--int8"):
        encode(folder, texts, backend="onnx-int8", show_progress=False)
    with pytest.raises(ValueError, match="unknown backend 'onnx-fp8'"):
        encode(out, texts, backend="onnx-fp8", show_progress=False)
