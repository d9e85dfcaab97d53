"""spark-submit against a loopback standalone cluster that shares nothing with the driver.

As on a real cluster, the Master and 2 Workers (2 cores and 1 fake GPU each) run as another
Unix user, from their own working folders, with the project installed from its built wheel
into a venv at another path (its own pyspark, TensorFlow and Horovod); they cannot read the
driver's checkout or its venv. The only folder both sides use is the store (standing in for
NFS), which holds the input CSVs, the outputs and the run folders. Each Worker finds its GPU
with the packaged ``gpu_discovery.sh`` and a fake ``nvidia-smi``.

What is checked, from Spark's own event log and the job's outputs: the user's
``spark-submit --conf`` values win; ETL stages run 4 tasks at once (no GPU per task); the
Horovod stage runs 2 tasks that each hold one GPU (a stage resource profile) with distinct
addresses; ranks start with the executors' Python and use the task's cores.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT

WORKER_USER = "hvdotto-worker"
HOROVOD_ENV = {"HOROVOD_WITH_TENSORFLOW": "1", "HOROVOD_WITH_GLOO": "1",
               "HOROVOD_WITHOUT_MPI": "1", "HOROVOD_WITHOUT_PYTORCH": "1",
               "HOROVOD_WITHOUT_MXNET": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"the share-nothing cluster cannot be set up: {reason}")
    pytest.skip(reason)


def _other_python() -> str:
    """A Python 3.11 that another Unix user can run (not the driver's venv or pyenv)."""
    for candidate in ("/usr/bin/python3.11", "/usr/local/bin/python3.11"):
        if os.path.exists(candidate) and os.access(candidate, os.X_OK) and \
                os.stat(candidate).st_mode & 0o001:
            return candidate
    _unavailable("no Python 3.11 readable by other users (e.g. /usr/bin/python3.11)")


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (command, result.stdout[-2000:] + result.stderr[-3000:])
    return result


def _worker_venv(base: Path) -> Path:
    """The project's wheel and the stack in a venv at another path, Horovod built for it."""
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "-w", str(dist), str(ROOT)], timeout=300)
    (wheel,) = dist.glob("hvd_otto-*.whl")
    venv = base / "venv"
    _run([_other_python(), "-m", "venv", str(venv)], timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, f"{wheel}[cpu]", "cmake<4", "packaging", "psutil", "pyyaml", "cloudpickle"],
         timeout=900)
    _run([*pip, "--no-build-isolation", "horovod==0.28.1"], timeout=900,
         env={**os.environ, **HOROVOD_ENV, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"})
    return venv


def _ensure_worker_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        _unavailable("creating the Workers' Unix user needs root")
    try:
        return pwd.getpwnam(WORKER_USER)
    except KeyError:
        _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
              WORKER_USER])
        return pwd.getpwnam(WORKER_USER)


