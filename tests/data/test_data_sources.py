"""Every reader yields exactly the documents written into its fixture, in order."""

from __future__ import annotations

import bz2
import csv
import gzip
import json

import pytest

from neobert.data.shards import DataError
from neobert.data.sources import ReaderOptions, resolve_sources

DOCS = ["First document.\nIt has two lines.", "Second — with ünïcode.", 'Third, with a comma and "quotes".']


def read(specs, **options) -> list[str]:
    return [
        doc
        for source in resolve_sources([str(s) for s in specs], ReaderOptions(**options))
        for doc in source.documents()
    ]


def test_plain_text_units(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("\n\n".join(DOCS) + "\n\n\n", encoding="utf-8")
    assert read([path]) == DOCS
    assert read([path], text_unit="line") == [line for doc in DOCS for line in doc.split("\n")]
    assert read([path], text_unit="file") == ["\n\n".join(DOCS) + "\n\n\n"]


def test_compressed_text_and_byte_order_mark(tmp_path):
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n\n".join(DOCS))
    (tmp_path / "b.md.bz2").write_bytes(bz2.compress(("\ufeff" + DOCS[0]).encode("utf-8")))
    assert read([tmp_path / "a.txt.gz"]) == DOCS
    assert read([tmp_path / "b.md.bz2"]) == [DOCS[0]]


def test_jsonl_with_a_chosen_field_skips_empty_records(tmp_path):
    path = tmp_path / "a.jsonl"
    rows = [{"content": DOCS[0]}, {"content": ""}, {"content": None}, {"content": DOCS[1]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    sources = resolve_sources([str(path)], ReaderOptions(text_field="content"))
    assert list(sources[0].documents()) == DOCS[:2]
    assert sources[0].counts.empty_documents == 2


def test_json_array_and_json_lines_under_json_suffix(tmp_path):
    (tmp_path / "array.json").write_text(json.dumps([{"text": d} for d in DOCS]), encoding="utf-8")
    (tmp_path / "lines.json").write_text("\n".join(json.dumps({"text": d}) for d in DOCS), encoding="utf-8")
    assert read([tmp_path / "array.json"]) == DOCS
    assert read([tmp_path / "lines.json"]) == DOCS


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_csv_and_tsv_with_multiline_fields(tmp_path, suffix, delimiter):
    path = tmp_path / f"a{suffix}"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["id", "body"])
        writer.writerows([i, d] for i, d in enumerate(DOCS))
    assert read([path], text_field="body") == DOCS


def test_parquet(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pyarrow.table({"text": DOCS + [None], "n": list(range(len(DOCS) + 1))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=2)
    assert read([tmp_path / "a.parquet"]) == DOCS


def test_folder_and_glob_in_sorted_order_ignoring_other_files(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text(DOCS[1], encoding="utf-8")
    (folder / "a.txt").write_text(DOCS[0], encoding="utf-8")
    (folder / "sub" / "c.jsonl").write_text(json.dumps({"text": DOCS[2]}), encoding="utf-8")
    (folder / "image.png").write_bytes(b"\x89PNG")
    (folder / ".hidden.txt").write_text("not this", encoding="utf-8")
    assert read([folder]) == DOCS
    assert read([str(folder / "**" / "*.jsonl")]) == [DOCS[2]]
    assert read([str(folder / "*.txt")]) == DOCS[:2]


def test_datasets_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    single = tmp_path / "single"
    datasets.Dataset.from_dict({"text": DOCS, "label": [0, 1, 0]}).save_to_disk(str(single))
    assert read([single]) == DOCS
    both = tmp_path / "dict"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"sentence": DOCS[:2]}),
            "validation": datasets.Dataset.from_dict({"sentence": DOCS[2:]}),
        }
    ).save_to_disk(str(both))
    assert read([both], text_field="sentence", hf_split="validation") == DOCS[2:]
    with pytest.raises(DataError, match="no split 'test'"):
        read([both], text_field="sentence", hf_split="test")


def test_hub_spec_is_parsed_without_loading():
    (source,) = resolve_sources(["hf:wikitext:wikitext-2-raw-v1"], ReaderOptions(hf_split="validation"))
    assert source.describe() == {
        "spec": "hf:wikitext:wikitext-2-raw-v1",
        "kind": "datasets-hub",
        "split": "validation",
        "name": "wikitext",
        "config": "wikitext-2-raw-v1",
    }


def test_missing_path_and_empty_glob(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        resolve_sources([str(tmp_path / "nope.txt")], ReaderOptions())
    with pytest.raises(DataError, match="matches no file"):
        resolve_sources([str(tmp_path / "*.jsonl")], ReaderOptions())


def records(path, **options):
    (source,) = resolve_sources([str(path)], ReaderOptions(**options))
    return list(source.records())


def test_strict_reading_names_a_line_that_lenient_reading_skips_and_counts(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "one"}\n{"text": "t\xffo"}\n{"text": "three"}\n')
    (lenient,) = resolve_sources([str(path)], ReaderOptions())
    assert list(lenient.documents()) == ["one", "three"]
    assert lenient.counts.undecodable_lines == 1
    (strict,) = resolve_sources([str(path)], ReaderOptions(strict=True))
    with pytest.raises(DataError, match=rf"^{path}:2:12: byte 0xff is not UTF-8; save the file as UTF-8$"):
        list(strict.documents())
    with pytest.raises(DataError, match=rf"^{path}:2:12: byte 0xff is not UTF-8"):
        records(path, strict=True)
    utf16 = tmp_path / "b.csv"
    utf16.write_bytes("text\none\n".encode("utf-16"))
    with pytest.raises(DataError, match=rf"^{utf16}: the file is UTF-16 \(it starts with a byte-order mark\)"):
        records(utf16, strict=True)


def test_a_line_after_a_skipped_one_keeps_its_number(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "one"}\n\xff\n{"text": \n')
    with pytest.raises(DataError, match=rf"^{path}:3:10: not valid JSON \(Expecting value\)$"):
        read([path])


def test_records_of_every_table_format_with_where_they_are(tmp_path):
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n", encoding="utf-8")
    assert records(jsonl, strict=True) == [(f"{jsonl}:1", rows[0]), (f"{jsonl}:3", rows[1])]
    array = tmp_path / "r.json"
    array.write_text(json.dumps(rows), encoding="utf-8")
    assert records(array, strict=True) == [(f"{array}[0]", rows[0]), (f"{array}[1]", rows[1])]
    table = tmp_path / "r.tsv"
    table.write_text("text\tlabel\n\na\tx\nb\ty\n", encoding="utf-8")
    assert records(table, strict=True) == [(f"{table}:3", rows[0]), (f"{table}:4", rows[1])]
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    parquet = tmp_path / "r.parquet"
    pq.write_table(pa.Table.from_pylist([{**row, "tags": [row["label"]]} for row in rows]), parquet)
    expected = [(f"{parquet}[{i}]", {**row, "tags": [row["label"]]}) for i, row in enumerate(rows)]
    assert records(parquet, strict=True) == expected


def test_csv_records_read_missing_cells_as_none_and_refuse_extra_ones(tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("text,label\na,x\nb\n", encoding="utf-8")
    assert [record for _, record in records(short, strict=True)] == [
        {"text": "a", "label": "x"},
        {"text": "b", "label": None},
    ]
    long = tmp_path / "long.csv"
    long.write_text("text,label\na,x\nb,y,z\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{long}:3: 3 cells, but the header names 2 columns$"):
        records(long, strict=True)
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{blank}: the file is empty"):
        records(blank, strict=True)


def test_a_json_lines_record_must_be_an_object(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: expected an object \(one record\), got list$"):
        records(path, strict=True)
