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
