#!/bin/bash
#SBATCH --job-name=sweep
#SBATCH --partition=standard-g
#SBATCH --account=project_465000123
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=7
#SBATCH --gpus-per-node=8
#SBATCH --time=01:00:00
#SBATCH --array=0-2%2
#SBATCH --output=stdout.%a.log
#SBATCH --error=stderr.%a.log
#SBATCH --comment=aifactory:0123456789abcdef0123456789abcdef

# aifactory job sweep on lumi (standard-g), id 01234567
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
module load LUMI/25.03 partition/G || { echo "aifactory: module load failed" >&2; exit 1; }

# environment
export NCCL_SOCKET_IFNAME=hsn
export NCCL_NET_GDR_LEVEL=3
export CXI_FORK_SAFE=1
export CXI_FORK_SAFE_HP=1
export FI_CXI_DISABLE_CQ_HUGETLB=1
export MIOPEN_USER_DB_PATH="/tmp/${USER}-miopen-cache-${SLURM_JOB_ID}"
export MIOPEN_CUSTOM_CACHE_DIR="${MIOPEN_USER_DB_PATH}"

# sweep: an element's values
_aif_element_values() {
  case "$1" in
    0) export LR=1e-4; ;;
    1) export LR=3e-4; ;;
    2) export LR=1e-3; ;;
    *) echo "aifactory: unknown array element $1" >&2; return 2 ;;
  esac
}
# each element works in its own directory, so elements do not overwrite each other's files: the
# job dir's files (uploads) appear there as links, what the run writes stays the element's own
_aif_enter_element() {
  export AIF_ELEMENT="$1"
  export AIF_ELEMENT_DIR="$AIF_JOB_DIR/elements/$AIF_ELEMENT"
  mkdir -p "$AIF_ELEMENT_DIR" || return 1
  local _aif_entry _aif_name
  for _aif_entry in "$AIF_JOB_DIR"/* "$AIF_JOB_DIR"/.[!.]*; do
    _aif_name="${_aif_entry##*/}"
    case "$_aif_name" in
      job.sh|aifactory.json|slurm_job_id|exit_code*|stdout*.log|stderr*.log|elements|aif_port*|.aif-*|.uploads|runner.json|status.json|runner.log|cancel-requested) continue ;;
    esac
    [ -e "$_aif_entry" ] && [ ! -e "$AIF_ELEMENT_DIR/$_aif_name" ] && ln -s "../../$_aif_name" "$AIF_ELEMENT_DIR/$_aif_name"
  done
  cd "$AIF_ELEMENT_DIR" || return 1
}
_aif_element_values "${SLURM_ARRAY_TASK_ID:-0}" || exit 2
_aif_enter_element "${SLURM_ARRAY_TASK_ID:-0}" || exit 1

# LUMI-G binding: task i -> 7 cores of the CCD closest to GCD i (core 0 of each CCD is reserved)
CPU_BIND=mask_cpu:fe000000000000,fe00000000000000,fe0000,fe000000,fe,fe00,fe00000000,fe0000000000

# container: the LUMI AI Factory bindings (Slingshot/RCCL), loaded as the LUMI AI Guide does
module use /appl/local/laifs/modules
module load lumi-aif-singularity-bindings || echo "aifactory: warning: module lumi-aif-singularity-bindings did not load; multi-node communication inside the container may not use Slingshot" >&2
# binds: the project's directories by their full paths (those that exist), then the job dir
AIF_BINDS=""
for _aif_dir in /scratch/project_465000123 /project/project_465000123; do
  if [ -d "$_aif_dir" ]; then AIF_BINDS="$AIF_BINDS$_aif_dir,"; fi
done
AIF_BINDS="$AIF_BINDS$AIF_JOB_DIR"

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
AIF_TASK='export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" NODE_RANK="$SLURM_NODEID" WORLD_SIZE="$SLURM_NTASKS" LOCAL_WORLD_SIZE=8
export ROCR_VISIBLE_DEVICES=0,1,2,3,4,5,6,7
exec "$@"
'

# launch
srun --nodes=1 --ntasks=8 --cpus-per-task=7 --kill-on-bad-exit=1 --cpu-bind="$CPU_BIND" bash -c "$AIF_TASK" aif-task singularity exec --bind "$AIF_BINDS" --bind /scratch/project_465000123 /appl/local/containers/pytorch.sif bash -c 'python3 bench.py --lr "$LR"'
