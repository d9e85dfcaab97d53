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
    """``horovod.spark.run(fn, args, num_proc, **kwargs)``, its job built with ``profile``.

    Horovod's Gloo launcher would take over SIGINT and SIGTERM for the rest of the process
    (``gloo_run.register_shutdown_event``) and turn them into a rank failure; here its shutdown
    event is ours instead: :func:`stop_ranks` sets it, and the driver's own handlers stay.
    """
    import horovod.spark
    from horovod.runner import gloo_run
    from horovod.spark import runner

    with _PATCH_LOCK:
        make_thread, register = runner._make_spark_thread, gloo_run.register_shutdown_event

        def make_spark_thread(spark_context, *rest, **more):
            return make_thread(ProfiledContext(spark_context, profile), *rest, **more)

        if profile is not None:
            runner._make_spark_thread = make_spark_thread
        gloo_run.register_shutdown_event = _shutdown_event
        try:
            return horovod.spark.run(fn, args=args, num_proc=num_proc, **kwargs)
        finally:
            runner._make_spark_thread, gloo_run.register_shutdown_event = make_thread, register


_SHUTDOWN_EVENTS: list[threading.Event] = []


def _shutdown_event() -> threading.Event:
    """Stands in for Horovod's ``register_shutdown_event``: an event, no signal handlers."""
    event = threading.Event()
    _SHUTDOWN_EVENTS[:] = [e for e in _SHUTDOWN_EVENTS if not e.is_set()] + [event]
    return event


def stop_ranks() -> None:
    """Ask Horovod to terminate the rank processes of the runs in progress."""
    for event in _SHUTDOWN_EVENTS:
        event.set()
