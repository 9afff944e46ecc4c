#!/usr/bin/env bash
# `make setup`: the project-local .venv with pinned torch, mmcv built from
# source with its ops (once; the wheel is cached in .cache/wheels), the three
# toolboxes and mmsparx itself. Idempotent: a second run checks a stamp and
# exits in seconds. Every failure names its step and the fix.
set -uo pipefail
cd "$(dirname "$0")/../.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
WHEELS=.cache/wheels
STAMP="$VENV/.mmsparx-setup"
MMCV_VERSION=2.1.0
STEP=start

step() { STEP=$1; echo "[setup] $1"; }
fail() { echo "[setup] FAILED in step '$STEP': $1" >&2; exit 1; }

want=$(cat requirements/*.txt tools/misc/setup_env.sh setup.py mmsparx/ops/csrc/* | sha1sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "[setup] $VENV is up to date (remove $STAMP to redo)"
    exit 0
fi

step "python"
HOST_PY=${SETUP_PYTHON:-python3}
"$HOST_PY" -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] < (3, 13))' \
    || fail "$HOST_PY must be Python 3.8-3.12 (set SETUP_PYTHON=/path/to/python3.11)."

# A machine whose Python already has CUDA torch keeps it (the venv sees the
# system packages); everywhere else gets the pinned pair from constraints.
CUDA=0
if "$HOST_PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    CUDA=1
fi
CONSTRAINTS=requirements/constraints.txt
if [ "$CUDA" = 1 ]; then
    CONSTRAINTS=.cache/constraints-cuda.txt
    mkdir -p .cache
    grep -v -E '^(torch|torchvision|nvidia-|triton|cuda-)' requirements/constraints.txt > "$CONSTRAINTS"
fi

step "virtual environment ($VENV, CUDA torch kept: $CUDA)"
if [ ! -x "$PY" ]; then
    if [ "$CUDA" = 1 ]; then
        "$HOST_PY" -m venv --system-site-packages "$VENV"
    else
        "$HOST_PY" -m venv "$VENV"
    fi || fail "python -m venv failed: install the venv module (apt-get install python3-venv)."
fi

step "torch and build tools"
if [ "$CUDA" = 0 ]; then
    "${PIP[@]}" install -c "$CONSTRAINTS" torch torchvision \
        || fail "pip could not install the pinned torch/torchvision (requirements/constraints.txt); check the package index is reachable."
fi
"${PIP[@]}" install -c "$CONSTRAINTS" setuptools wheel ninja numpy \
    || fail "pip could not install setuptools/wheel/ninja."

step "mmcv $MMCV_VERSION with compiled ops"
if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
    echo "[setup] mmcv $MMCV_VERSION already installed"
else
    tag=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
    cache="$WHEELS/torch-$tag"
    # A clone on a machine that built it before reuses the user-level copy.
    shared="${MMSPARX_WHEEL_CACHE:-$HOME/.cache/mmsparx/wheels}/torch-$tag"
    wheel=$(ls "$cache"/mmcv-$MMCV_VERSION-*.whl "$shared"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1)
    if [ -z "$wheel" ]; then
        echo "[setup] building mmcv $MMCV_VERSION from source (10-15 minutes on 2 cores, once; cached in $cache)"
        src=$(mktemp -d)
        "${PIP[@]}" download --no-deps --no-binary :all: -d "$src" "mmcv==$MMCV_VERSION" \
            || fail "could not download the mmcv $MMCV_VERSION source from the package index."
        tar xzf "$src"/mmcv-$MMCV_VERSION.tar.gz -C "$src" || fail "mmcv source archive is damaged; rerun."
        # torch >= 2.14's headers need C++20; mmcv 2.1 hard-codes C++17.
        if grep -q 'C++20 or later' "$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "include/ATen/ATen.h"))')"; then
            sed -i "s/'-std=c++17'/'-std=c++20'/g" "$src/mmcv-$MMCV_VERSION/setup.py"
        fi
        mkdir -p "$cache"
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" wheel --no-build-isolation \
            --no-deps -w "$cache" "$src/mmcv-$MMCV_VERSION" \
            || fail "the mmcv build failed (see the compiler output above); it needs gcc/g++ and about 3 GB of RAM: install build-essential, or set MAX_JOBS=1."
        rm -rf "$src"
        wheel=$(ls "$cache"/mmcv-$MMCV_VERSION-*.whl | head -n1)
        mkdir -p "$shared" && cp "$wheel" "$shared"/ || true
    fi
    "${PIP[@]}" install --no-deps --force-reinstall "$wheel" \
        || fail "could not install $wheel; delete $cache and rerun to rebuild it."
fi

step "toolboxes (mmengine, mmdet, mmsegmentation, mmpretrain), ONNX tools and test tools"
"${PIP[@]}" install -c "$CONSTRAINTS" -r requirements/runtime.txt \
    -r requirements/toolboxes.txt -r requirements/deploy.txt -r requirements/tests.txt \
    || fail "pip could not install the pinned toolboxes (requirements/constraints.txt)."

step "mmsparx (editable)"
"${PIP[@]}" install --no-deps --no-build-isolation -e . \
    || fail "pip install -e . failed; check setup.py."

# MMSPARX_NO_MAMBA=1 skips mamba-ssm (a CUDA build of many minutes): the
# GPU check (tools/analysis_tools/gpu_check.sh) runs without it.
if [ "$CUDA" = 1 ] && [ "${MMSPARX_NO_MAMBA:-0}" != 1 ]; then
    step "optional CUDA extras (mamba-ssm)"
    "${PIP[@]}" install -r requirements/cuda.txt \
        || echo "[setup] mamba-ssm did not install; the scan falls back to the Triton/PyTorch backends."
fi

step "check"
"$PY" - <<'EOF' || fail "the environment does not import; the error is above."
import torch
import mmcv, mmdet, mmseg, mmpretrain, mmsparx
from mmcv.ops import nms, RoIAlign
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
keep = nms(boxes, torch.tensor([0.9, 0.8]), 0.5)[1]
assert keep.tolist() == [0], keep
print(f'[setup] torch {torch.__version__}, mmcv {mmcv.__version__}, '
      f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, '
      f'mmpretrain {mmpretrain.__version__}; toolboxes '
      f'{mmsparx.available_toolboxes()}')
EOF
echo "$want" > "$STAMP"
echo "[setup] done"
