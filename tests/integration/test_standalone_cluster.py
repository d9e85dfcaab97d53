"""spark-submit against a real loopback standalone cluster whose Workers report fake GPUs.

A Master and 2 Workers (1 core each) are started with pyspark's own ``bin/spark-class``; each
Worker's discovery script reports a different GPU address, so each Horovod rank is a Spark
task holding a distinct ``gpu`` address. TensorFlow sees no GPU here, so each rank must log the
address it was given and fall back to the CPU with that reason.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A loopback Master + 2 Workers with fake GPUs; always stopped at the end."""
    base = tmp_path_factory.mktemp("cluster")
    home = _spark_home()
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOG_DIR": str(base / "logs"),
           "SPARK_WORKER_DIR": str(base / "work")}
    port = _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    procs = []
    logs = []

    def start(args, name, extra_env=None):
        log = open(base / f"{name}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([os.path.join(home, "bin", "spark-class"), *args],
                                      env={**env, **(extra_env or {})}, stdout=log,
                                      stderr=subprocess.STDOUT))

    try:
        start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port",
               str(port), "--webui-port", str(_free_port())], "master")
        _wait_for(lambda: "Starting Spark master" in (base / "master.log").read_text()
                  and "I have been elected leader" in (base / "master.log").read_text(),
                  60, "the Master")
        for address in ("0", "1"):
            script = base / f"gpu_{address}.sh"
            script.write_text(f'#!/bin/sh\necho \'{{"name":"gpu","addresses":["{address}"]}}\'\n')
            script.chmod(0o755)
            opts = (f"-Dspark.worker.resource.gpu.amount=1 "
                    f"-Dspark.worker.resource.gpu.discoveryScript={script}")
            start(["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                   "--cores", "1", "--memory", "3g", "--webui-port", str(_free_port()),
                   master_url], f"worker{address}", {"SPARK_WORKER_OPTS": opts})
        _wait_for(lambda: (base / "master.log").read_text().count("Registering worker") >= 2,
                  60, "2 Workers to register")
        yield master_url
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    """A small Otto-shaped labelled CSV, a labelled slice and an unlabelled test CSV."""
    from hvd_otto.data import synthetic

    base = tmp_path_factory.mktemp("cluster_data")
    frame = synthetic.generate(rows=2000, seed=3, n_features=12)
    frame.to_csv(base / "train.csv", index=False)
    frame.head(300).to_csv(base / "labelled.csv", index=False)
    frame.drop(columns=["target"]).head(200).to_csv(base / "test.csv", index=False)
    return base


def spark_submit(master: str, job: str, *args: str, confs: dict | None = None):
    """Run ``spark-submit jobs/<job>.py ARGS`` against the cluster; return the finished process."""
    env = {**os.environ, "SPARK_HOME": _spark_home(), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    settings = {"spark.executor.cores": "1", "spark.executor.memory": "1g",
                "spark.pyspark.python": sys.executable, "spark.ui.enabled": "false",
                **(confs or {})}
    command = [os.path.join(_spark_home(), "bin", "spark-submit"), "--master", master]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(ROOT / "jobs" / f"{job}.py"), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (job, result.stdout[-3000:] + result.stderr[-3000:])
    return result


def test_spark_submit_pipeline_on_two_executors_with_fake_gpus(cluster, csvs, tmp_path):
    out = tmp_path / "out"
    result = spark_submit(
        cluster, "pipeline", "--train", str(csvs / "train.csv"), "--test",
        str(csvs / "test.csv"), "--out", str(out), "--num-proc", "2", "--epochs", "2",
        "--executor-gpus", "1")
    assert "epoch 2/2" in result.stdout  # progress reached the driver from the executors
    assert (out / "_SUCCESS").exists() and (out / "model" / "_SUCCESS").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["devices"]) == [
        "CPU (Spark assigned gpu ['0'], but TensorFlow sees no GPU)",
        "CPU (Spark assigned gpu ['1'], but TensorFlow sees no GPU)",
    ]
    assert summary["epochs"] == 2 and summary["submission_rows"] == 200
    figures = json.loads((out / "metrics.json").read_text())
    assert abs(figures["rows"] - 400) <= 9 and 0 < figures["log_loss"] < 2.2
    metadata = json.loads(Path(glob.glob(str(out / "model" / "stages" / "*HorovodKerasModel*"
                                               / "metadata" / "part-*"))[0]).read_text())
    assert len(set(metadata["summary"]["rank_digests"])) == 1


def test_spark_submit_of_each_job(cluster, csvs, tmp_path):
    data, model = tmp_path / "data", tmp_path / "model"
    spark_submit(cluster, "prepare", "--train", str(csvs / "train.csv"), "--out", str(data),
                 "--row-groups", "4")
    assert (data / "_SUCCESS").exists()
    result = spark_submit(cluster, "train", "--data", str(data), "--model", str(model),
                          "--num-proc", "2", "--epochs", "1")
    assert "epoch 1/1" in result.stdout and (model / "_SUCCESS").exists()
    result = spark_submit(cluster, "evaluate", "--test", str(csvs / "labelled.csv"),
                          "--model", str(model), "--out", str(tmp_path / "evaluation"))
    assert "rows 300" in result.stdout
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["rows"] == 300
    spark_submit(cluster, "predict", "--test", str(csvs / "test.csv"), "--model", str(model),
                 "--out", str(tmp_path / "submission.csv"))
    lines = (tmp_path / "submission.csv").read_text().splitlines()
    assert len(lines) == 201 and lines[0].startswith("id,Class_1,")
