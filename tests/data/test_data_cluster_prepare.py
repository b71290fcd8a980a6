"""`prepare --tasks`: tasks on datatrove's executors, joined into the single-machine corpus; a failed task reruns
alone; the join refuses unfinished tasks and other preparations and deletes nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.data import files_of, prepare_files, sample_texts, tokenizer, write_jsonl

pytest.importorskip("datatrove")

from neobert.data.cluster_executors import SlurmOptions, run_local, submit_slurm  # noqa: E402
from neobert.data.cluster_prepare import join, make_plan, split_contiguously, write_plan  # noqa: E402
from neobert.data.prepare import PrepareConfig  # noqa: E402
from neobert.data.sequences import TokenCorpus  # noqa: E402
from neobert.data.shards import DataError, load_manifest, verify_corpus  # noqa: E402
from neobert.data.sources import ReaderOptions, resolve_sources  # noqa: E402

SRC = str(Path(__file__).resolve().parents[2] / "src")
SETTINGS = dict(shard_tokens=2500, heldout_fraction=0.1, batch_bytes=2000, max_length=64)


def documents(folder: Path, split: str) -> list[list[int]]:
    corpus = TokenCorpus(folder, split)
    return [corpus.document(i).tolist() for i in range(len(corpus))]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Five JSON Lines files of different sizes, in one folder."""
    folder = tmp_path_factory.mktemp("inputs") / "text"
    for number, count in enumerate([40, 90, 25, 60, 70]):
        write_jsonl(folder / f"part_{number}.jsonl", sample_texts(count, seed=number, long_words=300))
    return folder


