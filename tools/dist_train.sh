#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [train.py args]
# Env: NNODES (1) NODE_RANK (0) PORT (29500) MASTER_ADDR (127.0.0.1) PYTHON (python)
# OMP_NUM_THREADS (without CUDA: cores // GPUS).
# Without GPUs, GPUS is the number of CPU processes (gloo backend).
set -e
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

# The master (node rank 0) binds PORT for the rendezvous; a port already in
# use would otherwise surface as torch's bare EADDRINUSE traceback.
if [ "$NODE_RANK" = "0" ]; then
    "$PYTHON" "$(dirname "$0")/check_port.py" "$PORT" "$0" "$@" || exit 1
fi

# Without CUDA each of the GPUS processes runs on the CPU: give it its share
# of the cores, as one OpenMP pool per process sized to every core
# oversubscribes the machine. A set OMP_NUM_THREADS, and CUDA machines
# (torchrun's own default), are left alone.
if [ -z "${OMP_NUM_THREADS:-}" ]; then
    THREADS=$("$PYTHON" "$(dirname "$0")/threads_per_process.py" "$GPUS")
    if [ -n "$THREADS" ]; then
        export OMP_NUM_THREADS=$THREADS
        export MKL_NUM_THREADS=${MKL_NUM_THREADS:-$THREADS}
        echo "no CUDA: OMP_NUM_THREADS=$THREADS for each of $GPUS CPU processes (set OMP_NUM_THREADS to override)"
    fi
fi

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
