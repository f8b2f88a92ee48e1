#!/usr/bin/env bash
# shellcheck disable=SC2016  # remote commands are single-quoted on purpose
# Start the Slurm 24.11 test bed next to the 22.05 one (start.sh): Debian 13's Slurm in the chroot
# build24.sh makes (built here when absent), LUMI's partitions on four nodes, accounting on, the
# test user hpcuser behind OpenSSH on 127.0.0.1:2250 (same key as the 22.05 bed; its own home and
# job dir roots). Own ports (MariaDB 3307, slurmdbd 7819, slurmctld 7817, slurmd 7830+), own munge
# socket (the chroot's /run/munge).
# Idempotent: daemons it already runs are left alone. Needs the 22.05 bed's user and client key
# (start.sh makes them). See README.md beside this file.
set -euo pipefail
_T0=${EPOCHREALTIME/./}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/testbed/lib24.sh
. "$HERE/lib24.sh"
[[ $(id -u) == 0 ]] || die "must run as root"

TUSER=${TESTBED_USER:-hpcuser}
TB22=${TESTBED_DIR:-/tmp/testbed}
MIN_JOB_AGE=${TESTBED_MIN_JOB_AGE:-30}
WAIT=${TESTBED_WAIT:-90}
ACCOUNTS=(project_465000001 project_465000002)
CLUSTER=lumi
DB_PASS=testbed24-slurmdbd

id "$TUSER" >/dev/null 2>&1 && [[ -s $CLIENT22/id_ed25519.pub ]] ||
    die "no $TUSER / $CLIENT22/id_ed25519.pub: start the 22.05 bed first (tests/testbed/start.sh)"
built24 || bash "$HERE/build24.sh"

# LUMI's shape, smaller: 2 GPU nodes (64 cores, 8 mi250 GCDs), 2 CPU nodes; same names and loopback
# addresses as on the 22.05 bed (the ports differ).
GPU_NODES=(nid005000 nid005001) CPU_NODES=(nid001000 nid001001)
declare -A NODE_ADDR=([nid005000]=127.0.1.10 [nid005001]=127.0.1.11 [nid001000]=127.0.1.30 [nid001001]=127.0.1.31)
ALL_NODES=("${GPU_NODES[@]}" "${CPU_NODES[@]}")
join() { local IFS=,; echo "$*"; }

wait_until() { # WHAT LOGFILE CMD...
    local what=$1 logfile=$2; shift 2
    local deadline=$((${EPOCHREALTIME/./} + WAIT * 1000000))
    until "$@" >/dev/null 2>&1; do
        if ((${EPOCHREALTIME/./} > deadline)); then
            [[ -n $logfile && -f $logfile ]] && { echo "--- tail of $logfile:" >&2; tail -n 30 "$logfile" >&2; }
            die "timed out after ${WAIT}s waiting for $what"
        fi
        sleep 0.1
    done
}
write_if_changed() { # FILE MODE OWNER < CONTENT; 0 if the file changed
    local file=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file" && [[ $(stat -c '%a %u:%g' "$file") == "$(stat -c '%a %u:%g' "$tmp")" ]]; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$file"
}
ensure_ports_free() { # NAME PORT...
    local name=$1 port; shift
    for port in "$@"; do
        port_listening "$port" && die "cannot start $name: TCP port $port is taken by a process the 24.11 bed did not start"
    done
    return 0
}
# launch NAME EXE CMD...: CMD in the chroot, in its own session; records its pid and resolved EXE
# (as the host sees it: $ROOT24/usr/sbin/...-wlm).
launch() {
    local name=$1 exe=$2; shift 2
    exe=$ROOT24$(chroot "$ROOT24" readlink -f "$exe")
    setsid chroot "$ROOT24" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@" \
        </dev/null >>"$LOGDIR/$name.out" 2>&1 &
    echo $! >"$PIDS/$name.pid"
    echo "$exe" >"$PIDS/$name.exe"
    started+=("$name")
}
verify_started() {
    local name
    for name in "$@"; do
        running "$name" || { tail -n 20 "$LOGDIR/$name.out" >&2 || true; die "$name is not running"; }
    done
}

