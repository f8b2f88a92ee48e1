# Shared settings and helpers of the Slurm 24.11 test bed (build24.sh, start24.sh, stop24.sh;
# sourced, not run). The bed is a Debian 13 (trixie) chroot with Debian's Slurm 24.11,
# next to the 22.05 bed of start.sh: own ports, own munge socket, own MariaDB, own state.
# shellcheck shell=bash disable=SC2034

# The 22.05 bed's helpers (running, stop_daemons, port_listening, ...); TB, PIDS, LOGDIR are set below.
# shellcheck source=tests/testbed/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
log() { printf '[testbed24 %6ss] %s\n' "$(elapsed)" "$*"; }
die() { printf '[testbed24 %6ss] ERROR: %s\n' "$(elapsed)" "$*" >&2; exit 1; }

# The chroot, built once by build24.sh and reused (a stamp says what it holds).
ROOT24=${TESTBED24_ROOT:-/var/cache/aif-testbed24/trixie}
SUITE24=trixie
MIRROR24=${TESTBED24_MIRROR:-http://deb.debian.org/debian}
PKGS24=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server openssh-server lmod python3 procps)

# State of the running bed, as seen from the host (the daemons see it as $TB24_IN).
TB24_IN=/var/lib/testbed24
TB=$ROOT24$TB24_IN
PIDS=$TB/pids
LOGDIR=$TB/log
# Client files on the host (same client key as the 22.05 bed: /tmp/testbed/client/id_ed25519).
CLIENT24=${TESTBED24_CLIENT:-/tmp/testbed24/client}
CLIENT22=${TESTBED_DIR:-/tmp/testbed}/client

SSH_PORT24=${TESTBED24_SSH_PORT:-2250}
DB_PORT24=3307
DBD_PORT24=7819
CTLD_PORT24=7817
SLURMD_BASE_PORT24=7830

# Host paths bind-mounted into the chroot at the same place: the test user's home and the job dir
# roots (so tests read job dirs from the host as on the 22.05 bed), the 22.05 bed's stub modules and
# stub container runtime. /proc, /sys, /dev, /dev/pts for the daemons.
SYS_MOUNTS24=(/proc /sys /dev /dev/pts)


# The stamp build24.sh writes when the chroot is complete.
stamp24() { printf '%s\n' "$SUITE24" "${PKGS24[@]}"; }
built24() { [[ -f $ROOT24/.testbed24-built ]] && [[ $(cat "$ROOT24/.testbed24-built") == "$(stamp24)" ]]; }

# Run a command inside the chroot (a clean environment).
in24() { chroot "$ROOT24" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

# True if PATH (a host path) is a mount point.
is_mounted() { mountpoint -q "$1" 2>/dev/null; }

# Unmount everything below ROOT (deepest first); used by stop24.sh and before a rebuild.
umount_below() {
    local root=$1 m
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r)
}
