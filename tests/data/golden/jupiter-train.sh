#!/bin/bash
#SBATCH --job-name=train
#SBATCH --partition=booster
#SBATCH --account=exalab
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=72
#SBATCH --gpus-per-task=1
#SBATCH --time=00:30:00
#SBATCH --output=stdout.log
#SBATCH --error=stderr.log
#SBATCH --comment=aifactory:0123456789abcdef0123456789abcdef

# aifactory job train on jupiter (booster), id 01234567
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

# environment
export OMP_NUM_THREADS=72
export EPOCHS=2


# JSC: srun does not inherit --cpus-per-task from sbatch (Slurm >= 23.02)
export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"

# setup (once, before the launch)
eval 'echo "setup on $(hostname): $(nproc) cores visible"' || { _aif_rc=$?; echo "aifactory: setup failed (exit $_aif_rc)" >&2; exit "$_aif_rc"; }


# rendezvous for distributed frameworks (PyTorch env://, torchrun)
AIF_MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export AIF_MASTER_ADDR MASTER_ADDR="${MASTER_ADDR:-$AIF_MASTER_ADDR}" MASTER_PORT="${MASTER_PORT:-29500}"
export WORLD_SIZE=8

# launch
srun --nodes=2 --ntasks=8 --cpus-per-task=72 bash -c 'python3 train.py --epochs "$EPOCHS"'
