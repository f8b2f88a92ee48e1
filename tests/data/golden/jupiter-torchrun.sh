#!/bin/bash
#SBATCH --job-name=ddp
#SBATCH --partition=booster
#SBATCH --account=exalab
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=288
#SBATCH --gres=gpu:4
#SBATCH --time=06:00:00
#SBATCH --output=stdout.log
#SBATCH --error=stderr.log
#SBATCH --comment=aifactory:0123456789abcdef0123456789abcdef

# aifactory job ddp on jupiter (booster), id 01234567
AIF_JOB_DIR="${SLURM_SUBMIT_DIR:-$PWD}"
AIF_JOB_ID=01234567
AIF_JOB_TOKEN=0123456789abcdef0123456789abcdef
AIF_SITE=jupiter
export AIF_JOB_DIR AIF_JOB_ID AIF_JOB_TOKEN AIF_SITE
cd "$AIF_JOB_DIR" || exit 1
# The script records its own exit code, so the result is known even when the scheduler has
# forgotten the job.
_aif_rc_file="$AIF_JOB_DIR/exit_code${SLURM_ARRAY_TASK_ID:+.$SLURM_ARRAY_TASK_ID}"
_aif_finish() {
  local rc=$?
  printf '%s\n' "$rc" > "$_aif_rc_file.tmp" && mv -f "$_aif_rc_file.tmp" "$_aif_rc_file"
  exit "$rc"
}
trap _aif_finish EXIT

# modules: the site's base modules, then the spec's
module load Stages/2025 || { echo "aifactory: module load failed" >&2; exit 1; }


# JSC: srun does not inherit --cpus-per-task from sbatch (Slurm >= 23.02)
export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"
# one task per node: show it every GPU of the node (JSC gpu-computing docs)
export CUDA_VISIBLE_DEVICES=0,1,2,3


# rendezvous for distributed frameworks (PyTorch env://, torchrun)
AIF_MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export AIF_MASTER_ADDR MASTER_ADDR="${MASTER_ADDR:-$AIF_MASTER_ADDR}" MASTER_PORT="${MASTER_PORT:-29500}"
export WORLD_SIZE=16

# launch
srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --cpus-per-task=288 bash -c 'exec torchrun --nnodes="$SLURM_NNODES" --nproc-per-node=4 --rdzv-backend=c10d --rdzv-endpoint="$AIF_MASTER_ADDR:29500" --rdzv-id="$SLURM_JOB_ID" train.py --epochs 3'
