"""Preflight: do the executors' Python workers have the stack, at the driver's versions?

One tiny Spark job, before any data is written or ranks start, so a wrong
``spark.pyspark.python`` is one clear paragraph within seconds instead of pages of Java stack
traces after a retry. The probe only looks modules up (no TensorFlow import), and is pickled
by value, so it reports even where hvd_otto itself is missing.
"""

from __future__ import annotations

import logging
import os
import weakref

from .errors import InputError

log = logging.getLogger(__name__)

#: What Python workers need to read and validate CSV files, and additionally to train.
INGEST_MODULES = ("hvd_otto", "numpy", "pandas", "pyarrow")
TRAINING_MODULES = (*INGEST_MODULES, "tensorflow", "horovod", "petastorm")

_checked: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # SparkContext → modules


def make_probe(modules: tuple[str, ...]):
    """A function for ``mapPartitions`` that reports this worker's Python and module versions.

    Built as a closure so that cloudpickle ships it by value: it needs nothing but the stdlib.
    """

    def probe(_rows):
        import importlib.metadata
        import importlib.util
        import platform
        import socket
        import sys

        dists = importlib.metadata.packages_distributions()
        versions = {}
        for name in modules:
            try:
                present = importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):
                present = False
            if not present:
                versions[name] = None
                continue
            try:
                versions[name] = importlib.metadata.version(dists[name][0])
            except (KeyError, IndexError, importlib.metadata.PackageNotFoundError):
                versions[name] = "unknown"
        yield {"python": sys.executable, "python_version": platform.python_version(),
               "host": socket.gethostname(), "modules": versions}

    return probe


def local_report(modules: tuple[str, ...]) -> dict:
    """The probe's report for this process (the driver)."""
    return next(make_probe(modules)(iter(())))


def problems(driver: dict, worker: dict) -> list[str]:
    """What differs between a worker's report and the driver's: missing or other versions
    (a module importable without package metadata, e.g. from a source tree, is not compared)."""
    found = []
    missing = [m for m, v in worker["modules"].items() if v is None]
    if missing:
        found.append(f"lacks {', '.join(missing)}")
    for name, version in worker["modules"].items():
        expected = driver["modules"].get(name)
        if None not in (version, expected) and "unknown" not in (version, expected) \
                and version != expected:
            found.append(f"has {name} {version} where the driver has {expected}")
    return found


def worker_python_setting(sc) -> str:
    """Where the workers' interpreter comes from, as the user would set it.

    The driver fixes it when its SparkContext starts: ``PYSPARK_PYTHON`` (spark-submit sets it
    from ``spark.pyspark.python``), else ``python3`` from each executor's PATH.
    """
    if os.environ.get("PYSPARK_PYTHON"):
        return f"PYSPARK_PYTHON={sc.pythonExec}"
    return "PYSPARK_PYTHON is not set, so 'python3' from the PATH"


def _advice(sc) -> str:
    return (f"Spark starts its Python workers with the PYSPARK_PYTHON environment variable of "
            f"the driver, or spark-submit's --conf spark.pyspark.python (now: "
            f"{worker_python_setting(sc)}); point it at the Python of an environment with the "
            "hvd-otto stack on every executor, e.g. PYSPARK_PYTHON=/opt/hvd-otto/.venv/bin/python,"
            " and compare with 'hvd-otto doctor --master MASTER'.")


def executor_reports(sc, modules: tuple[str, ...], probe=None) -> list:
    """Run ``probe`` (default: :func:`make_probe` of ``modules``) in one task per default
    slot (at most 64) and collect what the executors' Python workers report."""
    slices = max(1, min(sc.defaultParallelism, 64))
    return sc.range(0, slices, numSlices=slices).mapPartitions(
        probe or make_probe(modules)).collect()


def check_executor_python(sc, modules: tuple[str, ...] = TRAINING_MODULES) -> None:
    """Raise :class:`InputError` when the executors' Python lacks ``modules`` or has other
    versions than the driver. Checked once per SparkContext and module set."""
    done = _checked.get(sc, set())
    if set(modules) <= done:
        return
    try:
        reports = executor_reports(sc, modules)
    except Exception as err:  # noqa: BLE001 - the Python workers did not even start
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        cause = next((line for line in lines if "Error" in line or "Cannot run" in line),
                     lines[0] if lines else type(err).__name__)[:300]
        raise InputError(f"Spark's Python workers could not start ({cause}). "
                         + _advice(sc)) from None
    driver = local_report(modules)
    bad = {}
    for report in reports:
        found = problems(driver, report)
        if found:
            bad[(report["host"], report["python"], report["python_version"])] = found
    if bad:
        (host, python, version), found = next(iter(bad.items()))
        others = f" (and {len(bad) - 1} other worker setup(s))" if len(bad) > 1 else ""
        raise InputError(f"Spark's Python workers cannot run hvd-otto: they run {python} "
                         f"(Python {version} on {host}){others}, which {'; '.join(found)}. "
                         + _advice(sc))
    _checked[sc] = done | set(modules)
    log.debug("executors' Python checked: %s", reports[0]["python"])
