"""Bring your own Keras model, end to end on real Spark and a real 2-rank Horovod run.

One fit uses every new param at once: a functional model with a registered custom layer, an
optimizer object, a loss object, a metric object, a callback and ``customObjects``; it records
to a real ``mlflow server`` on loopback and writes TensorBoard files into the store. Then the
fitted model, an unfitted Pipeline holding the Estimator and a fitted PipelineModel round-trip
through ML persistence.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cloudpickle
import keras_custom
import numpy as np
import pyspark.cloudpickle
import pytest
import tensorflow as tf
from helpers import small_features_frame
from keras_custom import EpochRecorder, ScaledDense, functional_model
from pyspark.ml import Pipeline, PipelineModel

from hvd_otto import HorovodKerasEstimator, HorovodKerasModel, InputError
from hvd_otto.driver.tracking import using_tracking_uri

# The tests' own module is not installed on the executors: ship its classes by value, the way
# a user ships code with --py-files (see the README, "Bring your own model").
for _pickler in (cloudpickle, pyspark.cloudpickle):
    _pickler.register_pickle_by_value(keras_custom)

EPOCHS = 3
N_FEATURES = 12


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on loopback (file backend, served artifacts)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", (root / "backend").as_uri(),
         "--artifacts-destination", (root / "artifacts").as_uri()],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                os.killpg(server.pid, signal.SIGKILL)
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()}")
            time.sleep(0.5)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    frame = small_features_frame(spark, tmp_path_factory.mktemp("byo") / "train.csv",
                                 rows=1500, n_features=N_FEATURES)
    train, test = frame.randomSplit([0.8, 0.2], seed=3)
    return train.cache(), test.cache()


@pytest.fixture(scope="module")
def byo(data, mlflow_server, tmp_path_factory):
    train, _ = data
    records = tmp_path_factory.mktemp("records")
    store = tmp_path_factory.mktemp("store")
    est = HorovodKerasEstimator(
        numProc=2, epochs=EPOCHS, batchSize=64, earlyStoppingPatience=0,
        validationFraction=0.2, storePath=str(store),
        model=functional_model(N_FEATURES, 9), optimizer=tf.keras.optimizers.Adam(0.002),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(name="scce"),
        metrics=["accuracy", tf.keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")],
        callbacks=[EpochRecorder(str(records))], customObjects={"ScaledDense": ScaledDense},
        trackingUri=mlflow_server, experimentName="byo-test")
    return est, est.fit(train), records


def test_the_users_model_loss_and_metrics_are_what_trained(byo):
    _, model, _ = byo
    history = model.getHistory()
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert all(0 <= h["top3"] <= 1 and 0 <= h["val_top3"] <= 1 for h in history)
    assert all(h["top3"] >= h["accuracy"] for h in history)  # top-3 contains top-1
    assert history[-1]["loss"] < history[0]["loss"]
    keras = model.keras_model()
    assert keras.name == "byo_functional"
    assert type(keras.get_layer("scaled")).__name__ == "ScaledDense"
    assert keras.get_layer("scaled").scale == 0.5
    assert len(set(model.getSummary()["rank_digests"])) == 1


def test_callbacks_run_on_every_rank_with_the_averaged_logs(byo):
    _, model, records = byo
    names = sorted(p.name for p in records.iterdir())
    assert names == sorted(f"rank{r}-epoch{e}.json" for r in (0, 1)
                           for e in range(1, EPOCHS + 1))
    for epoch in range(1, EPOCHS + 1):
        logs = [json.loads((records / f"rank{r}-epoch{epoch}.json").read_text()) for r in (0, 1)]
        assert logs[0]["top3"] == pytest.approx(logs[1]["top3"])  # MetricAverageCallback first
        assert logs[0]["top3"] == pytest.approx(model.getHistory()[epoch - 1]["top3"])


def test_rank_0_writes_tensorboard_event_files_into_the_run_folder(byo):
    _, model, _ = byo
    logs = model.getSummary()["run"].replace("file://", "") + "/logs"
    scalars = {}
    for split in ("train", "validation"):
        files = [f for f in os.listdir(os.path.join(logs, split)) if "tfevents" in f]
        assert len(files) == 1, files  # one writer: rank 0
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logs, split, files[0])):
            for value in event.summary.value:
                scalars.setdefault((split, value.tag), []).append(event.step)
    assert scalars[("train", "epoch_loss")] == list(range(EPOCHS))
    assert scalars[("validation", "epoch_top3")] == list(range(EPOCHS))


def test_the_fit_is_one_mlflow_run_on_the_tracking_server(byo, mlflow_server):
    from mlflow.tracking import MlflowClient

    _, model, _ = byo
    summary = model.getSummary()
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "byo-test"
    params = run.data.params
    assert params["numProc"] == "2" and params["optimizer"].startswith("Adam(")
    assert "learning_rate=0.002" in params["optimizer"] and "top3" in params["metrics"]
    assert params["callbacks"] == "EpochRecorder" and params["customObjects"] == "ScaledDense"
    for key in ("loss", "val_loss", "top3", "val_top3"):
        points = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                             key))
        assert [step for step, _ in points] == list(range(1, EPOCHS + 1))
        assert [v for _, v in points] == pytest.approx([h[key] for h in model.getHistory()])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"history.json", "learning_curve.png", "model"} <= artifacts
    with using_tracking_uri(mlflow_server):
        local = client.download_artifacts(run.info.run_id, "model/model.keras")
    assert Path(local).read_bytes() == model.getModelBytes()


def test_transform_save_and_load_with_the_custom_layer(byo, data, tmp_path):
    _, model, _ = byo
    _, test = data
    before = _probabilities(model.transform(test))
    assert before.shape[1] == 9 and np.allclose(before.sum(axis=1), 1, atol=1e-5)
    model.save(str(tmp_path / "model"))
    metadata = json.loads(next((tmp_path / "model" / "metadata").glob("part-*")).read_text())
    assert metadata["custom_objects"] == {"ScaledDense": "keras_custom:ScaledDense"}
    loaded = HorovodKerasModel.load(str(tmp_path / "model"))
    assert loaded.getCustomObjects() == {"ScaledDense": ScaledDense} and loaded.uid == model.uid
    np.testing.assert_allclose(_probabilities(loaded.transform(test)), before, rtol=1e-6)
    PipelineModel(stages=[model]).save(str(tmp_path / "pipeline"))
    again = PipelineModel.load(str(tmp_path / "pipeline"))
    np.testing.assert_allclose(_probabilities(again.transform(test)), before, rtol=1e-6)


def test_an_unfitted_pipeline_with_the_estimator_saves_and_loads(byo, tmp_path, caplog):
    est, _, _ = byo
    with caplog.at_level(logging.WARNING):
        Pipeline(stages=[est]).save(str(tmp_path / "unfitted"))
    assert "EpochRecorder" in caplog.text and "not saved" in caplog.text
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*pickle*"))
    loaded = Pipeline.load(str(tmp_path / "unfitted")).getStages()[0]
    assert isinstance(loaded, HorovodKerasEstimator) and loaded.uid == est.uid
    assert loaded.getNumProc() == 2 and loaded.getEpochs() == EPOCHS
    optimizer = loaded.getOptimizer()
    assert isinstance(optimizer, tf.keras.optimizers.Adam)
    assert optimizer.get_config()["learning_rate"] == pytest.approx(0.002)
    assert loaded.getLoss().name == "scce"
    assert loaded.getMetrics()[0] == "accuracy" and loaded.getMetrics()[1].get_config()["k"] == 3
    assert loaded.getCustomObjects() == {"ScaledDense": ScaledDense}
    assert loaded.getCallbacks() is None  # not saved: set again after loading
    for a, b in zip(loaded.getModel().get_weights(), est.getModel().get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.getTrackingUri() == est.getTrackingUri()


def test_a_lambda_layer_is_refused_before_any_training(data):
    train, _ = data
    inputs = tf.keras.Input(shape=(N_FEATURES,))
    outputs = tf.keras.layers.Dense(9, activation="softmax")(
        tf.keras.layers.Lambda(lambda t: t * 2)(inputs))
    est = HorovodKerasEstimator(numProc=2, model=tf.keras.Model(inputs, outputs))
    with pytest.raises(InputError, match="Lambda layer is refused"):
        est.fit(train)
    wrong = HorovodKerasEstimator(numProc=2, model=functional_model(N_FEATURES, 4),
                                  customObjects={"ScaledDense": ScaledDense})
    with pytest.raises(InputError, match="9 classes"):
        wrong.fit(train)


def _probabilities(frame) -> np.ndarray:
    rows = frame.select("id", "probability").orderBy("id").collect()
    return np.stack([r["probability"].toArray() for r in rows])
