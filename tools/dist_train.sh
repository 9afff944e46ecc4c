#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [train.py args]
# Env: NNODES (1) NODE_RANK (0) PORT (29500) MASTER_ADDR (127.0.0.1)
# PYTHON (the repo's .venv when present, else python)
# OMP_NUM_THREADS (without CUDA: cores // GPUS).
# Without GPUs, GPUS is the number of CPU processes (gloo backend).
set -e
LAUNCH_USAGE="tools/dist_train.sh CONFIG GPUS [train.py args]"
LAUNCH_HELP="Train CONFIG with GPUS processes on this node through torchrun
(without CUDA, GPUS CPU processes with gloo). Options after GPUS go to
tools/train.py (--work-dir, --resume, --amp, --cfg-options k=v ...).
Env: PYTHON (default: the repo's .venv when present, else python),
NNODES (1) NODE_RANK (0) PORT (29500) MASTER_ADDR (127.0.0.1),
OMP_NUM_THREADS (without CUDA: cores // GPUS).
The data and pretrained weights the config names are checked before any
process starts; killing this script (or torchrun) stops its workers.
MMSPARX_PREFLIGHT=0 skips the data check."
. "$(dirname "$0")/misc/launch_common.sh"
check_help "$@"

ENV_GPUS=${GPUS:-}
CONFIG=$1
GPUS=$2
check_file "CONFIG" "$CONFIG"
check_count GPUS "$GPUS" "the 2nd positional argument ($LAUNCH_USAGE)" \
    "$(env_gpus_hint "$ENV_GPUS" "$CONFIG" "${@:2}")"
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
choose_python

# Port check and CPU thread share (one copy for both scripts).
. "$(dirname "$0")/misc/dist_prelaunch.sh"
preflight "$CONFIG" "${@:3}"

# exec: this script's pid becomes torchrun's, so a SIGTERM/SIGINT of the
# script reaches torchrun (which stops its workers) and the workers die with
# it even on SIGKILL (mmsparx.utils.launch_guard).
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
