"""ONNX export: onnxruntime matches PyTorch (max difference 1e-4) and serves `encode` as a backend."""

import numpy as np
import pytest
import torch
from transformers import AutoModel

from helpers.embed import exported_model
from neobert.cli import main
from neobert.embed import encode

onnxruntime = pytest.importorskip("onnxruntime")


def test_onnx_matches_pytorch_and_backs_encode(tmp_path):
    folder = exported_model(tmp_path)
    out = tmp_path / "onnx"
    assert main(["export-onnx", "--model", str(folder), "--out", str(out)]) == 0
    from neobert.export.onnx_files import onnx_session

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
        (got,) = session.run(["last_hidden_state"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        keep = mask.bool().numpy()
        assert np.abs(got - expected)[keep].max() < 1e-4
    texts = ["hello world", "", "a longer text about something rather different " * 4]
    np.testing.assert_allclose(
        encode(out, texts, backend="onnx", show_progress=False), encode(folder, texts, show_progress=False), atol=1e-4
    )
    with pytest.raises(FileNotFoundError, match="export --model .* --onnx"):
        encode(folder, texts, backend="onnx", show_progress=False)
    assert main(["export", "--model", str(tmp_path / "absent"), "--onnx"]) == 2


def assert_per_output_channel(int8_graph, float_graph) -> None:
    """Each int8 weight (in, out) has one scale per output column: the float column's largest magnitude
    over 64 (7 bits, so that on CPUs without VNNI two uint8 x int8 products summed in int16 cannot saturate:
    255 * 64 * 2 <= 32,767), and the column back from int8 within half a step of the float one."""
    from onnx import numpy_helper

    floats = {w.name: numpy_helper.to_array(w) for w in float_graph.initializer}
    quantised = {w.name: numpy_helper.to_array(w) for w in int8_graph.initializer}
    checked = 0
    for name, values in quantised.items():
        if not name.endswith("_quantized") or values.dtype != np.int8 or values.ndim != 2:
            continue
        base = name.removesuffix("_quantized")
        weight, scale, zero = floats[base], quantised[base + "_scale"], quantised[base + "_zero_point"]
        assert scale.shape == zero.shape == (weight.shape[1],), base
        np.testing.assert_allclose(scale, np.abs(weight).max(0) / 64, rtol=1e-6)
        assert values.min() >= -64 and values.max() <= 64, base
        restored = (values.astype(np.float32) - zero) * scale
        assert (np.abs(restored - weight) <= scale / 2 + 1e-7).all(), base
        assert np.ptp(scale) > 0, base  # the columns really have scales of their own
        checked += 1
    assert checked > 0


def test_export_with_onnx_writes_both_graphs_next_to_the_model(tmp_path):
    folder = exported_model(tmp_path)
    out = tmp_path / "with-onnx"
    assert main(["export", "--model", str(folder), "--out", str(out), "--onnx", "--int8"]) == 0
    texts = ["hello world", "", "a longer text about something rather different " * 4]
    reference = encode(folder, texts, show_progress=False)
    np.testing.assert_allclose(encode(out, texts, backend="onnx", show_progress=False), reference, atol=1e-4)
    assert (out / "onnx" / "model_qint8.onnx").is_file() and (out / "modules.json").is_file()
    np.testing.assert_allclose(encode(out, texts, show_progress=False), reference, atol=1e-6)


def test_int8_onnx_is_quantised_close_to_float32_and_backs_encode(tmp_path):
    import onnx

    folder = exported_model(tmp_path)
    assert main(["export", "--model", str(folder), "--out", str(tmp_path / "x"), "--int8"]) == 2  # --int8 needs --onnx
    out = tmp_path / "onnx"
    assert main(["export-onnx", "--model", str(folder), "--out", str(out), "--int8"]) == 0
    graph = onnx.load(str(out / "onnx" / "model_qint8.onnx")).graph
    integer_ops = [node.op_type for node in graph.node if node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    float_matmuls = [node for node in graph.node if node.op_type == "MatMul"]
    assert len(integer_ops) >= 4 * AutoModel.from_pretrained(folder).config.num_hidden_layers
    assert len(float_matmuls) < len(integer_ops)  # only the attention products stay in float
    int8_weights = [w for w in graph.initializer if w.data_type == onnx.TensorProto.INT8 and len(w.dims) == 2]
    assert len(int8_weights) == len(integer_ops)
    assert_per_output_channel(graph, onnx.load(str(out / "onnx" / "model.onnx")).graph)
    texts = ["hello world", "", "a longer text about something rather different " * 4, "short one"]
    exact = encode(folder, texts, show_progress=False)
    int8 = encode(out, texts, backend="onnx-int8", show_progress=False)
    cosine = (int8 * exact).sum(1)
    assert cosine.min() > 0.999  # 0.9999 measured on VNNI and on AVX2-only CPUs (qemu -cpu Haswell)
    assert not np.allclose(int8, exact, atol=1e-6)  # it really is the quantised graph
    with pytest.raises(FileNotFoundError, match="--int8"):
        encode(folder, texts, backend="onnx-int8", show_progress=False)
    with pytest.raises(ValueError, match="unknown backend 'onnx-fp8'"):
        encode(out, texts, backend="onnx-fp8", show_progress=False)
