#!/usr/bin/env bash
# Multi-GPU / multi-node SLURM launch: one camjax process per GPU (jax.distributed reads the SLURM environment).
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=8 launch/slurm_multigpu.sh [camjax.main flags...]
#   e.g. sbatch --nodes=4 --gpus-per-node=8 --ntasks-per-node=8 launch/slurm_multigpu.sh \
#          --config=configs/cameractrl2.py:wan14b --workdir=/shared/runs/wan14b
#SBATCH --job-name=camjax
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --output=camjax-%j.out
# SIGTERM reaches every task on preemption / time limit: camjax checkpoints and exits; resubmit to continue.
#SBATCH --signal=TERM@120
set -euo pipefail
srun --kill-on-bad-exit=1 python -m camjax.main --distributed "$@"
