"""`prepare`: exact token ids, byte-identical output whatever the workers, resume after an interruption."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import numpy as np
import pytest

from helpers.data import content_ids, files_of, prepare_files, sample_texts, tokenizer, write_jsonl
from neobert.data.prepare import PrepareConfig, prepare
from neobert.data.sequences import TokenCorpus
from neobert.data.shards import DataError, load_manifest
from neobert.data.sources import ReaderOptions, Source, resolve_sources
from neobert.data.tokenization import DocumentEncoder, TokenizerSpec


def corpus_documents(folder, split="train") -> list[list[int]]:
    corpus = TokenCorpus(folder, split)
    return [corpus.document(i).tolist() for i in range(len(corpus))]


def test_shards_hold_the_tokenizers_ids_without_specials(tmp_path):
    texts = sample_texts(40) + [
        "Tabs\tand\x0bvertical tab, ﬁ ligature, 東京 and ÉCOLE.",
        "[MASK] stays a token.",
    ]
    write_jsonl(tmp_path / "in.jsonl", texts)
    summary = prepare_files([tmp_path / "in.jsonl"], tmp_path / "out", heldout_fraction=0.0)
    assert corpus_documents(tmp_path / "out") == content_ids(texts)
    manifest = summary.manifest
    assert manifest["tokenizer"]["dtype"] == "uint16"
    assert manifest["splits"]["train"]["documents"] == len(texts)
    assert manifest["splits"]["train"]["tokens"] == sum(map(len, content_ids(texts)))
    assert np.load(tmp_path / "out" / "train" / "shard_00000.tokens.npy").dtype == np.uint16


def test_word_path_matches_the_tokenizer():
    rng = random.Random(1)
    ascii_chars = [chr(c) for c in range(32, 127)] + ["\t", "\n", "\r", " "] * 8
    texts = ["".join(rng.choice(ascii_chars) for _ in range(rng.randint(0, 300))) for _ in range(300)]
    texts += [t.upper() for t in sample_texts(20, seed=3)]
    texts += ["x" * 150 + " long words become [UNK]", "Added tokens: [CLS] [SEP] [MASK] stay whole", "a\x0bb"]
    # Unicode: accents, Greek (capital sigma), Cyrillic, CJK, Hangul, punctuation, symbols, emoji, combining
    # marks, spaces, format and control characters, the replacement character.
    unicode_chars = list(
        "éÉàçñøßÆœĳŁİıΣσςΑθЖжщ中文字日本語한국어’‘“”…—–¡¿«»·•£€©™°½²µ😀🙂👍🏽"
        "\u0301\u0308\u0327\u0903\u0f71\u00a0\u2009\u3000\u2028\u200b\u200f\ufeff\u0085\ufffd\u00ad\U0001d165"
    )
    pool = ascii_chars + unicode_chars * 3
    texts += ["".join(rng.choice(pool) for _ in range(rng.randint(1, 200))) for _ in range(400)]
    texts += ["ΣΟΦΙΑ ΚΑΙ ΛΟΓΟΣ", "Crème brûlée at the Café", "한국어 텍스트", "naïve coöperation"]
    encoder = DocumentEncoder(TokenizerSpec.from_tokenizer(tokenizer()))
    assert encoder.words is not None
    expected = content_ids(texts)
    assert encoder.token_ids(texts) == expected
    assert encoder.token_ids(texts) == expected  # again, from the word cache and learned characters
    # It really went through the word path where it could.
    assert all(map(encoder.words.accepts, texts[:320] + ["Crème brûlée at the Café", "한국어 텍스트", "naïve"]))
    assert not encoder.words.accepts("ΣΟΦΙΑ ΚΑΙ ΛΟΓΟΣ") and not encoder.words.accepts("[MASK] here")
    # Refused: capital sigma (context-dependent lower case); a spacing mark that NFD could reorder.
    assert encoder.words.refused == {"\u03a3", "\U0001d165"}


def test_heldout_split_is_by_text_and_stable(tmp_path):
    texts = sample_texts(400, long_every=0)
    write_jsonl(tmp_path / "a.jsonl", texts)
    write_jsonl(tmp_path / "b.jsonl", list(reversed(texts)))
    prepare_files([tmp_path / "a.jsonl"], tmp_path / "a", heldout_fraction=0.2)
    prepare_files([tmp_path / "b.jsonl"], tmp_path / "b", heldout_fraction=0.2)
    held_a, held_b = corpus_documents(tmp_path / "a", "heldout"), corpus_documents(tmp_path / "b", "heldout")
    assert 40 <= len(held_a) <= 120
    assert sorted(held_a) == sorted(held_b)
    train = corpus_documents(tmp_path / "a")
    assert sorted(train + held_a) == sorted(content_ids(texts))


def test_output_is_byte_identical_whatever_the_workers(tmp_path):
    texts = sample_texts(300, seed=5)
    write_jsonl(tmp_path / "in.jsonl", texts)
    settings = dict(shard_tokens=4000, heldout_fraction=0.1, batch_bytes=3000)
    prepare_files([tmp_path / "in.jsonl"], tmp_path / "one", workers=1, **settings)
    prepare_files([tmp_path / "in.jsonl"], tmp_path / "two", workers=2, **settings)
    one, two = files_of(tmp_path / "one"), files_of(tmp_path / "two")
    assert len([name for name in one if name.endswith(".tokens.npy")]) > 4
    assert one.keys() == two.keys()
    different = [name for name in one if one[name] != two[name] and name != "plan.json"]
    assert different == []


class FailingSource:
    """Wraps a source and raises after `limit` documents: an interrupted run."""

    def __init__(self, source, limit: int):
        self.source, self.limit = source, limit

    def __getattr__(self, name):
        return getattr(self.source, name)

    def documents(self) -> Iterator[str]:
        for number, text in enumerate(self.source.documents()):
            if number == self.limit:
                raise KeyboardInterrupt("interrupted")
            yield text

    def pieces(self, limit: int):
        return Source.pieces(self, limit)  # the cutting of any source, over these documents


def test_resume_skips_finished_blocks_and_gives_the_same_corpus(tmp_path):
    texts = sample_texts(300, seed=7)
    write_jsonl(tmp_path / "in.jsonl", texts)
    settings = dict(shard_tokens=3000, heldout_fraction=0.1, batch_bytes=2000, workers=1, progress=False)
    reader = ReaderOptions()
    out = tmp_path / "out"
    (source,) = resolve_sources([str(tmp_path / "in.jsonl")], reader)
    with pytest.raises(KeyboardInterrupt):
        prepare([FailingSource(source, 200)], out, tokenizer(), PrepareConfig(**settings))
    assert not (out / "manifest.json").exists()
    finished = sorted((out / "progress").glob("block_*.json"))
    assert finished
    # A half-written next block: its shard exists under the final name but has no record.
    stray = out / "train" / f"shard_{len(finished):05d}.tokens.npy"
    stray.write_bytes(b"half written")
    with pytest.raises(DataError, match="did not finish"):
        TokenCorpus(out)
    resumed = prepare(
        resolve_sources([str(tmp_path / "in.jsonl")], reader), out, tokenizer(), PrepareConfig(**settings)
    )
    assert resumed.reused_blocks == len(finished)
    assert resumed.text_bytes < sum(len(t.encode()) for t in texts)
    clean = prepare(
        resolve_sources([str(tmp_path / "in.jsonl")], reader),
        tmp_path / "clean",
        tokenizer(),
        PrepareConfig(**settings),
    )
    assert clean.reused_blocks == 0
    resumed_files, clean_files = files_of(out), files_of(tmp_path / "clean")
    assert resumed_files.keys() == clean_files.keys()
    assert [n for n in clean_files if clean_files[n] != resumed_files[n] and n != "plan.json"] == []


def test_rerun_of_a_finished_corpus_does_nothing_and_other_settings_are_refused(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", sample_texts(20))
    first = prepare_files([tmp_path / "in.jsonl"], tmp_path / "out")
    again = prepare_files([tmp_path / "in.jsonl"], tmp_path / "out")
    assert again.already_complete and again.manifest == first.manifest
    with pytest.raises(DataError, match=r"differs in: settings"):
        prepare_files([tmp_path / "in.jsonl"], tmp_path / "out", heldout_fraction=0.5)
    assert load_manifest(tmp_path / "out") == first.manifest  # nothing lost
    replaced = prepare_files([tmp_path / "in.jsonl"], tmp_path / "out", heldout_fraction=0.5, overwrite=True)
    assert replaced.manifest["settings"]["heldout_fraction"] == 0.5


def test_over_long_documents_are_cut_not_lost(tmp_path):
    text = " ".join(["word"] * 5000)
    write_jsonl(tmp_path / "in.jsonl", [text])
    summary = prepare_files([tmp_path / "in.jsonl"], tmp_path / "out", max_document_chars=4000, heldout_fraction=0.0)
    assert summary.manifest["stats"]["documents_cut"] == 1
    assert sum(len(d) for d in corpus_documents(tmp_path / "out")) == 5000


def test_manifest_is_complete_and_deterministic(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", sample_texts(30))
    summary = prepare_files([tmp_path / "in.jsonl"], tmp_path / "out", max_length=128)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest == summary.manifest
    assert manifest["tokenizer"]["fingerprint"] == TokenizerSpec.from_tokenizer(tokenizer()).fingerprint
    assert manifest["tokenizer"]["special_ids"] == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    assert manifest["sources"][0]["documents"] == 30
    assert manifest["stats"]["documents_longer_than_max_length"] > 0
    for split in ("train", "heldout"):
        for shard in manifest["splits"][split]["shards"]:
            assert len(shard["tokens_sha256"]) == 64
    assert "seconds" not in json.dumps(manifest)


def test_command_line(tmp_path, capsys):
    from neobert.cli import main

    write_jsonl(tmp_path / "in.jsonl", sample_texts(10), field="body")
    out = tmp_path / "out"
    code = main(
        [
            "prepare",
            str(tmp_path / "in.jsonl"),
            "--out",
            str(out),
            "--text-field",
            "body",
            "--workers",
            "1",
            "--no-progress",
            "--max-length",
            "64",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "train: " in printed and "token slots filled at 64: packing" in printed
    assert load_manifest(out)["settings"]["text_field"] == "body"
    (tmp_path / "empty.txt").write_bytes(b"")
    assert main(["prepare", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "empty.txt: the file is empty" in capsys.readouterr().err
    assert main(["prepare", "--out", str(tmp_path / "o3")]) == 2
