# Shared checks of the launch scripts (sourced, not run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python}
[[ -x $ROOT/.venv/bin/python && -z ${VIRTUAL_ENV:-} ]] && PYTHON=$ROOT/.venv/bin/python
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# check_launch CONFIG NPROC: one clear line and exit 2 on bad input.
check_launch() {
    local config=$1 nproc=$2
    if [[ ! -f $config ]]; then
        echo "error: config file '$config' does not exist" >&2; exit 2
    fi
    if ! [[ $nproc =~ ^[1-9][0-9]*$ ]]; then
        echo "error: GPUS must be a positive integer, got '$nproc'" >&2; exit 2
    fi
    local available
    available=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
    if (( available > 0 && nproc > available )); then
        echo "error: $nproc GPUs requested but only $available visible;" \
             "pass at most $available" >&2
        exit 2
    fi
    if (( available == 0 )); then
        echo "[launch] no GPU visible: $nproc CPU processes on the gloo backend" >&2
    fi
}
