#!/usr/bin/env bash
# Build the CPU image and run the demo (and, with --tests, the test suite) inside it; with --gpu,
# build the GPU image, check it, and run the same demo (the ranks fall back to the CPU here).
#
# Works with a Docker engine, or without one: with podman/buildah in chroot isolation, on a
# Debian bookworm base image made locally with debootstrap when no registry image can be
# pulled. Usage: docker/build-and-test.sh [--gpu] [--tests] [--no-demo]
#
# --gpu: docker/Dockerfile.gpu on NVIDIA's CUDA image (CUDA_FROM=base) when CUDA_IMAGE can be
# pulled, else on the Debian base with CUDA from the package registries (CUDA_FROM=wheels);
# then prints and checks TensorFlow's CUDA build, horovodrun --check-build (TensorFlow, Gloo and
# NCCL ticked), hvd-otto doctor and the GPU discovery script, before the demo.
#
# Environment: BASE_IMAGE (default debian:bookworm-slim), IMAGE (default hvd-otto:cpu, with
# --gpu hvd-otto:gpu), CUDA_IMAGE (default docker.io/nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04),
# CUDA_FROM (auto, base or wheels; default auto), DEBIAN_MIRROR (debootstrap and the GPU
# image's Debian packages, default http://deb.debian.org/debian), HOST_CA_BUNDLE (CA bundle
# passed to pip inside the build; default the host's /etc/ssl/certs/ca-certificates.crt),
# OTTO_DATA (folder holding train.csv.zip/test.csv.zip, mounted for --tests;
# default ../shared/data/otto beside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DEMO=1 RUN_TESTS=0 GPU=0
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    --tests) RUN_TESTS=1 ;;
    --no-demo) RUN_DEMO=0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "error: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$GPU" = 1 ]; then IMAGE=${IMAGE:-hvd-otto:gpu} DOCKERFILE=docker/Dockerfile.gpu
else IMAGE=${IMAGE:-hvd-otto:cpu} DOCKERFILE=docker/Dockerfile; fi
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
CUDA_IMAGE=${CUDA_IMAGE:-docker.io/nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04}
CUDA_FROM=${CUDA_FROM:-auto}
LOCAL_BASE=localhost/hvd-otto-base:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DATA=${OTTO_DATA:-$(cd .. && pwd)/shared/data/otto}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/hvd-otto

say() { printf '[build-and-test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
seconds() { echo $(( $(date +%s) - $1 )); }

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ENGINE=docker
elif command -v podman >/dev/null && command -v buildah >/dev/null; then
  ENGINE=podman
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "no container engine; installing podman, buildah and debootstrap with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      podman buildah debootstrap; } >/dev/null || {
    echo "error: apt-get could not install podman/buildah/debootstrap" >&2; exit 1; }
  ENGINE=podman
else
  echo "error: neither a running Docker engine nor podman was found; install docker or" \
       "podman + buildah (Debian: apt-get install podman buildah debootstrap)" >&2
  exit 1
fi
say "engine: $ENGINE"

# --- base image -------------------------------------------------------------------------
# GPU image: NVIDIA's CUDA image when it is here or can be pulled, else the Debian base below.
if [ "$GPU" = 1 ]; then
  case "$CUDA_FROM" in
    auto|base)
      if "$ENGINE" image inspect "$CUDA_IMAGE" >/dev/null 2>&1 \
         || pull_error=$("$ENGINE" pull -q "$CUDA_IMAGE" 2>&1 >/dev/null); then
        CUDA_FROM=base
      elif [ "$CUDA_FROM" = base ]; then
        echo "error: CUDA_FROM=base but $CUDA_IMAGE cannot be pulled: $pull_error" >&2; exit 1
      else
        say "cannot pull $CUDA_IMAGE: $(printf '%s' "$pull_error" | tail -1)"
        say "so CUDA comes from the package registries (CUDA_FROM=wheels) on a Debian base"
        CUDA_FROM=wheels
      fi ;;
    wheels) ;;
    *) echo "error: CUDA_FROM must be auto, base or wheels, not '$CUDA_FROM'" >&2; exit 2 ;;
  esac
fi

if [ "$GPU" = 1 ] && [ "$CUDA_FROM" = base ]; then
  BASE_IMAGE=$CUDA_IMAGE
  say "base image: $BASE_IMAGE (CUDA_FROM=base)"
