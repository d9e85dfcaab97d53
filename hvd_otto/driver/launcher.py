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

    def rank_cpus(self, num_proc: int) -> int:
        """TensorFlow threads for each of ``num_proc`` ranks (see :func:`rank_threads`)."""


def rank_task_resources(master: str, conf: dict) -> tuple[int, int]:
    """(cpus, gpus) each rank's Spark task holds.

    GPUs: one per rank when executors have GPUs (``spark.executor.resource.gpu.amount``), asked
    for by the Horovod job alone unless the user set ``spark.task.resource.gpu.amount`` for the
    whole application; none in local mode, where Spark does not schedule GPUs.
    """
    cpus = int(conf.get("spark.task.cpus", "1"))
    if master.startswith("local"):
        return cpus, 0
    app_wide = float(conf.get("spark.task.resource.gpu.amount", "0"))
    executor_gpus = float(conf.get("spark.executor.resource.gpu.amount", "0"))
    return cpus, (int(app_wide) or 1) if executor_gpus > 0 else 0


def needs_stage_profile(master: str, conf: dict) -> bool:
    """True when the Horovod job must ask for its GPUs itself (no app-wide task GPU amount)."""
    return (rank_task_resources(master, conf)[1] > 0
            and float(conf.get("spark.task.resource.gpu.amount", "0")) == 0)


class HorovodSparkLauncher:
    """``horovod.spark.run``: one Spark task per rank, Gloo rendezvous through the driver; on GPU
    executors the job's tasks each ask for one GPU (``driver.horovod_run``)."""

    def __init__(self, sc):
        self.sc = sc
        self.conf = dict(sc.getConf().getAll())

    def launch(self, fn, config, num_proc, start_timeout, verbose):
        from .horovod_run import run, task_profile

        profile = None
        if needs_stage_profile(self.sc.master, self.conf):
            profile = task_profile(*rank_task_resources(self.sc.master, self.conf))
        # The ranks are started on the executors with the executors' Python (Horovod's default
        # is the driver's sys.executable, a path that need not exist on an executor).
        return run(
            fn, (config,), num_proc, profile, start_timeout=start_timeout, use_gloo=True,
            stdout=sys.stdout if verbose else None, stderr=sys.stderr if verbose else None,
            verbose=0, prefix_output_with_timestamp=False, executable=self.sc.pythonExec,
        )

    def rank_cpus(self, num_proc: int) -> int:
        return rank_threads(self.sc.master, self.conf, num_proc, os.cpu_count() or 1)

    def cancel(self) -> None:
        from horovod.spark.driver import job_id

        from .horovod_run import stop_ranks

        stop_ranks()  # Horovod terminates the rank processes it started
        # horovod.spark.run runs its Spark job in this job group (horovod/spark/runner.py).
        self.sc.cancelJobGroup(f"horovod.spark.run.{job_id.JOB_ID}")

    def task_slots(self) -> int:
        """:func:`task_slots` now (executors may still be registering)."""
        executors = max(0, self.sc._jsc.sc().getExecutorMemoryStatus().size() - 1)
        return task_slots(self.sc.master, self.conf, os.cpu_count() or 1,
                          self.sc.defaultParallelism, executors)

    @property
    def is_local(self) -> bool:
        return self.sc.master.startswith("local")

    def describe(self) -> str:
        return (f"master {self.sc.master}, spark.task.cpus="
                f"{self.sc.getConf().get('spark.task.cpus', '1')}")


def local_cores(master: str, cpu_count: int) -> int | None:
    """Cores of a local-mode master (``local``, ``local[N]``, ``local[*]``, ``local[N,F]``);
    ``None`` for a cluster master."""
    match = re.match(r"local\[(\d+|\*)(?:,\d+)?\]$", master)
    if master == "local":
        return 1
    if match:
        return cpu_count if match.group(1) == "*" else int(match.group(1))
    return None


def rank_threads(master: str, conf: dict, num_proc: int, cpu_count: int) -> int:
    """TensorFlow's thread budget per rank: the cores its Spark task holds (``spark.task.cpus``).

    In local mode the training job's ranks are the only tasks running, so they share all the
    local cores: one rank on ``local[4]`` uses 4 threads, not 1. On a cluster other tasks may
    share the executor, so a rank keeps to its task's cores.
    """
    task_cpus = rank_task_resources(master, conf)[0]
    cores = local_cores(master, cpu_count)
    if cores is None:
        return task_cpus
    return max(task_cpus, cores // max(1, num_proc))


def task_slots(master: str, conf: dict, cpu_count: int, default_parallelism: int,
               executors: int) -> int:
    """Concurrent Horovod rank tasks: cores (and GPUs, when ranks hold one) / per task.

    ``conf`` holds the Spark confs as strings; ``executors`` counts registered executors
    (used only on a cluster whose ranks hold GPUs).
    """
    task_cpus, task_gpus = rank_task_resources(master, conf)
    cores = local_cores(master, cpu_count)
    slots = (default_parallelism if cores is None else cores) // task_cpus
    if task_gpus > 0:
        executor_gpus = float(conf.get("spark.executor.resource.gpu.amount", "0"))
        slots = min(slots, executors * int(executor_gpus // task_gpus))
    return slots


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
            f"numProc={num_proc} (--num-proc) needs {num_proc} concurrent Spark task slots, but the cluster "
            f"has {found} ({where}); lower numProc (--num-proc) or add executors/cores."
        )
    return found
