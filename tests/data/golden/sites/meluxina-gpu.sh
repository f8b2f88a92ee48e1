#!/bin/bash
#SBATCH --job-name=sample-gpu
#SBATCH --partition=gpu
#SBATCH --account=p200000
#SBATCH --qos=default
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --gpus-per-node=4
#SBATCH --time=00:30:00
#SBATCH --output=stdout.log
#SBATCH --error=stderr.log
#SBATCH --comment=aifactory:00000000000000000000000000000000

# aifactory job sample-gpu on meluxina (gpu), id 00000000
AIF_JOB_DIR="${SLURM_SUBMIT_DIR:-$PWD}"
AIF_JOB_ID=00000000
AIF_JOB_TOKEN=00000000000000000000000000000000
AIF_SITE=meluxina
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
module load env/release/2025.1 || { echo "aifactory: module load failed" >&2; exit 1; }

# launch contract (README, "The launch contract"): the rendezvous of the whole job here; RANK,
# LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE and NODE_RANK inside each task, from its own step
_aif_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
_aif_addr="$_aif_node"
export MASTER_ADDR="$_aif_addr"
# from the job id: jobs sharing a node get different ports (10000-29999, below Linux's ephemeral ports)
export MASTER_PORT=$(( 10000 + SLURM_JOB_ID % 20000 ))

# AIF_PORT: a port free on this node now (aifactory forward JOB reaches it)
AIF_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])' 2>/dev/null)" || AIF_PORT=
if [ -z "$AIF_PORT" ]; then  # no python3: a random port that nothing answers on
  for _aif_i in 1 2 3 4 5 6 7 8; do
    AIF_PORT=$(( 32768 + (RANDOM * 32768 + RANDOM) % 28000 ))
    (: < "/dev/tcp/127.0.0.1/$AIF_PORT") 2>/dev/null || break
  done
fi
AIF_HOST="${SLURMD_NODENAME:-$(hostname -s)}"
export AIF_PORT AIF_HOST
_aif_port_file="$AIF_JOB_DIR/aif_port${SLURM_ARRAY_TASK_ID:+.$SLURM_ARRAY_TASK_ID}"
printf '%s %s\n' "$AIF_HOST" "$AIF_PORT" > "$_aif_port_file.tmp" && mv -f "$_aif_port_file.tmp" "$_aif_port_file"

# each task: its ranks from Slurm's values in the step, the GPUs it sees (gpu_binding: all), then the command
AIF_TASK='export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" NODE_RANK="$SLURM_NODEID" WORLD_SIZE="$SLURM_NTASKS" LOCAL_WORLD_SIZE=4
export CUDA_VISIBLE_DEVICES=0,1,2,3
exec "$@"
'

# launch
srun --nodes=1 --ntasks=4 --cpus-per-task=16 --kill-on-bad-exit=1 bash -c "$AIF_TASK" aif-task bash -c 'python3 -c '"'"'print(1)'"'"''
