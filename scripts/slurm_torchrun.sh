#!/usr/bin/env bash
# Multi-node training under SLURM: one torchrun per node, c10d rendezvous on the first node.
#   sbatch --nodes=2 --gpus-per-node=8 scripts/slurm_torchrun.sh configs/inat2018/resnet50_1x_ldam_drs_rsg.yaml data.root=/data/inat
#SBATCH --job-name=rsg
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
set -euo pipefail
config=$1; shift
gpus_per_node=${SLURM_GPUS_ON_NODE:-8}
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
cd "${SLURM_SUBMIT_DIR:-.}"
# --resume auto: a requeued or restarted job continues from the run's last.pt.
srun torchrun --nnodes="$SLURM_JOB_NUM_NODES" --nproc_per_node="$gpus_per_node" \
  --rdzv_backend=c10d --rdzv_endpoint="$head_node:29500" --rdzv_id="$SLURM_JOB_ID" \
  train.py --config "$config" --resume auto "$@"