elif [ "$ENGINE" = podman ]; then
  if podman image exists "$BASE_IMAGE" || podman pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image: $BASE_IMAGE"
  elif podman image exists "$LOCAL_BASE"; then
    say "no registry image $BASE_IMAGE; using the local debootstrap base $LOCAL_BASE"
    BASE_IMAGE=$LOCAL_BASE
  else
    command -v debootstrap >/dev/null || {
      echo "error: $BASE_IMAGE cannot be pulled and debootstrap is missing" \
           "(apt-get install debootstrap)" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root" >&2; exit 1; }
    started=$(date +%s)
    say "no registry image $BASE_IMAGE; making $LOCAL_BASE with debootstrap from $MIRROR"
    rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/hvd-otto-rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || {
      echo "error: debootstrap failed; last lines of $rootfs.log:" >&2; tail -5 "$rootfs.log" >&2
      exit 1; }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs"; trap - EXIT
    BASE_IMAGE=$LOCAL_BASE
    say "base image made in $(seconds "$started") s"
  fi
fi

# --- build ------------------------------------------------------------------------------
started=$(date +%s)
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" -f "$DOCKERFILE" -t "$IMAGE")
if [ "$GPU" = 1 ]; then
  build_args+=(--build-arg "CUDA_FROM=$CUDA_FROM" --build-arg "DEBIAN_MIRROR=$MIRROR")
fi
if [ "$ENGINE" = podman ]; then
  build_args+=(--isolation chroot --layers)
  if [ -f "$CA" ]; then
    build_args+=(--volume "$CA:/etc/ssl/certs/host-ca-bundle.crt:ro"
                 --build-arg "HOST_CA_BUNDLE=/etc/ssl/certs/host-ca-bundle.crt")
  fi
fi
what="$IMAGE from $BASE_IMAGE with $DOCKERFILE"
if [ "$GPU" = 1 ]; then what="$what (CUDA_FROM=$CUDA_FROM)"; fi
say "building $what"
"$ENGINE" build "${build_args[@]}" .
build_seconds=$(seconds "$started")
say "image built in $build_seconds s"

# --- run ----------------------------------------------------------------------------------
# docker runs the image as it is meant to be run; podman without an engine runs it with
# buildah in chroot isolation (the same user, working directory and environment).
in_image() {  # in_image [MOUNT...] -- COMMAND...
  local mounts=()
  while [ "$1" != "--" ]; do mounts+=("$1"); shift; done; shift
  if [ "$ENGINE" = docker ]; then
    local vols=(); for m in "${mounts[@]}"; do vols+=(-v "$m"); done
    docker run --rm "${vols[@]}" --entrypoint "$1" "$IMAGE" "${@:2}"
  else
    local ctr vols=()
    for m in "${mounts[@]}"; do vols+=(--volume "$m"); done
    # Like docker run: the container's hostname resolves (Gloo binds to it).
    ctr=$(buildah from --quiet --add-host hvd-otto:127.0.0.1 "$IMAGE")
    local status=0
    buildah run --isolation chroot --hostname hvd-otto "${vols[@]}" "$ctr" -- "$@" || status=$?
    buildah rm "$ctr" >/dev/null
    return $status
  fi
}

# What the GPU image must have: TensorFlow built with CUDA, Horovod with TensorFlow, Gloo and
# NCCL, the project's doctor, the discovery script at its documented path. No GPU is needed.
GPU_CHECKS=$(cat <<'EOF'
set -euo pipefail
echo "== TensorFlow"
python -c '
import tensorflow as tf
info = tf.sysconfig.get_build_info()
print("tensorflow", tf.__version__, "| is_built_with_cuda:", tf.test.is_built_with_cuda())
print("build info: cuda_version", info.get("cuda_version"), "| cudnn_version",
      info.get("cudnn_version"), "| is_cuda_build", info.get("is_cuda_build"))
print("GPUs TensorFlow sees:", tf.config.list_physical_devices("GPU"))
assert tf.test.is_built_with_cuda(), "TensorFlow was not built with CUDA"
'
echo "== horovodrun --check-build"
out=$(horovodrun --check-build)
echo "$out"
for x in TensorFlow Gloo NCCL; do
  echo "$out" | grep -q "\[X\] $x" || { echo "error: Horovod was built without $x" >&2; exit 1; }
done
echo "== hvd-otto doctor"
hvd-otto doctor
echo "== GPU discovery script"
ls -l /opt/hvd-otto/gpu_discovery.sh
/opt/hvd-otto/gpu_discovery.sh
EOF
)

if [ "$GPU" = 1 ]; then
  started=$(date +%s)
  say "checking $IMAGE"
  in_image -- bash -c "$GPU_CHECKS"
  say "checks passed in $(seconds "$started") s"
fi

if [ "$RUN_DEMO" = 1 ]; then
  started=$(date +%s)
  say "running the demo inside $IMAGE"
  check='import json; m = json.load(open("hvd-otto-demo/metrics.json")); '\
'assert m["accuracy"] > 0.7, m; '\
'print("demo in image: holdout log loss %.4f, accuracy %.4f" % (m["log_loss"], m["accuracy"]))'
  in_image -- bash -c "hvd-otto demo && python -c '$check'"
  say "demo ran in $(seconds "$started") s"
fi

if [ "$RUN_TESTS" = 1 ]; then
  started=$(date +%s)
  mounts=()
  [ -d "$DATA" ] && mounts+=("$DATA:/opt/shared/data/otto:ro")
  say "running the test suite inside $IMAGE"
  in_image "${mounts[@]}" -- env CI="${CI:-}" hvd-otto test
  say "tests ran in $(seconds "$started") s"
fi
say "done (build $build_seconds s)"
