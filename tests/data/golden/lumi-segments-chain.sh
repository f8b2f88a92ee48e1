#!/bin/bash
#SBATCH --job-name=long
#SBATCH --partition=small
#SBATCH --account=project_465000123
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --signal=B:USR2@90
#SBATCH --open-mode=append
#SBATCH --no-requeue
#SBATCH --output=stdout.log
#SBATCH --error=stderr.log
#SBATCH --comment=aifactory:0123456789abcdef0123456789abcdef

# aifactory job long on lumi-chain (small), id 01234567
AIF_JOB_DIR="${SLURM_SUBMIT_DIR:-$PWD}"
AIF_JOB_ID=01234567
AIF_JOB_TOKEN=0123456789abcdef0123456789abcdef
AIF_SITE=lumi-chain
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

# checkpointed run: this job is one segment of at most 3600 s of a run of 10800 s; the
# program gets SIGUSR2 90 s before the segment ends, saves to $AIF_CHECKPOINT_DIR and exits
_aif_seg_log="$AIF_JOB_DIR/segments.tsv"
export AIF_CHECKPOINT_DIR="$AIF_JOB_DIR/checkpoint"
mkdir -p "$AIF_CHECKPOINT_DIR" || exit 1
# the segment (how many ended with "next"), the restarts (starts that never ended: a node failure,
# preemption or a requeue by the site), the seconds the run has used, and how the last segment ended
_aif_seg_read() {
  [ -f "$_aif_seg_log" ] || { echo "0 0 0 - 0"; return; }
  awk -F'\t' '$1 == "start" { if (open) died++; open = 1; st = $5; last = "-" }
    $1 == "end" { open = 0; used += $5 - st; last = $6; rc = $7; if ($6 == "next") seg++ }
    END { if (open) died++; print seg + 0, died + 0, used + 0, (last == "" ? "-" : last), rc + 0 }' "$_aif_seg_log"
}
read -r AIF_SEGMENT AIF_RESTARTS _aif_seg_used _aif_seg_last _aif_seg_rc < <(_aif_seg_read)
export AIF_SEGMENT AIF_RESTARTS
case "$_aif_seg_last" in
  done|failed|timeout|retries|cancelled)  # started again after the run ended (a requeue by the site)
    echo "aifactory: the run already ended ($_aif_seg_last, exit $_aif_seg_rc): nothing to run" >&2
    exit "$_aif_seg_rc" ;;
esac
_aif_seg_started=$(date +%s)
rm -f "$_aif_rc_file"  # one a killed attempt left (a node failure): the run goes on
printf 'start\t%s\t%s\t%s\t%s\n' "$AIF_SEGMENT" "$AIF_RESTARTS" "$SLURM_JOB_ID" "$_aif_seg_started" >> "$_aif_seg_log"
_aif_seg_end() {
  printf 'end\t%s\t%s\t%s\t%s\t%s\t%s\n' "$AIF_SEGMENT" "$AIF_RESTARTS" "$SLURM_JOB_ID" "$(date +%s)" "$1" "$2" >> "$_aif_seg_log"
}
echo "aifactory: segment $AIF_SEGMENT, restarts $AIF_RESTARTS, Slurm job $SLURM_JOB_ID" >&2
if [ "$AIF_RESTARTS" -gt 0 ]; then
  echo "aifactory: restarted $AIF_RESTARTS times, more than retries: 0: the run stops" >&2
  _aif_seg_end retries 1
  exit 1
fi
# Slurm requeues the job after NODE_FAIL/PREEMPTED only while its Requeue flag is set: only while retries last
scontrol update JobId="$SLURM_JOB_ID" Requeue=$(( AIF_RESTARTS < 0 ? 1 : 0 )) >/dev/null 2>&1
# the exit code file is the run's, not a segment's: written only when no segment follows
_aif_finish() {
  local rc=$?
  [ -n "$_aif_seg_next" ] || { printf '%s\n' "$rc" > "$_aif_rc_file.tmp" && mv -f "$_aif_rc_file.tmp" "$_aif_rc_file"; }
  exit "$rc"
}
_aif_seg_pid= _aif_seg_signalled= _aif_seg_next= _aif_seg_repeat=
_aif_seg_forward() {
  [ -n "$_aif_seg_pid" ] || return 0
  kill -s USR2 "$_aif_seg_pid" 2>/dev/null
}
trap '_aif_seg_signalled=1; _aif_seg_forward' USR2

