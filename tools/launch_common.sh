# Shared checks of the launch scripts (sourced, not run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# An explicit PYTHON wins; else the repository's .venv unless one is active.
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python
    [[ -x $ROOT/.venv/bin/python && -z ${VIRTUAL_ENV:-} ]] && PYTHON=$ROOT/.venv/bin/python
fi
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
    local available cores
    read -r available cores < <("$PYTHON" -c 'import os, torch
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
    else os.cpu_count()
print(torch.cuda.device_count(), cores)') || true
    if [[ -z $available ]]; then
        echo "error: '$PYTHON' cannot import torch; activate the" \
             "environment or set PYTHON" >&2
        exit 2
    fi
    if (( available > 0 && nproc > available )); then
        echo "error: $nproc GPUs requested but only $available visible;" \
             "pass at most $available" >&2
        exit 2
    fi
    if (( available == 0 )); then
        # Without GPUs every process is a CPU worker; more workers than
        # cores only slows the run down, so it is taken for a mistake.
        if (( nproc > cores )); then
            echo "error: $nproc processes requested but no GPU is visible" \
                 "and only $cores CPU cores; pass at most $cores" >&2
            exit 2
        fi
        echo "[launch] no GPU visible: $nproc CPU processes on the gloo backend" >&2
    fi
}
