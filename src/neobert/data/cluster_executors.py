"""Runs the tasks of `neobert prepare --tasks N` on datatrove's executors, then the join.

datatrove does the scheduling and the bookkeeping: a task is marked complete (`OUT/logs/completions/00003`)
only when it returns, and a rerun of the same command runs only the tasks without a mark, so a killed or
failed task reruns alone (and inside it, `prepare` resumes from its last finished block).

- `local`: a pool of processes on this machine, each task in a child of its own (so a killed task fails
  alone instead of stalling the pool), then the join in this process.
- `slurm`: one array job of N tasks (`sbatch`), and the join as a one-task job that starts after it
  (`afterok`). `OUT` must be on a file system every node sees.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neobert.data.cluster_prepare import LOGS, ClusterPlan, JoinTask, PrepareTask, join, unfinished_tasks
from neobert.data.prepare import PrepareSummary, die_with_parent
from neobert.data.shards import DataError
from neobert.runtime import usable_cores

EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = 1  # each task tokenises with this many processes
    mem_per_cpu_gb: int = 2
    env_command: str | None = None  # run before each task, e.g. "source /shared/venv/bin/activate"
    sbatch_args: dict[str, str] = field(default_factory=dict)


@dataclass
class ForkedTask:
    """Runs a pipeline task in a forked child of the pool's process and waits for it. A task process killed
    by a signal (the OOM killer, a user) then fails that task with an error naming the signal; in the pool
    process itself, the pool would wait for its result forever."""

    task: Callable[[Any, int, int], Any]

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        if not hasattr(os, "fork"):
            return self.task(data, rank, world_size)
        read, write = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            # A task left running without its worker (the pool stops them when one fails) would race its rerun.
            die_with_parent(parent)
            code = 0
            try:
                self.task(data, rank, world_size)
            except BaseException as error:  # everything goes back to the parent as a message
                message = str(error) if isinstance(error, DataError) else f"{type(error).__name__}: {error}"
                if not isinstance(error, DataError):
                    traceback.print_exc()  # into the task's log: a bug, not bad input
                os.write(write, message.encode("utf-8", errors="replace")[: 1 << 15])
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            message = pipe.read().decode("utf-8", errors="replace")
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            raise DataError(f"task {rank}: its process was killed ({signal.Signals(os.WTERMSIG(status)).name})")
        if os.WEXITSTATUS(status) != 0:
            raise DataError(message or f"task {rank}: its process ended with exit code {os.WEXITSTATUS(status)}")
        return data


def _quiet_datatrove_console() -> None:
    """datatrove logs every step at INFO to the console; its per-task log files keep everything."""
    from datatrove.utils.logging import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def run_local(out: Path, plan: ClusterPlan, parallel: int = 0) -> PrepareSummary:
    """Runs the unfinished tasks, `parallel` at a time (0: one per core), each in one process, then joins."""
    from datatrove.executor import LocalPipelineExecutor

    _quiet_datatrove_console()
    parallel = min(plan.tasks, parallel or usable_cores())
    executor = LocalPipelineExecutor(
        pipeline=[ForkedTask(PrepareTask.from_plan(out, plan, workers=1))],
        tasks=plan.tasks,
        workers=parallel,
        logging_dir=str(out / LOGS),
        # fork: a task starts without importing torch and transformers again (seconds each).
        start_method="fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn",
    )
    try:
        executor.run()
    except Exception as error:  # the first failure stops the pool: tasks still running are stopped too
        unfinished = unfinished_tasks(out, plan.tasks)
        names = ", ".join(map(str, unfinished[:10])) + (", ..." if len(unfinished) > 10 else "")
        raise DataError(
            f"{out}: a task failed ({error if isinstance(error, DataError) else repr(error)}); "
            f"{len(unfinished)} of {plan.tasks} task(s) did not finish (task {names}); "
            f"the logs are in {out / LOGS / 'logs'}; run the same command again: finished tasks are skipped, "
            "the others resume from their last finished block"
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
