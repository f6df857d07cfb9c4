#!/usr/bin/env bash
# One node, N processes (one per GPU; Gloo on CPU-only machines) with torchrun.
#   tools/dist_train.sh NPROC -c CONFIG [key=value ...]
# e.g. tools/dist_train.sh 4 -c configs/joint.yaml data.levir_mci.root=/data/LEVIR-MCI run.out_dir=runs/joint
# data.batch_size is per process: the global batch is NPROC x batch_size x train.grad_accum.
set -euo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 NPROC -c CONFIG [key=value ...]" >&2
  exit 2
fi
NPROC=$1
shift
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# one OpenMP thread per process unless the user says otherwise: N processes share the cores
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PY" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node="$NPROC" \
  -m changeagent train "$@"