# ---------------------------------------------------------------------------------------------
# 1. Mounts: /proc /sys /dev /dev/pts, and the 22.05 bed's stub modules and stub container runtime
#    at the same paths. The test user's home and the job dir roots (/scratch, /flash, /projappl) are
#    the chroot's own, so neither bed's `sync` sees the other's job dirs; from the host they are
#    under $ROOT24 (e.g. /var/cache/aif-testbed24/trixie/scratch/project_465000001/hpcuser/aifactory).
# ---------------------------------------------------------------------------------------------
binds=("$TB22/modules" /opt/aif-stub-runtime)
for m in "${SYS_MOUNTS24[@]}"; do
    mkdir -p "$ROOT24$m"
    is_mounted "$ROOT24$m" || mount --bind "$m" "$ROOT24$m"
done
for m in "${binds[@]}"; do
    [[ -d $m ]] || continue
    mkdir -p "$ROOT24$m"
    is_mounted "$ROOT24$m" || mount --bind "$m" "$ROOT24$m"
done

# ---------------------------------------------------------------------------------------------
# 2. Users, directories, hosts
# ---------------------------------------------------------------------------------------------
# hpcuser: the host's uid/gid (files the host reads stay its), its own home with the 22.05 bed's
# client key authorized.
UHOME=/home/$TUSER
uid=$(id -u "$TUSER") gid=$(id -g "$TUSER") gname=$(id -gn "$TUSER")
in24 getent group "$gname" >/dev/null || in24 groupadd -g "$gid" "$gname"
in24 getent passwd "$TUSER" >/dev/null || in24 useradd -M -d "$UHOME" -s /bin/bash -u "$uid" -g "$gid" "$TUSER"
[[ $(in24 getent shadow "$TUSER" | cut -d: -f2) == '*' ]] || in24 usermod -p '*' "$TUSER"
mkdir -p "$ROOT24$UHOME"
[[ -f $ROOT24$UHOME/.profile ]] || { cp -rT "$ROOT24/etc/skel" "$ROOT24$UHOME"; chown -R "$uid:$gid" "$ROOT24$UHOME"; }
[[ $(stat -c '%u:%g %a' "$ROOT24$UHOME") == "$uid:$gid 750" ]] || { chown "$uid:$gid" "$ROOT24$UHOME"; chmod 750 "$ROOT24$UHOME"; }
install -d -m 700 -o "$uid" -g "$gid" "$ROOT24$UHOME/.ssh"
write_if_changed "$ROOT24$UHOME/.ssh/authorized_keys" 600 "$uid:$gid" <"$CLIENT22/id_ed25519.pub" || true
for a in "${ACCOUNTS[@]}"; do
    for top in /scratch /flash /projappl; do
        d=$ROOT24$top/$a
        mkdir -p "$d"
        [[ $(stat -c '%u:%g %a' "$d") == "$uid:$gid 2770" ]] || { chown "$uid:$gid" "$d"; chmod 2770 "$d"; }
    done
done
mkdir -p "$TB" "$PIDS" "$LOGDIR" "$CLIENT24" "$TB/ssh" "$TB/dev" "$TB/slurm"/{ctld,d,log,run} \
    "$ROOT24/run/munge" "$ROOT24/run/sshd"
chmod 755 "$TB" "$TB/slurm" "$ROOT24/run/munge" "$ROOT24/run/sshd"
chmod 700 "$PIDS" "$TB/ssh"
chmod 1777 "$ROOT24/tmp"
in24 chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
in24 chown slurm:slurm "$TB24_IN/slurm/ctld" "$TB24_IN/slurm/log" "$TB24_IN/slurm/run"
for n in "${ALL_NODES[@]}"; do mkdir -p "$TB/slurm/d/$n"; done
for i in 0 1 2 3 4 5 6 7; do
    [[ -c $TB/dev/fakegpu$i ]] || { rm -f "$TB/dev/fakegpu$i"; mknod -m 0666 "$TB/dev/fakegpu$i" c 1 3; }
