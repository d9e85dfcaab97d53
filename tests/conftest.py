"""Shared fixtures: one local SparkSession per test session, paths to the real Otto data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

OTTO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "otto"
OTTO_TRAIN = OTTO_DIR / "train.csv.zip"
OTTO_TEST = OTTO_DIR / "test.csv.zip"
OTTO_CLASS_COUNTS = [1929, 16122, 8004, 2691, 2739, 14135, 2839, 8464, 4955]


def otto_available() -> bool:
    return OTTO_TRAIN.exists()


@pytest.fixture(scope="session")
def spark():
    from hvd_otto.spark import get_spark

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


def write_csv(path: Path, header: str, rows: list[str], newline: str = "\n") -> str:
    """Write a small CSV for a test and return its path as a string."""
    path.write_text(newline.join([header, *rows]) + newline, encoding="utf-8")
    return str(path)
