"""`neobert export --onnx` writes the folder Text Embeddings Inference's ONNX Runtime backend reads, and the
graph, driven the way that backend drives it, gives `neobert.encode`'s vectors (1e-4, float32)."""

import json
import os
import shutil
import stat

import numpy as np
import pytest

from helpers.embed import exported_model
from neobert.cli import main
from neobert.embed import encode

onnxruntime = pytest.importorskip("onnxruntime")
tokenizers = pytest.importorskip("tokenizers")

TEXTS = ["hello world", "", "a longer text about something rather different " * 6, "short one", "x y z"]


def tei_batch(folder, texts):
    """As TEI: the folder's tokenizer.json without padding, each text cut at sentence_bert_config's
    max_seq_length, then the batch padded on the right (input_ids 0, attention_mask 0)."""
    tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    limit = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    rows = [encoding.ids[:limit] for encoding in tokenizer.encode_batch(texts)]
    width = max(map(len, rows))
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = row
        mask[index, : len(row)] = 1
    return ids, mask


def tei_pooling(folder) -> str:
    """The pooling TEI takes from 1_Pooling/config.json: its per-mode flags (both must be there)."""
    settings = json.loads((folder / "1_Pooling" / "config.json").read_text())
    if settings["pooling_mode_cls_token"]:
        return "cls"
    if settings["pooling_mode_mean_tokens"]:
        return "mean"
    raise AssertionError(f"TEI serves cls or mean pooling, not {settings}")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_export_onnx_folder_serves_as_text_embeddings_inference_reads_it(tmp_path, pooling):
    exported_model(tmp_path, pooling=pooling)
    out = tmp_path / "served"
    assert (
        main(["export", "--model", str(tmp_path / "raw"), "--out", str(out), "--pooling", pooling, "--onnx", "--int8"])
        == 0
    )
    for name in ("onnx/model.onnx", "onnx/model_qint8.onnx", "tokenizer.json", "modules.json"):
        assert (out / name).is_file(), name
    assert not (out / "model.onnx").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] and config["model_type"] == "neobert"
    assert config["max_position_embeddings"] == config["max_length"]
    assert tei_pooling(out) == pooling

    session = onnxruntime.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "sentence_embedding"]
    ids, mask = tei_batch(out, TEXTS)
    assert mask.sum(1).min() < mask.shape[1]  # really padded
    hidden, sentence = session.run(None, {"input_ids": ids, "attention_mask": mask})

    expected = encode(out, TEXTS, normalize=False, show_progress=False)
    np.testing.assert_allclose(sentence, expected, atol=1e-4)
    # TEI's other route: pool last_hidden_state itself, by the folder's pooling.
    keep = mask[..., None].astype(np.float32)
    pooled = hidden[:, 0] if pooling == "cls" else (hidden * keep).sum(1) / keep.sum(1)
    np.testing.assert_allclose(pooled, expected, atol=1e-4)
    normalised = sentence / np.linalg.norm(sentence, axis=1, keepdims=True)  # TEI's normalize=true
    np.testing.assert_allclose(normalised, encode(out, TEXTS, show_progress=False), atol=1e-4)
    # sentence-transformers reads the pooling as before (pooling_mode first).
    from neobert.embed import stored_pooling

    assert stored_pooling(out) == pooling


def test_a_folder_of_the_older_layout_still_backs_encode(tmp_path, capsys):
    folder = exported_model(tmp_path)
    capsys.readouterr()
    assert main(["export", "--model", str(folder), "--onnx", "--int8"]) == 0
    graphs = [folder / "onnx" / name for name in ("model.onnx", "model_qint8.onnx", "model_qint8_avx512_vnni.onnx")]
    assert capsys.readouterr().out == f"wrote {', '.join(map(str, graphs))}\n"  # what was written, and only that
    reference = encode(folder, TEXTS, backend="onnx", show_progress=False)
    int8 = encode(folder, TEXTS, backend="onnx-int8", show_progress=False)
    # An export made before the serving layout: the graphs at the top of the folder.
    shutil.move(folder / "onnx" / "model.onnx", folder / "model.onnx")
    shutil.move(folder / "onnx" / "model_qint8.onnx", folder / "model_int8.onnx")
    np.testing.assert_array_equal(encode(folder, TEXTS, backend="onnx", show_progress=False), reference)
    np.testing.assert_array_equal(encode(folder, TEXTS, backend="onnx-int8", show_progress=False), int8)


def test_written_graphs_and_vectors_follow_the_umask(tmp_path):
    folder = exported_model(tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("hello\nworld\n")
    previous = os.umask(0o027)
    try:
        assert main(["export-onnx", "--model", str(folder), "--out", str(tmp_path / "onnx-out"), "--int8"]) == 0
        assert main(["encode", "--model", str(folder), "--input", str(texts), "--out", str(tmp_path / "v.npy")]) == 0
    finally:
        os.umask(previous)
    for path in (
        tmp_path / "onnx-out" / "onnx" / "model.onnx",
        tmp_path / "onnx-out" / "onnx" / "model_qint8.onnx",
        tmp_path / "onnx-out" / "1_Pooling" / "config.json",
        tmp_path / "v.npy",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    assert stat.S_IMODE((tmp_path / "onnx-out" / "onnx").stat().st_mode) == 0o750
