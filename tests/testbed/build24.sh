#!/usr/bin/env bash
# Build the Slurm 24.11 test bed's chroot once: Debian 13 (trixie) minbase by debootstrap, plus
# Debian's munge, Slurm 24.11 (slurmctld slurmd slurm-client slurmdbd), MariaDB, OpenSSH, Lmod.
# Cached in $TESTBED24_ROOT (default /var/cache/aif-testbed24/trixie): a complete chroot (its stamp
# matches the package list) is reused as it is (~0 s). Built in ROOT.new and renamed when complete,
# so an interrupted build leaves no half chroot. Concurrent runs wait for each other (flock).
# Needs root, debootstrap (installed with apt-get when missing) and Debian's mirror.
set -euo pipefail
_T0=${EPOCHREALTIME/./}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/testbed/lib24.sh
. "$HERE/lib24.sh"
[[ $(id -u) == 0 ]] || die "must run as root"

mkdir -p "$(dirname "$ROOT24")"
exec 9>"$(dirname "$ROOT24")/.build.lock"
flock 9
if built24; then
    log "chroot $ROOT24 already built ($(in24 dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || echo '?'))"
    exit 0
fi

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
fi
[[ -e /usr/share/debootstrap/scripts/$SUITE24 ]] || die "this debootstrap does not know $SUITE24"

NEW=$ROOT24.new
umount_below "$NEW"
rm -rf "$NEW"
mkdir -p "$NEW"
BLOG=$(dirname "$ROOT24")/build.log
: >"$BLOG"
trap 'umount_below "$NEW"' EXIT

log "debootstrap --variant=minbase $SUITE24 from $MIRROR24 (log: $BLOG)"
debootstrap --variant=minbase "$SUITE24" "$NEW" "$MIRROR24" >>"$BLOG" 2>&1 ||
    { tail -n 20 "$BLOG" >&2; die "debootstrap failed (log: $BLOG)"; }
log "minbase done"

# Package scripts must not start daemons (there is no init in the chroot).
printf '#!/bin/sh\nexit 101\n' >"$NEW/usr/sbin/policy-rc.d"
chmod 755 "$NEW/usr/sbin/policy-rc.d"
mount -t proc proc "$NEW/proc"
cp /etc/resolv.conf "$NEW/etc/resolv.conf" 2>/dev/null || true
log "apt-get install ${PKGS24[*]}"
chroot "$NEW" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive \
    bash -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $(printf '%q ' "${PKGS24[@]}") &&
        apt-get clean" >>"$BLOG" 2>&1 ||
    { tail -n 20 "$BLOG" >&2; die "apt-get install in the chroot failed (log: $BLOG)"; }
umount_below "$NEW"
rm -rf "$NEW"/var/lib/apt/lists/*
stamp24 >"$NEW/.testbed24-built"

# Replace an old chroot (another package list): only when nothing is mounted in it.
if [[ -e $ROOT24 ]]; then
    grep -q " $ROOT24/" /proc/self/mounts && die "$ROOT24 is in use (run tests/testbed/stop24.sh first)"
    rm -rf "$ROOT24"
fi
mv "$NEW" "$ROOT24"
trap - EXIT
log "chroot built: $ROOT24, Slurm $(in24 dpkg-query -W -f='${Version}' slurmctld), $(du -sh "$ROOT24" | cut -f1)"
