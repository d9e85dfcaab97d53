"""Shared fixtures: one local SparkSession per test session (started only by the integration
tests that ask for it), and the real Otto data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from helpers import OTTO_TRAIN, otto_available  # noqa: E402


@pytest.fixture(scope="session")
def spark():
    from hvd_otto.app.session import get_spark

    session = get_spark("local[2]", app_name="hvd-otto-tests",
                        conf={"spark.driver.memory": "3g", "spark.sql.shuffle.partitions": "4"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def otto_train() -> Path:
    if not otto_available():
        if os.environ.get("CI"):
            pytest.fail(f"the real Otto data is missing at {OTTO_TRAIN}")
        pytest.skip(f"real Otto data not found at {OTTO_TRAIN}")
    return OTTO_TRAIN


def pytest_collection_modifyitems(config, items):
    """The unit layer must run where no JVM can start: it may not ask for Spark."""
    for item in items:
        if "unit" in item.path.parts and "spark" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(f"{item.nodeid} is a unit test but asks for the 'spark' "
                                    "fixture; move it to tests/integration/.")
