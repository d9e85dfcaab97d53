"""Launching the ranks: Spark task slots, and the launcher seam around ``horovod.spark.run``.

The Estimator talks to a :class:`Launcher` (``launch`` and ``cancel``); the default is
:class:`HorovodSparkLauncher`. Tests inject a fake one to drive retries, resume and the
watchdog in-process, without Spark or Horovod.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Callable, Protocol

from ..common.errors import InputError
from ..common.rank_config import RankConfig


class Launcher(Protocol):
    """Runs ``fn(config)`` on ``num_proc`` Horovod ranks; returns each rank's result."""

    def launch(self, fn: Callable[[RankConfig], dict], config: RankConfig, num_proc: int,
               start_timeout: int, verbose: bool) -> list[dict]: ...

    def cancel(self) -> None:
        """Stop a running launch (called from the watchdog's thread)."""

    def task_slots(self) -> int:
        """Tasks the cluster can run at once now."""

    @property
    def is_local(self) -> bool:
        """True when no executors can join later (Spark local mode)."""

    def describe(self) -> str:
        """Where the ranks run, for error messages."""


class HorovodSparkLauncher:
    """``horovod.spark.run``: one Spark task per rank, Gloo rendezvous through the driver."""

    def __init__(self, sc):
        self.sc = sc

    def launch(self, fn, config, num_proc, start_timeout, verbose):
        import horovod.spark

        return horovod.spark.run(
            fn, args=(config,), num_proc=num_proc, start_timeout=start_timeout, use_gloo=True,
            stdout=sys.stdout if verbose else None, stderr=sys.stderr if verbose else None,
            verbose=0, prefix_output_with_timestamp=False,
        )

    def cancel(self) -> None:
        from horovod.spark.driver import job_id

        # horovod.spark.run runs its Spark job in this job group (horovod/spark/runner.py).
        self.sc.cancelJobGroup(f"horovod.spark.run.{job_id.JOB_ID}")

    def task_slots(self) -> int:
        return spark_task_slots(self.sc)

    @property
    def is_local(self) -> bool:
        return self.sc.master.startswith("local")

    def describe(self) -> str:
        return (f"master {self.sc.master}, spark.task.cpus="
                f"{self.sc.getConf().get('spark.task.cpus', '1')}")


def task_slots(master: str, conf: dict, cpu_count: int, default_parallelism: int,
               executors: int) -> int:
    """Concurrent Spark task slots: cores (and GPUs, when tasks ask for one) / per task.

    ``conf`` holds the Spark confs as strings; ``executors`` counts registered executors
    (used only on a cluster whose tasks request GPUs).
    """
    task_cpus = int(conf.get("spark.task.cpus", "1"))
    match = re.match(r"local\[(\d+|\*)(?:,\d+)?\]$", master)
    if master == "local":
        cores = 1
    elif match:
        cores = cpu_count if match.group(1) == "*" else int(match.group(1))
    else:
        cores = default_parallelism
    slots = cores // task_cpus
    task_gpus = float(conf.get("spark.task.resource.gpu.amount", "0"))
    executor_gpus = float(conf.get("spark.executor.resource.gpu.amount", "0"))
    if task_gpus > 0 and executor_gpus > 0 and not master.startswith("local"):
        slots = min(slots, executors * int(executor_gpus // task_gpus))
    return slots


def spark_task_slots(sc) -> int:
    """:func:`task_slots` of a live SparkContext."""
    conf = dict(sc.getConf().getAll())
    executors = max(0, sc._jsc.sc().getExecutorMemoryStatus().size() - 1)
    return task_slots(sc.master, conf, os.cpu_count() or 1, sc.defaultParallelism, executors)


def wait_for_task_slots(slots: Callable[[], int], num_proc: int, timeout: float, is_local: bool,
                        where: str, clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep) -> int:
    """horovod.spark.run needs ``num_proc`` tasks at once; fail clearly instead of waiting.

    On a cluster executors may still be registering, so wait up to ``min(timeout, 30)`` s;
    local mode has what it has. Returns the slots found.
    """
    found = slots()
    deadline = clock() + (0 if is_local else min(timeout, 30))
    while found < num_proc and clock() < deadline:
        sleep(1)
        found = slots()
    if found < num_proc:
        raise InputError(
            f"numProc={num_proc} needs {num_proc} concurrent Spark task slots, but the cluster "
            f"has {found} ({where}); lower numProc or add executors/cores."
        )
    return found
