# Sourced by dist_train.sh and dist_test.sh after they set NODE_RANK, PORT,
# PYTHON and GPUS: what both check and set before torchrun starts.

# The master (node rank 0) binds PORT for the rendezvous; a port already in
# use would otherwise surface as torch's bare EADDRINUSE traceback.
if [ "$NODE_RANK" = "0" ]; then
    "$PYTHON" "$(dirname "${BASH_SOURCE[0]}")/check_port.py" "$PORT" "$0" "$@" || exit 1
fi

# Without CUDA each of the GPUS processes runs on the CPU: give it its share
# of the cores, as one OpenMP pool per process sized to every core
# oversubscribes the machine. A set OMP_NUM_THREADS, and CUDA machines
# (torchrun's own default), are left alone.
if [ -z "${OMP_NUM_THREADS:-}" ]; then
    THREADS=$("$PYTHON" "$(dirname "${BASH_SOURCE[0]}")/threads_per_process.py" "$GPUS")
    if [ -n "$THREADS" ]; then
        export OMP_NUM_THREADS=$THREADS
        export MKL_NUM_THREADS=${MKL_NUM_THREADS:-$THREADS}
        echo "no CUDA: OMP_NUM_THREADS=$THREADS for each of $GPUS CPU processes (set OMP_NUM_THREADS to override)"
    fi
fi
