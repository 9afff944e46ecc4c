#!/usr/bin/env bash
# tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# Env: GPUS (8) GPUS_PER_NODE (8) CPUS_PER_TASK (5) SRUN_ARGS ("")
# PYTHON (the repo's .venv when present, else python).
set -e
LAUNCH_USAGE="[GPUS=8] tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]"
LAUNCH_HELP="Train CONFIG on a Slurm PARTITION with srun, GPUS tasks in all
(GPUS_PER_NODE per node), writing to WORK_DIR. Options after WORK_DIR go to
tools/train.py (--resume, --amp, --cfg-options k=v ...).
Env: GPUS (8) GPUS_PER_NODE (8) CPUS_PER_TASK (5) SRUN_ARGS (\"\"),
PYTHON (default: the repo's .venv when present, else python).
The data and pretrained weights the config names are checked before srun.
MMSPARX_PREFLIGHT=0 skips the data check.
Preemption: on SIGTERM or SIGUSR1 (sbatch --signal=B:USR1@120 ...) the
training finishes its iteration, saves a resumable checkpoint and exits 75;
inside an sbatch job this script then requeues it (scontrol requeue), and
the requeued run resumes from that checkpoint."
. "$(dirname "$0")/misc/launch_common.sh"
check_help "$@"

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
for pair in "PARTITION:$PARTITION:1st" "JOB_NAME:$JOB_NAME:2nd" \
            "WORK_DIR:$WORK_DIR:4th"; do
    IFS=: read -r name value nth <<< "$pair"
    case "$value" in
        ''|-*) usage_error "$name is the $nth positional argument, got '$value'." ;;
    esac
done
check_file CONFIG "$CONFIG"
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
check_count GPUS "$GPUS" "the environment variable GPUS (total tasks)"
check_count GPUS_PER_NODE "$GPUS_PER_NODE" "the environment variable GPUS_PER_NODE"
check_count CPUS_PER_TASK "$CPUS_PER_TASK" "the environment variable CPUS_PER_TASK"
SRUN_ARGS=${SRUN_ARGS:-""}
if ! command -v srun >/dev/null; then
    echo "$LAUNCH_NAME: srun not found: run this on a Slurm login node; on one machine use tools/dist_${LAUNCH_NAME#slurm_} instead." >&2
    exit 1
fi
choose_python
preflight "$CONFIG" --work-dir "$WORK_DIR" "${@:5}"
TRAIN_ARGS=("${@:5}")
# A requeued job continues from its last checkpoint.
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && [[ " ${TRAIN_ARGS[*]} " != *" --resume"* ]]; then
    TRAIN_ARGS+=(--resume)
fi

PREEMPTED=75
set -x +e
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$(dirname "$0")/train.py" "${CONFIG}" \
    --work-dir="${WORK_DIR}" --launcher="slurm" "${TRAIN_ARGS[@]}"
STATUS=$?
set +x
if [ "$STATUS" -eq "$PREEMPTED" ]; then
    if [ -n "${SLURM_JOB_ID:-}" ] && command -v scontrol >/dev/null; then
        echo "$LAUNCH_NAME: preempted; checkpoint saved in $WORK_DIR; requeueing job $SLURM_JOB_ID (it resumes there)." >&2
        scontrol requeue "$SLURM_JOB_ID"
    else
        echo "$LAUNCH_NAME: preempted; checkpoint saved in $WORK_DIR; continue with the same command plus --resume." >&2
    fi
fi
exit "$STATUS"