class ShareNothingCluster:
    """A Master and 2 Workers run as WORKER_USER from the wheel's venv; stopped by ``stop``."""

    def __init__(self, base: Path, venv: Path, user: pwd.struct_passwd):
        self.base, self.venv, self.user = base, venv, user
        self.spark_home = Path(glob.glob(str(venv / "lib" / "python3*" / "site-packages"
                                             / "pyspark"))[0])
        self.procs: list[subprocess.Popen] = []
        self.master_url = ""

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def _folder(self, name: str) -> Path:
        folder = self.base / name
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, self.user.pw_uid, self.user.pw_gid)
        return folder

    def _start(self, name: str, args: list[str], extra_path: str = "", opts: str = "") -> None:
        home = self._folder(f"home-{name}")
        env = {"HOME": str(home), "SPARK_HOME": str(self.spark_home),
               "PATH": f"{extra_path}{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
               "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(self._folder("logs")),
               "SPARK_WORKER_DIR": str(self._folder(f"work-{name}")), "SPARK_WORKER_OPTS": opts,
               "PYSPARK_PYTHON": self.python, "LANG": "C.UTF-8"}
        log = open(self.base / f"{name}.log", "w")
        self.procs.append(subprocess.Popen(
            [str(self.spark_home / "bin" / "spark-class"), *args], cwd=home, env=env,
            stdout=log, stderr=subprocess.STDOUT, user=self.user.pw_uid,
            group=self.user.pw_gid, extra_groups=[]))
        log.close()

    def start(self) -> None:
        port = _free_port()
        self.master_url = f"spark://127.0.0.1:{port}"
        self._start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(_free_port())])
        log = self.base / "master.log"
        _wait_for(lambda: "I have been elected leader" in log.read_text(), 90, "the Master")
        script = glob.glob(str(self.venv / "lib" / "python3*" / "site-packages" / "hvd_otto"
                               / "app" / "gpu_discovery.sh"))[0]
        for address in ("0", "1"):
            fake = self._folder(f"fake-nvidia-{address}")
            smi = fake / "nvidia-smi"
            smi.write_text(f"#!/bin/sh\necho {address}\n")
            smi.chmod(0o755)
            self._start(f"worker{address}",
                        ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                         "--cores", "2", "--memory", "3g", "--webui-port", str(_free_port()),
                         self.master_url], extra_path=f"{fake}:",
                        opts=f"-Dspark.worker.resource.gpu.amount=1 "
                             f"-Dspark.worker.resource.gpu.discoveryScript={script}")
        _wait_for(lambda: log.read_text().count("Registering worker") >= 2, 90,
                  "2 Workers to register")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def cluster():
    """Build the Workers' side, hide the driver's checkout from it, start the cluster."""
    user = _ensure_worker_user()
    base = Path(f"/var/tmp/hvd-otto-cluster-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755, parents=True)
    store = base / "store"
    store.mkdir()
    store.chmod(0o1777)  # the shared folder, writable by driver and Workers alike
    mode = ROOT.stat().st_mode
    started = time.monotonic()
    node = None
    try:
        venv = _worker_venv(base)
        ROOT.chmod(mode & ~0o007)  # the Workers' user cannot read the driver's checkout
        probe = subprocess.run(["ls", str(ROOT)], user=user.pw_uid, group=user.pw_gid,
                               extra_groups=[], capture_output=True)
        assert probe.returncode != 0, "the Workers could read the driver's checkout"
        node = ShareNothingCluster(base, venv, user)
        node.start()
        node.setup_seconds = time.monotonic() - started
        node.store = store
        yield node
    finally:
        if node:
            node.stop()
        ROOT.chmod(mode)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def csvs(cluster):
    """A small Otto-shaped labelled CSV, a labelled slice and an unlabelled test CSV, in the
    store (executors read inputs from shared storage, as from HDFS or NFS)."""
    from hvd_otto.data import synthetic

    base = cluster.store / "inputs"
    base.mkdir()
    frame = synthetic.generate(rows=2000, seed=3, n_features=12)
    frame.to_csv(base / "train.csv", index=False)
    frame.head(300).to_csv(base / "labelled.csv", index=False)
    frame.drop(columns=["target"]).head(200).to_csv(base / "test.csv", index=False)
    return base


def spark_submit(cluster, job: str, *args: str, confs: dict | None = None, check: bool = True):
    """``spark-submit jobs/<job>.py ARGS`` from the driver's venv; executors run the Workers'
    Python. The driver creates shared folders the executors' user writes into (umask 0)."""
    import pyspark

    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_HOME": os.path.dirname(pyspark.__file__)}  # the driver's own Spark
    for key in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        env.pop(key, None)
    settings = {"spark.executor.cores": "2", "spark.executor.memory": "1500m",
                "spark.pyspark.python": cluster.python,
                "spark.pyspark.driver.python": sys.executable,
                "spark.hadoop.fs.permissions.umask-mode": "000", **(confs or {})}
    command = [str(Path(sys.executable).parent / "spark-submit"), "--master",
               cluster.master_url]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(ROOT / "jobs" / f"{job}.py"), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900,
                            preexec_fn=lambda: os.umask(0))
    if check:
        assert result.returncode == 0, (job, result.stdout[-3000:] + result.stderr[-5000:])
    return result


def read_event_log(folder: Path) -> list[dict]:
    (path,) = [p for p in folder.iterdir() if not p.name.endswith(".inprogress")]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: The driver stamps a task's finish when it handles the result, a few ms after the executor
#: freed the slot and may already have been given the next task: overlaps shorter than this
#: are bookkeeping, not concurrency.
DRIVER_LAG_MS = 50


