# Sourced by dist_*.sh and slurm_*.sh: the checks every launcher makes
# before it starts anything, so a wrong argument or interpreter is one line
# from us instead of a torchrun or srun traceback from a worker.

LAUNCH_NAME=$(basename "$0")
LAUNCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# usage_error MESSAGE: the one-line refusal, then the usage, exit 2.
usage_error() {
    echo "$LAUNCH_NAME: $1" >&2
    echo "usage: $LAUNCH_USAGE (--help for more)" >&2
    exit 2
}

# check_help ARGS: called so that the first argument is -h/--help (exit 0) or there
# are no arguments (exit 2); LAUNCH_HELP is the script's longer text.
check_help() {
    if [ "$#" -eq 0 ]; then
        echo "usage: $LAUNCH_USAGE" >&2
        echo "$LAUNCH_HELP" >&2
        exit 2
    fi
    case "$1" in
        -h|--help)
            echo "usage: $LAUNCH_USAGE"
            echo "$LAUNCH_HELP"
            exit 0 ;;
    esac
}

# check_count NAME VALUE WHERE [HINT]: VALUE must be a positive integer;
# WHERE says where NAME comes from (a positional argument or an env
# variable), HINT (optional) is appended to the refusal.
check_count() {
    local name=$1 value=$2 where=$3 hint=${4:-}
    local count="$name must be a positive integer (the number of processes)"
    case "$value" in
        '')
            usage_error "$name is missing: it is $where.$hint" ;;
        -[0-9]*)
            usage_error "$count, got '$value'.$hint" ;;
        -*)
            usage_error "$name is $where, got the option '$value' in its place (options go after it).$hint" ;;
        *[!0-9]*)
            usage_error "$count, got '$value'.$hint" ;;
    esac
    if [ "$((10#$value))" -lt 1 ]; then
        usage_error "$count, got '$value': give 1 or more.$hint"
    fi
}

# env_gpus_hint ENV_GPUS CONFIG [ARGS ...]: when GPUS was set in the
# environment (slurm_*.sh style), the command that gives it positionally.
env_gpus_hint() {
    local env_gpus=$1 config=$2
    shift 2
    if [ -z "$env_gpus" ]; then
        return 0
    fi
    case "$1" in
        ''|-*) ;;
        *) shift ;;  # a wrong GPUS word: replaced below
    esac
    echo " The GPUS environment variable ($env_gpus) is read by slurm_*.sh only; here run: $0 $config $env_gpus $*"
}

# check_file WHAT PATH: PATH must be an existing file (URLs pass).
check_file() {
    local what=$1 path=$2
    case "$path" in
        http://*|https://*|s3://*) return 0 ;;
    esac
    if [ -z "$path" ]; then
        usage_error "$what is missing."
    fi
    if [ ! -f "$path" ]; then
        usage_error "$what '$path' does not exist (paths are relative to $(pwd))."
    fi
}

# choose_python: PYTHON when set, else the repo's .venv (what `make setup`
# builds), else `python` (an installed mmsparx); says which on one line and
# refuses an interpreter without torch before any launch.
choose_python() {
    local why
    if [ -n "${PYTHON:-}" ]; then
        why="PYTHON is set"
    elif [ -x "$LAUNCH_ROOT/.venv/bin/python" ]; then
        PYTHON="$LAUNCH_ROOT/.venv/bin/python"
        why="the repo's .venv from make setup; set PYTHON to use another"
    else
        PYTHON=python
        why="no .venv in $LAUNCH_ROOT; run make setup or set PYTHON to use another"
    fi
    echo "$LAUNCH_NAME: python $PYTHON ($why)"
    if ! command -v "$PYTHON" >/dev/null; then
        echo "$LAUNCH_NAME: PYTHON=$PYTHON is not a command: run make setup in $LAUNCH_ROOT (the scripts then use its .venv) or set PYTHON to an interpreter with torch." >&2
        exit 1
    fi
    "$PYTHON" "$LAUNCH_ROOT/tools/misc/check_python.py" "$0" || exit 1
}

# preflight CONFIG [ARGS ...]: the data and weights check (annotation files,
# image folders, init_cfg checkpoints) in this process, before any worker
# starts; it exits 2 with one paragraph when something is missing.
preflight() {
    # MMSPARX_PREFLIGHT=0: data only the compute nodes see (Slurm), or a
    # stub PYTHON in tests.
    if [ "${MMSPARX_PREFLIGHT:-1}" = "0" ]; then
        echo "$LAUNCH_NAME: data and weights check skipped (MMSPARX_PREFLIGHT=0)"
        return 0
    fi
    local rc=0
    # setuptools' pkg_resources deprecation, printed on import by mmengine
    # and mmcv, would bury the one paragraph this check prints.
    PYTHONPATH="$LAUNCH_ROOT":$PYTHONPATH \
        PYTHONWARNINGS="ignore:pkg_resources is deprecated${PYTHONWARNINGS:+,$PYTHONWARNINGS}" \
        "$PYTHON" -m mmsparx.datasets preflight "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        exit "$rc"
    fi
}
