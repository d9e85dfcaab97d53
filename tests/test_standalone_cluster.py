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

ROOT = Path(__file__).resolve().parents[1]


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
def prepared(spark, tmp_path_factory):
    from hvd_otto import synthetic
    from hvd_otto.ingest import prepare

    base = tmp_path_factory.mktemp("cluster_data")
    csv = synthetic.write_csv(str(base / "train.csv"), rows=2000, seed=3, n_features=12)
    out = base / "prepared"
    prepare(spark, csv, str(out), row_groups=4)
    return out


def test_spark_submit_trains_on_two_executors_with_fake_gpus(cluster, prepared, tmp_path):
    model = tmp_path / "model"
    submit = os.path.join(_spark_home(), "bin", "spark-submit")
    env = {**os.environ, "SPARK_HOME": _spark_home(), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    command = [
        submit, "--master", cluster,
        "--conf", "spark.executor.cores=1", "--conf", "spark.executor.memory=1g",
        "--conf", "spark.executor.resource.gpu.amount=1",
        "--conf", "spark.task.resource.gpu.amount=1",
        "--conf", f"spark.pyspark.python={sys.executable}",
        "--conf", "spark.ui.enabled=false",
        str(ROOT / "jobs" / "train.py"), "--data", str(prepared), "--model", str(model),
        "--num-proc", "2", "--epochs", "2", "--store", str(tmp_path / "store"),
    ]
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "epoch 2/2" in result.stdout  # progress reached the driver from the executors
    assert (model / "_SUCCESS").exists() and (model / "model.keras").exists()
    metadata = json.loads(Path(glob.glob(str(model / "metadata" / "part-*"))[0]).read_text())
    devices = sorted(metadata["summary"]["devices"])
    assert devices == [
        "CPU (Spark assigned gpu ['0'], but TensorFlow sees no GPU)",
        "CPU (Spark assigned gpu ['1'], but TensorFlow sees no GPU)",
    ]
    assert len(set(metadata["summary"]["rank_digests"])) == 1
    assert time.monotonic() - started < 600
