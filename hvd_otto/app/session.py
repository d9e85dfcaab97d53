"""SparkSession defaults for hvd-otto jobs and tests."""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)


def ensure_python_env() -> None:
    """Make Spark's Python workers run this interpreter (else ranks miss horovod/tensorflow)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def get_spark(master: str | None = None, app_name: str = "hvd-otto", conf: dict | None = None):
    """Return the active SparkSession, or create one with sane local defaults.

    Under ``spark-submit`` the master and confs given there win; ``master`` only applies
    when this process starts the JVM itself (default ``local[*]``).
    """
    ensure_python_env()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by local workers and ranks
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    if master or not launched_by_spark_submit():
        master = master or os.environ.get("HVD_OTTO_MASTER", "local[*]")
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no LAN binding for local runs
        builder = builder.master(master)
    defaults = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
        "spark.sql.shuffle.partitions": "8",
        "spark.driver.memory": os.environ.get("HVD_OTTO_DRIVER_MEMORY", "4g"),
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
    }
    defaults.update(conf or {})
    for key, value in defaults.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("HVD_OTTO_SPARK_LOG_LEVEL", "ERROR"))
    log.info("Spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark


def launched_by_spark_submit() -> bool:
    """True when ``spark-submit`` started this driver (its JVM gateway then owns the master)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ
