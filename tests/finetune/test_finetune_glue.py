"""GLUE: each task's reader on its real file format, the protocol end to end, MNLI transfer, the table."""

import json

import pytest
from safetensors.torch import load_file

from helpers.finetune import tiny_model_folder
from helpers.glue_files import write_glue_folder
from neobert.cli import main
from neobert.finetune.data import FinetuneDataError
from neobert.finetune.glue import GRIDS, format_table
from neobert.finetune.glue_data import TASKS, read_task, resolve_tasks


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_folder(tmp_path_factory.mktemp("glue"))


def test_each_task_reads_its_real_file_format(glue_dir):
    cola_train, cola_dev = read_task(glue_dir, TASKS["cola"])
    assert cola_train.texts[0] == "the good sentence 0" and cola_train.labels[:2] == ["0", "1"]
    assert cola_train.pairs is None and list(cola_dev) == ["validation"]
    mrpc, _ = read_task(glue_dir, TASKS["mrpc"])  # header with a byte-order mark, quotes kept verbatim
    assert mrpc.texts[0] == 'He said "good" .' and mrpc.pairs[0] == "She said good ."
    stsb, _ = read_task(glue_dir, TASKS["stsb"])
    assert stsb.labels[:2] == ["0.500", "1.500"] and TASKS["stsb"].label_space().problem == "regression"
    qqp, _ = read_task(glue_dir, TASKS["qqp"])
    assert (qqp.texts[1], qqp.pairs[1], qqp.labels[1]) == ("Why bad?", "How bad?", "1")
    mnli, dev = read_task(glue_dir, TASKS["mnli"])
    assert list(dev) == ["matched", "mismatched"] and mnli.labels[:3] == ["entailment", "neutral", "contradiction"]
    assert dev["mismatched"].texts[0] == "A dog ran 0." and dev["matched"].labels[2] == "contradiction"
    qnli, _ = read_task(glue_dir, TASKS["qnli"])
    assert TASKS["qnli"].label_space().targets(qnli)[:2] == [0, 1]
    for name in ("sst2", "rte", "wnli"):
        train, _ = read_task(glue_dir, TASKS[name])
        assert len(train) == 12
    assert [t.name for t in resolve_tasks("RTE,sts-b,SST-2")] == ["rte", "stsb", "sst2"]
    with pytest.raises(ValueError, match="unknown GLUE task 'squad'"):
        resolve_tasks("rte,squad")


def test_a_short_or_empty_glue_file_is_named_with_its_line(tmp_path):
    folder = write_glue_folder(tmp_path / "glue")
    train = folder / TASKS["rte"].folder / "train.tsv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([*lines[:3], "7\tonly a premise", *lines[3:]]) + "\n")
    with pytest.raises(FinetuneDataError, match=rf"^{train}:4: 2 columns, fewer than rte needs$"):
        read_task(folder, TASKS["rte"])
    train.write_text("")
    with pytest.raises(FinetuneDataError, match=rf"^{train}: empty"):
        read_task(folder, TASKS["rte"])


def test_the_paper_grid_and_table_layout():
    assert len(GRIDS["paper"].points()) == 60 and len(GRIDS["paper-text"].points()) == 40
    table = format_table({"rte": 0.5, "mnli": 0.75, "stsb": 0.9}, "tiny")
    assert table.splitlines()[0] == "| Model | MNLI | RTE | STS | Avg |"
    assert table.splitlines()[2] == "| tiny | 75.0 | 50.0 | 90.0 | 71.7 |"


def test_the_protocol_runs_end_to_end_with_mnli_transfer(glue_dir, tmp_path):
    model = tiny_model_folder(tmp_path / "model")
    out = tmp_path / "glue"
    args = ["glue", "--model", str(model), "--data", str(glue_dir), "--out", str(out), "--no-progress"]
    args += ["--tasks", "rte,stsb,mnli,cola,mrpc,qqp,qnli,sst2", "--grid", "small", "--lrs", "1e-4,3e-4"]
    args += ["--batch-sizes", "8", "--max-steps", "2", "--eval-every", "1", "--max-length", "32"]
    assert main(args) == 0
    report = json.loads((out / "glue_results.json").read_text())
    assert set(report["scores"]) == {"rte", "stsb", "mnli", "cola", "mrpc", "qqp", "qnli", "sst2"}
    mnli = report["tasks"]["mnli"]
    assert len(mnli["runs"]) == 2 and set(mnli["best"]["metrics"]) >= {"matched_accuracy", "mismatched_accuracy"}
    for name in ("rte", "stsb", "mrpc", "qnli"):
        assert report["tasks"][name]["started_from"] == mnli["best_model"]
    for name in ("cola", "qqp", "sst2"):
        assert report["tasks"][name]["started_from"] == str(model.resolve())
    # RTE started from MNLI's encoder; its 3-way classifier was replaced by a 2-way one.
    mnli_weights = load_file(f"{mnli['best_model']}/model.safetensors")
    assert mnli_weights["classifier.weight"].shape[0] == 3
    rte_weights = load_file(f"{report['tasks']['rte']['best_model']}/model.safetensors")
    assert rte_weights["classifier.weight"].shape[0] == 2
    assert (
        (out / "glue_table.md").read_text().startswith("| Model | MNLI | QNLI | QQP | RTE | SST | MRPC | CoLA | STS |")
    )
    # Only the winning run of a task keeps its model.
    kept = [run for run in mnli["runs"] if (out / "mnli" / run["run"] / "best").exists()]
    assert [run["run"] for run in kept] == [mnli["best"]["run"]]


def test_bad_glue_input_fails_before_training(glue_dir, tmp_path, capsys):
    model = tiny_model_folder(tmp_path / "model")
    base = ["glue", "--model", str(model), "--out", str(tmp_path / "out")]
    assert main([*base, "--data", str(glue_dir), "--tasks", "rte,boolq"]) == 2
    assert "unknown GLUE task 'boolq'" in capsys.readouterr().err
    (glue_dir / "RTE" / "dev.tsv").rename(glue_dir / "RTE" / "dev.bak")
    try:
        assert main([*base, "--data", str(glue_dir), "--tasks", "mnli,rte"]) == 2
        assert "RTE/dev.tsv" in capsys.readouterr().err
        assert not (tmp_path / "out" / "mnli").exists()
    finally:
        (glue_dir / "RTE" / "dev.bak").rename(glue_dir / "RTE" / "dev.tsv")
