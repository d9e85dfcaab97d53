#!/usr/bin/env bash
# The CUDA tree Horovod's build needs (HOROVOD_CUDA_HOME), made without NVIDIA's CUDA image:
# docker/Dockerfile.gpu runs this as root when CUDA_FROM=wheels (a plain Debian bookworm base).
#
#   cuda-from-wheels.sh VENV DEST
#
# TensorFlow runs on the CUDA 12.2 / cuDNN 8.9 / NCCL 2.16 pip wheels that
# tensorflow[and-cuda]==2.15.1 installed into VENV; Horovod links the same libcudart and libnccl.
# What those wheels lack for compiling Horovod's CUDA kernels is nvcc: NVIDIA's
# nvidia-cuda-nvcc-cu12 wheels (12.0 to 12.9) hold only ptxas and the crt headers. The nvcc
# driver, cicc, cudafe++, fatbinary and nvlink come from Debian's nvidia-cuda-toolkit package
# (trixie non-free, CUDA 12.4: Debian's CUDA 12 nvcc; bookworm's is 11.8),
# unpacked here and not installed (it would pull in 2.5 GB of CUDA libraries). Everything else
# comes from NVIDIA's wheels of that same release, 12.4, so the compiler and its headers agree:
#
#   DEST/bin        nvcc cicc cudafe++ fatbinary nvlink bin2c (Debian), ptxas (wheel), nvcc.profile
#   DEST/include    cuda_runtime.h & co. (nvidia-cuda-runtime-cu12), crt/ (nvidia-cuda-nvcc-cu12),
#                   nv/ cuda/std (nvidia-cuda-cccl-cu12: cuda_fp16.h needs them), nccl.h -> VENV
#   DEST/nvvm       libdevice, libnvvm (nvidia-cuda-nvcc-cu12)
#   DEST/lib64      libcudart.so -> VENV's libcudart.so.12 (12.2: what runs), libnccl.so -> VENV's
#                   libnccl.so.2; libcudadevrt.a is an empty archive (below)
#
# Horovod's CMake links the CUDA runtime statically by default (and so does nvcc in CMake's
# compiler check), and no registry has libcudart_static.a for CUDA 12; DEST/shared-cudart.cmake
# (a CMake toolchain file, used through CMAKE_TOOLCHAIN_FILE) makes both link the shared
# libcudart.so.12 instead. CMake's CUDA link line always names -lcudadevrt (the device runtime
# for relocatable device code and dynamic parallelism, which Horovod's kernels do not use); an
# empty archive answers it, and a symbol that were really needed would fail the link or the
# import check after the build.
#
# Horovod's kernels built by this nvcc 12.4 hold SASS for HOROVOD_BUILD_CUDA_CC_LIST, which any
# CUDA 12 driver runs; only the PTX kept for the newest architecture needs a 12.4 driver (>= 550)
# to be JIT-compiled on GPUs newer than that list.
#
# Last, /etc/ld.so.conf.d/hvd-otto-cuda-wheels.conf lists VENV's nvidia/*/lib folders, so
# libcudart, cuDNN, NCCL... load for any process (Spark executors too) without LD_LIBRARY_PATH.
# No libcuda.so stub is put on that path: the driver's libcuda.so.1 comes from the host
# (NVIDIA Container Toolkit) at run time.
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian); pip uses PIP_CERT as usual.
set -euo pipefail

VENV=${1:?usage: cuda-from-wheels.sh VENV DEST}
DEST=${2:?usage: cuda-from-wheels.sh VENV DEST}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

NVCC_DEB=nvidia-cuda-toolkit=12.4.131~12.4.1-2
BUILD_WHEELS=(nvidia-cuda-nvcc-cu12==12.4.131 nvidia-cuda-runtime-cu12==12.4.127
              nvidia-cuda-cccl-cu12==12.4.127.post1)

