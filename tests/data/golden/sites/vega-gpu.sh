#!/bin/bash
#SBATCH --job-name=sample-gpu
#SBATCH --partition=gpu
#SBATCH --account=d2026d06-166-users
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=64
#SBATCH --gpus-per-node=4
#SBATCH --time=00:30:00
#SBATCH --output=stdout.log
#SBATCH --error=stderr.log
#SBATCH --comment=aifactory:00000000000000000000000000000000

# aifactory job sample-gpu on vega (gpu), id 00000000
AIF_JOB_DIR="${SLURM_SUBMIT_DIR:-$PWD}"
AIF_JOB_ID=00000000
AIF_JOB_TOKEN=00000000000000000000000000000000
AIF_SITE=vega
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


# rendezvous for distributed frameworks (PyTorch env://, torchrun)
AIF_MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export AIF_MASTER_ADDR MASTER_ADDR="${MASTER_ADDR:-$AIF_MASTER_ADDR}" MASTER_PORT="${MASTER_PORT:-29500}"
export WORLD_SIZE=4

# launch
srun --nodes=1 --ntasks=4 --cpus-per-task=64 bash -c 'python3 -c '"'"'print(1)'"'"''
