#!/usr/bin/env bash
# Create the project's virtual environment with the pinned reference stack
# (requirements/constraints.txt) and dwnet_mm in editable mode.
#
# Environment:
#   DWNET_VENV        venv location            (default: <repo>/.venv)
#   DWNET_CACHE       built-wheel cache        (default: ~/.cache/dwnet-mm)
#   PYTHON            interpreter for the venv (default: python3)
# Re-running with nothing changed is a no-op.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${DWNET_VENV:-$ROOT/.venv}
CACHE=${DWNET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dwnet-mm}
CONSTRAINTS=$ROOT/requirements/constraints.txt
STAMP=$VENV/.dwnet_mm_stamp
MMCV_VERSION=$(sed -n 's/^mmcv==//p' "$CONSTRAINTS")

log() { echo "[install] $*"; }
# Run a pip command without the warnings about this machine's unused local
# index folders, keeping its exit status.
quiet_pip() { "$@" > >(grep -v 'is ignored: it is neither' >&2) 2>&1; }

# The C++ sources too: an editable install compiles them (setup.py).
fingerprint=$(cat "$CONSTRAINTS" "$ROOT/requirements/tests.txt" \
    "$ROOT/setup.py" "${BASH_SOURCE[0]}" "$ROOT"/dwnet_mm/ops/csrc/* |
    sha256sum | cut -c1-16)
if [[ -f $STAMP && $(cat "$STAMP") == "$fingerprint" ]]; then
    log "environment up to date: $VENV"
    exit 0
fi

start=$SECONDS
if [[ ! -x $VENV/bin/python ]]; then
    log "creating virtual environment $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
PY=$VENV/bin/python
export PATH=$VENV/bin:$PATH  # torch's extension builder looks for ninja here
# uv links packages from its cache: a repeat install of the multi-GB torch
# stack takes seconds instead of minutes.
if [[ ! -x $VENV/bin/uv ]]; then
    quiet_pip "$PY" -m pip install --quiet --disable-pip-version-check uv
fi
pip_install() { VIRTUAL_ENV=$VENV "$VENV/bin/uv" pip install --quiet -c "$CONSTRAINTS" "$@"; }

log "installing torch, torchvision and build tools"
pip_install torch torchvision numpy setuptools wheel ninja pip

# mmcv has no wheel for this torch: build it once per (mmcv, torch, device)
# and keep the wheel outside the checkout.
read -r TORCH_VERSION TORCH_CUDA HAS_GPU < <("$PY" -c '
import torch
print(torch.__version__.split("+")[0], (torch.version.cuda or "none").replace(".", ""),
      int(torch.cuda.is_available()))')
if [[ $HAS_GPU == 1 && $TORCH_CUDA != none ]] && command -v nvcc >/dev/null; then
    VARIANT=cu$TORCH_CUDA
    export FORCE_CUDA=1
else
    VARIANT=cpu
    export FORCE_CUDA=0
    [[ $HAS_GPU == 1 ]] && log "WARNING: GPU present but nvcc not found; mmcv gets CPU ops only"
fi
WHEEL_DIR=$CACHE/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$VARIANT
if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION with $VARIANT ops (several minutes, once per machine)"
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    quiet_pip "$PY" -m pip download --quiet --no-deps --no-binary :all: \
        --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar -xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
    # torch >= 2.14 headers need C++20; mmcv's setup.py hard-codes c++14/17.
    sed -i 's/-std=c++1[47]/-std=c++20/g' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
    # -g0: debug info roughly doubles the compile time of torch's headers.
    CFLAGS="${CFLAGS:-} -g0" MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        quiet_pip "$PY" -m pip wheel --no-deps --no-build-isolation \
        -w "$BUILD/dist" "$BUILD/mmcv-$MMCV_VERSION"
    mkdir -p "$WHEEL_DIR"
    mv "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR"/
else
    log "reusing cached mmcv wheel from $WHEEL_DIR"
fi
pip_install "$WHEEL_DIR"/mmcv-*.whl

log "installing mmengine, mmpretrain, mmdet and mmsegmentation"
pip_install -r "$ROOT/requirements/tests.txt"

# setup.py compiles the native CPU kernels (dwnet_mm/ops/csrc) with torch's
# extension builder, into dwnet_mm/ (in place, editable): it needs the
# venv's torch, hence no build isolation. A failed compile still installs.
log "installing dwnet_mm (editable) and building its native CPU kernels"
pip_install --no-build-isolation --reinstall-package dwnet-mm -e "$ROOT[all]"
if ! "$PY" -c 'import sys, dwnet_mm.ops as o; sys.exit(o.native_ops() is None)'; then
    log "WARNING: no native CPU kernels (see the warning above); the depth-wise convs will run on PyTorch ops"
fi

echo "$fingerprint" > "$STAMP"
log "done in $((SECONDS - start)) s: $VENV"
