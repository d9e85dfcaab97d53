"""The assumptions that let the Horovod job carry a resource profile, checked in Horovod's source."""

import inspect
import re

import pytest

runner = pytest.importorskip("horovod.spark.runner")


def test_pinned_horovod_builds_its_job_where_we_hook_in():
    import horovod

    assert horovod.__version__ == "0.28.1", "re-check hvd_otto/driver/horovod_run.py"
    run_source = inspect.getsource(runner.run)
    assert "_make_spark_thread(spark_context," in run_source
    assert "spark_context.cancelJobGroup" in run_source  # cancelling keeps the real context


def test_the_spark_thread_uses_only_set_job_group_and_range_of_the_context():
    source = inspect.getsource(runner._make_spark_thread)
    used = set(re.findall(r"spark_context\.(\w+)", source))
    assert used == {"setJobGroup", "range"}


def test_profiled_context_adds_the_profile_to_range_and_delegates_the_rest():
    from hvd_otto.driver.horovod_run import ProfiledContext

    calls = []

    class FakeRdd:
        def withResources(self, profile):
            calls.append(("withResources", profile))
            return self

    class FakeContext:
        master = "spark://h:7077"

        def range(self, start, numSlices):
            calls.append(("range", start, numSlices))
            return FakeRdd()

        def setJobGroup(self, group, description, interruptOnCancel):
            calls.append(("setJobGroup", group))

    context = ProfiledContext(FakeContext(), "PROFILE")
    context.setJobGroup("g", "d", interruptOnCancel=True)
    context.range(0, numSlices=2)
    assert calls == [("setJobGroup", "g"), ("range", 0, 2), ("withResources", "PROFILE")]
    assert context.master == "spark://h:7077"


def test_run_restores_horovods_function_even_when_the_run_fails(monkeypatch):
    import horovod.spark

    from hvd_otto.driver import horovod_run

    original = runner._make_spark_thread
    seen = []

    def failing_run(fn, args, num_proc, **kwargs):
        seen.append(runner._make_spark_thread is not original)
        raise RuntimeError("rank failed")

    monkeypatch.setattr(horovod.spark, "run", failing_run)
    with pytest.raises(RuntimeError):
        horovod_run.run(print, (), 2, profile="PROFILE")
    assert seen == [True] and runner._make_spark_thread is original


def test_horovods_launcher_takes_over_the_signals_only_through_register_shutdown_event():
    """What run() replaces: the one place Horovod's Gloo launcher installs signal handlers."""
    from horovod.runner import gloo_run

    launch_source = inspect.getsource(gloo_run.launch_gloo)
    assert "event = register_shutdown_event()" in launch_source
    module_source = inspect.getsource(gloo_run)
    assert module_source.count("signal.signal(") == 2  # both inside register_shutdown_event
    assert "signal.signal(" in inspect.getsource(gloo_run.register_shutdown_event)


def test_during_a_run_horovod_gets_our_event_and_the_signal_handlers_stay(monkeypatch):
    import signal

    import horovod.spark
    from horovod.runner import gloo_run

    from hvd_otto.driver import horovod_run

    handler_before = signal.getsignal(signal.SIGTERM)
    events = []

    def fake_run(fn, args, num_proc, **kwargs):
        events.append(gloo_run.register_shutdown_event())  # what launch_gloo does
        assert signal.getsignal(signal.SIGTERM) is handler_before
        horovod_run.stop_ranks()  # what the driver's stop hook does
        return ["ok"]

    original = gloo_run.register_shutdown_event
    monkeypatch.setattr(horovod.spark, "run", fake_run)
    assert horovod_run.run(print, (), 2) == ["ok"]
    assert events[0].is_set(), "stop_ranks must set Horovod's shutdown event"
    assert gloo_run.register_shutdown_event is original


