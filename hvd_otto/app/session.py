"""SparkSession defaults for hvd-otto jobs and tests: they fill only what the user left unset.

The user's settings always win: ``spark-submit --conf``/``--properties-file``,
``spark-defaults.conf``, ``PYSPARK_SUBMIT_ARGS`` and a session the user already created.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys

log = logging.getLogger(__name__)

#: Filled only where the user set nothing. The UI stays on except for local runs.
DEFAULT_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
    "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
}
LOCAL_DEFAULT_CONF = {"spark.ui.enabled": "false"}
#: Only when this process starts the JVM (under spark-submit the driver already runs).
LAUNCH_DEFAULT_CONF = {"spark.driver.memory": os.environ.get("HVD_OTTO_DRIVER_MEMORY", "4g")}


def confs_to_apply(user: dict[str, str], master: str, explicit: dict[str, str] | None = None,
                   launching_jvm: bool = True) -> dict[str, str]:
    """The confs hvd-otto sets on the session builder.

    ``user``: what the user already set (never overridden by a default); ``explicit``: what the
    user asked for through hvd-otto's own options (``--executor-gpus``), applied as given, except
    ``spark.files`` which is appended to the user's list.
    """
    defaults = dict(DEFAULT_CONF)
    if master.startswith("local"):
        defaults.update(LOCAL_DEFAULT_CONF)
    if launching_jvm:
        defaults.update(LAUNCH_DEFAULT_CONF)
    chosen = {k: v for k, v in defaults.items() if k not in user}
    for key, value in (explicit or {}).items():
        if key == "spark.files" and user.get(key):
            value = f"{user[key]},{value}"
        chosen[key] = value
    return chosen


def parse_defaults_file(text: str) -> dict[str, str]:
    """``spark-defaults.conf``: ``key value`` (or ``key=value``) per line, ``#`` comments."""
    conf = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, *value = re.split(r"\s*[=:\s]\s*", line, maxsplit=1)
            conf[key] = value[0] if value else ""
    return conf


def parse_submit_args(args: str) -> dict[str, str]:
    """The ``--conf k=v`` pairs of ``PYSPARK_SUBMIT_ARGS`` (and its ``--master``)."""
    words, conf = shlex.split(args or ""), {}
    for i, word in enumerate(words[:-1]):
        if word in ("--conf", "-c") and "=" in words[i + 1]:
            key, value = words[i + 1].split("=", 1)
            conf[key] = value
        elif word == "--master":
            conf["spark.master"] = words[i + 1]
    return conf


def user_conf() -> dict[str, str]:
    """Spark confs the user has already set, before this process builds a session.

    Under spark-submit they are in the running JVM (its ``--conf`` values, properties file and
    ``spark-defaults.conf``); otherwise ``spark-defaults.conf`` and ``PYSPARK_SUBMIT_ARGS``.
    """
    if launched_by_spark_submit():
        from pyspark import SparkConf, SparkContext

        SparkContext._ensure_initialized()  # connects to spark-submit's JVM; starts nothing
        return dict(SparkConf().getAll())
    from pyspark.find_spark_home import _find_spark_home

    folder = os.environ.get("SPARK_CONF_DIR") or os.path.join(_find_spark_home(), "conf")
    conf = {}
    path = os.path.join(folder, "spark-defaults.conf")
    if os.path.isfile(path):
        with open(path) as f:
            conf.update(parse_defaults_file(f.read()))
    conf.update(parse_submit_args(os.environ.get("PYSPARK_SUBMIT_ARGS", "")))
    return conf


DISCOVERY_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_discovery.sh")


def get_spark(master: str | None = None, app_name: str = "hvd-otto", conf: dict | None = None,
              executor_gpus: int = 0, gpu_discovery_script: str | None = None):
    """Return the active SparkSession, or create one whose defaults fill only unset confs.

    Under ``spark-submit`` the master and confs given there win; ``master`` only applies
    when this process starts the JVM itself (default ``local[*]``, or ``HVD_OTTO_MASTER``).
    ``conf`` holds settings from hvd-otto's own options (applied as given); ``executor_gpus``
    adds the GPU confs for the master's cluster manager (``common.devices.spark_gpu_conf``).
    """
    from ..common.devices import spark_gpu_conf

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by local workers and ranks
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    existing = user_conf()
    submitted = launched_by_spark_submit()
    builder = SparkSession.builder.appName(app_name)
    if submitted and not master:
        master = existing.get("spark.master", "local[*]")
    else:
        master = master or existing.get("spark.master") or os.environ.get(
            "HVD_OTTO_MASTER", "local[*]")
        builder = builder.master(master)
    if master.startswith("local"):
        # Local Python workers are this machine's: run this interpreter (a cluster's executors
        # run spark.pyspark.python / PYSPARK_PYTHON, which the preflight check verifies).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no LAN binding for local runs
    explicit = {**(conf or {}),
                **spark_gpu_conf(executor_gpus, master, DISCOVERY_SCRIPT, gpu_discovery_script)}
    for key, value in confs_to_apply(existing, master, explicit, not submitted).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("HVD_OTTO_SPARK_LOG_LEVEL", "ERROR"))
    log.info("Spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark


def launched_by_spark_submit() -> bool:
    """True when ``spark-submit`` started this driver (its JVM gateway then owns the master)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def cancel_spark_jobs() -> None:
    """Cancel the running Spark jobs of this process, if a SparkContext is up (on a signal)."""
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    if sc is not None:
        sc.cancelAllJobs()


def stop_spark(sc=None, timeout: float = 30.0) -> None:
    """Stop this process's SparkContext and wait for the JVM this process started to exit.

    Used when a job is interrupted: the JVM still logs the tasks it kills, and waiting for it
    makes the job's own last line really the last one on stderr. Under ``spark-submit`` the JVM
    is not ours: the context is stopped and spark-submit ends it.
    """
    if sc is None:
        from pyspark import SparkContext

        sc = SparkContext._active_spark_context
    if sc is None:
        return
    from py4j.protocol import Py4JError

    proc = getattr(getattr(sc, "_gateway", None), "proc", None)
    try:
        sc.stop()
    except (Py4JError, OSError) as err:  # the JVM may be gone already; we are stopping anyway
        log.debug("SparkContext.stop failed: %s", err)
    if proc is None or launched_by_spark_submit():
        return
    try:
        proc.stdin.close()  # the gateway JVM exits at EOF on its stdin
        proc.wait(timeout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as err:
        log.debug("the Spark JVM did not exit within %s s: %s", timeout, err)
