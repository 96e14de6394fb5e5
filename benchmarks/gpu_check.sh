#!/usr/bin/env bash
# The GPU check, 3 minutes on an H200: the gpu-marked tests, lite0 and ResNet-50 PGD-10 images/s in
# fp32 / bf16 / bf16 + compile (ours vs torchattacks vs the bare loop, one process) with peak memory, and a
# 2-process NCCL evaluation equal to one process where two GPUs exist. Details: benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh                        # needs a CUDA device; exits 2 without one
#   bash benchmarks/gpu_check.sh --json gpu-check.json  # also every number as JSON
#   bash benchmarks/gpu_check.sh --cpu-smoke            # no GPU: the CPU-safe parts at tiny size
#
# Set PYTHON to choose the interpreter (default: python). Needs gradconceal with the compare and test extras.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