done
{
    echo "127.0.0.1 localhost $(hostname -s)"
    for n in "${ALL_NODES[@]}"; do echo "${NODE_ADDR[$n]} $n"; done
} | write_if_changed "$ROOT24/etc/hosts" 644 0:0 || true

# ---------------------------------------------------------------------------------------------
# 3. Configuration
# ---------------------------------------------------------------------------------------------
HOST=$(hostname -s)
ETC=$ROOT24/etc/slurm
mkdir -p "$ETC"
slurm_conf_changed=0 dbd_conf_changed=0 ssh_changed=0
{
    cat <<EOF
# Slurm 24.11 test bed that looks like a small LUMI. Written by tests/testbed/start24.sh.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT24
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MailProg=/bin/true
# Job ids of their own (the 22.05 bed's are small), LUMI-sized.
FirstJobId=9000000

StateSaveLocation=$TB24_IN/slurm/ctld
SlurmdSpoolDir=$TB24_IN/slurm/d/%n
SlurmctldPidFile=$TB24_IN/slurm/run/slurmctld.pid
SlurmdPidFile=$TB24_IN/slurm/run/slurmd-%n.pid
SlurmctldLogFile=$TB24_IN/slurm/log/slurmctld.log
SlurmdLogFile=$TB24_IN/slurm/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups here (cgroup.conf: CgroupPlugin=disabled); 24.11 has no switch/none any more.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=10
MpiDefault=none

SlurmdParameters=config_overrides
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1750
GresTypes=gpu
EnforcePartLimits=ALL

SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,bf_resolution=60
MinJobAge=$MIN_JOB_AGE
KillWait=5
OverTimeLimit=0
InactiveLimit=0
Waittime=0
SlurmdTimeout=120
MessageTimeout=10

AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT24
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=gres/gpu,gres/gpu:mi250
AccountingStoreFlags=job_script,job_env
JobCompType=jobcomp/none

EOF
    k=0
    for n in "${GPU_NODES[@]}"; do
        echo "NodeName=$n NodeHostname=$n NodeAddr=${NODE_ADDR[$n]} Port=$((SLURMD_BASE_PORT24 + k)) Sockets=1 CoresPerSocket=64 ThreadsPerCore=1 RealMemory=491520 Gres=gpu:mi250:8 Features=mi250,gpu State=UNKNOWN"
        k=$((k + 1))
    done
    for n in "${CPU_NODES[@]}"; do
        echo "NodeName=$n NodeHostname=$n NodeAddr=${NODE_ADDR[$n]} Port=$((SLURMD_BASE_PORT24 + k)) Sockets=2 CoresPerSocket=64 ThreadsPerCore=1 RealMemory=229376 Features=cpu State=UNKNOWN"
        k=$((k + 1))
    done
    G=$(join "${GPU_NODES[@]}") C=$(join "${CPU_NODES[@]}")
    cat <<EOF

PartitionName=standard-g Nodes=$G MaxTime=2-00:00:00 DefaultTime=00:15:00 State=UP
PartitionName=small-g    Nodes=$G MaxTime=3-00:00:00 DefaultTime=00:15:00 State=UP
PartitionName=dev-g      Nodes=$G MaxTime=03:00:00   DefaultTime=00:15:00 State=UP
PartitionName=standard   Nodes=$C MaxTime=2-00:00:00 DefaultTime=00:15:00 State=UP
PartitionName=small      Nodes=$C MaxTime=3-00:00:00 DefaultTime=00:15:00 State=UP Default=YES
PartitionName=debug      Nodes=$C MaxTime=00:30:00   DefaultTime=00:15:00 State=UP
EOF
} | write_if_changed "$ETC/slurm.conf" 644 0:0 && slurm_conf_changed=1
write_if_changed "$ETC/gres.conf" 644 0:0 <<EOF && slurm_conf_changed=1 || true
AutoDetect=off
NodeName=$(join "${GPU_NODES[@]}") Name=gpu Type=mi250 File=$TB24_IN/dev/fakegpu[0-7]
EOF
# slurmd 24.11 will not start without a cgroup plugin unless told there is none.
write_if_changed "$ETC/cgroup.conf" 644 0:0 <<EOF && slurm_conf_changed=1 || true
CgroupPlugin=disabled
EOF
slurm_uid=$(in24 id -u slurm) slurm_gid=$(in24 id -g slurm)
write_if_changed "$ETC/slurmdbd.conf" 600 "$slurm_uid:$slurm_gid" <<EOF && dbd_conf_changed=1 || true
# Written by tests/testbed/start24.sh.
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT24
SlurmUser=slurm
PidFile=$TB24_IN/slurm/run/slurmdbd.pid
LogFile=$TB24_IN/slurm/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT24
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF

