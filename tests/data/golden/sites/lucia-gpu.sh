#!/bin/bash
#SBATCH --job-name=sample-gpu
#SBATCH --partition=gpu
#SBATCH --account=sample_account
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --gpus-per-node=4
#SBATCH --mem-per-gpu=60G
#SBATCH --time=00:30:00
#SBATCH --output=stdout.log
#SBATCH --error=stderr.log
#SBATCH --comment=aifactory:00000000000000000000000000000000

# aifactory job sample-gpu on lucia (gpu), id 00000000
AIF_JOB_DIR="${SLURM_SUBMIT_DIR:-$PWD}"
AIF_JOB_ID=00000000
AIF_JOB_TOKEN=00000000000000000000000000000000
AIF_SITE=lucia
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

# launch contract (README, "The launch contract"): the rendezvous of the whole job here; RANK,
# LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE and NODE_RANK inside each task, from its own step
_aif_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
_aif_addr="$_aif_node"
export MASTER_ADDR="$_aif_addr"
# from the job id: jobs sharing a node get different ports (10000-29999, below Linux's ephemeral ports)
export MASTER_PORT=$(( 10000 + SLURM_JOB_ID % 20000 ))
# each task: its ranks from Slurm's values in the step, the GPUs it sees (gpu_binding: all), then the command
AIF_TASK='export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" NODE_RANK="$SLURM_NODEID" WORLD_SIZE="$SLURM_NTASKS" LOCAL_WORLD_SIZE=4
export CUDA_VISIBLE_DEVICES=0,1,2,3
exec "$@"
'

# launch
srun --nodes=1 --ntasks=4 --cpus-per-task=8 --kill-on-bad-exit=1 bash -c "$AIF_TASK" aif-task bash -c 'python3 -c '"'"'print(1)'"'"''
