#!/usr/bin/env bash
# Stop exactly the daemons tests/testbed/start24.sh started (each recorded pid is signalled only if it
# is alive and still runs the recorded binary of the chroot), then unmount what start24.sh mounted in
# the chroot. Keeps the chroot and the bed's data (database, Slurm state, keys).
# TESTBED24_PURGE=1 also removes the bed's state (the chroot stays: build24.sh's cache).
set -euo pipefail
_T0=${EPOCHREALTIME/./}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/testbed/lib24.sh
. "$HERE/lib24.sh"
[[ $(id -u) == 0 ]] || die "must run as root"

if [[ -d $PIDS ]]; then
    slurmds=()
    for f in "$PIDS"/slurmd-*.pid; do [[ -e $f ]] && slurmds+=("$(basename "$f" .pid)"); done
    stop_daemons 15 sshd "${slurmds[@]+"${slurmds[@]}"}"
    stop_daemons 30 slurmctld
    stop_daemons 30 slurmdbd
    stop_daemons 60 mariadbd
    stop_daemons 10 munged
    rest=()
    for f in "$PIDS"/*.pid; do [[ -e $f ]] && rest+=("$(basename "$f" .pid)"); done
    if ((${#rest[@]})); then stop_daemons 15 "${rest[@]}"; fi
fi
umount_below "$ROOT24"
if [[ ${TESTBED24_PURGE:-0} == 1 ]]; then
    rm -rf "$TB" "$CLIENT24"
    log "removed $TB and $CLIENT24"
fi
log "stopped in $(elapsed) s"