# sshd (login node) with its own host key.
[[ -f $TB/ssh/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C testbed24-host -f "$TB/ssh/ssh_host_ed25519_key"
write_if_changed "$TB/ssh/sshd_config" 644 0:0 <<EOF && ssh_changed=1 || true
# Written by tests/testbed/start24.sh.
Port $SSH_PORT24
ListenAddress 127.0.0.1
HostKey $TB24_IN/ssh/ssh_host_ed25519_key
PidFile $TB24_IN/ssh/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $TUSER
AllowTcpForwarding yes
UsePAM no
StrictModes yes
PrintMotd no
X11Forwarding no
MaxStartups 100:30:200
MaxSessions 100
LogLevel VERBOSE
Subsystem sftp internal-sftp
EOF
hostkey=$(cut -d' ' -f1,2 "$TB/ssh/ssh_host_ed25519_key.pub")
mkdir -p "$CLIENT24"
chmod 755 "$CLIENT24"
write_if_changed "$CLIENT24/known_hosts" 644 0:0 <<EOF || true
[127.0.0.1]:$SSH_PORT24 $hostkey
[localhost]:$SSH_PORT24 $hostkey
EOF
ssh-keygen -lf "$TB/ssh/ssh_host_ed25519_key.pub" | awk '{print $2}' | write_if_changed "$CLIENT24/host_fingerprint" 644 0:0 || true
write_if_changed "$CLIENT24/ssh_config" 644 0:0 <<EOF || true
# Written by tests/testbed/start24.sh. Use: ssh -F $CLIENT24/ssh_config testbed24
Host testbed24
    HostName 127.0.0.1
    Port $SSH_PORT24
    User $TUSER
    IdentityFile $CLIENT22/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $CLIENT24/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
EOF

# Lmod: the 22.05 bed's stub modules (bind-mounted), and `module` in ssh commands as there.
echo "$TB22/modules/modulefiles # testbed24 (tests/testbed/start24.sh)" | write_if_changed "$ROOT24/etc/lmod/modulespath" 644 0:0 || true
{
    cat <<'EOF'
# >>> testbed-lmod (tests/testbed/start24.sh) >>>
# Commands run through ssh get the login environment (/etc/profile: Lmod's `module`), like SLES.
if [ -z "${PS1-}" ] && [ -n "${SSH_CONNECTION-}" ] && [ -z "${PROFILEREAD-}" ]; then PROFILEREAD=true; export PROFILEREAD; . /etc/profile >/dev/null 2>&1; fi
# <<< testbed-lmod <<<
EOF
    sed '/^# >>> testbed-lmod/,/^# <<< testbed-lmod/d' "$ROOT24/etc/bash.bashrc"
} | write_if_changed "$ROOT24/etc/bash.bashrc" 644 0:0 || true

# ---------------------------------------------------------------------------------------------
# 4. Daemons
# ---------------------------------------------------------------------------------------------
started=()
if ((dbd_conf_changed)) && running slurmdbd; then log "slurmdbd.conf changed: restarting slurmdbd"; stop_daemons 20 slurmdbd; fi
if ((slurm_conf_changed)); then
    torestart=()
    for n in "${ALL_NODES[@]}"; do running "slurmd-$n" && torestart+=("slurmd-$n"); done
    if running slurmctld || ((${#torestart[@]})); then
        log "slurm.conf/gres.conf/cgroup.conf changed: restarting slurmctld and slurmd"
        stop_daemons 20 "${torestart[@]+"${torestart[@]}"}"
        stop_daemons 20 slurmctld
    fi
fi
((ssh_changed)) && running sshd && { log "sshd_config changed: restarting sshd"; stop_daemons 10 sshd; }

preflight=("mariadbd:$DB_PORT24" "slurmdbd:$DBD_PORT24" "slurmctld:$CTLD_PORT24" "sshd:$SSH_PORT24")
k=0
for n in "${ALL_NODES[@]}"; do preflight+=("slurmd-$n:$((SLURMD_BASE_PORT24 + k))"); k=$((k + 1)); done
for entry in "${preflight[@]}"; do running "${entry%:*}" || ensure_ports_free "${entry%:*}" "${entry##*:}"; done

# ---- munge (the chroot's own key and socket) ----
[[ -s $ROOT24/etc/munge/munge.key ]] || in24 mungekey --create --keyfile=/etc/munge/munge.key --force
in24 chown munge:munge /etc/munge/munge.key
chmod 600 "$ROOT24/etc/munge/munge.key"
if ! running munged; then
    rm -f "$ROOT24/run/munge/munge.socket.2" "$ROOT24/run/munge/munge.socket.2.lock"
    launch munged /usr/sbin/munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
    wait_until "munged" "$LOGDIR/munged.out" in24 bash -c 'munge -n </dev/null | unmunge'
    log "munged started"
fi

# ---- MariaDB (private datadir, port 3307) ----
MY_IN=$TB24_IN/mysql
MYSOCK_IN=$MY_IN/run/mysqld.sock
if ! running mariadbd; then
    mkdir -p "$TB/mysql/data" "$TB/mysql/run"
    in24 chown mysql:mysql "$MY_IN" "$MY_IN/data" "$MY_IN/run"
    chmod 750 "$TB/mysql/data"
    if [[ ! -d $TB/mysql/data/mysql ]]; then
        log "initialising the database directory"
        in24 mariadb-install-db --no-defaults --datadir="$MY_IN/data" --user=mysql \
            --auth-root-authentication-method=socket --skip-test-db >"$LOGDIR/mariadb-install-db.out" 2>&1 ||
            { tail -n 20 "$LOGDIR/mariadb-install-db.out" >&2; die "mariadb-install-db failed"; }
    fi
    rm -f "$ROOT24$MYSOCK_IN"
    launch mariadbd /usr/sbin/mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql \
        --datadir="$MY_IN/data" --socket="$MYSOCK_IN" --pid-file="$MY_IN/run/mariadbd.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT24" --skip-name-resolve \
        --innodb-buffer-pool-size=256M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900
    wait_until "mariadbd" "$LOGDIR/mariadbd.out" in24 mariadb-admin --no-defaults --socket="$MYSOCK_IN" -uroot ping
    log "mariadbd started"
fi
# slurmdbd 24.11 with MariaDB 11.8's client dies creating its database (error 5027 on
# `select @var := concat('')`): create it (and the grants) first. Idempotent, ~10 ms.
in24 mariadb --no-defaults --protocol=socket --socket="$MYSOCK_IN" -uroot <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF

# ---- slurmdbd ----
if ! running slurmdbd; then
    launch slurmdbd /usr/sbin/slurmdbd /usr/sbin/slurmdbd -D
    wait_until "slurmdbd on port $DBD_PORT24" "$TB/slurm/log/slurmdbd.log" port_listening "$DBD_PORT24"
    wait_until "slurmdbd answering sacctmgr" "$TB/slurm/log/slurmdbd.log" in24 sacctmgr -n list cluster
    log "slurmdbd started"
fi

# ---- cluster, accounts, the user's associations (before slurmctld starts) ----
assocs=$(in24 sacctmgr -nP list assoc format=cluster,account,user 2>/dev/null)
if ! grep -q "^$CLUSTER|root|" <<<"$assocs"; then
    in24 sacctmgr -i add cluster "$CLUSTER" >/dev/null
    assocs=$(in24 sacctmgr -nP list assoc format=cluster,account,user)
fi
for a in "${ACCOUNTS[@]}"; do
    grep -q "^$CLUSTER|$a|\$" <<<"$assocs" ||
        in24 sacctmgr -i add account "$a" Cluster="$CLUSTER" Description="test project $a" Organization=testbed >/dev/null
done
missing_acc=()
for a in "${ACCOUNTS[@]}"; do grep -q "^$CLUSTER|$a|$TUSER\$" <<<"$assocs" || missing_acc+=("$a"); done
if ((${#missing_acc[@]})); then
    in24 sacctmgr -i add user "$TUSER" Cluster="$CLUSTER" Account="$(join "${missing_acc[@]}")" DefaultAccount="${ACCOUNTS[0]}" >/dev/null
fi

# ---- slurmctld, slurmd ----
if ! running slurmctld; then
    launch slurmctld /usr/sbin/slurmctld /usr/sbin/slurmctld -D -i
    wait_until "slurmctld" "$TB/slurm/log/slurmctld.log" in24 scontrol ping
    log "slurmctld started"
fi
slurmd_since=$(date +%Y-%m-%dT%H:%M:%S)
new_nodes=()
for n in "${ALL_NODES[@]}"; do
    running "slurmd-$n" && continue
    launch "slurmd-$n" /usr/sbin/slurmd /usr/sbin/slurmd -D -N "$n"
    new_nodes+=("$n")
done

# ---- sshd ----
if ! running sshd; then
    in24 /usr/sbin/sshd -t -f "$TB24_IN/ssh/sshd_config" || die "sshd -t failed"
    launch sshd /usr/sbin/sshd /usr/sbin/sshd -D -e -f "$TB24_IN/ssh/sshd_config"
fi

# ---------------------------------------------------------------------------------------------
# 5. Readiness
# ---------------------------------------------------------------------------------------------
declare -A resumed=()
nodes_ready() {
    local line name state since ok=0
    while read -r line; do
        name=$(grep -o 'NodeName=[^ ]*' <<<"$line") name=${name#NodeName=}
        state=$(grep -o ' State=[^ ]*' <<<"$line") state=${state# State=}
        since=$(grep -o 'SlurmdStartTime=[^ ]*' <<<"$line") since=${since#SlurmdStartTime=}
        if [[ " ${new_nodes[*]-} " == *" $name "* ]]; then
            [[ $since != None && ! $since < $slurmd_since ]] || return 1
            if [[ $state == *DRAIN* || ($state == DOWN* && $state != *'*'*) ]] && [[ -z ${resumed[$name]-} ]]; then
                resumed[$name]=1
                in24 scontrol update NodeName="$name" State=RESUME >/dev/null 2>&1 || true
                return 1
            fi
        fi
        case $state in
        IDLE* | MIXED* | ALLOCATED* | COMPLETING*) ok=$((ok + 1)) ;;
        *) return 1 ;;
        esac
    done < <(in24 scontrol show node -o "$(join "${ALL_NODES[@]}")" 2>/dev/null)
    ((ok == ${#ALL_NODES[@]}))
}
if ((${#new_nodes[@]})) || ! nodes_ready; then
    wait_until "all nodes idle (${ALL_NODES[*]})" "$TB/slurm/log/slurmctld.log" nodes_ready
    ((${#new_nodes[@]})) && log "slurmd started and registered: ${new_nodes[*]}"
fi
wait_until "sacct" "$TB/slurm/log/slurmdbd.log" in24 sacct -n -X -a -S now-1minutes
wait_until "ssh testbed24" "$LOGDIR/sshd.out" \
    ssh -F "$CLIENT24/ssh_config" -o ConnectTimeout=5 testbed24 true
verify_started "${started[@]+"${started[@]}"}"
if ((${#started[@]})); then log "started: ${started[*]}"; else log "already running, nothing started"; fi
log "Slurm 24.11 test bed ready in $(elapsed) s: ssh -F $CLIENT24/ssh_config testbed24 (127.0.0.1:$SSH_PORT24)"