def stage_concurrency(events: list[dict]) -> dict[int, tuple[int, int]]:
    """Per stage: (tasks, most tasks running at the same moment), from the TaskEnd events of
    tasks that ran to the end (killed ones, e.g. after a ``limit``, have no finish time)."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for event in events:
        if event["Event"] == "SparkListenerTaskEnd":
            info = event["Task Info"]
            if info["Finish Time"] >= info["Launch Time"] > 0 and not info.get("Killed"):
                spans.setdefault(event["Stage ID"], []).append(
                    (info["Launch Time"], max(info["Launch Time"],
                                              info["Finish Time"] - DRIVER_LAG_MS)))
    result = {}
    for stage, intervals in spans.items():
        points = sorted([(start, 1) for start, _ in intervals] +
                        [(end, -1) for _, end in intervals], key=lambda p: (p[0], p[1]))
        running = peak = 0
        for _, step in points:
            running += step
            peak = max(peak, running)
        result[stage] = (len(intervals), peak)
    return result


def horovod_stages(events: list[dict]) -> set[int]:
    """Stages of the jobs horovod.spark.run started (its job group)."""
    stages = set()
    for event in events:
        if event["Event"] == "SparkListenerJobStart":
            group = (event.get("Properties") or {}).get("spark.jobGroup.id", "")
            if group.startswith("horovod.spark.run"):
                stages.update(event["Stage IDs"])
    return stages


def test_pipeline_job_on_a_share_nothing_cluster(cluster, csvs, tmp_path):
    events, out = cluster.store / "events", cluster.store / "out"
    events.mkdir()
    started = time.monotonic()
    result = spark_submit(
        cluster, "pipeline", "--train", str(csvs / "train.csv"), "--test",
        str(csvs / "test.csv"), "--out", str(out), "--num-proc", "2", "--epochs", "2",
        "--executor-gpus", "1", "--store", str(cluster.store / "runs"),
        confs={"spark.sql.shuffle.partitions": "16", "spark.ui.enabled": "true",
               "spark.ui.port": str(_free_port()), "spark.eventLog.enabled": "true",
               "spark.eventLog.dir": f"file://{events}"})
    job_seconds = time.monotonic() - started
    print(f"share-nothing cluster: set-up {cluster.setup_seconds:.0f} s, pipeline job "
          f"{job_seconds:.0f} s")
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
    assert metadata["summary"]["cpu_threads"] == [1, 1]  # spark.task.cpus, not the host's

    log = read_event_log(events)
    shutil.copytree(events, tmp_path / "events")  # kept for a look when an assertion fails
    (environment,) = [e for e in log if e["Event"] == "SparkListenerEnvironmentUpdate"]
    props = environment["Spark Properties"]
    assert props["spark.sql.shuffle.partitions"] == "16"  # the user's, not the library's 8
    assert props["spark.ui.enabled"] == "true"
    assert "spark.task.resource.gpu.amount" not in props
    concurrency = stage_concurrency(log)
    training = horovod_stages(log)
    assert training and all(concurrency[s] == (2, 2) for s in training if s in concurrency)
    etl_peak = max(peak for stage, (_, peak) in concurrency.items() if stage not in training)
    # 2 Workers × 2 cores and no GPU per ETL task: 4 at once (a GPU per task would allow 2; more
    # than 4 can only be the driver's bookkeeping lag, so it is not an error).
    assert etl_peak >= 4, (concurrency, training, tmp_path)
    profiles = {e["Stage Info"]["Stage ID"]: e["Stage Info"].get("Resource Profile Id", 0)
                for e in log if e["Event"] == "SparkListenerStageSubmitted"}
    assert all(profiles[s] != 0 for s in training) and \
        all(p == 0 for s, p in profiles.items() if s not in training)


def test_doctor_reports_the_executors_stack(cluster):
    result = spark_submit(cluster, "doctor")
    assert f"{cluster.python} (Python 3.11" in result.stdout
    assert "same stack as the driver" in result.stdout
    assert "horovod 0.28.1 (tensorflow: yes, gloo: yes" in result.stdout


def test_spark_submit_of_each_job(cluster, csvs):
    work = cluster.store / "jobs"
    data, model = work / "data", work / "model"
    spark_submit(cluster, "prepare", "--train", str(csvs / "train.csv"), "--out", str(data),
                 "--row-groups", "4")
    assert (data / "_SUCCESS").exists()
    refused = spark_submit(cluster, "train", "--data", str(data), "--model", str(model),
                           "--num-proc", "2", "--epochs", "1", check=False)
    assert refused.returncode == 2 and "storePath (--store) must be set on a cluster" in \
        refused.stdout + refused.stderr  # a driver-local temporary store cannot be shared
    result = spark_submit(cluster, "train", "--data", str(data), "--model", str(model),
                          "--num-proc", "2", "--epochs", "1", "--store", str(work / "runs"),
                          confs={"spark.task.cpus": "2"})
    assert "epoch 1/1" in result.stdout and (model / "_SUCCESS").exists()
    # Each rank's task holds 2 cores; both ranks share this host, whose 2 cores a per-host
    # split (cpu_count / local ranks) would halve.
    metadata = json.loads(Path(glob.glob(str(model / "stages" / "*HorovodKerasModel*"
                                             / "metadata" / "part-*"))[0]).read_text())
    assert metadata["summary"]["cpu_threads"] == [2, 2]
    result = spark_submit(cluster, "evaluate", "--test", str(csvs / "labelled.csv"),
                          "--model", str(model), "--out", str(work / "evaluation"))
    assert "rows 300" in result.stdout
    assert json.loads((work / "evaluation" / "metrics.json").read_text())["rows"] == 300
    spark_submit(cluster, "predict", "--test", str(csvs / "test.csv"), "--model", str(model),
                 "--out", str(work / "submission.csv"))
    lines = (work / "submission.csv").read_text().splitlines()
    assert len(lines) == 201 and lines[0].startswith("id,Class_1,")
