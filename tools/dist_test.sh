#!/usr/bin/env bash
# tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Env: NNODES (1) NODE_RANK (0) PORT (29500) MASTER_ADDR (127.0.0.1)
# PYTHON (the repo's .venv when present, else python)
# OMP_NUM_THREADS (without CUDA: cores // GPUS).
set -e
LAUNCH_USAGE="tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]"
LAUNCH_HELP="Test CHECKPOINT with CONFIG on GPUS processes of this node through
torchrun (without CUDA, GPUS CPU processes with gloo). Options after GPUS go
to tools/test.py (--work-dir, --out, --show-dir, --cfg-options k=v ...).
Env: PYTHON (default: the repo's .venv when present, else python),
NNODES (1) NODE_RANK (0) PORT (29500) MASTER_ADDR (127.0.0.1),
OMP_NUM_THREADS (without CUDA: cores // GPUS).
The data the config names is checked before any process starts; killing
this script (or torchrun) stops its workers.
MMSPARX_PREFLIGHT=0 skips the data check."
. "$(dirname "$0")/misc/launch_common.sh"
check_help "$@"

ENV_GPUS=${GPUS:-}
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
check_file CONFIG "$CONFIG"
case "$CHECKPOINT" in
    -*|'') usage_error "CHECKPOINT is the 2nd positional argument ($LAUNCH_USAGE), got '$CHECKPOINT'." ;;
esac
HINT=""
if [ -n "$ENV_GPUS" ]; then
    HINT=" The GPUS environment variable ($ENV_GPUS) is read by slurm_*.sh only; here give it after CHECKPOINT: $0 $CONFIG $CHECKPOINT $ENV_GPUS ..."
fi
check_count GPUS "$GPUS" "the 3rd positional argument ($LAUNCH_USAGE)" "$HINT"
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
choose_python

# Port check and CPU thread share (one copy for both scripts).
. "$(dirname "$0")/misc/dist_prelaunch.sh"
preflight "$CONFIG" "${@:4}"

# exec: see dist_train.sh (a killed launcher leaves no worker).
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
