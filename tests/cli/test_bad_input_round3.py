"""Hardening, round three (issue 20, items 5 and 6): every reader names the file and line, degenerate input
is refused, and a user's mistake or an I/O fault is one line with the documented exit code, found before
any training. Each test is the audit's command and what it must do (item 3's are in test_run_settings.py)."""

import errno
import json

import pytest
import torch

from helpers.cli import FAST_FINETUNE, last_error_line, one_line_error, pretrain
from helpers.embed import exported_model
from helpers.finetune import tiny_model_folder, word_rows, write_table
from helpers.glue_files import write_glue_folder
from neobert.cli import main
from test_commands import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("model"))


# ---- item 6: every reader names the file and line; degenerate input is refused ----------------------------


def test_resume_followed_by_an_override_resumes_and_applies_it(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain(corpus, out, "budget.steps=4", "--stop-at-step", "2") == 0
    capsys.readouterr()
    # Before: "train.lr=5e-4" was taken as the checkpoint to resume from.
    assert pretrain(corpus, out, "budget.steps=4", "--resume", "train.lr=5e-4") == 0
    printed = capsys.readouterr().out
    assert f"resumed from {out / 'checkpoints' / 'step-00000002'} at step 2" in printed
    assert "completed at step 4" in printed
    assert "lr: 0.0005" in (out / "config.yaml").read_text()


def utf16(path, text: str):
    path.write_bytes(text.encode("utf-16"))  # with its byte-order mark, as Windows editors save it
    return path


def test_utf16_files_are_named_by_every_reader(model_dir, tmp_path, capsys):
    csv = utf16(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\n")
    command = ["finetune", "--model", str(model_dir), "--train", str(csv), "--validation", str(csv)]
    assert main([*command, "--out", str(tmp_path / "ft")]) == 2
    assert f"{csv}: the file is UTF-16 (it starts with a byte-order mark); save it as UTF-8" in one_line_error(capsys)

    model = exported_model(tmp_path / "embedder")
    capsys.readouterr()  # its progress bars
    texts = utf16(tmp_path / "texts.txt", "one\ntwo\n")
    # Before: "no text found".
    assert main(["encode", "--model", str(model), "--input", str(texts), "--out", str(tmp_path / "v.npy")]) == 2
    assert f"{texts}: the file is UTF-16" in one_line_error(capsys)
    scoring = ["evaluate", "--model", str(model_dir), "--pseudo-perplexity", str(texts), "--out", str(tmp_path / "ev")]
    assert main(scoring) == 2
    assert f"{texts}: the file is UTF-16" in one_line_error(capsys)

    pairs = utf16(tmp_path / "pairs.jsonl", '{"query": "q", "positive": "p"}\n')
    out = tmp_path / "contrastive"
    assert main(["contrastive", "--model", str(model), "--data", str(pairs), "--out", str(out)]) == 2
    assert f"{pairs}: the file is UTF-16" in one_line_error(capsys)

    no_mark = tmp_path / "no-mark.txt"
    no_mark.write_bytes("one\ntwo\n".encode("utf-16-le"))
    assert main(["encode", "--model", str(model), "--input", str(no_mark), "--out", str(tmp_path / "v.npy")]) == 2
    assert f"{no_mark}:1: the line holds NUL bytes" in one_line_error(capsys)

    glue = write_glue_folder(tmp_path / "glue")
    tsv = utf16(glue / "SST-2" / "dev.tsv", "sentence\tlabel\na good film\t1\n")
    glue_command = ["glue", "--model", str(model_dir), "--data", str(glue), "--tasks", "sst2"]
    assert main([*glue_command, "--out", str(tmp_path / "g")]) == 2
    assert f"{tsv}: the file is UTF-16" in one_line_error(capsys)

    conll = utf16(tmp_path / "train.conll", "Alice B-PER\n")
    token = ["finetune", "--task", "token-classification", "--model", str(model_dir), "--out", str(tmp_path / "t")]
    assert main([*token, "--train", str(conll), "--validation", str(conll)]) == 2
    assert f"{conll}: the file is UTF-16" in one_line_error(capsys)
    assert not (tmp_path / "t").exists() and not out.exists() and not (tmp_path / "v.npy").exists()


def test_a_broken_json_lines_table_names_its_line(model_dir, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": \n{"text": "ok", "label": "neg"}\n')
    command = ["finetune", "--model", str(model_dir), "--train", str(train), "--validation", str(train)]
    assert main([*command, "--out", str(tmp_path / "run")]) == 2
    assert f"{train}:2:26: not valid JSON (Expecting value)" in one_line_error(capsys)


def test_a_utf8_byte_order_mark_is_read_past(model_dir, tmp_path):
    from neobert.commands.encode import read_texts
    from neobert.finetune.data import read_rows

    csv = tmp_path / "train.csv"
    csv.write_bytes(b"\xef\xbb\xbftext,label\ngood,pos\n")
    assert read_rows(csv) == [{"text": "good", "label": "pos"}]
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"\xef\xbb\xbfone\r\ntwo\n")
    assert read_texts(texts, "text") == ["one", "two"]


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity"])
def test_non_finite_regression_labels_are_refused_at_load(model_dir, tmp_path, capsys, bad):
    rows = [{"text": f"text {i}", "label": str(0.5 * i + 0.25)} for i in range(8)]
    rows[5]["label"] = bad
    train = write_table(tmp_path / "train.csv", rows)
    out = tmp_path / "run"
    command = ["finetune", "--model", str(model_dir), "--train", str(train), "--validation", str(train)]
    # Before: "cannot convert float NaN to integer", or (inf) an error found after the whole training run.
    assert main([*command, "--out", str(out), "--problem", "regression"]) == 2
    assert f"{train}: row 6: label '{bad}' is not finite" in one_line_error(capsys)
    assert main([*command, "--out", str(out)]) == 2  # the label space guessed from the same file
    assert f"{train}: row 6: label '{bad}' is not finite" in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "lines, batch, message",
    [
        (['{"query": "", "positive": " "}'] * 6, 4, "pairs.jsonl:1: field 'query' is empty"),
        (['{"query": "q", "positive": "p"}'], 4, "dataset pairs has 1 distinct pair(s), fewer than a batch of 4"),
        (['{"query": "q", "positive": "p"}'] * 5, 4, "has 1 distinct pair(s)"),
        (['{"query": "a", "positive": "b"}', '{"query": "q", "positive": "p", "negatives": 5}'], 1, "pairs.jsonl:2"),
    ],
)
def test_degenerate_contrastive_data_is_refused_before_training(tmp_path, capsys, lines, batch, message):
    model = exported_model(tmp_path)
    capsys.readouterr()  # its progress bars
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "embedder"
    command = ["contrastive", "--model", str(model), "--data", str(pairs), "--out", str(out)]
    # Before: a constant loss and exit 0, or (negatives: 5) "TypeError: 'int' object is not iterable".
    assert main([*command, "--batch-size", str(batch), "--steps", "2"]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_negatives_that_are_not_a_list_name_the_line(tmp_path):
    from neobert.embed_train.data import read_pairs

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "q", "positive": "p", "negatives": 5}\n')
    with pytest.raises(ValueError, match=r"pairs.jsonl:1: negatives must be a string or a list of strings, got 5$"):
        read_pairs(pairs)


# ---- item 5: no traceback for a user's mistake -----------------------------------------------------------


def test_a_tokenizer_bigger_than_the_models_vocabulary_is_refused_before_training(tmp_path, capsys):
    small = tiny_model_folder(tmp_path / "model", vocab_size=1000)
    capsys.readouterr()  # its progress bar
    train = write_table(tmp_path / "train.csv", word_rows(16))
    out = tmp_path / "run"
    command = ["finetune", "--model", str(small), "--train", str(train), "--validation", str(train)]
    # Before: a traceback from the first training step ("input_ids must lie in [0, 1000)").
    assert main([*command, "--out", str(out), *FAST_FINETUNE]) == 2
    assert f"{small / 'config.json'}: vocab_size is 1000, but the tokenizer gives token id" in one_line_error(capsys)
    assert not out.exists()


def test_a_folder_that_is_not_a_pairs_dataset_is_named(tmp_path, capsys):
    import datasets

    model = exported_model(tmp_path)
    capsys.readouterr()  # its progress bars
    saved = tmp_path / "saved"
    datasets.DatasetDict({"dev": datasets.Dataset.from_dict({"query": ["q"], "positive": ["p"]})}).save_to_disk(saved)
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()  # the progress bar of saving
    cases = ((saved, "no split 'train'; it has dev"), (empty, "a folder that is not a saved `datasets` dataset"))
    for data, message in cases:
        command = ["contrastive", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "e")]
        assert main(command) == 2
        assert f"{data}: {message}" in one_line_error(capsys)


