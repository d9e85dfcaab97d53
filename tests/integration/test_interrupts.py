"""Signals and commits seen from outside, as a user or a cluster manager would cause them.

Each job runs as its own process group: the test signals it the way a terminal's Ctrl-C (the
whole group) or a cluster manager (the driver alone) would, during a real 2-rank training.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT

from hvd_otto.data import synthetic


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("interrupts")
    return Path(synthetic.write_csv(str(folder / "train.csv"), 4000, 11))


def _start(args: list[str], tmp: Path) -> subprocess.Popen:
    (tmp / "tmpdir").mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "jobs" / args[0]), *args[1:]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmp / "tmpdir"), "HVD_OTTO_MASTER": "local[2]"})


def _wait_for(proc: subprocess.Popen, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"the job ended first: {proc.communicate()}"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"timed out waiting; output: {proc.communicate()}")


def _committed_epoch(store: Path) -> bool:
    """True once a run in ``store`` committed an epoch (a resume has a checkpoint)."""
    from hvd_otto.common.run_folder import RunFolder

    return any(RunFolder(str(run)).load_checkpoint() for run in store.glob("runs/*"))


def _group_is_gone(pgid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("how, signum, code", [("Ctrl-C to the process group", signal.SIGINT, 130),
                                               ("SIGTERM to the driver", signal.SIGTERM, 143)])
def test_a_signal_stops_a_two_rank_training_without_retry(train_csv, tmp_path, how, signum, code):
    store, model = tmp_path / "store", tmp_path / "model"
    proc = _start(["train.py", "--train", str(train_csv), "--model", str(model), "--store",
                   str(store), "--num-proc", "2", "--epochs", "200", "--max-retries", "3"],
                  tmp_path)
    _wait_for(proc, lambda: _committed_epoch(store), timeout=300)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{how}: the job did not stop within 120 s: {proc.communicate()}")
    assert proc.returncode == code, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted by {signal.Signals(signum).name}: 'train' stopped")
    assert "--resume" in last and str(store) in last, last
    assert "retrying" not in err, err  # the stop was not taken for a rank failure
    assert not model.exists()
    assert list(store.glob("runs/*/history.json")) and not list(store.glob("runs/*/data"))
    assert not list((tmp_path / "tmpdir").glob("hvd-otto-*")), "temporary folders left"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.tmp-")]
    assert _group_is_gone(proc.pid), "ranks, workers or the JVM outlived the job"


def test_an_output_that_appears_while_prepare_runs_is_not_replaced(train_csv, tmp_path):
    """The issue's reproduction: mkdir OUT and write into it while prepare runs."""
    out = tmp_path / "out"
    proc = _start(["prepare.py", "--train", str(train_csv), "--out", str(out)], tmp_path)
    _wait_for(proc, lambda: any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()),
              timeout=300)
    out.mkdir()
    (out / "precious.txt").write_text("important")
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (stdout, err)
    assert os.listdir(out) == ["precious.txt"] and (out / "precious.txt").read_text() == "important"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.not-committed-")]
    assert len(kept) == 1 and str(kept[0]) in err and (kept[0] / "metadata.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left
    assert not list((tmp_path / "tmpdir").glob("hvd-otto-*"))
