"""Retries, resume and run matching driven in-process by a fake launcher (no Spark, no Horovod)."""

import dataclasses
import logging
import os
import threading

import pytest
from helpers import make_config

from hvd_otto import InputError, TrainingError
from hvd_otto.common.run_folder import RunFolder, RunStore
from hvd_otto.driver.training_run import (
    RetryPolicy,
    check_run_matches,
    choose_run,
    run_with_retries,
    summarise,
)

POLICY = RetryPolicy(max_retries=1, start_timeout=60, verbose=False, poll_interval=0.02)


def result(rank, digest="d1", first_batch=None):
    return {"rank": rank, "digest": digest, "device": "CPU", "allreduce": "Gloo",
            "first_batch_time": first_batch, "shard_rows": 10, "resumed_after": None,
            "best_epoch": 1, "history": [{"epoch": 1}], "model": b"keras"}


class FakeLauncher:
    """Plays one scripted attempt per launch: each step gets (config, run) and returns results
    or raises, like horovod.spark.run after its ranks ran."""

    def __init__(self, *attempts):
        self.attempts = list(attempts)
        self.configs = []
        self.cancelled = threading.Event()

    def launch(self, fn, config, num_proc, start_timeout, verbose):
        self.configs.append(config)
        return self.attempts.pop(0)(config, RunFolder(config.run_dir))

    def cancel(self):
        self.cancelled.set()


def succeed(config, run):
    return [result(1), result(0)]


def die_after_committing_epoch_1(config, run):
    os.makedirs(run.checkpoints_dir, exist_ok=True)
    open(run.checkpoint("epoch-0001.weights.h5"), "w").close()
    run.commit_history({"history": [{"epoch": 1}], "last_weights": "epoch-0001.weights.h5"})
    run.write_error(1, "Traceback (most recent call last):\nSystemExit: 17")
    raise RuntimeError("Horovod detected that one or more processes exited with non-zero status")


def config_in(tmp_path, **changes):
    return make_config(run_dir=str(tmp_path / "runs" / "r1"), **changes)


def test_first_attempt_succeeds_sorted_by_rank(tmp_path):
    launcher = FakeLauncher(succeed)
    results, attempts = run_with_retries(launcher, None, config_in(tmp_path), 2, POLICY)
    assert attempts == 1 and [r["rank"] for r in results] == [0, 1]
    assert not launcher.configs[0].resume


def test_a_failed_attempt_is_retried_from_the_committed_epoch(tmp_path, caplog):
    launcher = FakeLauncher(die_after_committing_epoch_1, succeed)
    with caplog.at_level(logging.WARNING, logger="hvd_otto"):
        results, attempts = run_with_retries(launcher, None, config_in(tmp_path), 2, POLICY)
    assert attempts == 2 and [c.resume for c in launcher.configs] == [False, True]
    assert "retrying from epoch 1 checkpoint" in caplog.text
    assert "SystemExit: 17" in caplog.text  # the rank's own last line is the cause shown
    assert not RunFolder(launcher.configs[0].run_dir).has_errors()  # cleared for the retry


def test_a_failure_before_any_commit_retries_from_the_start(tmp_path, caplog):
    def fail(config, run):
        raise RuntimeError("rank 0 exited")

    launcher = FakeLauncher(fail, succeed)
    with caplog.at_level(logging.WARNING, logger="hvd_otto"):
        run_with_retries(launcher, None, config_in(tmp_path), 2, POLICY)
    assert "retrying from the start (no epoch was committed)" in caplog.text


def test_every_attempt_failing_raises_with_the_ranks_tracebacks(tmp_path):
    launcher = FakeLauncher(die_after_committing_epoch_1, die_after_committing_epoch_1)
    policy = dataclasses.replace(POLICY, max_retries=1)
    with pytest.raises(TrainingError) as caught:
        run_with_retries(launcher, None, config_in(tmp_path), 2, policy)
    message = str(caught.value)
    assert "failed after 2 attempt(s)" in message and "--- rank-1 ---" in message
    assert f"Checkpoints are kept in {tmp_path}/runs/r1" in message
    assert len(launcher.configs) == 2


def test_no_retries_means_one_attempt(tmp_path):
    launcher = FakeLauncher(die_after_committing_epoch_1)
    with pytest.raises(TrainingError, match="after 1 attempt"):
        run_with_retries(launcher, None, config_in(tmp_path), 2,
                         dataclasses.replace(POLICY, max_retries=0))


def test_the_watchdog_cancels_a_rank_that_never_joins(tmp_path):
    class Clock:
        now = 0.0

        def __call__(self):
            self.now += 50  # every look at the run folder is 50 s later
            return self.now

    def hang(config, run):
        run.mark_rank(0, "alive")
        run.mark_rank(0, "joined")
        run.mark_rank(1, "alive")
        if not launcher.cancelled.wait(10):
            return [result(0), result(1)]
        raise RuntimeError("Spark job group cancelled")

    launcher = FakeLauncher(hang)
    with pytest.raises(TrainingError) as caught:
        run_with_retries(launcher, None, config_in(tmp_path), 2,
                         dataclasses.replace(POLICY, max_retries=0), clock=Clock())
    assert launcher.cancelled.is_set()
    assert "rank(s) 1 did not join the Horovod ring within startTimeout=60 s" in str(caught.value)