def test_an_output_dir_that_is_a_file_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("my notes\n")
    assert pretrain(corpus, out, "budget.steps=2") == 2
    assert f"system.output_dir {out} is a file, not a folder" in one_line_error(capsys)
    assert out.read_text() == "my notes\n"


def test_an_out_that_is_a_file_is_refused_by_every_writer_and_kept(model_dir, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.write_text("mine\n")
    train = write_table(tmp_path / "train.csv", word_rows(16))
    finetune = ["finetune", "--model", str(model_dir), "--train", str(train), "--validation", str(train)]
    glue = ["glue", "--model", str(model_dir), "--data", str(write_glue_folder(tmp_path / "glue")), "--tasks", "sst2"]
    model = exported_model(tmp_path / "embedder")
    capsys.readouterr()  # its progress bars
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}"}) + "\n" for i in range(4)))
    contrastive = ["contrastive", "--model", str(model), "--data", str(pairs), "--batch-size", "4", "--restart"]
    export = ["export", "--model", str(model), "--restart"]
    # Before: a traceback (finetune, glue), or (contrastive --restart, export --overwrite) after all the work.
    for command in (finetune, glue, contrastive, export):
        assert main([*command, "--out", str(notes)]) == 2
        assert f"--out {notes} is a file, not a folder" in one_line_error(capsys)
        assert main([*command, "--out", str(notes / "inside")]) == 2
        assert f"--out {notes / 'inside'}: {notes} is a file, not a folder" in one_line_error(capsys)
    assert notes.read_text() == "mine\n"


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--batch-size", "0", "--batch-size must be at least 1, got 0"),  # before: ZeroDivisionError
        ("--eval-batch-size", "0", "--eval-batch-size must be at least 1, got 0"),  # before: range() arg 3
        ("--patience", "0", "--patience must be at least 1, got 0"),  # before: an OSError about a hub repo id
        ("--lr", "-1", "--lr must be a finite number >= 0, got -1.0"),  # before: a torch traceback
        ("--max-length", "0", "--max-length must leave room for [CLS], a token and [SEP] (3), got 0"),  # exit 0
        ("--epochs", "0", "--epochs must be a positive number, got 0.0"),  # before: exit 0 after one step
        ("--max-steps", "-1", "--max-steps must be at least 1, got -1"),
    ],
)
def test_finetune_settings_that_cannot_train_are_refused(model_dir, tmp_path, capsys, option, value, message):
    train = write_table(tmp_path / "train.csv", word_rows(16))
    out = tmp_path / "run"
    command = ["finetune", "--model", str(model_dir), "--train", str(train), "--validation", str(train)]
    command += ["--out", str(out), "--no-progress"]
    if option not in ("--max-steps", "--epochs"):
        command += ["--max-steps", "2"]
    assert main([*command, option, value]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--temperature", "0", "--temperature must be a positive number, got 0.0"),  # before: exit 0
        ("--max-length", "0", "--max-length must leave room for [CLS], a token and [SEP] (3), got 0"),  # exit 0
        ("--alpha", "nan", "--alpha must be a finite number >= 0, got nan"),  # before: "Probabilities contain NaN"
    ],
)
def test_contrastive_settings_that_cannot_train_are_refused(tmp_path, capsys, option, value, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}"}) + "\n" for i in range(4)))
    out = tmp_path / "embedder"
    command = ["contrastive", "--model", str(tmp_path / "no-model"), "--data", str(pairs), "--out", str(out)]
    assert main([*command, "--batch-size", "4", option, value]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_encode_max_length_0_is_refused_not_taken_as_the_default(tmp_path, capsys):
    model = exported_model(tmp_path)
    capsys.readouterr()  # its progress bars
    texts = tmp_path / "texts.txt"
    texts.write_text("one\n")
    command = ["encode", "--model", str(model), "--input", str(texts), "--out", str(tmp_path / "v.npy")]
    assert main([*command, "--max-length", "0"]) == 2
    assert "max_length must leave room for [CLS] and [SEP], got 0" in one_line_error(capsys)


def test_demo_maps_a_users_mistake_to_the_exit_codes_of_pretrain(corpus, tmp_path, capsys):
    out = tmp_path / "demo"
    out.write_text("my notes\n")
    command = ["demo", "--corpus", str(corpus), "--out", str(out), "--no-probe", *TINY, "budget.steps=2"]
    # Before: a ValueError traceback.
    assert main(command) == 2
    assert f"neobert demo: system.output_dir {out} is a file, not a folder" in one_line_error(capsys)
    assert out.read_text() == "my notes\n"


def test_an_output_dir_under_a_file_and_a_missing_contrastive_model_are_one_line(corpus, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.write_text("mine\n")
    assert pretrain(corpus, notes / "run", "budget.steps=2") == 2
    assert f"system.output_dir {notes / 'run'}: {notes} is a file, not a folder" in one_line_error(capsys)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}"}) + "\n" for i in range(4)))
    missing = tmp_path / "no-model"
    command = ["contrastive", "--model", str(missing), "--data", str(pairs), "--out", str(tmp_path / "e")]
    # Before: an OSError traceback about a hub repo id.
    assert main([*command, "--batch-size", "4"]) == 2
    assert f"--model {missing} holds no model (no config.json" in one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA on a machine without it")
def test_cuda_without_a_gpu_is_one_line(corpus, tmp_path, capsys):
    assert pretrain(corpus, tmp_path / "run", "budget.steps=2", "system.device=cuda") == 2
    assert "system.device=cuda, but no CUDA device is available here" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()
    model = exported_model(tmp_path)
    capsys.readouterr()  # its progress bars
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}"}) + "\n" for i in range(4)))
    command = ["contrastive", "--model", str(model), "--data", str(pairs), "--out", str(tmp_path / "e")]
    assert main([*command, "--batch-size", "4", "--device", "cuda"]) == 2
    assert "--device=cuda, but no CUDA device is available here" in one_line_error(capsys)


