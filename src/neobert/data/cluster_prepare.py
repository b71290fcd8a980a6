"""`neobert prepare --tasks N`: the same corpus as `prepare`, made by N independent tasks, then joined.

The input files, in the order `prepare` reads them, are cut into N contiguous runs of about equal size
(or one Hugging Face dataset into N contiguous parts: data files when streamed, rows when saved); task r
tokenises part r with the single-machine code into its own corpus folder (own shards, manifest, resume).
The join lists the tasks' shards in task order under one manifest, hard-linking the files into the usual
layout: the joined corpus holds the single-machine corpus's documents, token ids and held-out split in
the same order; only the shard boundaries differ (each task's last shard is a short one).

```
OUT/plan.json                   the inputs, settings, tokenizer, task count and each task's part
OUT/tasks/task_00000/           task 0's corpus folder (plan.json, progress/, train/, heldout/, manifest.json)
OUT/logs/                       the engine's logs and completion markers (datatrove: completions/00000)
OUT/train/shard_00000.*         after the join: hard links to the tasks' shards, numbered in order
OUT/manifest.json               after the join: one manifest over every task's shards
```
A task is finished when its folder holds a manifest (written last). The engine (see `cluster_executors`)
decides where tasks run and reruns only the unfinished ones.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from neobert.data.prepare import (
    PrepareConfig,
    PrepareSummary,
    prepare,
    replace_other_preparation,
)
from neobert.data.sequences import sequence_forecast
from neobert.data.shards import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PLAN,
    SPLITS,
    DataError,
    ShardEntry,
    load_manifest,
    open_shard,
    shard_files,
)
from neobert.data.sources import DatasetSource, FileSource, Source, resolve_sources
from neobert.data.tokenization import TokenizerSpec
from neobert.files import write_json_atomically

TASKS = "tasks"
LOGS = "logs"
# Keys of the task plans and manifests that must agree with the cluster plan for the join to accept them.
SHARED_KEYS = ("format", "version", "tokenizer", "settings")


def task_folder(out: Path, rank: int) -> Path:
    return out / TASKS / f"task_{rank:05d}"


def split_contiguously(sizes: list[int], tasks: int) -> list[tuple[int, int]]:
    """Cuts items 0..n-1 into `tasks` non-empty contiguous runs [start, end) of about equal total size."""
    if tasks < 1:
        raise ValueError(f"tasks must be at least 1, not {tasks}")
    if tasks > len(sizes):
        raise DataError(
            f"{tasks} tasks for {len(sizes)} input file(s): a task reads whole files; use --tasks {len(sizes)} "
            "or fewer, or split the input into more files"
        )
    before = np.concatenate([[0], np.cumsum(np.maximum(np.asarray(sizes, dtype=np.float64), 1))])
    starts = [0]
    for rank in range(1, tasks):
        wanted = int(np.searchsorted(before, rank * before[-1] / tasks))
        # Leave at least one file to this task and to every task after it.
        starts.append(min(max(wanted, starts[-1] + 1), len(sizes) - (tasks - rank)))
    return list(zip(starts, [*starts[1:], len(sizes)], strict=True))


class DatasetPart(DatasetSource):
    """Part `index` of `count` of a Hugging Face dataset, in order: whole data files of a streamed dataset,
    rows of a saved one (`shard(..., contiguous=True)`; the parts laid end to end are the dataset)."""

    def __init__(self, source: DatasetSource, index: int, count: int):
        super().__init__(source.spec, source.options, source.path, source.name, source.config)
        self.index, self.count = index, count

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "part": [self.index, self.count]}

    def _dataset(self):
        return super()._dataset().shard(num_shards=self.count, index=self.index, contiguous=True)


def dataset_pieces(source: DatasetSource) -> int:
    """How many parts a dataset can be cut into: its data files when streamed, its rows when saved."""
    dataset = source._dataset()
    return dataset.num_shards if source.path is None else len(dataset)


@dataclass
class ClusterPlan:
    """What `OUT/plan.json` records: everything that decides the corpus, and what each task reads."""

    spec: TokenizerSpec
    config: PrepareConfig
    sources: list[Source]
    parts: list[list[Source]]  # per task, in order: laid end to end, they are `sources`

    @property
    def tasks(self) -> int:
        return len(self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "tokenizer": self.spec.describe(),
            "settings": self.config.decisive(),
            "sources": [s.identity() for s in self.sources],
            "tasks": self.tasks,
            "task_sources": [[s.identity() for s in part] for part in self.parts],
        }


def make_plan(sources: list[Source], tokenizer: Any, config: PrepareConfig, tasks: int) -> ClusterPlan:
    """Checks the inputs (cheaply, before any task starts) and assigns them to tasks: contiguous runs of
    files of about equal size, or the parts of one dataset."""
    if not sources:
        raise DataError("no sources given")
    if tasks < 1:
        raise ValueError(f"tasks must be at least 1, not {tasks}")
    spec = tokenizer if isinstance(tokenizer, TokenizerSpec) else TokenizerSpec.from_tokenizer(tokenizer)
    datasets = [s for s in sources if not isinstance(s, FileSource)]
    if datasets:
        if len(sources) > 1:
            raise DataError(
                f"{datasets[0].spec}: --tasks cuts either input files or one dataset into parts, not a mixture; "
                "prepare the dataset on its own, or download its data files and give them with the others"
            )
        (dataset,) = datasets
        pieces = dataset_pieces(dataset)
        if tasks > pieces:
            raise DataError(
                f"{dataset.spec}: {tasks} tasks for a dataset of {pieces} data file(s) (a task reads whole files); "
                f"use --tasks {pieces} or fewer"
            )
        return ClusterPlan(spec, config, [dataset], [[DatasetPart(dataset, r, tasks)] for r in range(tasks)])
    # Absolute paths: a task may run on another node, in another folder, and reads exactly these files.
    sources = [_absolute(source, config) for source in sources]
    for source in sources:
        source.check()
    runs = split_contiguously([s.path.stat().st_size for s in sources], tasks)
    return ClusterPlan(spec, config, sources, [sources[start:end] for start, end in runs])


def _absolute(source: FileSource, config: PrepareConfig) -> Source:
    (absolute,) = resolve_sources([str(source.path.resolve())], config.reader, unknown_as_text=True)
    absolute.spec = source.spec  # the manifest names each file as the single-machine run does
    return absolute


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not readable ({error})") from error


def write_plan(out: Path, plan: ClusterPlan, overwrite: bool = False) -> None:
    """Records the plan in `out`, refusing a folder that holds another preparation unless `overwrite`."""
    payload, path = plan.to_dict(), out / PLAN
    if path.is_file():
        previous = _read_json(path)
        if previous == payload:
            return
        differing = sorted(key for key in payload.keys() | previous.keys() if previous.get(key) != payload.get(key))
        what = "other inputs, settings or task count"
        replace_other_preparation(out, differing, overwrite, what, (*SPLITS, TASKS, LOGS, "progress"))
    elif out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out}: the folder is not empty and holds no prepared corpus; choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, payload)


@dataclass
class PrepareTask:
    """One task of the engine's pipeline: `prepare` on this rank's part of the inputs into this rank's
    folder. It holds the tokenizer as a spec and files by absolute path, so it runs on any node that sees
    them and `out`."""

    out: str
    spec: TokenizerSpec
    config: PrepareConfig
    parts: list[list[Source]]

    @classmethod
    def from_plan(cls, out: Path, plan: ClusterPlan, workers: int = 1) -> PrepareTask:
        config = replace(plan.config, workers=workers, progress=False, overwrite=False)
        return cls(str(Path(out).resolve()), plan.spec, config, plan.parts)

    def __repr__(self) -> str:  # engines log the pipeline: not the tokenizer's vocabulary
        return f"PrepareTask(out={self.out!r}, tasks={len(self.parts)}, tokenizer={self.spec.fingerprint[:12]})"

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> None:
        if world_size != len(self.parts):
            raise DataError(f"the engine runs {world_size} tasks but the plan has {len(self.parts)}")
        sources = copy.deepcopy(self.parts[rank])  # fresh read counts
        summary = prepare(sources, task_folder(Path(self.out), rank), self.spec, self.config)
        print(f"task {rank}: " + summary.describe())
        return data


@dataclass
class JoinTask:
    """The join as a one-task pipeline, so an engine can run it after the tasks (a dependent Slurm job)."""

    out: str

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> None:
        print(join(self.out).describe())
        return data


def unfinished_tasks(out: Path, tasks: int) -> list[int]:
    return [rank for rank in range(tasks) if not (task_folder(out, rank) / MANIFEST).is_file()]


def _check_task(out: Path, rank: int, plan: dict[str, Any]) -> dict[str, Any]:
    """The task's manifest, after checking that the task belongs to this preparation."""
    folder = task_folder(out, rank)
    task_plan = _read_json(folder / PLAN)
    expected = {**{key: plan[key] for key in SHARED_KEYS}, "sources": plan["task_sources"][rank]}
    differing = sorted(key for key in expected if task_plan.get(key) != expected[key])
    if differing:
        raise DataError(
            f"{folder}: task {rank} belongs to another preparation (differs in: {', '.join(differing)}); "
            "run the same `neobert prepare --tasks` command again to prepare it for this plan"
        )
    manifest = load_manifest(folder)
    if any(manifest.get(key) != plan[key] for key in SHARED_KEYS):
        raise DataError(f"{folder / MANIFEST}: does not match the task's plan; prepare task {rank} again")
    return manifest


