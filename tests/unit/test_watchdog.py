"""The watchdog's decisions and driver-side progress, from run-folder state and a fake clock."""

import pytest

from hvd_otto.common.run_folder import RunFolder
from hvd_otto.driver.watchdog import ProgressWatcher, RunWatchdog, format_epoch, hang_reason


@pytest.mark.parametrize("joined, now, alive, error, expected", [
    ([], 100, None, None, None),  # nobody started yet: Horovod's own start_timeout applies
    (["0"], 50, 0, None, None),  # still within startTimeout
    (["0"], 61, 0, None, "rank(s) 1 did not join the Horovod ring within startTimeout=60 s"),
    (["0", "1"], 500, 0, None, None),  # all joined: training may take its time
    (["0", "1"], 500, 0, 480, None),  # a rank failed 20 s ago: within the grace
    (["0", "1"], 511, 0, 480, "a rank failed and the others were still blocked 30 s later"),
])
def test_hang_reason(joined, now, alive, error, expected):
    reason = hang_reason(joined, 2, now, alive, error, start_timeout=60, grace=30)
    assert reason == expected if expected is None else expected in reason


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_watchdog_cancels_once_a_started_rank_never_joins(tmp_path):
    run, clock, cancelled = RunFolder(str(tmp_path)), Clock(), []
    dog = RunWatchdog(run, 2, start_timeout=60, cancel=lambda: cancelled.append(1), clock=clock)
    assert not dog.step()
    run.mark_rank(0, "alive")
    run.mark_rank(1, "alive")
    clock.now = 10
    assert not dog.step() and dog.first_alive == 10
    run.mark_rank(0, "joined")
    clock.now = 70
    assert not dog.step()
    clock.now = 71
    assert dog.step() and cancelled == [1]
    assert "rank(s) 1 did not join" in dog.reason


def test_watchdog_cancels_when_others_stay_blocked_after_a_failure(tmp_path):
    run, clock, cancelled = RunFolder(str(tmp_path)), Clock(), []
    dog = RunWatchdog(run, 2, 60, lambda: cancelled.append(1), grace=30, clock=clock)
    for rank in (0, 1):
        run.mark_rank(rank, "alive")
        run.mark_rank(rank, "joined")
    assert not dog.step()
    clock.now = 100
    run.write_error(1, "boom")
    assert not dog.step() and dog.first_error == 100
    clock.now = 131
    assert dog.step() and cancelled and "still blocked 30 s later" in dog.reason


def test_progress_prints_each_committed_epoch_once(tmp_path):
    run, lines = RunFolder(str(tmp_path)), []
    entry = {"epoch": 1, "loss": 1.0, "val_loss": 0.9, "seconds": 2.0,
             "samples_per_second": 1000.0, "best": True}
    watcher = ProgressWatcher(run, emit=lines.append)
    watcher.poll()
    assert lines == []
    run.commit_history({"history": [entry], "epochs": 5})
    watcher.poll()
    watcher.poll()
    run.commit_history({"history": [entry, {**entry, "epoch": 2, "best": False}], "epochs": 5})
    watcher.poll()
    assert [line.split()[1] for line in lines] == ["1/5", "2/5"]
    assert lines[0] == format_epoch(entry, 5) and lines[0].endswith("*best")
    assert "loss=1.0000" in lines[0] and "1,000 samples/s" in lines[0]


def test_progress_of_a_resumed_run_starts_after_the_shown_epochs(tmp_path):
    run, lines = RunFolder(str(tmp_path)), []
    entry = {"epoch": 1, "loss": 1.0, "seconds": 1.0, "samples_per_second": 1.0}
    run.commit_history({"history": [entry], "epochs": 3})
    watcher = ProgressWatcher(run, emit=lines.append)
    run.commit_history({"history": [entry, {**entry, "epoch": 2}], "epochs": 3})
    watcher.poll()
    assert len(lines) == 1 and lines[0].startswith("epoch 2/3")
