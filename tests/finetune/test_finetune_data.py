"""Readers, label spaces, pair encoding and CoNLL label alignment for fine-tuning."""

import json

import pandas as pd
import pytest

from helpers.finetune import write_table
from neobert.finetune.conll import align_labels, read_conll, tag_space
from neobert.finetune.data import (
    Columns,
    FinetuneDataError,
    encode,
    infer_label_space,
    read_examples,
)

ROWS = [
    {"text": "first one", "other": "a", "label": "b"},
    {"text": "second", "other": "bb", "label": "a"},
    {"text": "third", "other": "c", "label": "b"},
]


def test_every_table_format_reads_the_same_examples(tmp_path):
    import datasets

    frame = pd.DataFrame(ROWS)
    write_table(tmp_path / "d.csv", ROWS)
    write_table(tmp_path / "d.tsv", ROWS, "\t")
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    datasets.Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "saved"))
    columns = Columns(text="text", label="label", text_pair="other")
    for name in ("d.csv", "d.tsv", "d.jsonl", "d.parquet", "saved"):
        examples = read_examples(tmp_path / name, columns)
        assert examples.texts == ["first one", "second", "third"], name
        assert examples.pairs == ["a", "bb", "c"], name
        assert examples.labels == ["b", "a", "b"], name


def test_bad_columns_and_pairs_fail_with_the_row(tmp_path):
    path = write_table(tmp_path / "d.csv", ROWS)
    with pytest.raises(FinetuneDataError, match="no column 'sentence'.*--text-column"):
        read_examples(path, Columns(text="sentence"))
    broken = write_table(tmp_path / "pair.csv", [dict(ROWS[0]), {**ROWS[1], "other": ""}])
    with pytest.raises(FinetuneDataError, match="row 2 is a text pair with its second side"):
        read_examples(broken, Columns(text_pair="other"))


def test_label_spaces_are_inferred_and_validation_labels_checked(tmp_path):
    train = read_examples(write_table(tmp_path / "t.csv", ROWS), Columns())
    space = infer_label_space(train)
    assert (space.problem, space.names) == ("single", ["a", "b"])
    assert space.targets(train) == [1, 0, 1]
    unknown = read_examples(write_table(tmp_path / "v.csv", [{**ROWS[0], "label": "zzz"}]), Columns())
    with pytest.raises(FinetuneDataError, match="'zzz' never occurs in the training data"):
        space.targets(unknown)
    numbers = [{"text": "x", "label": v} for v in ("2", "10", "1")]
    assert infer_label_space(read_examples(write_table(tmp_path / "n.csv", numbers), Columns())).names == [
        "1",
        "2",
        "10",
    ]
    floats = [{"text": "x", "label": v} for v in ("0.5", "3.25", "1")]
    regression = infer_label_space(read_examples(write_table(tmp_path / "r.csv", floats), Columns()))
    assert regression.problem == "regression" and regression.num_labels == 1
    multi_rows = [{"text": "x", "label": "red|blue"}, {"text": "y", "label": "blue"}]
    multi = infer_label_space(read_examples(write_table(tmp_path / "m.csv", multi_rows), Columns()))
    assert multi.problem == "multi" and multi.names == ["blue", "red"]
    assert multi.targets(read_examples(tmp_path / "m.csv", Columns())) == [[1.0, 1.0], [1.0, 0.0]]
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps({"text": "x", "label": v}) for v in (["a", "b"], ["c"])))
    assert infer_label_space(read_examples(tmp_path / "l.jsonl", Columns())).names == ["a", "b", "c"]


def test_pairs_are_encoded_cls_a_sep_b_sep(tmp_path, tokenizer):
    examples = read_examples(write_table(tmp_path / "d.csv", ROWS), Columns(text_pair="other"))
    encoded = encode(examples, tokenizer, max_length=32)
    tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids[0])
    assert tokens == ["[CLS]", "first", "one", "[SEP]", "a", "[SEP]"]


def test_conll_labels_go_on_the_first_word_piece(tmp_path, tokenizer):
    text = "-DOCSTART- O\n\nOuagadougou B-LOC\nis O\nbig O\n\nPeter B-PER\nsings O\n"
    (tmp_path / "train.conll").write_text(text)
    sentences = read_conll(tmp_path / "train.conll")
    assert sentences.words == [["Ouagadougou", "is", "big"], ["Peter", "sings"]]
    space = tag_space(sentences)
    assert space.names[0] == "O"
    encoded = align_labels(sentences, space, tokenizer, max_length=64)
    pieces = tokenizer("Ouagadougou", add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1  # the test needs a word split into several pieces
    ids, labels = encoded.input_ids[0], encoded.targets[0]
    assert ids[1 : 1 + len(pieces)] == pieces
    loc, outside = space.names.index("B-LOC"), space.names.index("O")
    assert labels == [-100, loc] + [-100] * (len(pieces) - 1) + [outside, outside, -100]
    (tmp_path / "dev.conll").write_text("Paris B-MISC\n")
    with pytest.raises(FinetuneDataError, match="'B-MISC' never occurs"):
        align_labels(read_conll(tmp_path / "dev.conll"), space, tokenizer, 64)
    (tmp_path / "bad.conll").write_text("Paris B-LOC\n\nlonely\n")
    with pytest.raises(FinetuneDataError, match=r"bad\.conll:3: a word but no tag: 'lonely'$"):
        read_conll(tmp_path / "bad.conll")


def test_a_missing_cell_is_named_with_its_row(tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("text,label\nfirst,a\nsecond\n", encoding="utf-8")  # a ragged row: its label cell is absent
    with pytest.raises(FinetuneDataError, match=rf"^{short}: row 2 has no label in column 'label'$"):
        read_examples(short, Columns())
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\nfirst,a\n,b\n", encoding="utf-8")
    with pytest.raises(FinetuneDataError, match=rf"^{empty}: row 2 has no text in column 'text'$"):
        read_examples(empty, Columns())
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"text": "first", "label": "a"}\n{"label": "b"}\n', encoding="utf-8")
    with pytest.raises(FinetuneDataError, match=rf"^{keys}: row 2 has no text in column 'text'$"):
        read_examples(keys, Columns())


def test_a_row_with_more_cells_than_the_header_is_named_with_its_line(tmp_path):
    long = tmp_path / "long.csv"
    long.write_text("text,label\nfirst,a\nsecond,b,c\n", encoding="utf-8")
    with pytest.raises(FinetuneDataError, match=rf"^{long}:3: 3 cells, but the header names 2 columns$"):
        read_examples(long, Columns())


def test_a_file_of_another_format_is_refused_with_the_formats_read(tmp_path):
    notes = tmp_path / "train.txt"
    notes.write_text("text\n", encoding="utf-8")
    with pytest.raises(FinetuneDataError, match=r"unknown format '\.txt'; use one of \.csv, \.tsv, \.jsonl"):
        read_examples(notes, Columns())
