#!/usr/bin/env bash
# Example: CellLM pretraining on 2 Slurm nodes x 4 GPUs (8 ranks) with torchrun.
#
# Generate one for your own data and run folder instead of editing this by hand:
#   python -m app celllm launch-script --nodes 2 --gpus-per-node 4 --partition gpu --out run.sh -- \
#       --data /shared/atlas/part1.h5ad /shared/atlas/part2.h5ad --out /shared/runs/celllm-full \
#       --preset full --batch-size 1024 --epochs 3
#   sbatch run.sh
#
# Everything below is what that command writes (paths are examples). The job config (slurm_pretrain.json,
# stored next to the script) holds the `celllm pretrain` options, e.g.
#   {"data": ["/shared/atlas/part1.h5ad", "/shared/atlas/part2.h5ad"], "run_dir": "/shared/runs/celllm-full",
#    "preset": "full", "batch_size": 1024, "epochs": 3, "device": "auto", "stream": "auto"}
# Data and run folder must be on a file system every node mounts. batch_size is the GLOBAL contrastive batch
# (here 128 cells per GPU). Resubmitting this script resumes from the run folder's last checkpoint.
#SBATCH --job-name=celllm-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=/shared/scripts/slurm-%x-%j.out
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --partition=gpu
set -euo pipefail
PYTHON="${OMICSLAB_PYTHON:-/opt/omicslab/.venv/bin/python}"
export PYTHONPATH=/opt/omicslab"${PYTHONPATH:+:$PYTHONPATH}"
CONFIG=/shared/scripts/slurm_pretrain.json  # absolute: sbatch runs a spooled copy of this script
RUN_DIR=/shared/runs/celllm-full
RESUME=""
if [ -f "$RUN_DIR/checkpoints/last" ]; then RESUME="--resume"; fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
# one srun task per node; each starts torchrun with 4 ranks; the first node of the allocation hosts the
# c10d rendezvous, the Slurm job id names it (so a requeued job forms a fresh group)
HEAD_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run --nproc-per-node=4 "--nnodes=$SLURM_NNODES" \
    --rdzv-backend=c10d "--rdzv-endpoint=$HEAD_NODE:29500" "--rdzv-id=$SLURM_JOB_ID" \
    -m app celllm pretrain --config "$CONFIG" $RESUME
