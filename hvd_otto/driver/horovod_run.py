"""``horovod.spark.run`` whose Spark job asks for a GPU per task (stage-level scheduling).

ETL stages need no GPU, so the application does not set ``spark.task.resource.gpu.amount``;
only the Horovod job's tasks carry a ``TaskResourceProfile`` (Spark >= 3.4; standalone, YARN
and Kubernetes with dynamic allocation off) asking for one GPU and ``spark.task.cpus`` cores.

Why this is sound with the pinned Horovod 0.28.1: ``horovod.spark.runner.run`` builds its one
Spark job in ``_make_spark_thread(spark_context, ...)``, looked up in the module at call time,
and that function uses exactly two things of the context: ``setJobGroup`` and
``range(0, numSlices=num_proc)``, whose RDD it maps and collects. We hand it a context whose
``range`` returns that RDD ``.withResources(profile)`` and which delegates everything else, for
the duration of our own call only (a lock keeps concurrent fits apart); ``run`` itself keeps the
real context for cancelling. Nothing else changes: the same tasks, rendezvous and results.
``tests/unit/test_horovod_run.py`` reads Horovod's source to check these assumptions, so an
upgrade that breaks them fails there, not on a cluster.
"""

from __future__ import annotations

import threading

_PATCH_LOCK = threading.Lock()


class ProfiledContext:
    """A SparkContext whose ``range`` RDDs carry a resource profile; everything else delegates."""

    def __init__(self, sc, profile):
        self._sc, self._profile = sc, profile

    def range(self, *args, **kwargs):
        return self._sc.range(*args, **kwargs).withResources(self._profile)

    def __getattr__(self, name):
        return getattr(self._sc, name)


def task_profile(cpus: int, gpus: int):
    """A TaskResourceProfile asking ``cpus`` cores and ``gpus`` GPUs per task."""
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    requests = TaskResourceRequests().cpus(cpus)
    if gpus:
        requests = requests.resource("gpu", gpus)
    return ResourceProfileBuilder().require(requests).build


def run(fn, args: tuple, num_proc: int, profile=None, **kwargs) -> list:
    """``horovod.spark.run(fn, args, num_proc, **kwargs)``, its job built with ``profile``."""
    import horovod.spark
    from horovod.spark import runner

    if profile is None:
        return horovod.spark.run(fn, args=args, num_proc=num_proc, **kwargs)
    with _PATCH_LOCK:
        original = runner._make_spark_thread

        def make_spark_thread(spark_context, *rest, **more):
            return original(ProfiledContext(spark_context, profile), *rest, **more)

        runner._make_spark_thread = make_spark_thread
        try:
            return horovod.spark.run(fn, args=args, num_proc=num_proc, **kwargs)
        finally:
            runner._make_spark_thread = original