@pytest.fixture(scope="module")
def single(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "corpus"
    prepare_files([inputs], out, **SETTINGS)
    return out


def cluster(inputs: Path, out: Path, tasks: int = 2, parallel: int = 1, **overrides):
    config = PrepareConfig(**{**SETTINGS, **overrides}, workers=1, progress=False)
    plan = make_plan(resolve_sources([str(inputs)], config.reader), tokenizer(), config, tasks)
    write_plan(out, plan)
    return plan, config


def assert_same_corpus(joined: Path, single: Path) -> None:
    for split in ("train", "heldout"):
        assert documents(joined, split) == documents(single, split), split
    one, other = load_manifest(joined), load_manifest(single)
    for key in ("format", "version", "tokenizer", "settings", "max_length", "document_format", "sources"):
        assert one[key] == other[key], key
    for split in ("train", "heldout"):
        for count in ("documents", "tokens"):
            assert one["splits"][split][count] == other["splits"][split][count], (split, count)
    forecast = "sequences_at_max_length"
    assert {k: v for k, v in one["stats"].items() if k != forecast} == {
        k: v for k, v in other["stats"].items() if k != forecast
    }


def test_inputs_are_cut_into_contiguous_runs_of_about_equal_size():
    assert split_contiguously([10, 10, 10, 10], 2) == [(0, 2), (2, 4)]
    assert split_contiguously([100, 1, 1, 1], 2) == [(0, 1), (1, 4)]
    assert split_contiguously([1, 1, 1, 100], 3) == [(0, 2), (2, 3), (3, 4)]  # every task gets a file
    assert split_contiguously([5, 5, 5], 3) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(DataError, match="4 tasks for 3 input file"):
        split_contiguously([5, 5, 5], 4)


def test_two_local_tasks_join_to_the_single_machine_corpus(inputs, single, tmp_path):
    out = tmp_path / "joined"
    plan, _ = cluster(inputs, out)
    sizes = [path.stat().st_size for path in sorted(inputs.iterdir())]
    assert [len(part) for part in plan.parts] == [3, 2] and abs(sum(sizes[:3]) - sum(sizes[3:])) < max(sizes)
    summary = run_local(out, plan, parallel=1)
    assert_same_corpus(out, single)
    assert verify_corpus(out, full=True) == len(summary.manifest["splits"]["train"]["shards"]) * 2
    manifest = load_manifest(out)
    assert manifest["tasks"] == {"count": 2, "first_source": [0, 3]}
    # The joined shards are the tasks' files (hard links), numbered in task order: no copy, no re-tokenising.
    task_shards = load_manifest(out / "tasks" / "task_00001")["splits"]["train"]["shards"]
    last = manifest["splits"]["train"]["shards"][-1]
    assert last["tokens_sha256"] == task_shards[-1]["tokens_sha256"]
    joined_file, task_file = out / last["tokens_file"], out / "tasks" / "task_00001" / task_shards[-1]["tokens_file"]
    assert os.path.samefile(joined_file, task_file)
    assert len(task_shards) > 1 and len(manifest["splits"]["train"]["shards"]) > len(task_shards)

    # Joining again changes nothing; the same inputs and task count give the same bytes in another folder.
    before = files_of(out)
    assert join(out).already_complete and files_of(out) == before
    again = tmp_path / "again"
    plan, _ = cluster(inputs, again)
    run_local(again, plan, parallel=2)  # two task processes at once this time
    corpus = {name: data for name, data in files_of(again).items() if not name.startswith("logs/")}
    assert corpus == {name: data for name, data in before.items() if not name.startswith("logs/")}


def test_a_failed_task_reruns_alone(inputs, single, tmp_path):
    copy = tmp_path / "text"
    shutil.copytree(inputs, copy)
    # The last file of task 1 becomes unreadable at line 30 (after the plan checked its first line): the
    # task fails mid-way, as on a flaky file system, and the line is restored afterwards.
    damaged = copy / "part_4.jsonl"
    lines = damaged.read_bytes().split(b"\n")
    good = lines[29]
    lines[29] = b"{" + b"x" * (len(good) - 1)
    times = damaged.stat()
    out = tmp_path / "out"
    plan, _ = cluster(copy, out)
    damaged.write_bytes(b"\n".join(lines))
    os.utime(damaged, ns=(times.st_atime_ns, times.st_mtime_ns))
    with pytest.raises(DataError, match=r"a task failed \(.*part_4.jsonl:30:2: not valid JSON.*\); 1 of 2 task"):
        run_local(out, plan, parallel=1)
    logs = out / "logs"
    assert (logs / "completions" / "00000").is_file() and not (logs / "completions" / "00001").exists()
    with pytest.raises(DataError, match=r"1 of 2 task\(s\) did not finish \(task 1: no manifest.json"):
        join(out)
    assert not (out / "manifest.json").exists()
    finished = (logs / "stats" / "00000.json").stat().st_mtime_ns

    lines[29] = good
    damaged.write_bytes(b"\n".join(lines))
    os.utime(damaged, ns=(times.st_atime_ns, times.st_mtime_ns))
    run_local(out, plan, parallel=1)
    assert (logs / "stats" / "00000.json").stat().st_mtime_ns == finished  # task 0 did not run again
    assert (logs / "completions" / "00001").is_file()
    for split in ("train", "heldout"):
        assert documents(out, split) == documents(single, split)


def test_a_killed_task_process_fails_alone_then_resumes(inputs, single, tmp_path, monkeypatch, capfd):
    from neobert.data import prepare as prepare_module

    real_write = prepare_module._Block.write

    def write_then_die(block):  # task 1's process dies (the OOM killer) right after its second block
        record = real_write(block)
        if block.root.name == "task_00001" and block.index == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return record

    monkeypatch.setattr(prepare_module._Block, "write", write_then_die)
    out = tmp_path / "out"
    plan, _ = cluster(inputs, out)
    # Two at a time: the pool learns of the lost task (it would wait forever for a process killed in it) and
    # stops; task 0 may have finished or been stopped, and resumes either way.
    with pytest.raises(DataError, match=r"a task failed \(task 1: its process was killed \(SIGKILL\)\)"):
        run_local(out, plan, parallel=2)
    assert not (out / "logs" / "completions" / "00001").exists()
    assert len(list((out / "tasks" / "task_00001" / "progress").glob("block_*.json"))) == 2
    capfd.readouterr()

    monkeypatch.undo()
    run_local(out, plan, parallel=2)
    printed = re.split(r"(?m)^task (\d+): ", capfd.readouterr().out)
    summaries = dict(zip(printed[1::2], printed[2::2], strict=True))
    assert "2 finished block(s) reused" in summaries["1"]
    for split in ("train", "heldout"):
        assert documents(out, split) == documents(single, split)


# The command line, with a SIGKILL to its process group (it and datatrove's helper processes, as when a node is
# lost) right after task 1 has written its second block. Run in a session of its own.
KILLED_IN_TASK_1 = """
import os, signal, sys
from neobert.data import prepare
from neobert.cli import main

real_write = prepare._Block.write

def write_then_die(block):
    record = real_write(block)
    if block.root.name == "task_00001" and block.index == 1:
        os.killpg(0, signal.SIGKILL)
    return record

prepare._Block.write = write_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # about 15 s: two processes importing torch with the package
def test_a_killed_run_reruns_only_the_unfinished_task_from_its_last_block(inputs, single, tmp_path):
    out = tmp_path / "out"
    arguments = ["prepare", str(inputs), "--out", str(out), "--tasks", "2", "--parallel-tasks", "1"]
    arguments += ["--no-progress", "--shard-tokens", "2500", "--heldout-fraction", "0.1", "--max-length", "64"]
    environment = {**os.environ, "PYTHONPATH": SRC}

    def neobert(*entry: str) -> subprocess.CompletedProcess:
        command = [sys.executable, *entry, *arguments]
        return subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=300, start_new_session=True
        )

    killed = neobert("-c", KILLED_IN_TASK_1)
    assert killed.returncode == -9, killed.stderr[-3000:]
    logs = out / "logs"
    assert (logs / "completions" / "00000").is_file() and not (logs / "completions" / "00001").exists()
    assert len(list((out / "tasks" / "task_00001" / "progress").glob("block_*.json"))) == 2
    finished = (logs / "stats" / "00000.json").stat().st_mtime_ns

    rerun = neobert("-m", "neobert")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "task 1: prepared" in rerun.stdout and "task 0: prepared" not in rerun.stdout
    assert "2 finished block(s) reused" in rerun.stdout
    assert (logs / "stats" / "00000.json").stat().st_mtime_ns == finished
    for split in ("train", "heldout"):
        assert documents(out, split) == documents(single, split)


def test_the_join_refuses_other_preparations_and_unfinished_tasks_and_deletes_nothing(inputs, tmp_path, capsys):
    from neobert.cli import main

    first, other = tmp_path / "first", tmp_path / "other"
    run_local(first, cluster(inputs, first)[0], parallel=1)
    run_local(other, cluster(inputs, other, heldout_fraction=0.2)[0], parallel=1)

    mixed = tmp_path / "mixed"
    (mixed / "tasks").mkdir(parents=True)
    shutil.copy(first / "plan.json", mixed / "plan.json")
    shutil.copytree(first / "tasks" / "task_00000", mixed / "tasks" / "task_00000")
    shutil.copytree(other / "tasks" / "task_00001", mixed / "tasks" / "task_00001")
    before = files_of(mixed)
    assert main(["prepare", "--join", "--out", str(mixed)]) == 2
    error = capsys.readouterr().err
    assert "task_00001: task 1 belongs to another preparation (differs in: settings)" in error
    assert files_of(mixed) == before and not (mixed / "manifest.json").exists()

    clash = tmp_path / "clash"
    joined_files = {"train", "heldout", "manifest.json"}  # the top level's: the tasks keep theirs
    shutil.copytree(first, clash, ignore=lambda folder, names: joined_files if Path(folder) == first else set())
    (clash / "train").mkdir()
    (clash / "train" / "shard_00000.tokens.npy").write_bytes(b"someone else's file")
    with pytest.raises(DataError, match=r"shard_00000.tokens.npy: already exists and is not .*nothing was replaced"):
        join(clash)
    assert (clash / "train" / "shard_00000.tokens.npy").read_bytes() == b"someone else's file"

    (mixed / "tasks" / "task_00001" / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"1 of 2 task\(s\) did not finish \(task 1"):
        join(mixed)
    with pytest.raises(DataError, match="holds no `neobert prepare --tasks` preparation"):
        join(first / "tasks" / "task_00000")  # a single-machine corpus folder

    # Another task count or other settings into a prepared folder: refused, nothing deleted.
    before = files_of(first)
    with pytest.raises(DataError, match=r"differs in: task_sources, tasks"):
        cluster(inputs, first, tasks=3)
    with pytest.raises(DataError, match=r"differs in: settings"):
        cluster(inputs, first, heldout_fraction=0.3)
    assert files_of(first) == before
    plan, _ = cluster(inputs, tmp_path / "scratch", tasks=3)
    write_plan(first, plan, overwrite=True)  # --overwrite: the old preparation goes, the new plan is in
    assert sorted(p.name for p in first.iterdir()) == ["plan.json"]
    with pytest.raises(DataError, match="6 tasks for 5 input file"):
        cluster(inputs, tmp_path / "too_many", tasks=6)
    mixture = resolve_sources(["hf:some/dataset", str(inputs)], ReaderOptions())
    with pytest.raises(DataError, match="hf:some/dataset: --tasks cuts either input files or one dataset"):
        make_plan(mixture, tokenizer(), PrepareConfig(), 2)
    assert not (tmp_path / "too_many").exists()


def test_a_dataset_is_cut_into_parts_in_order(tmp_path):
    """A saved dataset (parts of rows) and a streamed one (`hf:` on a local folder: parts of data files)."""
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("pyarrow")
    texts = sample_texts(150, seed=11, long_words=300)
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(saved))
    files = tmp_path / "files"
    files.mkdir()
    for number in range(3):
        datasets.Dataset.from_dict({"text": texts[number * 50 : (number + 1) * 50]}).to_parquet(
            str(files / f"part_{number}.parquet")
        )
    for spec in (str(saved), f"hf:{files}"):
        name = "saved" if spec == str(saved) else "streamed"
        reference = prepare_files([spec], tmp_path / f"{name}_single", **SETTINGS).out
        out = tmp_path / f"{name}_tasks"
        config = PrepareConfig(**SETTINGS, workers=1, progress=False)
        plan = make_plan(resolve_sources([spec], config.reader), tokenizer(), config, 2)
        write_plan(out, plan)
        manifest = run_local(out, plan, parallel=1).manifest
        for split in ("train", "heldout"):
            assert documents(out, split) == documents(reference, split), (name, split)
        assert [source["part"] for source in manifest["sources"]] == [[0, 2], [1, 2]]
        assert [source["documents"] for source in manifest["sources"]] == ([75, 75] if name == "saved" else [100, 50])
    with pytest.raises(DataError, match=r"4 tasks for a dataset of 3 data file\(s\)"):
        make_plan(resolve_sources([f"hf:{files}"], ReaderOptions()), tokenizer(), PrepareConfig(), 4)


def test_command_line(inputs, single, tmp_path, capsys):
    from neobert.cli import main

    out = tmp_path / "out"
    arguments = ["prepare", str(inputs), "--out", str(out), "--tasks", "2", "--no-progress", "--parallel-tasks", "2"]
    arguments += ["--shard-tokens", "2500", "--heldout-fraction", "0.1", "--max-length", "64"]
    assert main(arguments) == 0
    assert f"prepared {out}" in capsys.readouterr().out
    for split in ("train", "heldout"):
        assert documents(out, split) == documents(single, split)
    assert main(["prepare", str(inputs), "--out", str(tmp_path / "o"), "--tasks", "9", "--no-progress"]) == 2
    assert "9 tasks for 5 input file(s)" in capsys.readouterr().err
    assert main(["prepare", "--demo", "--out", str(tmp_path / "d"), "--tasks", "2"]) == 2
    assert main(["prepare", str(inputs), "--out", str(tmp_path / "s"), "--tasks", "2", "--executor", "slurm"]) == 2
    assert "--slurm-partition" in capsys.readouterr().err


FAKE_SBATCH = """#!/bin/sh
# Records each submission (arguments, then the script) and answers as sbatch does.
count=$(ls "$SUBMITTED" | wc -l)
{ echo "$@"; eval cat \\"\\${$#}\\"; } > "$SUBMITTED/job_$count"
echo "Submitted batch job $((100 + count))"
"""
FAKE_SCONTROL = """#!/bin/sh
# `scontrol show hostnames LIST`, for a list of one node.
echo "$4"
"""


@pytest.mark.slow  # about 20 s: three processes, each importing torch with the package
def test_slurm_submission_runs_the_tasks_and_then_the_join(inputs, single, tmp_path, monkeypatch):
    """Real `SlurmPipelineExecutor` up to `sbatch` (and `scontrol`), replaced by scripts that record the jobs
    (and name the node); the array tasks and the join then run as the Slurm script runs them
    (`launch_pickled_pipeline`), each in its own process."""
    bin_folder, submitted = tmp_path / "bin", tmp_path / "submitted"
    bin_folder.mkdir()
    submitted.mkdir()
    for name, script in (("sbatch", FAKE_SBATCH), ("scontrol", FAKE_SCONTROL)):
        (bin_folder / name).write_text(script)
        (bin_folder / name).chmod((bin_folder / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SUBMITTED", str(submitted))

    out = tmp_path / "out"
    plan, _ = cluster(inputs, out)
    message = submit_slurm(out, plan, SlurmOptions(partition="cpu", env_command="true"))
    assert "as Slurm job 100 and the join as job 102 (after it)" in message
    jobs = [(submitted / f"job_{n}").read_text() for n in range(4)]  # tasks, their stats, join, its stats
    assert "#SBATCH --array=0-1" in jobs[0] and "#SBATCH --partition=cpu" in jobs[0]
    assert jobs[2].startswith("--export=ALL,RUN_OFFSET=0 --dependency=afterok:100")
    assert "launch_pickled_pipeline" in jobs[0] and not (out / "manifest.json").exists()

    def array_task(executor: Path, rank: int) -> subprocess.Popen:
        environment = {**os.environ, "PYTHONPATH": SRC, "SLURM_ARRAY_TASK_ID": str(rank), "SLURM_NODELIST": "n1"}
        command = [sys.executable, "-m", "datatrove.tools.launch_pickled_pipeline", str(executor)]
        return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def succeeds(job: subprocess.Popen) -> None:
        output, _ = job.communicate(timeout=300)
        assert job.returncode == 0, output[-3000:]

    for job in [array_task(out / "logs" / "executor.pik", rank) for rank in range(2)]:  # at once, as on Slurm
        succeeds(job)
    succeeds(array_task(out / "logs" / "join" / "executor.pik", 0))
    for split in ("train", "heldout"):
        assert documents(out, split) == documents(single, split)
    assert json.loads((out / "manifest.json").read_text())["tasks"]["count"] == 2


@pytest.mark.slow  # about 15 s: the benchmark in its own process
def test_throughput_benchmark_counts_every_token_and_projects_by_core_count(tmp_path):
    from helpers.benchmarks import run_quick_benchmark

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "peers"))
    from prepare_throughput import quick_text

    report, printed = run_quick_benchmark(
        "studies/cluster_prepare_throughput.py", tmp_path / "r.json", "--repeats", "1"
    )
    (run,) = report["runs"]
    source, documents, _, _ = quick_text(tmp_path)
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines()]
    assert report["corpus"]["documents"] == documents and report["tasks"] == 2 and report["format"] == "jsonl"
    assert run["tokens"] == sum(map(len, tokenizer()(texts, add_special_tokens=False)["input_ids"]))
    per_core = report["tokens_per_second_per_core"]
    assert per_core == run["tokens_per_cpu_second"]
    assert per_core == pytest.approx(run["tokens"] / run["cpu_seconds"], rel=1e-3)  # seconds kept to 1 ms
    for cores in (100, 1000):
        assert report["projected_hours_for_600b_tokens"][str(cores)] == round(600e9 / (per_core * cores) / 3600, 2)
    assert f"median: {per_core:,.0f} tokens/s per core" in printed
