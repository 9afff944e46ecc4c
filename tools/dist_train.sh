#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [train.py args]
# Env: NNODES (1) NODE_RANK (0) PORT (29500) MASTER_ADDR (127.0.0.1) PYTHON (python).
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
    STATUS=0
    FREE=$("$PYTHON" - "$PORT" <<'PY'
import errno, socket, sys
with socket.socket() as s:
    # As torch's store binds it: every interface, SO_REUSEADDR.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(('', int(sys.argv[1])))
        sys.exit(0)
    except OSError as err:
        if err.errno != errno.EADDRINUSE:
            sys.exit(0)  # not "in use": torch reports it
with socket.socket() as s:  # a port free now, to suggest
    s.bind(('', 0))
    print(s.getsockname()[1])
sys.exit(3)
PY
    ) || STATUS=$?
    if [ "$STATUS" = "3" ]; then
        echo "$(basename "$0"): port $PORT is in use (another training" \
            "job?): run with PORT=$FREE $0 $*" >&2
        exit 1
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
