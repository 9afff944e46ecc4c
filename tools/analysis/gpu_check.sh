#!/usr/bin/env bash
# The GPU check, one command on a fresh GPU machine (about 8 minutes):
#   tools/analysis/gpu_check.sh [SUMMARY.json]
# sets up without building mamba-ssm, runs the scan tests on CUDA for every
# GPU backend present, benchmarks SparX-Mamba-T against Swin-T and
# ConvNeXt-T (inference: batch 128 at 224 with AMP; training: batch 32) and
# writes one JSON summary (default work_dirs/gpu_check.json). It fails, and
# says why, on a machine without CUDA.
set -euo pipefail
cd "$(dirname "$0")/../.."
MMSPARX_NO_MAMBA=1 make setup
exec .venv/bin/python tools/analysis/gpu_check.py --out "${1:-work_dirs/gpu_check.json}"
