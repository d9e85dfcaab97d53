"""The GPU image's build files agree with each other, the Makefile, CI and the README (static
checks: building the image takes `make docker-test-gpu`, far too large for the test suite)."""

import re
import subprocess

import pytest
from helpers import ROOT

DOCKERFILE = (ROOT / "docker" / "Dockerfile.gpu").read_text()
SCRIPT = ROOT / "docker" / "build-and-test.sh"
CUDA_FROM_WHEELS = ROOT / "docker" / "cuda-from-wheels.sh"
MAKEFILE = (ROOT / "Makefile").read_text()
README = (ROOT / "README.md").read_text()


def installed_discovery_path() -> str:
    match = re.search(r"ln -s hvd_otto/app/gpu_discovery\.sh (\S+)", DOCKERFILE)
    assert match, "Dockerfile.gpu no longer links the discovery script"
    return match.group(1)


def test_make_docker_test_gpu_builds_with_the_shared_script_and_ci_does_not_run_it():
    target = re.search(r"^docker-test-gpu:\n\t(.+)$", MAKEFILE, re.MULTILINE)
    assert target and target.group(1).strip() == "bash docker/build-and-test.sh --gpu"
    assert "docker-test-gpu" in re.search(r"^\.PHONY:(.*)$", MAKEFILE, re.MULTILINE).group(1)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make docker-test\n" in ci
    assert "docker-test-gpu" not in ci and "--gpu" not in ci


def test_the_build_script_has_a_gpu_option_that_passes_cuda_from():
    script = SCRIPT.read_text()
    assert re.search(r"^\s+--gpu\) GPU=1 ;;$", script, re.MULTILINE)
    assert 'DOCKERFILE=docker/Dockerfile.gpu' in script
    assert '--build-arg "CUDA_FROM=$CUDA_FROM"' in script
    for tick in ("TensorFlow", "Gloo", "NCCL"):  # what the image check requires of Horovod
        assert tick in re.search(r"for x in (.+); do", script).group(1)


@pytest.mark.parametrize("script", [SCRIPT, CUDA_FROM_WHEELS], ids=lambda p: p.name)
def test_the_docker_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_the_gpu_dockerfile_takes_both_cuda_sources_as_a_build_argument():
    base_arg = DOCKERFILE.index("ARG BASE_IMAGE=docker.io/nvidia/cuda:12.2.2-cudnn8-devel")
    cuda_from = DOCKERFILE.index("ARG CUDA_FROM=base")
    assert base_arg < DOCKERFILE.index("FROM ${BASE_IMAGE}") < cuda_from  # usable in RUN
    for source in ("base)", "wheels)"):
        assert source in DOCKERFILE
    assert "COPY docker/cuda-from-wheels.sh" in DOCKERFILE
    assert CUDA_FROM_WHEELS.stat().st_mode & 0o111, "cuda-from-wheels.sh must be executable"


def test_the_gpu_image_builds_the_pinned_horovod_with_nccl_for_cuda_12_architectures():
    version = re.search(r"^HOROVOD_VERSION := (\S+)$", MAKEFILE, re.MULTILINE).group(1)
    assert f"horovod=={version}" in DOCKERFILE
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in DOCKERFILE
    # CUDA 12's nvcc rejects sm_35/sm_37, which Horovod's own default list would include
    archs = re.search(r"^ARG CUDA_CC_LIST=([\d,]+)$", DOCKERFILE, re.MULTILINE).group(1).split(",")
    assert archs and min(int(a) for a in archs) >= 50
    requirements = (ROOT / "requirements.txt").read_text()
    # what the Dockerfile's sed swaps for tensorflow[and-cuda]
    assert re.search(r"^tensorflow-cpu==2\.15\.1$", requirements, re.MULTILINE)


def test_the_readme_names_the_discovery_script_where_the_gpu_image_installs_it():
    path = installed_discovery_path()
    assert path == "/opt/hvd-otto/gpu_discovery.sh"
    in_readme = set(re.findall(r"/opt/hvd-otto/[\w/.-]*gpu_discovery\.sh", README))
    assert in_readme == {path}
    assert (ROOT / "hvd_otto" / "app" / "gpu_discovery.sh").exists()  # the link's target
