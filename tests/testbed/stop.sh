#!/usr/bin/env bash
# Stop exactly the daemons tests/testbed/start.sh started: each recorded pid is signalled only if
# it is alive and still runs the recorded binary. Keeps the data (database, Slurm state, keys).
# TESTBED_PURGE=1 also removes the test bed directory (everything under TESTBED_DIR).
set -euo pipefail
_T0=${EPOCHREALTIME/./}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$HERE/lib.sh"

[[ $(id -u) == 0 ]] || die "must run as root"

if [[ -d $PIDS ]]; then
    slurmds=()
    for f in "$PIDS"/slurmd-*.pid; do [[ -e $f ]] && slurmds+=("$(basename "$f" .pid)"); done
    # Order: entry points and compute nodes, then the controller (it flushes to slurmdbd),
    # then slurmdbd, the database, and munge last.
    stop_daemons 15 sshd sshd-jump "${slurmds[@]+"${slurmds[@]}"}"
    stop_daemons 30 slurmctld
    stop_daemons 30 slurmdbd
    stop_daemons 60 mariadbd
    stop_daemons 10 munged
    # Anything else recorded (e.g. from an older version of start.sh).
    rest=()
    for f in "$PIDS"/*.pid; do [[ -e $f ]] && rest+=("$(basename "$f" .pid)"); done
    if ((${#rest[@]})); then stop_daemons 15 "${rest[@]}"; fi
fi
if [[ ${TESTBED_PURGE:-0} == 1 ]]; then
    rm -rf "$TB"
    log "removed $TB"
fi
log "stopped in $(elapsed) s"
