"""Damaged corpora and awkward inputs: checksums checked on use and on a rerun of prepare, files left out of a
folder, fine-tuning tables that are empty or not UTF-8."""

from __future__ import annotations

import os

import numpy as np
import pytest

from helpers.data import files_of, prepare_files, sample_texts, write_jsonl
from neobert.cli import main
from neobert.data.loader import LoaderConfig, PretrainingLoader
from neobert.data.sequences import TokenCorpus
from neobert.data.shards import DataError, load_manifest
from neobert.finetune.data import FinetuneDataError, read_rows


def overwrite_in_range(path, seed=0):
    """Same size, same header, valid token ids: only the checksum tells the shard was replaced."""
    array = np.load(path)
    garbage = np.random.default_rng(seed).integers(1000, 2000, array.shape).astype(array.dtype)
    temporary = path.with_name(path.name + ".new.npy")
    np.save(temporary, garbage)
    os.replace(temporary, path)


@pytest.fixture
def prepared(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", sample_texts(120, seed=5, long_every=0))
    prepare_files([source], tmp_path / "out", heldout_fraction=0.1, shard_tokens=1500)
    return source, tmp_path / "out"


def test_a_replaced_shard_is_named_on_first_use_and_prepare_recreates_it(prepared, capsys):
    source, out = prepared
    original = files_of(out)
    shard = out / "train" / "shard_00001.tokens.npy"
    overwrite_in_range(shard)
    corpus = TokenCorpus(out)  # opening reads only the offsets; the damaged tokens file is not read yet
    first_of_shard_1 = corpus.first_document(1)
    with pytest.raises(DataError, match=f"{shard}: checksum mismatch.*run the same `neobert prepare`"):
        corpus.document(first_of_shard_1)
    with pytest.raises(DataError, match="shard_00001.tokens.npy: checksum mismatch"):
        PretrainingLoader(LoaderConfig(str(out), batch_size=200, epochs=1))  # its first window reads every shard

    capsys.readouterr()
    summary = prepare_files([source], out, heldout_fraction=0.1, shard_tokens=1500)
    assert "shard_00001.tokens.npy: checksum mismatch" in capsys.readouterr().out
    assert not summary.already_complete and summary.reused_blocks == 1
    assert files_of(out) == original
    next(PretrainingLoader(LoaderConfig(str(out), batch_size=200, epochs=1)))


def test_a_rerun_of_an_intact_corpus_checks_it_and_does_nothing(prepared):
    source, out = prepared
    summary = prepare_files([source], out, heldout_fraction=0.1, shard_tokens=1500)
    assert summary.already_complete and "every shard matches its checksum" in summary.describe()


def test_a_replaced_offsets_file_is_named_when_the_corpus_is_opened(prepared):
    _, out = prepared
    offsets = out / "heldout" / "shard_00000.offsets.npy"
    array = np.load(offsets)
    array[1:-1] = np.sort(np.random.default_rng(1).integers(0, array[-1], len(array) - 2))
    np.save(offsets, array)
    with pytest.raises(DataError, match=f"{offsets}: checksum mismatch"):
        TokenCorpus(out, "heldout")


def test_prepare_counts_the_files_it_leaves_out_and_can_read_them_as_text(tmp_path, capsys):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("\n\n".join(sample_texts(20, seed=1, long_every=0)), encoding="utf-8")
    for name in ("notes.log", "README", "b.text.bak"):
        (folder / name).write_text("\n\n".join(sample_texts(5, seed=2, long_every=0)), encoding="utf-8")
    assert main(["prepare", str(folder), "--out", str(tmp_path / "known"), "--workers", "1", "--no-progress"]) == 0
    note = capsys.readouterr().err
    assert "left out 3 file(s) without a known suffix (README, b.text.bak, notes.log)" in note
    assert "--unknown-as-text" in note
    command = ["prepare", str(folder), "--out", str(tmp_path / "all"), "--workers", "1", "--no-progress"]
    assert main([*command, "--unknown-as-text"]) == 0
    assert "left out" not in capsys.readouterr().err
    for name, documents in (("known", 20), ("all", 35)):
        splits = load_manifest(tmp_path / name)["splits"]
        assert splits["train"]["documents"] + splits["heldout"]["documents"] == documents


def test_an_empty_finetuning_table_is_named(tmp_path):
    empty = tmp_path / "train.csv"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(FinetuneDataError, match=f"{empty}: the file is empty"):
        read_rows(empty)


def test_bytes_that_are_not_utf8_are_named_with_their_line(tmp_path):
    latin1 = tmp_path / "train.csv"
    latin1.write_bytes("text,label\ngood row,1\nun caf\xe9 noir,0\n".encode("latin-1"))
    with pytest.raises(FinetuneDataError, match=f"{latin1}:3:7: byte 0xe9 is not UTF-8"):
        read_rows(latin1)
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_bytes(b'{"text": "ok", "label": 1}\n{"text": "\xff", "label": 0}\n')
    with pytest.raises(FinetuneDataError, match=f"{jsonl}:2:11: byte 0xff is not UTF-8"):
        read_rows(jsonl)
