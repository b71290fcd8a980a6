"""The int8 graph for VNNI CPUs: full-range weights on the graph rewritten with onnxruntime's fused attention
and rotary operators, chosen by `backend="onnx-int8"` only where the CPU has VNNI and the folder holds it."""

import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModel

from helpers.embed import exported_model
from neobert.embed import encode
from neobert.export import onnx_files
from neobert.export.onnx_export import export_onnx
from neobert.export.onnx_files import ONNX_INT8_FILE, ONNX_INT8_VNNI_FILE, onnx_int8_file

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
TEXTS = ["hello world", "", "a longer text about something rather different " * 4, "short one", "query: why"]


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory):
    folder = exported_model(tmp_path_factory.mktemp("vnni"))
    export_onnx(folder, int8=True)
    return folder


def with_flags(monkeypatch, *flags: str) -> None:
    monkeypatch.setattr(onnx_files, "cpu_flags", lambda: frozenset(flags))


def test_fused_float_graph_equals_the_traced_one_at_any_batch_and_length(int8_folder, tmp_path):
    from neobert.export.onnx_fused import fuse_for_onnxruntime

    traced = onnx.load(str(int8_folder / "onnx" / "model.onnx"))
    heads = AutoModel.from_pretrained(int8_folder).config.num_attention_heads
    fused = fuse_for_onnxruntime(onnx.load(str(int8_folder / "onnx" / "model.onnx")), heads)
    kinds = [node.op_type for node in fused.graph.node]
    layers = AutoModel.from_pretrained(int8_folder).config.num_hidden_layers
    assert kinds.count("MultiHeadAttention") == layers and kinds.count("RotaryEmbedding") == 2 * layers
    assert "Slice" not in kinds and "Transpose" not in kinds  # no copies left around the fused operators
    assert kinds.count("MatMul") == 5 * layers  # qkv, wo, w1, w2, w3: w12 is two products now
    onnx.save(fused, str(tmp_path / "fused.onnx"))
    run_traced = onnxruntime.InferenceSession(traced.SerializeToString(), providers=["CPUExecutionProvider"])
    run_fused = onnxruntime.InferenceSession(str(tmp_path / "fused.onnx"), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 3), (3, 41), (2, 300)):
        ids = torch.randint(1000, 30000, (batch, length)).numpy()
        mask = np.ones_like(ids)
        mask[-1, length // 2 :] = 0
        feed = {"input_ids": ids, "attention_mask": mask}
        expected, got = (s.run(["last_hidden_state"], feed)[0] for s in (run_traced, run_fused))
        assert np.abs(got - expected)[mask.astype(bool)].max() < 1e-5  # float32 rounding only


def test_vnni_graph_has_full_range_per_channel_weights(int8_folder):
    graph = onnx.load(str(int8_folder / ONNX_INT8_VNNI_FILE)).graph
    weights = {w.name: onnx.numpy_helper.to_array(w) for w in graph.initializer}
    quantised = [name for name, w in weights.items() if name.endswith("_quantized") and w.ndim == 2]
    assert len(quantised) == 5 * AutoModel.from_pretrained(int8_folder).config.num_hidden_layers
    for name in quantised:
        scale = weights[name.removesuffix("_quantized") + "_scale"]
        assert np.abs(weights[name]).max(0).tolist() == [127] * scale.size  # the eighth bit is used, per column


@pytest.mark.skipif(not onnx_files.cpu_has_vnni(), reason="full-range int8 weights saturate without VNNI")
def test_vnni_route_is_close_to_float32_and_closer_than_7_bits(int8_folder):
    exact = encode(int8_folder, TEXTS, show_progress=False)
    vnni = encode(int8_folder, TEXTS, backend="onnx-int8", show_progress=False)
    with pytest.MonkeyPatch.context() as patch:
        with_flags(patch, "avx2")
        seven_bits = encode(int8_folder, TEXTS, backend="onnx-int8", show_progress=False)
    cosine, cosine_7 = (vnni * exact).sum(1), (seven_bits * exact).sum(1)
    # Measured here: 0.99996 smallest (7 bits: 0.99987); neobert-250m on the benchmark's 256 texts: 0.9995 (0.9990).
    assert cosine.min() > 0.9999
    assert cosine.min() > cosine_7.min() and not np.allclose(vnni, exact, atol=1e-6)


def test_host_choice_follows_the_cpu_flags(int8_folder, tmp_path, monkeypatch):
    for flags in (("avx512_vnni", "avx512f"), ("avx_vnni", "avx2"), ("amx_int8",)):
        with_flags(monkeypatch, *flags)
        assert onnx_int8_file(int8_folder) == int8_folder / ONNX_INT8_VNNI_FILE
    for flags in (("avx2", "fma"), ("avx512f", "avx512bw"), ()):
        with_flags(monkeypatch, *flags)
        assert onnx_int8_file(int8_folder) == int8_folder / ONNX_INT8_FILE
    assert onnx_files.onnx_path(int8_folder, "onnx-int8") == int8_folder / ONNX_INT8_FILE  # OpenVINO's, always
    # A folder exported before the VNNI graph existed: its 7-bit graph serves VNNI CPUs too.
    with_flags(monkeypatch, "avx512_vnni")
    older = tmp_path / "older"
    (older / "onnx").mkdir(parents=True)
    (older / ONNX_INT8_FILE).write_bytes((int8_folder / ONNX_INT8_FILE).read_bytes())
    assert onnx_int8_file(older) == older / ONNX_INT8_FILE
    (older / ONNX_INT8_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="model_qint8.onnx does not exist; .*--onnx --int8"):
        onnx_files.onnx_session(older, backend="onnx-int8")


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512_vnni\nbugs\t\t: none\n")
    assert onnx_files.cpu_flags(info) == {"fpu", "sse2", "avx2", "avx512_vnni"}
    assert onnx_files.cpu_flags(tmp_path / "absent") == frozenset()  # no /proc/cpuinfo (macOS, Windows): no VNNI


def test_row_split_session_equals_one_run_over_the_whole_batch(int8_folder):
    from neobert.export.onnx_files import ONNX_FILE, onnx_session

    whole = onnxruntime.InferenceSession(str(int8_folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    lengths = [37, 30, 30, 12, 9, 5, 2]
    ids = torch.randint(1000, 30000, (len(lengths), max(lengths))).numpy()
    mask = (np.arange(max(lengths))[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": mask}
    names = ["last_hidden_state", "sentence_embedding"]
    expected = whole.run(names, feed)
    for workers in (1, 2, 3, 16):
        hidden, pooled = onnx_session(int8_folder, threads=workers).run(names, feed)
        assert hidden.shape == expected[0].shape and pooled.shape == expected[1].shape
        assert np.abs(hidden - expected[0])[mask.astype(bool)].max() < 1e-5
        np.testing.assert_allclose(pooled, expected[1], atol=1e-5)


def test_a_batch_smaller_than_the_workers_runs_whole_on_every_thread(int8_folder, monkeypatch):
    from neobert.export import onnx_files

    opened = []
    real = onnxruntime.InferenceSession

    def recording(path, options=None, **kwargs):
        opened.append(options.intra_op_num_threads)
        return real(path, options, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    session = onnx_files.onnx_session(int8_folder, threads=4)
    assert opened == [1]  # the row workers' session; the threaded one waits for a small batch
    whole = real(str(int8_folder / onnx_files.ONNX_FILE), providers=["CPUExecutionProvider"])
    names = ["last_hidden_state", "sentence_embedding"]
    for rows in (1, 3, 1):
        ids = torch.randint(1000, 30000, (rows, 11)).numpy()
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        hidden, pooled = session.run(names, feed)
        expected = whole.run(names, feed)
        assert np.abs(hidden - expected[0]).max() < 1e-5 and np.abs(pooled - expected[1]).max() < 1e-5
    assert opened == [1, 4]  # opened once, on the first small batch, with all four threads


def test_a_graph_the_rewrite_cannot_fuse_still_gets_its_portable_int8_file(int8_folder, tmp_path, monkeypatch):
    from neobert.export import onnx_export
    from neobert.export.onnx_fused import UnfusableGraph

    folder = tmp_path / "copy"
    shutil.copytree(int8_folder, folder)
    before = (folder / ONNX_INT8_VNNI_FILE).read_bytes()  # a previous export's VNNI graph: stale after this one

    def unfusable(model, heads):
        raise UnfusableGraph("layer 0: no output projection or no constant qkv weight")

    monkeypatch.setattr(onnx_export, "fuse_for_onnxruntime", unfusable)
    (folder / ONNX_INT8_FILE).unlink()
    with pytest.warns(UserWarning, match=r"model_qint8_avx512_vnni.onnx not written: .*layer 0: no output projection"):
        assert onnx_export.quantize_onnx(folder) == folder / ONNX_INT8_FILE
    assert before and not (folder / ONNX_INT8_VNNI_FILE).exists()
    assert (folder / ONNX_INT8_FILE).read_bytes() == (int8_folder / ONNX_INT8_FILE).read_bytes()
    with_flags(monkeypatch, "avx512_vnni")
    assert onnx_int8_file(folder) == folder / ONNX_INT8_FILE


def test_a_float_reexport_removes_the_earlier_int8_graphs(int8_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(int8_folder, folder)
    legacy = folder / "model_int8.onnx"  # an export of the older layout, read when onnx/ has no int8 graph
    legacy.write_bytes((folder / ONNX_INT8_FILE).read_bytes())
    with pytest.warns(UserWarning, match=r"removed onnx/model_qint8.onnx, onnx/model_qint8_avx512_vnni.onnx, "):
        export_onnx(folder)
    assert not (folder / ONNX_INT8_FILE).exists()
    assert not (folder / ONNX_INT8_VNNI_FILE).exists()
    assert not legacy.exists()
    with pytest.raises(FileNotFoundError, match="--int8"):
        encode(folder, TEXTS, backend="onnx-int8")
    # The float graph is the new one and serves as before.
    reference = encode(int8_folder, TEXTS, backend="onnx")
    np.testing.assert_allclose(encode(folder, TEXTS, backend="onnx"), reference, atol=1e-6)


def test_an_export_into_another_folder_does_not_carry_the_sources_graphs(int8_folder, tmp_path, recwarn):
    out = tmp_path / "served"
    export_onnx(int8_folder, out)
    assert (out / "onnx" / "model.onnx").is_file()
    assert not (out / ONNX_INT8_FILE).exists() and not (out / ONNX_INT8_VNNI_FILE).exists()
    assert not [w for w in recwarn if "an earlier int8 export" in str(w.message)]  # nothing copied to remove
    assert (int8_folder / ONNX_INT8_FILE).is_file()  # the source folder keeps its own