def test_pinned_horovod_lingers_after_the_command_where_we_hook_in():
    """What tasks_ending_promptly fixes, and where run() reaches it: the pinned Horovod starts the
    task's minimum-lifetime timer after the command, its driver waits for the exit code in 1 s
    polls, and its Spark thread makes the tasks' mapper through the module's _make_mapper."""
    from horovod.runner.common.service import task_service as basic
    from horovod.spark.task import task_service

    run_command = inspect.getsource(task_service.SparkTaskService._run_command)
    assert run_command.index("_run_command(command") < run_command.index(
        "self._minimum_command_lifetime = timeout.Timeout")
    handle = inspect.getsource(basic.BasicTaskService._handle)
    assert "while self._command_thread is None or self._command_thread.is_alive():" in handle
    assert "mapper = _make_mapper(driver.addresses()" in inspect.getsource(
        runner._make_spark_thread)
    assert "task_service.SparkTaskService(index" in inspect.getsource(runner._task_fn)


def test_horovods_launcher_asks_gloo_built_through_the_launch_module():
    from horovod.runner import launch

    assert "gloo_built(verbose=verbose)" in inspect.getsource(launch.run_controller)
    assert "gloo_built" in vars(launch)


def test_run_answers_the_gloo_question_for_the_ranks_and_restores_horovod(monkeypatch):
    import horovod.spark
    from horovod.runner import launch

    from hvd_otto.driver import horovod_run

    original_gloo, original_mapper = launch.gloo_built, runner._make_mapper
    seen = []

    def fake_run(fn, args, num_proc, **kwargs):
        seen.append((launch.gloo_built(verbose=False), runner._make_mapper is original_mapper))
        return ["ok"]

    monkeypatch.setattr(horovod.spark, "run", fake_run)
    assert horovod_run.run(print, (), 2) == ["ok"]
    assert seen == [(True, False)], "no driver-side extension import; mappers are wrapped"
    assert launch.gloo_built is original_gloo and runner._make_mapper is original_mapper


def test_the_wrapped_mapper_runs_horovods_with_prompt_tasks_then_restores_them():
    from horovod.spark.task.task_service import SparkTaskService

    from hvd_otto.driver import horovod_run

    original = SparkTaskService._run_command
    seen = []

    def horovods_mapper(index, iterator):
        seen.append(SparkTaskService._run_command is horovod_run._run_command_promptly)
        yield ("horovod's", index)

    mapper = horovod_run.prompt_task_mappers(lambda *args: horovods_mapper)("addresses")
    partition = iter([3])  # Horovod's mapper never reads it
    assert list(mapper(3, partition)) == [("horovod's", 3)]
    assert seen == [True]
    assert SparkTaskService._run_command is original, "other horovod.spark.run users keep it"
    assert next(partition, "read to the end") == "read to the end", (
        "a Python worker that leaves its input unread exits instead of being reused")


@pytest.fixture
def prompt_task_service():
    """A real SparkTaskService (2 s minimum command lifetime) inside tasks_ending_promptly,
    and a client of it."""
    from horovod.runner.common.util import secret
    from horovod.spark.task.task_service import SparkTaskClient, SparkTaskService

    from hvd_otto.driver import horovod_run

    key = secret.make_secret_key()
    with horovod_run.tasks_ending_promptly():
        service = SparkTaskService(0, key, None, 2)
        try:
            yield service, SparkTaskClient(0, service.addresses(), key, verbose=0)
        finally:
            service.shutdown()


def test_a_task_ends_with_its_command_and_wakes_the_exit_code_wait(prompt_task_service, tmp_path):
    import time

    service, client = prompt_task_service
    ended = tmp_path / "ended"
    client.run_command(f"sleep 2.5; date +%s.%N > {ended}", {})
    # A 30 s poll interval: only a wake-up on the command's end returns this in time.
    assert client.wait_for_command_exit_code(delay=30) == 0
    woken = time.time()
    service.wait_for_command_termination()  # Horovod 0.28.1 sleeps 2 s more here
    terminated = time.time()
    command_end = float(ended.read_text())
    assert woken - command_end < 5, "the exit-code wait slept through the command's end"
    assert terminated - command_end < 1.5, "the task lingered after a command past its lifetime"


def test_a_short_command_still_gets_the_whole_lifetime_from_its_start(prompt_task_service):
    import time

    service, client = prompt_task_service
    started = time.time()
    client.run_command("true", {})
    assert client.wait_for_command_exit_code() == 0
    service.wait_for_command_termination()
    assert time.time() - started >= 1.9
