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

# AIF_PORT: a port free on this node now (aifactory forward JOB reaches it)
AIF_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])' 2>/dev/null)" || AIF_PORT=
if [ -z "$AIF_PORT" ]; then  # no python3: a random port that nothing answers on
  for _aif_i in 1 2 3 4 5 6 7 8; do
    AIF_PORT=$(( 32768 + (RANDOM * 32768 + RANDOM) % 28000 ))
    (: < "/dev/tcp/127.0.0.1/$AIF_PORT") 2>/dev/null || break
  done
fi
AIF_HOST=127.0.0.1
export AIF_PORT AIF_HOST
_aif_port_file="$AIF_JOB_DIR/aif_port${SLURM_ARRAY_TASK_ID:+.$SLURM_ARRAY_TASK_ID}"
printf '%s %s\n' "$AIF_HOST" "$AIF_PORT" > "$_aif_port_file.tmp" && mv -f "$_aif_port_file.tmp" "$_aif_port_file"

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
