"""MLflow tracking: where it goes, what is recorded (a real MLflow file store, no JVM)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hvd_otto import InputError
from hvd_otto.driver.tracking import (
    epoch_metrics,
    experiment_name,
    log_fit,
    require_mlflow,
    tracking_uri,
)

HISTORY = [{"epoch": 1, "loss": 0.9, "val_loss": 0.8, "accuracy": 0.6, "best": True,
            "seconds": 2.0},
           {"epoch": 2, "loss": 0.7, "val_loss": math.nan, "accuracy": 0.7, "best": False,
            "seconds": 1.5}]


def test_the_param_wins_the_environment_follows_and_off_turns_it_off():
    env = {"MLFLOW_TRACKING_URI": "http://env:5000", "MLFLOW_EXPERIMENT_NAME": "exp-env"}
    assert tracking_uri(None, env) == "http://env:5000"
    assert tracking_uri("file:/x", env) == "file:/x"
    assert tracking_uri("off", env) is None
    assert tracking_uri(None, {}) is None
    assert experiment_name(None, env) == "exp-env" and experiment_name("mine", env) == "mine"
    assert experiment_name(None, {}) == "hvd-otto"


def test_one_point_per_epoch_per_figure_with_the_epoch_as_step():
    points = epoch_metrics(HISTORY)
    assert ("loss", 0.9, 1) in points and ("loss", 0.7, 2) in points
    assert not [p for p in points if p[0] in ("epoch", "best")]
    assert [p for p in points if p[0] == "val_loss"] == [("val_loss", 0.8, 1)]  # NaN skipped


def test_missing_mlflow_is_an_input_error(monkeypatch):
    import sys

    require_mlflow(None)  # tracking off: nothing needed
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(InputError, match="mlflow is not installed"):
        require_mlflow("file:/x")


def test_a_fit_is_recorded_as_one_finished_run_in_a_file_store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    extra = tmp_path / "notes.txt"
    extra.write_text("hello")
    run_id = log_fit(uri, "exp-a", {"numProc": "2", "optimizer": "Adam(lr=0.1)"}, HISTORY,
                     b"keras-bytes", {"holdout_log_loss": 0.45}, [str(extra)])
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "exp-a"
    assert run.data.params == {"numProc": "2", "optimizer": "Adam(lr=0.1)"}
    loss = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in loss) == [(1, 0.9), (2, 0.7)]
    assert run.data.metrics["holdout_log_loss"] == 0.45
    names = {a.path for a in client.list_artifacts(run_id)}
    assert names == {"history.json", "learning_curve.png", "model", "notes.txt"}
    assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/model.keras"]
    local = client.download_artifacts(run_id, "model/model.keras", str(tmp_path))
    assert Path(local).read_bytes() == b"keras-bytes"
    second = log_fit(uri, "exp-a", {}, HISTORY, b"x")  # the experiment is reused
    assert client.get_run(second).info.experiment_id == run.info.experiment_id


def test_the_global_tracking_uri_is_put_back(monkeypatch, tmp_path):
    import mlflow

    from hvd_otto.driver.tracking import using_tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://users-server:5000")
    with using_tracking_uri(tmp_path.as_uri()):
        assert mlflow.get_tracking_uri() == tmp_path.as_uri()
    assert mlflow.get_tracking_uri() == "http://users-server:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with using_tracking_uri(tmp_path.as_uri()):
        pass
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ


def test_a_tracking_failure_keeps_the_result_and_says_why(tmp_path, caplog):
    import logging

    from hvd_otto.driver.tracking import record_fit

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    summary = {"epochs": 2}
    with caplog.at_level(logging.WARNING):
        record_fit(summary, (blocker / "mlruns").as_uri(), "exp", {}, HISTORY, b"x")
    assert "mlflow_run_id" not in summary and summary["mlflow_error"]
    assert summary["epochs"] == 2 and "training result is kept" in caplog.text
    ok = {}
    record_fit(ok, (tmp_path / "mlruns").as_uri(), "exp", {}, HISTORY, b"x")
    assert ok["mlflow_run_id"] and "mlflow_error" not in ok
