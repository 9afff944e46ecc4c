#!/usr/bin/env bash
# The GPU check, one command on a fresh GPU machine (<= 6 min):
#   bash tools/analysis_tools/gpu_check.sh [--wheels DIR] [SUMMARY.json] [-- GPU_CHECK_ARGS]
# (or MMSPARX_WHEELS=DIR). With a folder of wheels (a machine without a
# package index) they are installed into /tmp/site (skipped when they
# already import) and the system python3 runs the check; without one,
# `make setup` builds .venv first. Then tools/analysis_tools/gpu_check.py
# runs the scan tests, the parity check, `benchmark.py` model, ss2d, step and norm, and writes one
# JSON summary (default work_dirs/gpu_check.json). It fails, and says why,
# on a machine without CUDA. Arguments after `--` go to gpu_check.py, e.g.
# `-- --only 'compiled train bf16'` (the torch.compile steps are opt-in).
set -euo pipefail
cd "$(dirname "$0")/../.."
wheels=${MMSPARX_WHEELS:-}
out=work_dirs/gpu_check.json
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels=$2; shift 2 ;;
        --wheels=*) wheels=${1#--wheels=}; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        --) shift; break ;;
        *) out=$1; shift ;;
    esac
done
# Every step of gpu_check.py has its own limit inside this budget (s).
budget=${MMSPARX_GPU_CHECK_BUDGET:-310}
if [ -n "$wheels" ]; then
    site=/tmp/site
    export PYTHONPATH=$site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    # mmpretrain 1.2 imports its BLIP models when transformers >= 4.28 is
    # installed, and they fail with transformers 5 (the GPU image has 5.17):
    # a metadata-only 0.0.0 entry ahead of it on the path turns that off.
    shim=$site/transformers-0.0.0.dist-info
    mkdir -p "$shim"
    printf 'Metadata-Version: 2.1\nName: transformers\nVersion: 0.0.0\n' \
        > "$shim/METADATA"
    imports='import mmcv, mmcv.ops, mmengine, mmdet, mmseg, mmpretrain.models'
    if ! timeout 60 python3 -c "$imports" 2>/dev/null; then
        timeout 120 python3 -m pip install -q --no-index --no-deps \
            --no-compile --no-cache-dir --upgrade --target "$site" \
            "$wheels"/*.whl
        timeout 60 python3 -c "$imports" || {
            echo "gpu_check: the wheels in $wheels do not import here" \
                "(the traceback above names the missing package)" >&2
            exit 1; }
    fi
    python=python3
else
    timeout 900 env MMSPARX_NO_MAMBA=1 make setup
    python=.venv/bin/python
fi
exec timeout $((budget + 25)) "$python" tools/analysis_tools/gpu_check.py \
    --out "$out" --budget "$budget" "$@"
