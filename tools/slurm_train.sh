#!/usr/bin/env bash
# Multi-node training under SLURM: one task per GPU, launched by srun; every task runs
# `python -m changeagent train`, which reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID.
#   sbatch --nodes=2 --ntasks-per-node=4 --gpus-per-node=4 --cpus-per-task=8 \
#       tools/slurm_train.sh -c configs/joint.yaml data.levir_mci.root=/data/LEVIR-MCI run.out_dir=runs/joint
# Resubmitting with resume=true continues from run.out_dir/last.pt (e.g. after a time limit).
#SBATCH --job-name=changeagent
#SBATCH --output=changeagent-%j.log
set -euo pipefail
if [ -z "${SLURM_JOB_ID:-}" ]; then
  echo "run this with sbatch (or inside an salloc allocation)" >&2
  exit 2
fi
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
PY=${PYTHON:-.venv/bin/python}
# rendezvous: the first node of the allocation, a port derived from the job id
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
export MASTER_ADDR MASTER_PORT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
srun --kill-on-bad-exit=1 "$PY" -m changeagent train "$@"
