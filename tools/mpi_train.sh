#!/usr/bin/env bash
# Multi-node training with OpenMPI, as the authors trained the base models
# (16 GPUs on 2 nodes, 64 images each).
#   HOSTS=node1:8,node2:8 MASTER_ADDR=node1 tools/mpi_train.sh CONFIG 16 [args]
# mmengine's 'mpi' launcher reads OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: HOSTS=h1:8,h2:8 MASTER_ADDR=h1 $0 CONFIG NPROC [train.py args]" >&2
    exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$DIR/launch_common.sh"
[[ -f $CONFIG ]] || { echo "error: config file '$CONFIG' does not exist" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "error: mpirun not found; install OpenMPI" >&2; exit 2; }
[[ -n ${MASTER_ADDR:-} ]] || { echo "error: set MASTER_ADDR to the first node's address" >&2; exit 2; }
mpirun -np "$NPROC" ${HOSTS:+-H "$HOSTS"} --bind-to none --map-by slot \
    -x MASTER_ADDR -x MASTER_PORT="${PORT:-29500}" -x PYTHONPATH -x PATH \
    -x LD_LIBRARY_PATH ${MPIRUN_ARGS:-} \
    "$PYTHON" -u "$DIR/train.py" "$CONFIG" --launcher mpi "$@"
