"""Device selection as a pure function: Spark GPU address → local rank → CPU."""

from types import SimpleNamespace

import pytest

from hvd_otto.common.devices import choose_device, visible_gpu_ids


def test_spark_address_wins_over_local_rank():
    choice = choose_device(["1"], ["0", "1"], local_rank=0)
    assert (choice.kind, choice.index) == ("gpu", 1)
    assert "Spark assigned gpu ['1']" in choice.reason


def test_local_rank_when_spark_assigned_nothing():
    choice = choose_device([], ["0", "1"], local_rank=3)
    assert (choice.kind, choice.index) == ("gpu", 1) and "local rank 3" in choice.reason


def test_unknown_spark_address_falls_back_to_local_rank():
    assert choose_device(["7"], ["0", "1"], local_rank=0).index == 0


def test_cpu_fallback_names_the_assigned_address_and_the_reason():
    choice = choose_device(["0"], [], local_rank=1)
    assert choice.kind == "cpu"
    assert str(choice) == "CPU (Spark assigned gpu ['0'], but TensorFlow sees no GPU)"


def test_use_gpu_false_and_true():
    assert choose_device(["0"], ["0"], 0, use_gpu="false").kind == "cpu"
    with pytest.raises(RuntimeError, match="useGpu=true but TensorFlow sees no GPU"):
        choose_device([], [], 0, use_gpu="true")
    with pytest.raises(ValueError):
        choose_device([], [], 0, use_gpu="maybe")


def test_visible_ids_follow_cuda_visible_devices(monkeypatch):
    gpus = [SimpleNamespace(name="/physical_device:GPU:0"),
            SimpleNamespace(name="/physical_device:GPU:1")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpu_ids(gpus) == ["2", "3"]
    assert choose_device(["3"], visible_gpu_ids(gpus), 0).index == 1
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpu_ids(gpus) == ["0", "1"]


def test_allreduce_backend_follows_the_device_and_the_build():
    from hvd_otto.common.devices import allreduce_backend

    assert allreduce_backend(nccl_built=True, gloo_built=True, on_gpu=True) == "NCCL"
    assert allreduce_backend(nccl_built=True, gloo_built=True, on_gpu=False) == "Gloo"
    assert allreduce_backend(nccl_built=False, gloo_built=True, on_gpu=True).startswith(
        "Gloo (GPU tensors staged")
    assert allreduce_backend(nccl_built=False, gloo_built=False, on_gpu=False) == "MPI"


PACKAGED = "/venv/site-packages/hvd_otto/app/gpu_discovery.sh"


@pytest.mark.parametrize("master, user_script, expected", [
    ("spark://h:7077", None, {}),  # Workers discover GPUs; executors get their addresses
    ("spark://h:7077", "/opt/gpu.sh", {"spark.executor.resource.gpu.discoveryScript":
                                       "/opt/gpu.sh"}),
    ("yarn", None, {"spark.files": PACKAGED,  # shipped into each container's working folder
                    "spark.executor.resource.gpu.discoveryScript": "./gpu_discovery.sh"}),
    ("k8s://https://api:6443", None, {"spark.executor.resource.gpu.vendor": "nvidia.com",
                                      "spark.executor.resource.gpu.discoveryScript": PACKAGED}),
])
def test_gpu_conf_follows_the_cluster_manager(master, user_script, expected):
    from hvd_otto.common.devices import spark_gpu_conf

    conf = spark_gpu_conf(4, master, PACKAGED, user_script)
    assert conf == {"spark.executor.resource.gpu.amount": "4", **expected}


def test_gpu_conf_never_asks_every_task_for_a_gpu():
    """ETL stages must run on all cores: only the Horovod job asks for GPUs (a stage profile)."""
    from hvd_otto.common.devices import spark_gpu_conf

    for master in ("spark://h:7077", "yarn", "k8s://x", "local[2]"):
        assert "spark.task.resource.gpu.amount" not in spark_gpu_conf(2, master, PACKAGED)
    assert spark_gpu_conf(0, "yarn", PACKAGED) == {}
    with pytest.raises(ValueError):
        spark_gpu_conf(-1, "yarn", PACKAGED)


@pytest.mark.parametrize("environ, files, expected", [
    ({}, ["null", "nvidia0", "nvidiactl", "nvidia-uvm"], True),
    ({"CUDA_VISIBLE_DEVICES": "1"}, ["nvidia0", "nvidia1"], True),
    ({}, ["null", "nvidiactl", "nvidia-uvm", "tty0"], False),  # a driver, no GPU device
    ({"CUDA_VISIBLE_DEVICES": ""}, ["nvidia0"], False),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, ["nvidia0"], False),
    ({}, [], False),
])
def test_a_scoring_worker_sees_an_nvidia_gpu_only_through_a_device_file(environ, files,
                                                                        expected):
    """Scoring decides numpy (CPU) or TensorFlow (GPU) without importing TensorFlow."""
    from hvd_otto.common.devices import nvidia_gpus_present

    assert nvidia_gpus_present(environ, files) is expected
