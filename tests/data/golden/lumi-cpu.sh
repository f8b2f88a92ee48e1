#!/bin/bash
#SBATCH --job-name=sim
#SBATCH --partition=standard
#SBATCH --account=project_465000123
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=128
#SBATCH --cpus-per-task=1
#SBATCH --time=1-00:00:00
#SBATCH --output=stdout.log
#SBATCH --error=stderr.log
#SBATCH --comment=aifactory:0123456789abcdef0123456789abcdef

# aifactory job sim on lumi (standard), id 01234567
AIF_JOB_DIR="${SLURM_SUBMIT_DIR:-$PWD}"
AIF_JOB_ID=01234567
AIF_JOB_TOKEN=0123456789abcdef0123456789abcdef
AIF_SITE=lumi
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
module load LUMI/25.03 partition/C || { echo "aifactory: module load failed" >&2; exit 1; }


# rendezvous for distributed frameworks (PyTorch env://, torchrun)
AIF_MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export AIF_MASTER_ADDR MASTER_ADDR="${MASTER_ADDR:-$AIF_MASTER_ADDR}" MASTER_PORT="${MASTER_PORT:-29500}"
export WORLD_SIZE=256

# launch
srun --nodes=2 --ntasks=256 --cpus-per-task=1 bash -c ./simulate
