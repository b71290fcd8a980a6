"""OpenVINO backends of `encode`: the exported ONNX graph compiled by OpenVINO matches PyTorch (1e-4 fp32) in
padded batches and every pooling, compiles once per graph, and names what is missing."""

import sys

import numpy as np
import pytest
import torch
from transformers import AutoModel

from helpers.embed import exported_model
from neobert.cli import main
from neobert.embed import encode, load_embedder

pytest.importorskip("onnxruntime")  # the int8 export quantises with onnxruntime's tools
pytest.importorskip("openvino")

TEXTS = [
    "hello world",
    "",
    "a longer text about something rather different " * 6,
    "short one",
    "the fourth text, of middling length, with punctuation; and more words",
]


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory):
    """A tiny random model stored with max pooling (not encode's default), exported with both graphs."""
    from neobert.export.onnx_export import export_onnx

    folder = exported_model(tmp_path_factory.mktemp("openvino"), pooling="max")
    export_onnx(folder, int8=True)
    return folder


def test_graph_matches_pytorch_at_any_batch_and_length(onnx_folder):
    from neobert.openvino_backend import openvino_session

    session = openvino_session(onnx_folder)
    model = AutoModel.from_pretrained(onnx_folder).eval()
    for batch, length in ((1, 5), (3, 41), (2, 130), (4, 300)):  # one compilation, many shapes
        ids = torch.randint(1000, 30000, (batch, length))
        mask = torch.ones_like(ids)
        mask[-1, length // 2 :] = 0
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        (got,) = session.run(["last_hidden_state"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        assert np.abs(got - expected)[mask.bool().numpy()].max() < 1e-4


@pytest.mark.parametrize("pooling", [None, "mean", "cls", "max"])
def test_openvino_encode_equals_pytorch_in_every_pooling(onnx_folder, pooling):
    # batch_size 2: several padded batches of different lengths go through the one compiled model
    common = dict(pooling=pooling, batch_size=2, show_progress=False)
    expected = encode(onnx_folder, TEXTS, **common)
    got = encode(onnx_folder, TEXTS, backend="openvino", **common)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)
    unnormalised = encode(onnx_folder, TEXTS, backend="openvino", normalize=False, **common)
    np.testing.assert_allclose(unnormalised, encode(onnx_folder, TEXTS, normalize=False, **common), atol=1e-4)


def test_stored_pooling_is_the_default(onnx_folder):
    got = encode(onnx_folder, TEXTS, backend="openvino", show_progress=False)
    np.testing.assert_allclose(got, encode(onnx_folder, TEXTS, pooling="max", show_progress=False), atol=1e-4)
    assert not np.allclose(got, encode(onnx_folder, TEXTS, pooling="mean", show_progress=False), atol=1e-3)


def test_int8_is_close_to_float32(onnx_folder):
    exact = encode(onnx_folder, TEXTS, show_progress=False)
    int8 = encode(onnx_folder, TEXTS, backend="openvino-int8", show_progress=False)
    assert int8.shape == exact.shape
    assert (int8 * exact).sum(1).min() > 0.99
    assert not np.array_equal(int8, encode(onnx_folder, TEXTS, backend="openvino", show_progress=False))


def test_bf16_is_close_to_float32_and_computes_in_bf16_where_the_cpu_can(onnx_folder):
    import openvino

    exact = encode(onnx_folder, TEXTS, show_progress=False)
    bf16 = encode(onnx_folder, TEXTS, backend="openvino-bf16", batch_size=2, show_progress=False)
    assert bf16.shape == exact.shape
    assert (bf16 * exact).sum(1).min() > 0.999
    compiled = load_embedder(onnx_folder, "openvino-bf16").onnx_session.compiled
    cpu_has_bf16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    expected = openvino.Type.bf16 if cpu_has_bf16 else openvino.Type.f32
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == expected
    if cpu_has_bf16:
        assert not np.allclose(bf16, encode(onnx_folder, TEXTS, backend="openvino", show_progress=False), atol=1e-6)


def test_one_compilation_per_graph(onnx_folder):
    first, second = load_embedder(onnx_folder, "openvino"), load_embedder(onnx_folder, "openvino")
    assert first.onnx_session.compiled is second.onnx_session.compiled
    int8 = load_embedder(onnx_folder, "openvino-int8")
    assert int8.onnx_session.compiled is not first.onnx_session.compiled
    assert int8.onnx_session.path.name == "model_qint8.onnx"
    bf16 = load_embedder(onnx_folder, "openvino-bf16")  # the same file, another precision
    assert bf16.onnx_session.compiled is not first.onnx_session.compiled
    assert bf16.onnx_session.compiled is load_embedder(onnx_folder, "openvino-bf16").onnx_session.compiled


def test_missing_graph_names_the_export_command(tmp_path):
    folder = exported_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="export .*--onnx"):
        encode(folder, TEXTS, backend="openvino", show_progress=False)
    with pytest.raises(FileNotFoundError, match="--onnx --int8"):
        encode(folder, TEXTS, backend="openvino-int8", show_progress=False)


def test_missing_openvino_is_named(onnx_folder, monkeypatch, tmp_path, capsys):
    from neobert.openvino_backend import OpenVINOMissing, _compiled

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    monkeypatch.setattr("neobert.openvino_backend._compiled", type(_compiled)())
    with pytest.raises(OpenVINOMissing, match=r"pip install 'neobert\[openvino\]'"):
        encode(onnx_folder, TEXTS, backend="openvino", show_progress=False)
    texts = tmp_path / "texts.txt"
    texts.write_text("hello\n")
    out = tmp_path / "vectors.npy"
    code = main(
        ["encode", "--model", str(onnx_folder), "--input", str(texts), "--out", str(out)] + ["--backend", "openvino"]
    )
    assert code == 2 and not out.exists()
    assert "neobert[openvino]" in capsys.readouterr().err