def test_choose_run_new_resume_and_refusals(tmp_path, caplog):
    store = RunStore(str(tmp_path))
    with pytest.raises(InputError, match="resume needs storePath"):
        choose_run(store, resume=True, store_given=False)
    with pytest.raises(InputError, match="no unfinished run"):
        choose_run(store, resume=True, store_given=True)
    run, resumed = choose_run(store, resume=False, store_given=True)
    assert not resumed and run.path.startswith(store.runs_dir)
    for name in ("20250101-a", "20250102-b"):
        old = RunFolder(os.path.join(store.runs_dir, name))
        os.makedirs(old.path)
        old.commit_history({"history": [{"epoch": 1}]})
    assert choose_run(store, resume=True, store_given=True)[0].run_id == "20250102-b"
    with caplog.at_level(logging.WARNING, logger="hvd_otto"):
        run, resumed = choose_run(store, resume=False, store_given=True)
    assert not resumed and run.run_id not in ("20250101-a", "20250102-b")
    assert "holds 2 unfinished run(s), the latest 20250102-b" in caplog.text


def test_a_resumed_run_must_train_the_same_thing(tmp_path):
    config = config_in(tmp_path)
    run = RunFolder(config.run_dir)
    check_run_matches(run, config, 2)
    assert run.read_identity()["batch_size"] == 128
    check_run_matches(run, dataclasses.replace(config, resume=True), 2)
    changed = dataclasses.replace(config, resume=True, batch_size=64,
                                  model={"kind": "mlp", "hidden": [8]})
    with pytest.raises(InputError, match=r"batch_size: 128 → 64; model_digest"):
        check_run_matches(run, changed, 2)
    with pytest.raises(InputError, match=r"num_proc: 2 → 3"):
        check_run_matches(run, dataclasses.replace(config, resume=True), 3)
    check_run_matches(run, dataclasses.replace(config, batch_size=64), 2)  # a new run rewrites
    assert run.read_identity()["batch_size"] == 64


def test_summary_requires_identical_ranks_and_times_the_launch(tmp_path):
    config = config_in(tmp_path)
    results = [result(0, first_batch=105.0), result(1, first_batch=103.0)]
    summary = summarise(results, config, 2, attempts=1, fit_started=100.0, now=130.0)
    assert summary["launch_seconds"] == 3.0 and summary["fit_seconds"] == 30.0
    assert summary["rank_digests"] == ["d1", "d1"] and summary["run"].startswith("file://")
    with pytest.raises(TrainingError, match="different weights"):
        summarise([result(0), result(1, digest="d2")], config, 2, 1, 100.0, 130.0)


def test_a_signal_to_the_driver_stops_the_run_without_a_retry(tmp_path):
    """SIGTERM arrives while the ranks run: they are stopped, Interrupted is raised, and the
    second scripted attempt is never launched; the committed checkpoint stays for resume."""
    import signal

    from hvd_otto.common.errors import Interrupted
    from hvd_otto.common.signals import StopSignals

    def signalled_mid_run(config, run):
        os.makedirs(run.checkpoints_dir, exist_ok=True)
        open(run.checkpoint("epoch-0001.weights.h5"), "w").close()
        run.commit_history({"history": [{"epoch": 1}], "last_weights": "epoch-0001.weights.h5"})
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the handler raises before this line")

    launcher = FakeLauncher(signalled_mid_run, succeed)
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(on_stop=launcher.cancel) as signals:
        policy = dataclasses.replace(POLICY, stopped_by=lambda: signals.received)
        with pytest.raises(Interrupted) as caught:
            run_with_retries(launcher, None, config_in(tmp_path), 2, policy)
    assert caught.value.exit_code == 143 and launcher.cancelled.is_set()
    assert len(launcher.configs) == 1  # no retry
    assert RunFolder(launcher.configs[0].run_dir).load_checkpoint()
    assert signal.getsignal(signal.SIGTERM) is before  # handlers given back


def test_a_rank_failure_after_a_stop_request_is_not_retried(tmp_path):
    """The ranks may die of the stop before the driver's handler runs: still no retry."""
    import signal

    from hvd_otto.common.errors import Interrupted

    launcher = FakeLauncher(die_after_committing_epoch_1, succeed)
    policy = dataclasses.replace(POLICY, stopped_by=lambda: signal.SIGINT)
    with pytest.raises(Interrupted) as caught:
        run_with_retries(launcher, None, config_in(tmp_path), 2, policy)
    assert caught.value.exit_code == 130 and len(launcher.configs) == 1


def test_fit_phases_end_at_the_slowest_rank_and_skip_missing_marks():
    from hvd_otto.driver.training_run import fit_phases

    driver = {"started": 100.0, "staging_started": 101.0, "staged": 104.0, "returned": 130.0}
    ranks = [{"rank_started": 106.0, "imported": 109.0, "joined": 109.5, "data_ready": 110.0,
              "compiled": 111.0, "first_batch": 111.5, "trained": 128.0},
             {"rank_started": 107.0, "imported": 110.0, "joined": 110.5, "data_ready": 110.5,
              "compiled": 111.0, "first_batch": 111.5, "trained": 128.5}]
    phases = fit_phases(driver, ranks)
    assert phases == {"checks": 1.0, "stage_data": 3.0, "launch_ranks": 3.0,
                      "import_tensorflow": 3.0, "join_ring": 0.5, "read_shards": 0.0,
                      "build_model": 0.5, "to_first_batch": 0.5, "train": 17.0,
                      "return_model": 1.5}
    assert sum(phases.values()) == 30.0
    # a fake launcher's ranks report no marks: only the driver's phases, nothing invented
    assert fit_phases(driver, []) == {"checks": 1.0, "stage_data": 3.0}
