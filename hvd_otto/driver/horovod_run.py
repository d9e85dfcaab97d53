"""``horovod.spark.run`` whose Spark job asks for a GPU per task (stage-level scheduling), whose
tasks end with their ranks, and whose launcher leaves the driver's signal handlers alone.

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

Tasks that end with their ranks: Horovod's Spark task keeps its service up for
``MINIMUM_COMMAND_LIFETIME_S`` (3 s) "after the command started", so that the driver's client can
still ask for the exit code of a very short command; but the pinned version starts that timer
when the command *ends*, so every fit waited 3 s after its ranks had exited. And the driver's
wait for a rank's exit code polls once a second. Our mapper runs Horovod's own ``_task_fn``
inside :func:`tasks_ending_promptly`: the timer starts with the command, as documented, and the
wait is woken when the command ends.

No Gloo check in the driver: before it starts the ranks, Horovod asks whether *the driver's*
Horovod was built with Gloo, by importing its TensorFlow extension in a forked process (2-3 s
of TensorFlow import in every job's driver). The ranks run the executors' Horovod, so each rank
checks its own instead (``rank.entry``, with an error that says what to do), and :func:`run`
answers Horovod's driver-side question with :func:`_gloo_checked_by_ranks`.
"""

from __future__ import annotations

import contextlib
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
    from horovod.runner import gloo_run, launch
    from horovod.spark import runner

    with _PATCH_LOCK:
        make_thread, register = runner._make_spark_thread, gloo_run.register_shutdown_event
        make_mapper, gloo_built = runner._make_mapper, launch.gloo_built

        def make_spark_thread(spark_context, *rest, **more):
            return make_thread(ProfiledContext(spark_context, profile), *rest, **more)

        if profile is not None:
            runner._make_spark_thread = make_spark_thread
        runner._make_mapper = prompt_task_mappers(make_mapper)
        launch.gloo_built = _gloo_checked_by_ranks
        gloo_run.register_shutdown_event = _shutdown_event
        try:
            return horovod.spark.run(fn, args=args, num_proc=num_proc, **kwargs)
        finally:
            runner._make_spark_thread, gloo_run.register_shutdown_event = make_thread, register
            runner._make_mapper, launch.gloo_built = make_mapper, gloo_built


def _gloo_checked_by_ranks(verbose: bool = False) -> bool:
    """Stands in for ``horovod.runner.launch.gloo_built`` during :func:`run`: every rank checks
    that its own Horovod has Gloo before it joins the ring (``rank.entry.require_gloo``)."""
    return True


def prompt_task_mappers(make_mapper):
    """Horovod's ``_make_mapper`` whose mappers run inside :func:`tasks_ending_promptly`, and
    then read their partition's input, which Horovod's mapper leaves unread: a Python worker
    that did not read its input to the end is not reused but exits at once, and with the task
    no longer lingering, that exit came while Horovod's watcher of the command's
    multiprocessing Event still held it (a resource-tracker warning of 5 leaked semaphores per
    rank)."""

    def make(*args, **kwargs):
        mapper = make_mapper(*args, **kwargs)

        def prompt_mapper(index, iterator):  # runs in the executor's Python worker
            with tasks_ending_promptly():
                yield from mapper(index, iterator)
            for _ in iterator:  # Horovod's mapper leaves its input unread
                pass

        return prompt_mapper

    return make


@contextlib.contextmanager
def tasks_ending_promptly():
    """Horovod's ``SparkTaskService`` ends promptly after its command (the rank) ends, while
    inside: ``_run_command`` on Horovod's class is :func:`_run_command_promptly` (Horovod's own
    code names the class, so a subclass cannot stand in). A Python worker runs one task at a
    time, and the class is restored after ours, so other users of ``horovod.spark.run`` in
    the same application (Horovod's own estimators) keep Horovod's behaviour."""
    from horovod.spark.task.task_service import SparkTaskService

    original = SparkTaskService.__dict__["_run_command"]
    SparkTaskService._run_command = _run_command_promptly
    try:
        yield
    finally:
        SparkTaskService._run_command = original


def _run_command_promptly(self, *args, **kwargs) -> None:
    """``SparkTaskService._run_command`` that (1) starts the minimum-lifetime timer when the
    command starts, as Horovod documents it (0.28.1 starts it when the command ends, so every
    task lingered 3 s), and (2) wakes the driver's wait for the exit code when the command has
    ended, instead of leaving it to its next 1 s poll."""
    from horovod.runner.common.service.task_service import BasicTaskService
    from horovod.runner.common.util.timeout import Timeout

    lifetime = None
    if self._minimum_command_lifetime_s is not None:
        lifetime = Timeout(self._minimum_command_lifetime_s, message="Just measuring runtime")
    BasicTaskService._run_command(self, *args, **kwargs)
    self._minimum_command_lifetime = lifetime
    # The waiters check that this thread has ended, so notify them from another one after it.
    threading.Thread(target=_notify_after, args=(threading.current_thread(), self._wait_cond),
                     name="hvd-otto-command-ended", daemon=True).start()


def _notify_after(thread: threading.Thread, condition: threading.Condition) -> None:
    thread.join()
    with condition:
        condition.notify_all()


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
