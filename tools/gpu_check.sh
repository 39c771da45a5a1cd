#!/usr/bin/env bash
# CUDA correctness and speed of dwnet_mm in one command; see
# tools/gpu_check.py (or --help) for what it runs and writes.
#
#   tools/prepare_gpu_wheels.sh                  # here, with internet: .wheels/
#   tools/gpu_check.sh [--device cuda|cpu] [--out DIR] [--sections ...]
#                      [--without-mmcv-ops]      # on the GPU machine
#
# PYTHON picks the interpreter (default: the repo's .venv where there is
# one, else python3, the one holding PyTorch on the lent GPU machines).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python
    else PYTHON=python3; fi
fi
cd "$ROOT"
exec "$PYTHON" "$ROOT/tools/gpu_check.py" "$@"
