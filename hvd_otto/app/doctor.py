"""``hvd-otto doctor``: what the driver has, and what the executors' Python workers have."""

from __future__ import annotations

import argparse
import os

from ..common.errors import InputError
from ..common.preflight import TRAINING_MODULES, executor_reports, local_report, problems

#: Reported beside what the ranks need (petastorm, pyarrow, numpy, pandas are in there).
STACK = ("pyspark", "h5py", "threadpoolctl")  # the last two: numpy scoring of plain MLPs


def horovod_build() -> dict:
    """Horovod's version and what it was built with (``horovodrun --check-build``)."""
    try:
        import horovod
        import horovod.tensorflow as hvd
    except ImportError as err:
        return {"error": f"not importable ({err})"}
    return {"version": horovod.__version__, "tensorflow": True,
            "gloo": bool(hvd.gloo_built()), "nccl": bool(hvd.nccl_built()),
            "mpi": bool(hvd.mpi_built())}


def tensorflow_facts() -> dict:
    """TensorFlow's version, whether it was built with CUDA, and the GPUs it sees."""
    try:
        import tensorflow as tf
    except ImportError as err:
        return {"error": f"not importable ({err})"}
    return {"version": tf.__version__, "cuda": bool(tf.test.is_built_with_cuda()),
            "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")]}


def format_stack(report: dict, tf: dict, hvd: dict) -> list[str]:
    """Plain lines describing one Python environment."""
    lines = [f"python      {report['python']} (Python {report['python_version']}) on "
             f"{report['host']}"]
    if "error" in tf:
        lines.append(f"tensorflow  {tf['error']}")
    else:
        cuda = "yes" if tf["cuda"] else "no"
        lines.append(f"tensorflow  {tf['version']} (built with CUDA: {cuda}; GPUs seen: "
                     f"{', '.join(tf['gpus']) or 'none'})")
    if "error" in hvd:
        lines.append(f"horovod     {hvd['error']}")
    else:
        built = ", ".join(f"{k}: {'yes' if hvd[k] else 'no'}" for k in ("tensorflow", "gloo",
                                                                        "nccl", "mpi"))
        lines.append(f"horovod     {hvd['version']} ({built})")
    for name, version in report["modules"].items():
        if name not in ("tensorflow", "horovod"):
            lines.append(f"{name:<12}{version or 'MISSING'}")
    return lines


def run_doctor(args: argparse.Namespace) -> int:
    """Print the driver's stack; with a master (or under spark-submit) the executors' too."""
    from .session import get_spark, launched_by_spark_submit

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    modules = (*TRAINING_MODULES, *STACK)
    driver = local_report(modules)
    print("driver:")
    for line in format_stack(driver, tensorflow_facts(), horovod_build()):
        print(f"  {line}")
    if not (args.master or launched_by_spark_submit()):
        print("executors: pass --master (or run under spark-submit) to check them too")
        return 0
    sc = get_spark(args.master).sparkContext
    reports = executor_reports(sc, modules)
    seen: dict = {}
    for report in reports:
        seen.setdefault((report["host"], report["python"]), report)
    bad = 0
    print(f"executors ({sc.master}, {len(reports)} task(s)):")
    for (host, python), report in seen.items():
        found = problems(driver, report)
        bad += bool(found)
        verdict = "; ".join(found) if found else "same stack as the driver"
        print(f"  {host}: {python} (Python {report['python_version']}): {verdict}")
    if not bad:  # the stack is there: what TensorFlow and Horovod see on each host
        shown = set()
        for host, tf, hvd in executor_reports(sc, modules, _executor_facts):
            if host not in shown:
                shown.add(host)
                facts = format_stack({**driver, "modules": {}}, tf, hvd)[1:]
                print(f"  {host}: " + "; ".join(" ".join(f.split()) for f in facts))
    if bad:
        raise InputError(f"{bad} executor Python setup(s) differ from the driver's (above); "
                         "set PYSPARK_PYTHON / spark.pyspark.python to a Python with the same "
                         "hvd-otto stack on every executor.")
    return 0


def _executor_facts(_rows):
    """TensorFlow and Horovod as an executor's Python worker sees them."""
    import socket

    yield socket.gethostname(), tensorflow_facts(), horovod_build()