def _link(source: Path, target: Path) -> None:
    """Hard-links `source` at `target` (a copy where the file system has no hard links); an existing target
    must already be the same file: nothing is replaced or deleted."""
    if target.exists():
        if not os.path.samefile(source, target):
            raise DataError(f"{target}: already exists and is not {source}; nothing was replaced")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        temporary = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)


def _summed_stats(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    stats = {}
    for key in manifests[0]["stats"]:
        if key == "sequences_at_max_length":
            continue
        values = [m["stats"][key] for m in manifests]
        stats[key] = max(values) if key == "longest_document_tokens" else sum(values)
    return stats


def join(out: str | os.PathLike) -> PrepareSummary:
    """Joins finished tasks into one corpus in `out`. Refuses, naming them, unfinished tasks and tasks of
    another preparation; a corpus already joined from the same tasks is left as it is."""
    out = Path(out)
    plan = _read_json(out / PLAN) if (out / PLAN).is_file() else None
    if plan is None or "tasks" not in plan:
        raise DataError(f"{out}: holds no `neobert prepare --tasks` preparation (no task plan in {PLAN})")
    unfinished = unfinished_tasks(out, plan["tasks"])
    if unfinished:
        names = ", ".join(map(str, unfinished[:10])) + (", ..." if len(unfinished) > 10 else "")
        raise DataError(
            f"{out}: {len(unfinished)} of {plan['tasks']} task(s) did not finish (task {names}: no "
            f"{MANIFEST} in {task_folder(out, unfinished[0]).relative_to(out)}); run the same `neobert prepare "
            "--tasks` command again: finished tasks are skipped"
        )
    manifests = [_check_task(out, rank, plan) for rank in range(plan["tasks"])]
    dtype = np.dtype(plan["tokenizer"]["dtype"])
    splits: dict[str, dict[str, Any]] = {split: {"documents": 0, "tokens": 0, "shards": []} for split in SPLITS}
    index = 0
    for rank, manifest in enumerate(manifests):
        folder = task_folder(out, rank)
        blocks = zip(*(manifest["splits"][split]["shards"] for split in SPLITS), strict=True)
        for block in blocks:
            for split, payload in zip(SPLITS, block, strict=True):
                entry = ShardEntry.from_dict(payload)
                open_shard(folder, entry, dtype, verify="size")  # a truncated or missing file, before linking
                tokens_file, offsets_file = shard_files(split, index)
                _link(folder / entry.tokens_file, out / tokens_file)
                _link(folder / entry.offsets_file, out / offsets_file)
                joined = replace(entry, index=index, tokens_file=tokens_file, offsets_file=offsets_file)
                splits[split]["shards"].append(joined.to_dict())
                splits[split]["documents"] += entry.documents
                splits[split]["tokens"] += entry.tokens
            index += 1
    first = manifests[0]
    sizes = [len(m["sources"]) for m in manifests]
    stats = _summed_stats(manifests)
    stats["sequences_at_max_length"] = sequence_forecast(
        out, [{"train": shard} for shard in splits["train"]["shards"]], first["max_length"]
    )
    manifest = {
        **{key: first[key] for key in first if key not in ("sources", "splits", "stats")},
        "sources": [source for m in manifests for source in m["sources"]],
        "splits": splits,
        "stats": stats,
        "tasks": {"count": plan["tasks"], "first_source": np.cumsum([0, *sizes[:-1]]).tolist()},
    }
    if (out / MANIFEST).is_file():
        if load_manifest(out) == manifest:
            return PrepareSummary(out, manifest, already_complete=True)
        raise DataError(f"{out / MANIFEST}: a different joined manifest is already there; nothing was replaced")
    write_json_atomically(out / MANIFEST, manifest)
    return PrepareSummary(out, manifest)
