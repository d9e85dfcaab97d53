"""Device selection for Horovod ranks and Spark prediction tasks (GPU when there is one).

The decision is a small pure function (:func:`choose_device`) so it is unit-tested without
a GPU; :func:`pin_device` applies it to TensorFlow.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from .defaults import USE_GPU_CHOICES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    """Where a process runs: ``kind`` is ``gpu`` or ``cpu``; ``index`` a visible GPU's index."""

    kind: str
    index: int | None
    reason: str

    def __str__(self) -> str:
        where = f"GPU {self.index}" if self.kind == "gpu" else "CPU"
        return f"{where} ({self.reason})"


def choose_device(
    spark_addresses: Sequence[str],
    visible_gpus: Sequence[str],
    local_rank: int,
    use_gpu: str = "auto",
) -> DeviceChoice:
    """Pick a device: the Spark task's ``gpu`` address → local rank among visible GPUs → CPU.

    ``visible_gpus`` are the physical ids TensorFlow can see (``"0"``, ``"1"``...), in order.
    ``use_gpu="true"`` makes a missing GPU an error; ``"false"`` always picks the CPU.
    """
    if use_gpu not in USE_GPU_CHOICES:
        raise ValueError(f"useGpu must be one of {USE_GPU_CHOICES}, got '{use_gpu}'")
    assigned = f"Spark assigned gpu {list(spark_addresses)}" if spark_addresses else None
    if use_gpu == "false":
        return DeviceChoice("cpu", None, "useGpu=false")
    if not visible_gpus:
        if use_gpu == "true":
            raise RuntimeError(
                "useGpu=true but TensorFlow sees no GPU on this host"
                + (f" ({assigned})" if assigned else "")
                + "; check the CUDA driver, tensorflow[and-cuda] and CUDA_VISIBLE_DEVICES."
            )
        return DeviceChoice(
            "cpu", None, (assigned + ", but " if assigned else "") + "TensorFlow sees no GPU"
        )
    for address in spark_addresses:
        if address in visible_gpus:
            return DeviceChoice("gpu", visible_gpus.index(address), f"{assigned}, address {address}")
    if spark_addresses:
        log.warning("%s, not among TensorFlow's GPUs %s; using the local rank", assigned,
                    list(visible_gpus))
    index = local_rank % len(visible_gpus)
    return DeviceChoice("gpu", index, f"local rank {local_rank} of {len(visible_gpus)} visible GPUs")


def visible_gpu_ids(gpus) -> list[str]:
    """Physical ids of TensorFlow's GPUs (``/physical_device:GPU:1`` → ``"1"``), respecting
    ``CUDA_VISIBLE_DEVICES`` renumbering."""
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    mapping = [d.strip() for d in cuda.split(",")] if cuda else None
    ids = []
    for gpu in gpus:
        local = gpu.name.rsplit(":", 1)[-1]
        ids.append(mapping[int(local)] if mapping and int(local) < len(mapping) else local)
    return ids


def pin_device(spark_addresses: Sequence[str], local_rank: int, use_gpu: str = "auto",
               cpu_threads: int | None = None, mixed_precision: bool = False) -> DeviceChoice:
    """Apply :func:`choose_device` to TensorFlow; call before any TensorFlow op runs."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    choice = choose_device(spark_addresses, visible_gpu_ids(gpus), local_rank, use_gpu)
    if choice.kind == "gpu":
        gpu = gpus[choice.index]
        tf.config.set_visible_devices([gpu], "GPU")
        tf.config.experimental.set_memory_growth(gpu, True)
        if mixed_precision:
            tf.keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        if cpu_threads:
            tf.config.threading.set_intra_op_parallelism_threads(cpu_threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, cpu_threads))
    return choice


def spark_task_gpus() -> list[str]:
    """The ``gpu`` addresses Spark assigned to the running task (empty outside a GPU task)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return []
    resource = context.resources().get("gpu")
    return list(resource.addresses) if resource else []


def nvidia_gpus_present(environ: Mapping[str, str], device_files: Sequence[str]) -> bool:
    """Whether this host may show TensorFlow a CUDA GPU, judged without importing TensorFlow:
    an NVIDIA device file (``/dev/nvidia0``…) exists and ``CUDA_VISIBLE_DEVICES`` does not
    hide every device (``""`` or ``"-1"``)."""
    if environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(re.fullmatch(r"nvidia\d+", os.path.basename(f)) for f in device_files)


def host_has_nvidia_gpu() -> bool:
    """:func:`nvidia_gpus_present` for this process and host."""
    try:
        files = os.listdir("/dev")
    except OSError:
        files = []
    return nvidia_gpus_present(os.environ, files)


def allreduce_backend(nccl_built: bool, gloo_built: bool, on_gpu: bool) -> str:
    """Which collective library Horovod uses for this rank's gradients.

    Horovod allreduces GPU tensors with NCCL when it was built with
    ``HOROVOD_GPU_OPERATIONS=NCCL``; everything else goes through Gloo (or MPI).
    """
    if on_gpu and nccl_built:
        return "NCCL"
    if gloo_built:
        return "Gloo" + (" (GPU tensors staged through host memory: Horovod built without NCCL)"
                         if on_gpu else "")
    return "MPI"


def spark_gpu_conf(executor_gpus: int, master: str, packaged_script: str,
                   user_script: str | None = None) -> dict[str, str]:
    """Spark confs for executors with ``executor_gpus`` GPUs each, by cluster manager.

    No ``spark.task.resource.gpu.amount``: ETL tasks need no GPU, and the Horovod job asks for
    one per rank itself (stage-level scheduling). Discovery, where executors run it:
    YARN ships the script with ``spark.files`` and names it relative to the container;
    Kubernetes runs it from the image (driver and executors share the image, so the installed
    package's path holds) and needs the ``nvidia.com`` vendor; standalone Workers discover GPUs
    themselves and hand executors their addresses, so executors run no script unless one is given.
    """
    if executor_gpus < 0:
        raise ValueError(f"executor GPUs must be >= 0, got {executor_gpus}")
    if executor_gpus == 0:
        return {}
    script = user_script or packaged_script
    conf = {"spark.executor.resource.gpu.amount": str(executor_gpus)}
    if master.startswith("yarn"):
        conf["spark.files"] = script
        conf["spark.executor.resource.gpu.discoveryScript"] = "./" + os.path.basename(script)
    elif master.startswith("k8s"):
        conf["spark.executor.resource.gpu.vendor"] = "nvidia.com"
        conf["spark.executor.resource.gpu.discoveryScript"] = script
    elif user_script:
        conf["spark.executor.resource.gpu.discoveryScript"] = user_script
    return conf