say() { printf '[cuda-from-wheels] %s\n' "$*"; }
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for lib in cuda_runtime/lib/libcudart.so.12 nccl/lib/libnccl.so.2 nccl/include/nccl.h; do
  [ -e "$site/nvidia/$lib" ] || {
    echo "error: $site/nvidia/$lib is missing; install tensorflow[and-cuda] into $VENV first" >&2
    exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- nvcc and its helpers from Debian (index of trixie non-free only, kept out of the image) ---
say "fetching $NVCC_DEB from $MIRROR (trixie non-free)"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/parts"
echo "deb $MIRROR trixie non-free" >"$work/apt/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$work/apt/sources.list"
          -o "Dir::Etc::sourceparts=$work/apt/parts"
          -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
          -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update -qq
(cd "$work" && apt-get "${apt_opts[@]}" download -qq "$NVCC_DEB")
dpkg-deb -x "$work"/nvidia-cuda-toolkit_*.deb "$work/deb"

# --- headers, ptxas and libdevice from NVIDIA's wheels of the same CUDA release ---------------
say "fetching ${BUILD_WHEELS[*]}"
"$VENV/bin/python" -m pip download --quiet --no-deps -d "$work/wheels" "${BUILD_WHEELS[@]}"
for whl in "$work"/wheels/*.whl; do "$VENV/bin/python" -m zipfile -e "$whl" "$work/wheels/x"; done

say "assembling $DEST"
rm -rf "$DEST"
mkdir -p "$DEST/bin/crt" "$DEST/include" "$DEST/lib64" "$DEST/nvvm"
deb=$work/deb/usr whl=$work/wheels/x/nvidia
cp "$deb/lib/nvidia-cuda-toolkit/bin/nvcc" "$deb/lib/nvidia-cuda-toolkit/bin/cicc" \
   "$deb/bin/cudafe++" "$deb/bin/fatbinary" "$deb/bin/nvlink" "$deb/bin/bin2c" "$DEST/bin/"
cp "$deb"/lib/nvidia-cuda-toolkit/bin/crt/*.stub "$DEST/bin/crt/"
cp "$whl/cuda_nvcc/bin/ptxas" "$DEST/bin/"
cp -r "$whl/cuda_nvcc/nvvm/." "$DEST/nvvm/"
cp -r "$whl/cuda_runtime/include/." "$whl/cuda_nvcc/include/." "$whl/cuda_cccl/include/." \
      "$DEST/include/"
find "$DEST" -name __init__.py -delete
chmod 0755 "$DEST"/bin/*

# nvcc reads nvcc.profile beside itself: where cicc, libdevice, the headers and libraries are.
cat >"$DEST/bin/nvcc.profile" <<'EOF'
TOP                = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
PATH              += $(_HERE_):
INCLUDES          += "-I$(TOP)/include" $(_SPACE_)
LIBRARIES          =+ $(_SPACE_) "-L$(TOP)/lib64"
EOF

ln -s "$site/nvidia/cuda_runtime/lib/libcudart.so.12" "$DEST/lib64/libcudart.so.12"
ln -s libcudart.so.12 "$DEST/lib64/libcudart.so"
ln -s "$site/nvidia/nccl/lib/libnccl.so.2" "$DEST/lib64/libnccl.so"
ln -s "$site/nvidia/nccl/include/nccl.h" "$DEST/include/nccl.h"
ar rcs "$DEST/lib64/libcudadevrt.a"
cat >"$DEST/shared-cudart.cmake" <<'EOF'
# CMake toolchain file (CMAKE_TOOLCHAIN_FILE) for Horovod's build against this tree: link the
# shared CUDA runtime, also in CMake's compiler check (nvcc's default is -cudart static).
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
set(CMAKE_CUDA_FLAGS_INIT "-cudart shared")
EOF

{
  echo "Assembled by docker/cuda-from-wheels.sh to build Horovod (HOROVOD_CUDA_HOME=$DEST)."
  echo "nvcc, cicc, cudafe++, fatbinary, nvlink, bin2c: Debian trixie non-free $NVCC_DEB"
  echo "headers, crt, ptxas, nvvm: ${BUILD_WHEELS[*]}"
  echo "lib64/libcudart.so, libnccl.so, include/nccl.h: links to $site/nvidia"
  echo "lib64/libcudadevrt.a: an empty archive (Horovod uses no relocatable device code)"
} >"$DEST/SOURCES"

# --- the loader finds the wheels' libraries --------------------------------------------------
ls -d "$site"/nvidia/*/lib >/etc/ld.so.conf.d/hvd-otto-cuda-wheels.conf
ldconfig

# --- the compiler works: a kernel using cuda_fp16.h (as Horovod's do) compiles and links -------
cat >"$work/check.cu" <<'EOF'
#include <cuda_fp16.h>
#include <cuda_runtime.h>
__global__ void twice(__half* x) { x[threadIdx.x] = __hadd(x[threadIdx.x], x[threadIdx.x]); }
int main() { int n = 0; return cudaGetDeviceCount(&n) == cudaSuccess ? 0 : 1; }
EOF
"$DEST/bin/nvcc" -cudart shared -gencode arch=compute_70,code=sm_70 \
  -o "$work/check" "$work/check.cu" \
  2> >(grep -v 'Skipping incompatible .*libcudadevrt.a' >&2)
libs=$(ldd "$work/check")
case "$libs" in
  *"libcudart.so.12 => $site/nvidia/cuda_runtime/lib/libcudart.so.12"*) ;;
  *) echo "error: the check program does not load the wheel's libcudart.so.12:" >&2
     echo "$libs" >&2; exit 1 ;;
esac
say "$("$DEST/bin/nvcc" --version | tail -2 | head -1); compiles and links against $site/nvidia"