def test_resume_with_another_model_shape_names_the_fields(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain(corpus, out, "budget.steps=4", "--stop-at-step", "2") == 0
    capsys.readouterr()
    # Before: 32 lines of state-dict size mismatches in a traceback.
    assert pretrain(corpus, out, "budget.steps=4", "model.overrides.hidden_size=64", "--resume") == 3
    err = one_line_error(capsys)
    assert "holds a model of another shape than this configuration builds" in err
    assert "hidden_size: 32 -> 64" in err


def test_a_missing_tokenizer_folder_is_one_line(corpus, tmp_path, capsys):
    missing = tmp_path / "no-such-tokenizer"
    # Before: a hub lookup traceback.
    assert pretrain(corpus, tmp_path / "run", "budget.steps=2", f"data.tokenizer={missing}") == 2
    assert f"tokenizer folder {missing} does not exist" in one_line_error(capsys)

    from neobert.tokenizer import looks_like_a_path

    assert looks_like_a_path(str(missing)) and looks_like_a_path("./tok") and looks_like_a_path("a/b/c")
    assert not looks_like_a_path("google-bert/bert-base-uncased") and not looks_like_a_path("bert-base-uncased")


def test_encode_output_naming_a_folder_is_refused_before_encoding(tmp_path, capsys, monkeypatch):
    import neobert.embed

    model = exported_model(tmp_path)
    capsys.readouterr()  # its progress bars
    texts = tmp_path / "texts.txt"
    texts.write_text("one\ntwo\n")
    monkeypatch.setattr(neobert.embed, "encode", lambda *a, **k: pytest.fail("encoded before checking --out"))
    # Before: every text encoded, then IsADirectoryError.
    assert main(["encode", "--model", str(model), "--input", str(texts), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder; name the .npy file to write" in one_line_error(capsys)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert main(["encode", "--model", str(model), "--input", str(texts), "--out", str(blocker / "v.npy")]) == 2
    assert f"{blocker} is a file, not a folder" in one_line_error(capsys)


def test_encode_on_a_full_disk_is_one_line_and_leaves_no_temporary(tmp_path, capsys, monkeypatch):
    import errno

    import numpy as np

    model = exported_model(tmp_path)
    capsys.readouterr()  # its progress bars
    texts = tmp_path / "texts.txt"
    texts.write_text("one\ntwo\n")
    out = tmp_path / "vectors"
    out.mkdir()

    def full_disk(handle, array):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    # Before: an OSError traceback, and a partial temporary left beside the output.
    command = ["encode", "--model", str(model), "--input", str(texts), "--out", str(out / "v.npy")]
    assert main(command) == 4
    err = capsys.readouterr().err  # after the model's loading bar (the encoding ran), one line
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"neobert encode: cannot write --out {out / 'v.npy'}: No space left on device"
    assert list(out.iterdir()) == []


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/the/disk/file")


def test_a_full_disk_during_export_onnx_leaves_no_folder_that_blocks_a_rerun(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    model = exported_model(tmp_path)
    out = tmp_path / "onnx"
    monkeypatch.setattr(torch.onnx, "export", no_space)
    capsys.readouterr()
    # Before: an OSError traceback, and a copied folder that made the rerun fail with "exists and is not empty".
    assert main(["export-onnx", "--model", str(model), "--out", str(out)]) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.splitlines()[-1]
        == f"neobert export-onnx: cannot write --out {out}: /the/disk/file: No space left on device"
    )
    assert not out.exists()

    exported = tmp_path / "exported-with-onnx"
    assert main(["export", "--model", str(model), "--out", str(exported), "--onnx"]) == 4
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"neobert export: cannot write --out {exported}:")
    assert not exported.exists()  # the same command can run again, without --overwrite


def test_a_full_disk_while_finetuning_is_exit_4_in_one_line(model_dir, tmp_path, capsys, monkeypatch):
    from neobert.finetune import trainer
    from neobert.train.checkpoint import DiskFullError

    train = write_table(tmp_path / "train.csv", word_rows(16))
    command = ["finetune", "--model", str(model_dir), "--train", str(train), "--validation", str(train)]
    command += FAST_FINETUNE
    monkeypatch.setattr(trainer, "write_json_atomically", no_space)
    # Before: an OSError traceback.
    assert main([*command, "--out", str(tmp_path / "a")]) == 4
    assert last_error_line(capsys) == "neobert finetune: /the/disk/file: No space left on device"

    def full_checkpoint(root, *args, **kwargs):
        raise DiskFullError(f"{root}: the disk is full; the previous checkpoint is kept")

    monkeypatch.setattr(trainer, "save_checkpoint", full_checkpoint)
    # Before: exit 3, the code of a damaged checkpoint.
    assert main([*command, "--out", str(tmp_path / "b")]) == 4
    assert last_error_line(capsys).endswith("the disk is full; the previous checkpoint is kept")


def test_encode_names_the_line_of_bad_json(tmp_path, capsys):
    model = exported_model(tmp_path)
    capsys.readouterr()  # its progress bars
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "one"}\n{"text": \n')
    assert main(["encode", "--model", str(model), "--input", str(texts), "--out", str(tmp_path / "v.npy")]) == 2
    assert f"{texts}:2: not JSON" in one_line_error(capsys)


def test_glue_data_naming_a_missing_folder_is_refused_at_once(model_dir, tmp_path, capsys, monkeypatch):
    from neobert.finetune import glue_data

    monkeypatch.setattr(glue_data, "_from_datasets", lambda *a: pytest.fail("looked the folder up on the hub"))
    for missing in (tmp_path / "glue", "glue_data", "./glue"):
        # Before: taken for a hub name, 36 s of retries, then a traceback.
        command = ["glue", "--model", str(model_dir), "--data", str(missing), "--tasks", "rte"]
        assert main([*command, "--out", str(tmp_path / "out")]) == 2
        assert f"--data {missing}: no such folder (a hub dataset is named hf:NAME" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()
