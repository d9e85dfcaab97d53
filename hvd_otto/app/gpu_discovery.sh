#!/usr/bin/env bash
# Spark resource discovery script for GPUs (spark.{worker,executor}.resource.gpu.discoveryScript).
# Prints {"name":"gpu","addresses":["0","1",...]} from nvidia-smi; no GPU → an empty list.
set -euo pipefail
if command -v nvidia-smi >/dev/null 2>&1; then
  addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed 's/ //g; s/.*/"&"/' | paste -sd, -)
else
  addresses=""
fi
echo "{\"name\":\"gpu\",\"addresses\":[${addresses}]}"