# modules: the site's base modules, then the spec's
module load LUMI/25.03 partition/C || { echo "aifactory: module load failed" >&2; exit 1; }

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

# each task: its ranks from Slurm's values in the step, then the command
AIF_TASK='export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" NODE_RANK="$SLURM_NODEID" WORLD_SIZE="$SLURM_NTASKS" LOCAL_WORLD_SIZE=1
exec "$@"
'

# launch
srun --nodes=1 --ntasks=1 --cpus-per-task=1 --kill-on-bad-exit=1 bash -c "$AIF_TASK" aif-task bash -c 'exec python3 train.py' &
_aif_seg_pid=$!
[ -z "$_aif_seg_signalled" ] || _aif_seg_forward
# a trapped signal interrupts `wait`: wait again until the program has really ended
while kill -0 "$_aif_seg_pid" 2>/dev/null; do wait "$_aif_seg_pid"; done
wait "$_aif_seg_pid"
_aif_rc=$?
# Slurm itself ending the job (a node of it failed, a preemption, a cancel) ends the program too, and the
# script may outlive it (a job's first node is not always the one that failed): that is no outcome of the
# program; the restart (or the end) is Slurm's, and the next start counts it
case "$(scontrol show job "$SLURM_JOB_ID" -o 2>/dev/null | grep -o 'JobState=[A-Z_]*')" in
  ""|JobState=RUNNING|JobState=COMPLETING) ;;
  *) echo "aifactory: Slurm ended this attempt: segment $AIF_SEGMENT is not counted as ended" >&2
     _aif_seg_next=1
     exit "$_aif_rc" ;;
esac
_aif_seg_used=$(( _aif_seg_used + $(date +%s) - _aif_seg_started ))
if [ -z "$_aif_seg_signalled" ] && [ "$_aif_rc" -eq 0 ]; then
  _aif_seg_end done 0
elif [ -z "$_aif_seg_signalled" ]; then
  echo "aifactory: the program failed (exit $_aif_rc) in segment $AIF_SEGMENT: no further segment" >&2
  _aif_seg_end failed "$_aif_rc"
elif [ -e "$AIF_JOB_DIR/cancel-requested" ]; then
  echo "aifactory: the run was cancelled: no further segment" >&2
  _aif_seg_end cancelled "$_aif_rc"
elif [ "$_aif_seg_used" -ge 10800 ]; then
  echo "aifactory: the run's time (10800 s) is used up after segment $AIF_SEGMENT" >&2
  _aif_seg_end timeout "$_aif_rc"
  [ "$_aif_rc" -ne 0 ] || _aif_rc=124
else
  _aif_seg_end next "$_aif_rc"
  _aif_seg_next=1
  echo "aifactory: segment $AIF_SEGMENT ended at its time limit ($_aif_seg_used of 10800 s used): the next one starts" >&2
  # a new job of the same script, after this one ends (afterany: a segment ends TIMEOUT, not "ok")
  if _aif_seg_id=$(cd "$AIF_JOB_DIR" && sbatch --parsable --dependency=afterany:"$SLURM_JOB_ID" job.sh); then
    printf '%s\n' "${_aif_seg_id%%;*}" > "$AIF_JOB_DIR/slurm_job_id.tmp" && mv -f "$AIF_JOB_DIR/slurm_job_id.tmp" "$AIF_JOB_DIR/slurm_job_id"
    exit 0
  fi
  echo "aifactory: the next segment could not be submitted: the run stops" >&2
  _aif_seg_next=
  _aif_seg_end failed 1
  _aif_rc=1
fi
(exit "$_aif_rc")

