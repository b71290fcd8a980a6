"""Bad input gives a clear error naming the file (or a count of skipped lines), and loses nothing."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from helpers.data import files_of, prepare_files, sample_texts, write_jsonl
from neobert.data.loader import LoaderConfig, build_loader
from neobert.data.sequences import TokenCorpus
from neobert.data.shards import DataError, verify_corpus


def test_empty_file_is_named(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.txt: the file is empty"):
        prepare_files([tmp_path / "empty.txt"], tmp_path / "out")
    (tmp_path / "blank.jsonl").write_text('{"text": "  "}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"blank\.jsonl: no text found"):
        prepare_files([tmp_path / "blank.jsonl"], tmp_path / "out2")


def test_missing_text_field_is_named_before_any_work(tmp_path):
    write_jsonl(tmp_path / "good.jsonl", sample_texts(5))
    write_jsonl(tmp_path / "bad.jsonl", sample_texts(5), field="body")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: no field 'text' \(fields: body, id\)"):
        prepare_files([tmp_path / "good.jsonl", tmp_path / "bad.jsonl"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with open(tmp_path / "bad.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["title", "body"], ["a", "b"]])
    with pytest.raises(DataError, match=r"bad\.csv: no column 'text' \(columns: title, body\)"):
        prepare_files([tmp_path / "bad.csv"], tmp_path / "out")


def test_a_later_record_without_the_field_is_named_with_its_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"other": 1}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mixed\.jsonl:2: no field 'text'"):
        prepare_files([path], tmp_path / "out")


def test_undecodable_lines_are_skipped_and_counted(tmp_path):
    good = sample_texts(4, long_every=0)
    path = tmp_path / "latin1.jsonl"
    lines = [json.dumps({"text": t}).encode() for t in good]
    lines.insert(2, '{"text": "caf\xe9 cr\xe8me"}'.encode("latin-1"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    text_path = tmp_path / "latin1.txt"
    text_path.write_bytes(b"fine line\n\nbad \xff\xfe line\nand more\n")
    summary = prepare_files([path, text_path], tmp_path / "out", heldout_fraction=0.0)
    assert summary.manifest["stats"]["undecodable_lines"] == 2
    assert [s["undecodable_lines"] for s in summary.manifest["sources"]] == [1, 1]
    assert summary.manifest["splits"]["train"]["documents"] == 4 + 2
    assert "2 undecodable line(s)" in summary.describe()


def _prepared(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", sample_texts(60))
    prepare_files([tmp_path / "in.jsonl"], tmp_path / "out", shard_tokens=3000)
    return tmp_path / "out"


def test_truncated_shard_is_named(tmp_path):
    out = _prepared(tmp_path)
    shard = out / "train" / "shard_00001.tokens.npy"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"shard_00001\.tokens\.npy: .*truncated"):
        TokenCorpus(out)
    with pytest.raises(DataError, match=r"shard_00001\.tokens\.npy"):
        build_loader(LoaderConfig(str(out)))


def test_corrupted_shard_fails_its_checksum_and_prepare_redoes_only_that(tmp_path):
    out = _prepared(tmp_path)
    before = files_of(out)
    shard = out / "train" / "shard_00002.tokens.npy"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    TokenCorpus(out)  # sizes still match: only the checksum can tell
    with pytest.raises(DataError, match=r"shard_00002\.tokens\.npy: checksum mismatch"):
        verify_corpus(out)
    (out / "manifest.json").unlink()  # an interrupted run: the next prepare verifies every finished block
    summary = prepare_files([tmp_path / "in.jsonl"], out, shard_tokens=3000)
    assert summary.reused_blocks == 2
    assert verify_corpus(out) > 0
    assert files_of(out) == before


def test_manifest_from_another_tokenizer_is_refused(tmp_path):
    out = _prepared(tmp_path)
    with pytest.raises(DataError, match=r"manifest\.json: the corpus was tokenised with .* not with this tokenizer"):
        TokenCorpus(out, tokenizer_fingerprint="0" * 64)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tokenizer"]["fingerprint"] = "f" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    from helpers.data import tokenizer

    with pytest.raises(DataError, match=r"manifest\.json: the corpus was tokenised"):
        build_loader(LoaderConfig(str(out)), tokenizer=tokenizer())


def test_not_a_corpus_and_foreign_output_folder(tmp_path):
    with pytest.raises(DataError, match="not a prepared corpus"):
        TokenCorpus(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", sample_texts(3))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and holds no prepared corpus"):
        prepare_files([tmp_path / "in.jsonl"], tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_error_mid_stream_keeps_finished_shards(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", sample_texts(80))
    broken = tmp_path / "b.jsonl"
    broken.write_text(json.dumps({"text": "ok"}) + "\n{broken json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"b\.jsonl:2:2: not valid JSON"):
        prepare_files([tmp_path / "a.jsonl", broken], tmp_path / "out", shard_tokens=3000, batch_bytes=2000)
    finished = sorted((tmp_path / "out" / "progress").glob("*.json"))
    assert len(finished) >= 2
    tokens = np.load(tmp_path / "out" / "train" / "shard_00000.tokens.npy")
    assert tokens.size > 0
