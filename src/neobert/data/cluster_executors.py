"""Runs the tasks of `neobert prepare --tasks N` on datatrove's executors, then the join.

datatrove does the scheduling and the bookkeeping: a task is marked complete (`OUT/logs/completions/00003`)
only when it returns, and a rerun of the same command runs only the tasks without a mark, so a killed or
failed task reruns alone (and inside it, `prepare` resumes from its last finished block).

- `local`: a pool of processes on this machine, then the join in this process.
- `slurm`: one array job of N tasks (`sbatch`), and the join as a one-task job that starts after it
  (`afterok`). `OUT` must be on a file system every node sees.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path

from neobert.data.cluster_prepare import LOGS, ClusterPlan, JoinTask, PrepareTask, join, unfinished_tasks
from neobert.data.prepare import PrepareSummary
from neobert.data.shards import DataError

EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = 1  # each task tokenises with this many processes
    mem_per_cpu_gb: int = 2
    env_command: str | None = None  # run before each task, e.g. "source /shared/venv/bin/activate"
    sbatch_args: dict[str, str] = field(default_factory=dict)


def _quiet_datatrove_console() -> None:
    """datatrove logs every step at INFO to the console; its per-task log files keep everything."""
    import sys

    from datatrove.utils.logging import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def run_local(out: Path, plan: ClusterPlan, parallel: int = 0) -> PrepareSummary:
    """Runs the unfinished tasks, `parallel` at a time (0: one per core), each in one process, then joins."""
    from datatrove.executor import LocalPipelineExecutor

    _quiet_datatrove_console()
    parallel = min(plan.tasks, parallel or len(os.sched_getaffinity(0)))
    executor = LocalPipelineExecutor(
        pipeline=[PrepareTask.from_plan(out, plan, workers=1)],
        tasks=plan.tasks,
        workers=parallel,
        logging_dir=str(out / LOGS),
        # fork: a task starts without importing torch and transformers again (seconds each).
        start_method="fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn",
    )
    try:
        executor.run()
    except Exception as error:  # the first failed task's error; the others ran or were left to a rerun
        failed = unfinished_tasks(out, plan.tasks)
        raise DataError(
            f"{out}: task(s) {', '.join(map(str, failed))} of {plan.tasks} failed ({type(error).__name__}: "
            f"{error}); the logs are in {out / LOGS / 'logs'}; run the same command again: finished tasks "
            "are skipped"
        ) from error
    return join(out)


def submit_slurm(out: Path, plan: ClusterPlan, options: SlurmOptions) -> str:
    """Submits the tasks as a Slurm array job and the join after it; returns what was submitted."""
    from datatrove.executor import SlurmPipelineExecutor

    if not options.partition:
        raise DataError("--executor slurm needs --slurm-partition")
    common = dict(
        time=options.time,
        partition=options.partition,
        mem_per_cpu_gb=options.mem_per_cpu_gb,
        env_command=options.env_command,
        sbatch_args=dict(options.sbatch_args) or None,
    )
    tasks = SlurmPipelineExecutor(
        pipeline=[PrepareTask.from_plan(out, plan, workers=options.cpus_per_task)],
        tasks=plan.tasks,
        cpus_per_task=options.cpus_per_task,
        job_name="neobert-prepare",
        logging_dir=str(out / LOGS),
        **common,
    )
    joiner = SlurmPipelineExecutor(
        pipeline=[JoinTask(str(out.resolve()))],
        tasks=1,
        cpus_per_task=1,
        job_name="neobert-prepare-join",
        logging_dir=str(out / LOGS / "join"),
        depends=tasks,
        **common,
    )
    joiner.run()  # submits the tasks first (its dependency), then itself
    return (
        f"submitted {len(unfinished_tasks(out, plan.tasks))} unfinished task(s) of {plan.tasks} as Slurm job "
        f"{tasks.job_id} and the join as job {joiner.job_id} (after it); logs in {out / LOGS}. When they are "
        f"done, {out / 'manifest.json'} exists; rerun this command to rerun failed tasks, or "
        f"`neobert prepare --join --out {out}` to join by hand"
    )
