"""`encode`, `neobert encode` and the MTEB wrapper pool as the exported folder says (its sentence-transformers
Pooling module), so they give SentenceTransformer's vectors; an explicit `pooling=` overrides the folder."""

import json

import numpy as np
import pytest

import neobert  # noqa: F401  (registers the model type for sentence-transformers' AutoModel)
from helpers.embed import exported_model
from neobert.cli import main
from neobert.embed import encode, load_embedder, stored_pooling

sentence_transformers = pytest.importorskip("sentence_transformers")

POOLINGS = ("mean", "cls", "max")
TEXTS = ["the quick brown fox", "", "a much longer second sentence, with punctuation and more words", "b"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One folder per pooling, all with the same weights (the same seed)."""
    return {pooling: exported_model(tmp_path_factory.mktemp(pooling), pooling=pooling) for pooling in POOLINGS}


@pytest.fixture(scope="module")
def theirs(folders):
    """SentenceTransformer's unnormalised vectors of TEXTS from each folder."""
    vectors = {}
    for pooling, folder in folders.items():
        model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
        vectors[pooling] = model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)
    return vectors


@pytest.mark.parametrize("pooling", POOLINGS)
def test_encode_uses_the_folders_pooling(folders, theirs, pooling):
    assert stored_pooling(folders[pooling]) == pooling
    ours = encode(folders[pooling], TEXTS, normalize=False, show_progress=False)
    np.testing.assert_allclose(ours, theirs[pooling], atol=1e-5, rtol=0)
    padded = encode(load_embedder(folders[pooling]), TEXTS, normalize=False, packed=False, show_progress=False)
    np.testing.assert_allclose(padded, theirs[pooling], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_an_explicit_pooling_overrides_the_folders(folders, theirs, pooling):
    for other in POOLINGS:
        if other != pooling:
            ours = encode(folders[pooling], TEXTS, pooling=other, normalize=False, show_progress=False)
            np.testing.assert_allclose(ours, theirs[other], atol=1e-5, rtol=0)


def test_encode_command_uses_the_folders_pooling(folders, theirs, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n")
    out = tmp_path / "docs.npy"
    command = ["encode", "--model", str(folders["cls"]), "--input", str(source), "--out", str(out), "--no-normalize"]
    assert main(command) == 0
    np.testing.assert_allclose(np.load(out), theirs["cls"], atol=1e-5, rtol=0)
    assert main([*command, "--pooling", "max"]) == 0
    np.testing.assert_allclose(np.load(out), theirs["max"], atol=1e-5, rtol=0)


def test_a_pooling_encode_lacks_is_named(folders, tmp_path):
    folder = tmp_path / "weighted"
    folder.mkdir()
    for item in folders["mean"].iterdir():
        if item.is_file():
            (folder / item.name).write_bytes(item.read_bytes())
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "weightedmean"}))
    with pytest.raises(ValueError, match="'weightedmean' pooling"):
        encode(folder, TEXTS, show_progress=False)
    assert encode(folder, TEXTS, pooling="mean", show_progress=False).shape == (len(TEXTS), 64)


def test_older_sentence_transformers_flags_are_read(tmp_path):
    (tmp_path / "modules.json").write_text(
        json.dumps([{"idx": 1, "name": "1", "path": "pool", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "pool").mkdir()
    flags = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}
    (tmp_path / "pool" / "config.json").write_text(json.dumps(flags))
    assert stored_pooling(tmp_path) == "max"
    assert stored_pooling(tmp_path / "pool") is None  # no modules.json: no stored pooling
