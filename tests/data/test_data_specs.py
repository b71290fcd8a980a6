"""One reading of a data spec (`neobert.data.sources.parse_spec`) for pre-training, fine-tuning and
contrastive data: each reader takes a dataset's records from it and picks its own columns."""

import json

import pytest

from neobert.data.shards import DataError
from neobert.data.sources import ReaderOptions, parse_spec, resolve_sources
from neobert.embed_train.data import Pair, read_pairs
from neobert.finetune.data import FinetuneDataError, read_rows


def test_a_spec_is_read_as_what_it_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"text": "a"}]).save_to_disk(tmp_path / "saved")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text("a\n")
    hub = parse_spec("hf:org/name:config")
    assert (hub.kind, hub.name, hub.config, hub.path) == ("hub", "org/name", "config", None)
    assert (parse_spec("hf:org/name").config, parse_spec("hf:org/name").name) == (None, "org/name")
    assert parse_spec(str(tmp_path / "saved")).kind == "saved"
    assert parse_spec(str(tmp_path / "plain")).kind == "folder"
    assert parse_spec(str(tmp_path / "plain" / "a.txt")).kind == "file"
    assert parse_spec(str(tmp_path / "plain" / "*.txt")).kind == "glob"
    assert parse_spec(str(tmp_path / "absent.csv")).kind == "missing"
    with pytest.raises(DataError, match="hf:: expected hf:NAME or hf:NAME:CONFIG"):
        parse_spec("hf:")


def test_every_reader_takes_a_saved_dataset_through_the_one_parser(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"text": "good film", "label": 1, "query": "q", "positive": "p", "negatives": ["n"]}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(tmp_path / "saved")
    saved = str(tmp_path / "saved")
    assert read_rows(saved) == rows
    assert read_pairs(saved) == [Pair("q", "p", ("n",))]
    (source,) = resolve_sources([saved], ReaderOptions())
    assert list(source.documents()) == ["good film"]
    # The same missing split, in each reader's error type; only prepare has a --split to name.
    with pytest.raises(FinetuneDataError, match=r"saved: no split 'validation'; it has train$"):
        read_rows(saved, "validation")
    (source,) = resolve_sources([saved], ReaderOptions(hf_split="test"))
    with pytest.raises(DataError, match=r"saved: no split 'test'; it has train; use --split$"):
        list(source.documents())
    (tmp_path / "empty").mkdir()
    for read, error in ((read_rows, FinetuneDataError), (read_pairs, ValueError)):
        with pytest.raises(error, match="empty: a folder that is not a saved `datasets` dataset"):
            read(tmp_path / "empty")


def test_pairs_and_rows_from_a_local_datasets_folder_named_with_hf(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "hub-like"
    folder.mkdir()
    records = [{"query": f"q{i}", "positive": f"p{i}", "text": f"t{i}", "label": i % 2} for i in range(3)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_pairs(f"hf:{folder}") == [Pair(f"q{i}", f"p{i}") for i in range(3)]
    assert read_rows(f"hf:{folder}") == records
