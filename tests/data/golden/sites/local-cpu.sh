#!/bin/bash
# local site: no scheduler; started by the aifactory local runner

# aifactory job sample-cpu on local, id 00000000
AIF_JOB_DIR="${SLURM_SUBMIT_DIR:-$PWD}"
AIF_JOB_ID=00000000
AIF_JOB_TOKEN=00000000000000000000000000000000
AIF_SITE=local
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

# launch contract (README, "The launch contract"): every node is this machine
export MASTER_ADDR=127.0.0.1
# a port that was free when the runner started the job (else one from the job id)
export MASTER_PORT="${AIF_LOCAL_MASTER_PORT:-$(( 10000 + SLURM_JOB_ID % 20000 ))}"
# each task: its ranks from Slurm's values in the step, then the command
AIF_TASK='export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" NODE_RANK="$SLURM_NODEID" WORLD_SIZE="$SLURM_NTASKS" LOCAL_WORLD_SIZE=1
exec "$@"
'

# launch
_aif_pids=()
for _aif_task in $(seq 0 0); do
  _aif_node=$(( _aif_task / 1 ))
  SLURM_PROCID=$_aif_task SLURM_LOCALID=$(( _aif_task % 1 )) SLURM_NODEID=$_aif_node \
  SLURM_NTASKS=1 SLURM_NNODES=1 \
  bash -c "$AIF_TASK" aif-task bash -c hostname &
  _aif_pids+=("$!")
done
# as srun --kill-on-bad-exit=1: the first task that fails stops the others (a rank that died would
# leave the rest waiting for it until the time limit)
_aif_rc=0
while [ "${#_aif_pids[@]}" -gt 0 ] && [ "$_aif_rc" -eq 0 ]; do
  _aif_left=()
  for _aif_pid in "${_aif_pids[@]}"; do
    if kill -0 "$_aif_pid" 2>/dev/null; then _aif_left+=("$_aif_pid"); else wait "$_aif_pid" || _aif_rc=$?; fi
  done
  _aif_pids=(${_aif_left[@]+"${_aif_left[@]}"})
  [ "${#_aif_pids[@]}" -gt 0 ] && [ "$_aif_rc" -eq 0 ] && sleep 0.2
done
if [ "${#_aif_pids[@]}" -gt 0 ]; then
  echo "aifactory: a task failed (exit $_aif_rc): stopping the other ${#_aif_pids[@]} task(s)" >&2
  kill "${_aif_pids[@]}" 2>/dev/null
  wait "${_aif_pids[@]}" 2>/dev/null
fi
(exit "$_aif_rc")
