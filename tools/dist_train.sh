#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) training with torchrun.
#   tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on every node.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONFIG GPUS [--work-dir DIR] [--resume] [...]" >&2; exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$DIR/launch_common.sh"
check_launch "$CONFIG" "$GPUS"
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" \
    "$DIR/train.py" "$CONFIG" --launcher pytorch "$@"
