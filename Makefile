# Set-up and the project's two commands. Every target does its own set-up on a fresh
# machine with Python 3.11, Java 17 and a C++ compiler; a second run with nothing changed
# only checks stamp files and costs seconds.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamps
HOROVOD_VERSION := 0.28.1

export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: setup demo test unit check-build docker-test docker-test-gpu clean

setup: $(STAMP)/project

$(STAMP)/venv:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip<25" wheel
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/stack: $(STAMP)/venv requirements.txt
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

# Horovod 0.28.1 from source with TensorFlow + Gloo; pip's wheel cache makes a rebuild instant.
# The venv's bin comes first on PATH: cmake comes from pip (requirements.txt), not the system.
$(STAMP)/horovod: $(STAMP)/stack
	PATH="$(abspath $(BIN)):$$PATH" \
	HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
	$(BIN)/python -m pip install --quiet --no-build-isolation horovod==$(HOROVOD_VERSION)
	$(MAKE) --no-print-directory check-build
	@touch $@

check-build:
	@out=$$($(BIN)/horovodrun --check-build) && echo "$$out" && \
	  echo "$$out" | grep -q '\[X\] TensorFlow' && echo "$$out" | grep -q '\[X\] Gloo' || \
	  { echo "error: Horovod was not built with TensorFlow and Gloo; see README.md, Set-up" >&2; exit 1; }

$(STAMP)/project: $(STAMP)/horovod pyproject.toml
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

## The README's main command: the whole job on the embedded default data.
demo: setup
	$(BIN)/hvd-otto demo

## The README's test command (also what .ci/run calls): the unit layer, then integration.
test: setup
	$(BIN)/python -m pytest tests/unit tests/integration

## The fast layer only: no JVM, no Horovod run (seconds).
unit: setup
	$(BIN)/python -m pytest tests/unit

## Build the CPU Docker image and run the demo inside it (docker, or podman/buildah; see README).
docker-test:
	bash docker/build-and-test.sh

## Build the GPU image, check it (TensorFlow's CUDA build, Horovod with NCCL, doctor) and run the
## demo inside it on the CPU. Large (about 7 GB) and slow: not part of .ci/run.
docker-test-gpu:
	bash docker/build-and-test.sh --gpu

clean:
	rm -rf $(VENV) build *.egg-info
