#!/usr/bin/env bash
# shellcheck disable=SC2016  # remote commands are single-quoted on purpose
# Start the loopback test bed: a small LUMI-like Slurm cluster (slurmctld, slurmdbd + mariadb,
# 6 slurmd) that also has the partitions, QoS and accounts of the other GPU sites (sites.sh), Lmod
# with stub modules, PyTorch's CPU build for jobs, and two OpenSSH servers (login node + jump host).
# Idempotent: daemons it already runs are left alone. See README.md beside this file.
set -euo pipefail
_T0=${EPOCHREALTIME/./}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$HERE/lib.sh"

[[ $(id -u) == 0 ]] || die "must run as root"

TUSER=${TESTBED_USER:-hpcuser}
SSH_PORT=${TESTBED_SSH_PORT:-2222}
JUMP_PORT=${TESTBED_JUMP_PORT:-$((SSH_PORT + 1))}
DB_PORT=${TESTBED_DB_PORT:-3306}
CTLD_PORT=6817
DBD_PORT=6819
SLURMD_BASE_PORT=6830
GPU_N=${TESTBED_GPU_NODES:-2}
CPU_N=${TESTBED_CPU_NODES:-2}
ACC_N=${TESTBED_ACC_NODES:-2}                     # NVIDIA-like nodes of the other sites' partitions
TORCH_VENV=${TESTBED_TORCH_VENV:-/opt/aif-torch}  # PyTorch (CPU) for jobs; module pytorch/2.13.0-cpu
MIN_JOB_AGE=${TESTBED_MIN_JOB_AGE:-30}
ACCOUNTS=(project_465000001 project_465000002)   # the first is the user's default
CLUSTER=lumi
DB_PASS=testbed-slurmdbd
WAIT=${TESTBED_WAIT:-90}                          # seconds to wait for each readiness step

((GPU_N >= 1 && CPU_N >= 1 && ACC_N >= 1)) || die "TESTBED_GPU_NODES, TESTBED_CPU_NODES and TESTBED_ACC_NODES must be >= 1"
((GPU_N <= 20 && CPU_N <= 20 && ACC_N <= 20)) || die "at most 20 nodes of each kind (their loopback addresses)"

# Each node name resolves to its own loopback address (/etc/hosts), as on a cluster, so a
# rendezvous on the first node's name behaves as there: LUMI GPU nodes 127.0.1.1x, CPU nodes
# 127.0.1.3x, the NVIDIA-like nodes 127.0.1.5x, and their JSC-style InfiniBand names ("<node>i",
# JUWELS Booster's MASTER_ADDR) 127.0.2.5x. All of 127/8 is loopback: daemons bound to 0.0.0.0 answer.
GPU_NODES=() CPU_NODES=() ACC_NODES=()
declare -A NODE_ADDR=()
for ((i = 0; i < GPU_N; i++)); do n=$(printf 'nid%06d' $((5000 + i))); GPU_NODES+=("$n"); NODE_ADDR[$n]=127.0.1.$((10 + i)); done
for ((i = 0; i < CPU_N; i++)); do n=$(printf 'nid%06d' $((1000 + i))); CPU_NODES+=("$n"); NODE_ADDR[$n]=127.0.1.$((30 + i)); done
for ((i = 0; i < ACC_N; i++)); do n=$(printf 'gn%03d' $((1 + i))); ACC_NODES+=("$n"); NODE_ADDR[$n]=127.0.1.$((50 + i)); done
ALL_NODES=("${GPU_NODES[@]}" "${CPU_NODES[@]}" "${ACC_NODES[@]}")
join() { local IFS=,; echo "$*"; }
GPU_LIST=$(join "${GPU_NODES[@]}")
CPU_LIST=$(join "${CPU_NODES[@]}")
ACC_LIST=$(join "${ACC_NODES[@]}")
# shellcheck source=tests/testbed/sites.sh
. "$HERE/sites.sh"

# Run "$@" until it succeeds, at most WAIT seconds; on timeout show LOGFILE's tail and fail.
wait_until() {
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

# Write CONTENT (stdin) to FILE if it differs; returns 0 if the file changed.
write_if_changed() {
    local file=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file" && [[ $(stat -c '%a %U:%G' "$file") == "$(stat -c '%a %U:%G' "$tmp")" ]]; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$file"
    return 0
}

# Refuse to start NAME if one of PORTS is already taken (by a process we did not start).
ensure_ports_free() {
    local name=$1 port; shift
    for port in "$@"; do
        if port_listening "$port"; then
            local who
            who=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:.*' | head -n1 || true)
            die "cannot start $name: TCP port $port is taken by a process the test bed did not start ${who:+($who)}"
        fi
    done
}

# launch NAME EXE CMD...: start CMD in its own session, in the foreground of that session,
# output to $LOGDIR/NAME.out; record its pid and the resolved EXE it must be running.
launch() {
    local name=$1 exe=$2; shift 2
    exe=$(readlink -f "$exe")
    setsid "$@" </dev/null >>"$LOGDIR/$name.out" 2>&1 &
    echo $! >"$PIDS/$name.pid"
    echo "$exe" >"$PIDS/$name.exe"
}

# After readiness: the recorded pid must really be the daemon.
verify_started() {
    local name
    for name in "$@"; do
        running "$name" || {
            tail -n 20 "$LOGDIR/$name.out" >&2 || true
            die "$name (pid $(recorded_pid "$name")) is not running as $(cat "$PIDS/$name.exe")"
        }
    done
}

if [[ ${TESTBED_CLEAN:-0} == 1 ]]; then
    log "TESTBED_CLEAN=1: stopping the test bed and removing its database and Slurm state"
    bash "$HERE/stop.sh"
    rm -rf "$TB/mysql" "$TB/slurm"
fi

# ---------------------------------------------------------------------------------------------
# 1. Packages
# ---------------------------------------------------------------------------------------------
mkdir -p "$LOGDIR"
PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server openssh-server lmod python3-venv)
if [[ ${TESTBED_NO_APT:-0} != 1 ]]; then
    missing=()
    for p in "${PKGS[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        created_policy=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\n# testbed: do not start daemons from package scripts\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            created_policy=1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || log "WARNING: apt-get update failed; trying the install anyway"
        apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${PKGS[@]}" >"$LOGDIR/apt-get.out" 2>&1 ||
            { ((created_policy)) && rm -f /usr/sbin/policy-rc.d; tail -n 20 "$LOGDIR/apt-get.out" >&2; die "apt-get install failed (log: $LOGDIR/apt-get.out)"; }
        ((created_policy)) && rm -f /usr/sbin/policy-rc.d
        log "packages installed"
    fi
fi

# PyTorch's CPU build for jobs (a venv of Debian's python3 that the test user can run), installed
# in the background while the daemons start. Reinstalled only when torch-requirements.txt changed.
torch_ok() {
    [[ -x $TORCH_VENV/bin/torchrun ]] && cmp -s "$TORCH_VENV/.testbed-installed" "$HERE/torch-requirements.txt"
}
torch_pid=
if ! torch_ok; then
    log "installing PyTorch (CPU) into $TORCH_VENV (log: $LOGDIR/torch.out)"
    # its own session, so that a start.sh that fails meanwhile stops it (the EXIT trap)
    setsid bash "$HERE/torch.sh" "$TORCH_VENV" "$HERE/torch-requirements.txt" </dev/null >"$LOGDIR/torch.out" 2>&1 &
    torch_pid=$!
fi
# JupyterLab for jobs (tests/real/test_forward_real.py), the same way, beside it.
JUPYTER_VENV=${TESTBED_JUPYTER_VENV:-/opt/aif-jupyter}
jupyter_pid=
if ! { [[ -x $JUPYTER_VENV/bin/jupyter-lab ]] && cmp -s "$JUPYTER_VENV/.testbed-installed" "$HERE/jupyter-requirements.txt"; }; then
    log "installing JupyterLab into $JUPYTER_VENV (log: $LOGDIR/jupyter.out)"
    setsid bash "$HERE/jupyter.sh" "$JUPYTER_VENV" "$HERE/jupyter-requirements.txt" </dev/null >"$LOGDIR/jupyter.out" 2>&1 &
    jupyter_pid=$!
fi
trap 'for _p in ${torch_pid:-} ${jupyter_pid:-}; do kill -TERM -- "-$_p" 2>/dev/null; done; true' EXIT

# A stub container runtime for jobs (stub_runtime.py: accepts only `exec <options> IMAGE CMD...`,
# records each task's argv, environment and ranks in the job dir, then execs CMD), installed as
# `singularity` and `apptainer`; `module load aif-stub-runtime` puts it on PATH (tests/real/test_container_real.py).
STUB_RUNTIME=${TESTBED_STUB_RUNTIME:-/opt/aif-stub-runtime}
mkdir -p "$STUB_RUNTIME/bin"
chmod 755 "$STUB_RUNTIME" "$STUB_RUNTIME/bin"
for rt in singularity apptainer; do
    write_if_changed "$STUB_RUNTIME/bin/$rt" 755 root:root <"$HERE/stub_runtime.py" || true
done

# ---------------------------------------------------------------------------------------------
# 2. Users and directories
# ---------------------------------------------------------------------------------------------
if ! id "$TUSER" >/dev/null 2>&1; then
    useradd --create-home --home-dir "/home/$TUSER" --shell /bin/bash --user-group "$TUSER"
fi
# UsePAM no + a locked account ('!' in shadow) = sshd refuses even key logins.
[[ $(getent shadow "$TUSER" | cut -d: -f2) == '*' ]] || usermod -p '*' "$TUSER"
id slurm >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin slurm
UHOME=$(getent passwd "$TUSER" | cut -d: -f6)
[[ -d $UHOME ]] || { mkdir -p "$UHOME"; cp -rT /etc/skel "$UHOME"; chown -R "$TUSER:" "$UHOME"; chmod 750 "$UHOME"; }

mkdir -p "$TB" "$PIDS" "$LOGDIR" "$CLIENT" "$TB/ssh" "$TB/dev" "$TB/slurm"/{ctld,d,log,run} \
    /run/munge /run/sshd /var/log/munge /var/lib/munge /etc/munge /etc/slurm
chmod 755 "$TB" "$TB/slurm"
chmod 700 "$PIDS" "$TB/ssh"
chmod 755 "$CLIENT"
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge
chmod 700 /var/log/munge /var/lib/munge
chmod 755 /run/sshd
chown slurm:slurm "$TB/slurm/ctld" "$TB/slurm/log" "$TB/slurm/run"
for n in "${ALL_NODES[@]}"; do mkdir -p "$TB/slurm/d/$n"; done

for a in "${ACCOUNTS[@]}"; do
    for top in /scratch /flash /projappl; do
        d=$top/$a
        mkdir -p "$d"
        [[ $(stat -c '%U:%G %a' "$d") == "$TUSER:$(id -gn "$TUSER") 2770" ]] || {
            chown "$TUSER:$(id -gn "$TUSER")" "$d"
            chmod 2770 "$d"
        }
    done
done

# The other sites' project directories (their profiles' workdir templates need them).
for d in "${SITE_DIRS[@]}"; do
    mkdir -p "$d"
    [[ $(stat -c '%U:%G %a' "$d") == "$TUSER:$(id -gn "$TUSER") 2770" ]] || {
        chown "$TUSER:$(id -gn "$TUSER")" "$d"
        chmod 2770 "$d"
    }
done

# /etc/hosts: a marked block with every node name (and the <node>i names of the NVIDIA-like nodes).
# Written in place (cat >), since /etc/hosts may be a bind mount that cannot be replaced.
hosts_block=$(
    echo "# >>> testbed nodes (tests/testbed/start.sh) >>>"
    for n in "${ALL_NODES[@]}"; do echo "${NODE_ADDR[$n]} $n"; done
    for n in "${ACC_NODES[@]}"; do echo "${NODE_ADDR[$n]/#127.0.1./127.0.2.} ${n}i"; done
    echo "# <<< testbed nodes <<<"
)
hosts_new=$(sed '/^# >>> testbed nodes/,/^# <<< testbed nodes/d' /etc/hosts; echo "$hosts_block")
if [[ $hosts_new != "$(cat /etc/hosts)" ]]; then
    printf '%s\n' "$hosts_new" >/etc/hosts
    log "/etc/hosts: node names -> 127.0.1.x"
fi

# Fake GPUs: gres/gpu in 22.05 needs File= with character/block devices; clones of /dev/null.
for i in 0 1 2 3 4 5 6 7; do
    [[ -c $TB/dev/fakegpu$i ]] || { rm -f "$TB/dev/fakegpu$i"; mknod -m 0666 "$TB/dev/fakegpu$i" c 1 3; }
done

# ---------------------------------------------------------------------------------------------
# 3. Configuration files
# ---------------------------------------------------------------------------------------------
HOST=$(hostname -s)
slurm_conf_changed=0 dbd_conf_changed=0

{
    cat <<EOF
# Loopback Slurm test bed that looks like a small LUMI. Written by tests/testbed/start.sh.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MailProg=/bin/true

StateSaveLocation=$TB/slurm/ctld
SlurmdSpoolDir=$TB/slurm/d/%n
SlurmctldPidFile=$TB/slurm/run/slurmctld.pid
SlurmdPidFile=$TB/slurm/run/slurmd-%n.pid
SlurmctldLogFile=$TB/slurm/log/slurmctld.log
SlurmdLogFile=$TB/slurm/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info

# No systemd / no cgroup delegation here: track processes via /proc, no binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=10
MpiDefault=none
SwitchType=switch/none

# Declared hardware is fake (64/128 cores, 480/224 GiB on a small VM):
# trust slurm.conf instead of what slurmd detects.
SlurmdParameters=config_overrides
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1750
GresTypes=gpu
EnforcePartLimits=ALL

# Fast turnaround for tests.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,bf_resolution=60
MinJobAge=$MIN_JOB_AGE
KillWait=5
OverTimeLimit=0
InactiveLimit=0
Waittime=0
SlurmdTimeout=120
MessageTimeout=10

# Accounting: sacct needs slurmdbd (+ mariadb); there is no lighter backend in 22.05.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=gres/gpu,gres/gpu:mi250
AccountingStoreFlags=job_script,job_env
JobCompType=jobcomp/none
# A site rule that needs a submit plugin (sites.sh: Discoverer+'s default partition).
JobSubmitPlugins=lua

EOF
    k=0
    for n in "${GPU_NODES[@]}"; do
        echo "NodeName=$n NodeHostname=$n NodeAddr=${NODE_ADDR[$n]} Port=$((SLURMD_BASE_PORT + k)) Sockets=1 CoresPerSocket=64 ThreadsPerCore=1 RealMemory=491520 Gres=gpu:mi250:8 Features=mi250,gpu State=UNKNOWN"
        k=$((k + 1))
    done
    for n in "${CPU_NODES[@]}"; do
        echo "NodeName=$n NodeHostname=$n NodeAddr=${NODE_ADDR[$n]} Port=$((SLURMD_BASE_PORT + k)) Sockets=2 CoresPerSocket=64 ThreadsPerCore=1 RealMemory=229376 Features=cpu State=UNKNOWN"
        k=$((k + 1))
    done
    # The other GPU sites' nodes: big enough for each one's whole-node shape (JUPITER 4x72 cores,
    # Karolina and Lucia ia 8 GPUs, Lucia ia 2000 GB), 8 untyped GPUs.
    for n in "${ACC_NODES[@]}"; do
        echo "NodeName=$n NodeHostname=$n NodeAddr=${NODE_ADDR[$n]} Port=$((SLURMD_BASE_PORT + k)) Sockets=4 CoresPerSocket=72 ThreadsPerCore=1 RealMemory=2097152 Gres=gpu:8 Features=gpu,nvidia State=UNKNOWN"
        k=$((k + 1))
    done
    cat <<EOF

PartitionName=standard-g Nodes=$GPU_LIST MaxTime=2-00:00:00 DefaultTime=00:15:00 State=UP
PartitionName=small-g    Nodes=$GPU_LIST MaxTime=3-00:00:00 DefaultTime=00:15:00 State=UP
PartitionName=dev-g      Nodes=$GPU_LIST MaxTime=03:00:00   DefaultTime=00:15:00 State=UP
PartitionName=standard   Nodes=$CPU_LIST MaxTime=2-00:00:00 DefaultTime=00:15:00 State=UP
PartitionName=small      Nodes=$CPU_LIST MaxTime=3-00:00:00 DefaultTime=00:15:00 State=UP Default=YES
PartitionName=debug      Nodes=$CPU_LIST MaxTime=00:30:00   DefaultTime=00:15:00 State=UP

# The other GPU sites (tests/testbed/sites.sh)
EOF
    site_partition_lines
} | write_if_changed /etc/slurm/slurm.conf 644 root:root && slurm_conf_changed=1

write_if_changed /etc/slurm/gres.conf 644 root:root <<EOF && slurm_conf_changed=1 || true
AutoDetect=off
NodeName=$GPU_LIST Name=gpu Type=mi250 File=$TB/dev/fakegpu[0-7]
NodeName=$ACC_LIST Name=gpu File=$TB/dev/fakegpu[0-7]
EOF

site_job_submit_lua | write_if_changed /etc/slurm/job_submit.lua 644 root:root && slurm_conf_changed=1 || true

# slurmdbd refuses to start unless its config is owned by SlurmUser with mode 0600.
write_if_changed /etc/slurm/slurmdbd.conf 600 slurm:slurm <<EOF && dbd_conf_changed=1 || true
# Written by tests/testbed/start.sh.
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=slurm
PidFile=$TB/slurm/run/slurmdbd.pid
LogFile=$TB/slurm/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF

# ---- ssh keys and configs ----
ssh_changed=0
for k in ssh_host_ed25519_key jump_host_ed25519_key; do
    [[ -f $TB/ssh/$k ]] || ssh-keygen -q -t ed25519 -N '' -C "testbed-${k%%_*}" -f "$TB/ssh/$k"
done
[[ -f $CLIENT/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C testbed-client -f "$CLIENT/id_ed25519"
chmod 600 "$CLIENT/id_ed25519"

sshd_config() { # PORT HOSTKEY PIDFILE
    cat <<EOF
# Written by tests/testbed/start.sh.
Port $1
ListenAddress 127.0.0.1
HostKey $2
PidFile $3
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
}
sshd_config "$SSH_PORT" "$TB/ssh/ssh_host_ed25519_key" "$TB/ssh/sshd.pid" |
    write_if_changed "$TB/ssh/sshd_config" 644 root:root && ssh_changed=1
jump_changed=0
sshd_config "$JUMP_PORT" "$TB/ssh/jump_host_ed25519_key" "$TB/ssh/sshd-jump.pid" |
    write_if_changed "$TB/ssh/sshd-jump_config" 644 root:root && jump_changed=1

install -d -m 700 -o "$TUSER" -g "$(id -gn "$TUSER")" "$UHOME/.ssh"
pub=$(cat "$CLIENT/id_ed25519.pub")
if ! grep -qxF "$pub" "$UHOME/.ssh/authorized_keys" 2>/dev/null; then
    echo "$pub" >>"$UHOME/.ssh/authorized_keys"
fi
chown "$TUSER:$(id -gn "$TUSER")" "$UHOME/.ssh/authorized_keys"
chmod 600 "$UHOME/.ssh/authorized_keys"

hostkey=$(cut -d' ' -f1,2 "$TB/ssh/ssh_host_ed25519_key.pub")
jumpkey=$(cut -d' ' -f1,2 "$TB/ssh/jump_host_ed25519_key.pub")
write_if_changed "$CLIENT/known_hosts" 644 root:root <<EOF || true
[127.0.0.1]:$SSH_PORT $hostkey
[localhost]:$SSH_PORT $hostkey
[127.0.0.1]:$JUMP_PORT $jumpkey
[localhost]:$JUMP_PORT $jumpkey
EOF
ssh-keygen -lf "$TB/ssh/ssh_host_ed25519_key.pub" | awk '{print $2}' |
    write_if_changed "$CLIENT/host_fingerprint" 644 root:root || true
ssh-keygen -lf "$TB/ssh/jump_host_ed25519_key.pub" | awk '{print $2}' |
    write_if_changed "$CLIENT/jump_host_fingerprint" 644 root:root || true
write_if_changed "$CLIENT/ssh_config" 644 root:root <<EOF || true
# Written by tests/testbed/start.sh. Use: ssh -F $CLIENT/ssh_config testbed
Host testbed
    HostName 127.0.0.1
    Port $SSH_PORT
    User $TUSER
    IdentityFile $CLIENT/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $CLIENT/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes

Host testbed-jump
    HostName 127.0.0.1
    Port $JUMP_PORT
    User $TUSER
    IdentityFile $CLIENT/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $CLIENT/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes

Host testbed-via-jump
    HostName 127.0.0.1
    Port $SSH_PORT
    User $TUSER
    ProxyJump testbed-jump
    IdentityFile $CLIENT/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $CLIENT/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
EOF

# ---- Lmod: stub modulefile tree + hooks ----
MODROOT=$TB/modules
gen_modules() { # DIR
    local d=$1 v
    mkdir -p "$d/modulefiles"/{LUMI,partition,PyTorch,Stages,GCC,CUDA,NCCL}
    stub() { # NAME VERSION [extra lua]
        local var
        var=TESTBED_MODULE_$(echo "$1" | tr '[:lower:]/-' '[:upper:]__')
        mkdir -p "$d/modulefiles/$1"
        cat >"$d/modulefiles/$1/$2.lua" <<EOF
-- Stub written by tests/testbed/start.sh: sets variables only, provides no software.
whatis("Name: $1")
whatis("Version: $2")
whatis("Description: test bed stub of $1/$2")
help([[Test bed stub of $1/$2: sets $var=$2.]])
setenv("$var", "$2")
${3:-}
EOF
    }
    for v in 24.03 25.03; do
        stub LUMI "$v" "prepend_path(\"PATH\", \"$d/sw/LUMI/$v/bin\")"
        mkdir -p "$d/sw/LUMI/$v/bin"
        printf '#!/bin/sh\necho "LUMI/%s partition=${TESTBED_MODULE_PARTITION:-}"\n' "$v" >"$d/sw/LUMI/$v/bin/testbed-lumi-stack"
        chmod 755 "$d/sw/LUMI/$v/bin/testbed-lumi-stack"
    done
    echo 'module_version("LUMI/25.03", "default")' >"$d/modulefiles/LUMI/.modulerc.lua"
    for v in G C L; do stub partition "$v"; done
    stub PyTorch 2.3.1-rocm-6.0.3-python-3.12-singularity-20240923
    stub Stages 2025
    stub GCC 13.3.0
    stub CUDA 12
    stub NCCL default
    stub env/release 2025.1      # MeluXina's base module (profiles/meluxina.yaml)
    stub singularity default     # MareNostrum 5's container module; the bed has no container runtime
    # Not a stub: PyTorch's CPU build (the venv start.sh installs), as sites offer PyTorch modules.
    mkdir -p "$d/modulefiles/pytorch"
    cat >"$d/modulefiles/pytorch/2.13.0-cpu.lua" <<EOF
-- Written by tests/testbed/start.sh: PyTorch 2.13.0, CPU build, in the venv $TORCH_VENV.
whatis("Name: pytorch")
whatis("Version: 2.13.0-cpu")
whatis("Description: PyTorch 2.13.0 (CPU build, gloo) for jobs on the test bed")
help([[PyTorch 2.13.0, CPU build: python3 and torchrun from $TORCH_VENV/bin.]])
setenv("TESTBED_MODULE_PYTORCH", "2.13.0-cpu")
prepend_path("PATH", "$TORCH_VENV/bin")
EOF
    # The stub container runtime (a test double: there are no containers on the bed)
    mkdir -p "$d/modulefiles/aif-stub-runtime"
    cat >"$d/modulefiles/aif-stub-runtime/1.0.lua" <<EOF
-- Written by tests/testbed/start.sh: the test bed's stub container runtime (stub_runtime.py).
whatis("Name: aif-stub-runtime")
whatis("Version: 1.0")
whatis("Description: stub singularity/apptainer: checks exec's arguments, records them, runs the command")
help([[Stub container runtime: singularity and apptainer from $STUB_RUNTIME/bin.]])
prepend_path("PATH", "$STUB_RUNTIME/bin")
EOF
    # Paths in the files are the final ones ($MODROOT), not the temporary directory.
    sed -i "s|$d/sw|$MODROOT/sw|g" "$d"/modulefiles/LUMI/*.lua
}
tmpmod=$(mktemp -d "$TB/modules.new.XXXXXX")
gen_modules "$tmpmod"
chmod -R a+rX "$tmpmod"
if [[ -d $MODROOT ]] && diff -r -q "$tmpmod" "$MODROOT" >/dev/null 2>&1; then
    rm -rf "$tmpmod"
else
    rm -rf "$MODROOT"
    mv "$tmpmod" "$MODROOT"
    chmod 755 "$MODROOT"
fi

# /etc/lmod/modulespath: our tree first (Debian's /etc/profile.d/lmod.sh reads it).
if [[ -f /etc/lmod/modulespath ]]; then
    tag='# testbed (tests/testbed/start.sh)'
    awk -v line="$MODROOT/modulefiles $tag" -v tag="$tag" '
        index($0, tag) { next }
        !done && $0 !~ /^[[:space:]]*#/ && $0 !~ /^[[:space:]]*$/ { print line; done = 1 }
        { print }
        END { if (!done) print line }' /etc/lmod/modulespath |
        write_if_changed /etc/lmod/modulespath 644 root:root || true
fi

# /etc/bash.bashrc: commands run through ssh (non-interactive, non-login bash, which Debian's bash
# makes read /etc/bash.bashrc) get the login environment, as SUSE's /etc/bash.bashrc does on LUMI.
{
    cat <<'EOF'
# >>> testbed-lmod (tests/testbed/start.sh) >>>
# Commands run through ssh get the login environment (/etc/profile: Lmod's `module`), like SLES.
if [ -z "${PS1-}" ] && [ -n "${SSH_CONNECTION-}" ] && [ -z "${PROFILEREAD-}" ]; then PROFILEREAD=true; export PROFILEREAD; . /etc/profile >/dev/null 2>&1; fi
# <<< testbed-lmod <<<
EOF
    sed '/^# >>> testbed-lmod/,/^# <<< testbed-lmod/d' /etc/bash.bashrc
} | write_if_changed /etc/bash.bashrc 644 root:root || true

# /etc/profile.d/00-testbed-lmod-env.sh: the result of the first half of Debian's lmod.sh,
# computed once (saves ~30 ms of Lua per shell); lmod.sh then only defines `module`.
if [[ -f /etc/profile.d/lmod.sh ]]; then
    lmodenv=$(env -i PATH=/usr/bin:/bin LOGNAME=root USER=root HOME=/root bash -c \
        '. /etc/profile.d/lmod.sh >/dev/null 2>&1; printf "%s\n%s\n%s\n" "$MODULEPATH" "$BASH_ENV" "$MANPATH"')
    { read -r mp; read -r be; read -r mnp; } <<<"$lmodenv"
    [[ $mp == "$MODROOT/modulefiles"* ]] || die "Lmod's MODULEPATH does not start with our tree: $mp"
    write_if_changed /etc/profile.d/00-testbed-lmod-env.sh 644 root:root <<EOF || true
# Written by tests/testbed/start.sh: what the first half of /etc/profile.d/lmod.sh computes,
# precomputed. lmod.sh skips that half when MODULEPATH_ROOT is set and only defines \`module\`.
if [ -z "\${MODULEPATH_ROOT:-}" ] && [ -z "\${LMOD_SITE_MODULEPATH:-}" ] && [ -d $MODROOT/modulefiles ]; then
  export USER="\${USER-\${LOGNAME-}}"
  export LMOD_sys=Linux
  export MODULEPATH_ROOT=/usr/share/modulefiles
  export MODULEPATH='$mp'
  export BASH_ENV='$be'
  if [ -z "\${MANPATH:-}" ]; then export MANPATH='$mnp'; else export MANPATH="/usr/share/lmod/lmod/share/man:\$MANPATH"; fi
fi
EOF
fi

# ---------------------------------------------------------------------------------------------
# 4. Daemons
# ---------------------------------------------------------------------------------------------
started=()

# A changed configuration restarts the daemons that read it (only our own ones).
if ((dbd_conf_changed)) && running slurmdbd; then log "slurmdbd.conf changed: restarting slurmdbd"; stop_daemons 20 slurmdbd; fi
if ((slurm_conf_changed)); then
    torestart=()
    for n in "${ALL_NODES[@]}"; do running "slurmd-$n" && torestart+=("slurmd-$n"); done
    for f in "$PIDS"/slurmd-*.pid; do # nodes that no longer exist
        [[ -e $f ]] || continue
        n=$(basename "$f" .pid)
        [[ " ${torestart[*]-} " == *" $n "* ]] || torestart+=("$n")
    done
    if running slurmctld || ((${#torestart[@]})); then
        log "slurm.conf/gres.conf changed: restarting slurmctld and slurmd"
        stop_daemons 20 "${torestart[@]+"${torestart[@]}"}"
        stop_daemons 20 slurmctld
    fi
fi
((ssh_changed)) && running sshd && { log "sshd_config changed: restarting sshd"; stop_daemons 10 sshd; }
((jump_changed)) && running sshd-jump && { log "jump sshd_config changed: restarting it"; stop_daemons 10 sshd-jump; }

# Refuse early (before starting anything) if a port of a daemon we would start is taken.
preflight=("mariadbd:$DB_PORT" "slurmdbd:$DBD_PORT" "slurmctld:$CTLD_PORT" "sshd:$SSH_PORT" "sshd-jump:$JUMP_PORT")
k=0
for n in "${ALL_NODES[@]}"; do preflight+=("slurmd-$n:$((SLURMD_BASE_PORT + k))"); k=$((k + 1)); done
for entry in "${preflight[@]}"; do
    running "${entry%:*}" || ensure_ports_free "${entry%:*}" "${entry##*:}"
done

# ---- munge ----
if ! [[ -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown munge:munge /etc/munge/munge.key
chmod 600 /etc/munge/munge.key
if ! running munged; then
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        die "cannot start munged: another munged (not started by the test bed) answers on /run/munge/munge.socket.2"
    fi
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    # setpriv execs munged (runuser/su would stay the parent and the recorded pid would be theirs).
    launch munged /usr/sbin/munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
    started+=(munged)
    wait_until "munged" "$LOGDIR/munged.out" bash -c 'munge -n </dev/null | unmunge'
    log "munged started (pid $(recorded_pid munged))"
fi

# ---- mariadb (private datadir) ----
MY=$TB/mysql
MYSOCK=$MY/run/mysqld.sock
mysql_root() { mariadb --no-defaults --protocol=socket --socket="$MYSOCK" -uroot; }
if ! running mariadbd; then
    ensure_ports_free mariadbd "$DB_PORT"
    mkdir -p "$MY/data" "$MY/run"
    chown mysql:mysql "$MY" "$MY/data" "$MY/run"
    chmod 750 "$MY/data"
    if [[ ! -d $MY/data/mysql ]]; then
        log "initialising the database directory $MY/data"
        mariadb-install-db --no-defaults --datadir="$MY/data" --user=mysql \
            --auth-root-authentication-method=socket --skip-test-db >"$LOGDIR/mariadb-install-db.out" 2>&1 ||
            { tail -n 20 "$LOGDIR/mariadb-install-db.out" >&2; die "mariadb-install-db failed"; }
    fi
    rm -f "$MYSOCK"
    launch mariadbd /usr/sbin/mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql \
        --datadir="$MY/data" --socket="$MYSOCK" --pid-file="$MY/run/mariadbd.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --innodb-buffer-pool-size=512M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900
    started+=(mariadbd)
    wait_until "mariadbd" "$LOGDIR/mariadbd.out" mariadb-admin --no-defaults --socket="$MYSOCK" -uroot ping
    log "mariadbd started (pid $(recorded_pid mariadbd))"
fi
# The slurmdbd database user (idempotent, ~10 ms).
mysql_root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF

# ---- slurmdbd ----
if ! running slurmdbd; then
    ensure_ports_free slurmdbd "$DBD_PORT"
    launch slurmdbd /usr/sbin/slurmdbd /usr/sbin/slurmdbd -D
    started+=(slurmdbd)
    wait_until "slurmdbd on port $DBD_PORT" "$TB/slurm/log/slurmdbd.log" port_listening "$DBD_PORT"
    wait_until "slurmdbd answering sacctmgr" "$TB/slurm/log/slurmdbd.log" sacctmgr -n list cluster
    log "slurmdbd started (pid $(recorded_pid slurmdbd))"
fi

# ---- cluster, accounts, user associations (before slurmctld starts) ----
assocs=$(sacctmgr -nP list assoc format=cluster,account,user 2>/dev/null)
if ! grep -q "^$CLUSTER|root|" <<<"$assocs"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    assocs=$(sacctmgr -nP list assoc format=cluster,account,user)
fi
for a in "${ACCOUNTS[@]}"; do
    grep -q "^$CLUSTER|$a|\$" <<<"$assocs" ||
        sacctmgr -i add account "$a" Cluster="$CLUSTER" Description="test project $a" Organization=testbed >/dev/null
done
missing_acc=()
for a in "${ACCOUNTS[@]}"; do grep -q "^$CLUSTER|$a|$TUSER\$" <<<"$assocs" || missing_acc+=("$a"); done
if ((${#missing_acc[@]})); then
    sacctmgr -i add user "$TUSER" Cluster="$CLUSTER" Account="$(join "${missing_acc[@]}")" DefaultAccount="${ACCOUNTS[0]}" >/dev/null
fi
[[ $(sacctmgr -nP list user "$TUSER" format=defaultaccount) == "${ACCOUNTS[0]}" ]] ||
    sacctmgr -i modify user "$TUSER" set DefaultAccount="${ACCOUNTS[0]}" >/dev/null

# ---- the other sites' QoS and accounts, with the test user's QoS lists (sites.sh) ----
# Applied when the data changed (a stamp next to the Slurm state) or something is missing.
site_stamp=$(printf '%s\n' "$TUSER" "${SITE_QOS[@]}" "${SITE_ACCOUNTS[@]}" | sha256sum | cut -c1-16)
have_qos=$(sacctmgr -nP show qos format=name)
assocs=$(sacctmgr -nP list assoc format=cluster,account,user)
apply_sites=0
[[ $(cat "$TB/slurm/sites.applied" 2>/dev/null) == "$site_stamp" ]] || apply_sites=1
for e in "${SITE_QOS[@]}"; do grep -qxF "${e%%|*}" <<<"$have_qos" || apply_sites=1; done
for e in "${SITE_ACCOUNTS[@]}"; do grep -qxF "$CLUSTER|${e%%|*}|$TUSER" <<<"$assocs" || apply_sites=1; done
if ((apply_sites)); then
    # Few sacctmgr commands (each is a slurmdbd commit, ~0.3 s): lists where the values are equal.
    declare -A qos_by_opts=() acc_by_qos=()
    missing_qos=() missing_accounts=() missing_users=()
    for e in "${SITE_QOS[@]}"; do
        IFS='|' read -r q opts <<<"$e"
        grep -qxF "$q" <<<"$have_qos" || missing_qos+=("$q")
        qos_by_opts[$opts]+=${qos_by_opts[$opts]:+,}$q
    done
    for e in "${SITE_ACCOUNTS[@]}"; do
        IFS='|' read -r a qlist _ <<<"$e"
        grep -q "^$CLUSTER|$a|\$" <<<"$assocs" || missing_accounts+=("$a")
        grep -qxF "$CLUSTER|$a|$TUSER" <<<"$assocs" || missing_users+=("$a")
        acc_by_qos[$qlist]+=${acc_by_qos[$qlist]:+,}$a
    done
    ((${#missing_qos[@]})) && sacctmgr -i add qos "$(join "${missing_qos[@]}")" >/dev/null
    for opts in "${!qos_by_opts[@]}"; do
        # shellcheck disable=SC2086  # opts is a list of key=value words
        sacctmgr -i modify qos where name="${qos_by_opts[$opts]}" set $opts >/dev/null
    done
    ((${#missing_accounts[@]})) && sacctmgr -i add account "$(join "${missing_accounts[@]}")" Cluster="$CLUSTER" \
        Description="another GPU site's account (tests/testbed/sites.sh)" Organization=testbed >/dev/null
    ((${#missing_users[@]})) && sacctmgr -i add user "$TUSER" Cluster="$CLUSTER" Account="$(join "${missing_users[@]}")" >/dev/null
    for qlist in "${!acc_by_qos[@]}"; do
        sacctmgr -i modify user where name="$TUSER" account="${acc_by_qos[$qlist]}" cluster="$CLUSTER" \
            set QOS="$qlist" DefaultQOS="${qlist%%,*}" >/dev/null
    done
    echo "$site_stamp" >"$TB/slurm/sites.applied"
    log "site QoS and accounts applied (${#SITE_QOS[@]} QoS, ${#SITE_ACCOUNTS[@]} accounts)"
fi

# ---- slurmctld ----
if ! running slurmctld; then
    ensure_ports_free slurmctld "$CTLD_PORT"
    launch slurmctld /usr/sbin/slurmctld /usr/sbin/slurmctld -D -i
    started+=(slurmctld)
    wait_until "slurmctld" "$TB/slurm/log/slurmctld.log" scontrol ping
    log "slurmctld started (pid $(recorded_pid slurmctld))"
fi

# ---- slurmd, one per node ----
slurmd_since=$(date +%Y-%m-%dT%H:%M:%S)
new_nodes=()
k=0
for n in "${ALL_NODES[@]}"; do
    port=$((SLURMD_BASE_PORT + k))
    k=$((k + 1))
    running "slurmd-$n" && continue
    ensure_ports_free "slurmd-$n" "$port"
    launch "slurmd-$n" /usr/sbin/slurmd /usr/sbin/slurmd -D -N "$n"
    started+=("slurmd-$n")
    new_nodes+=("$n")
done

# ---- sshd (login node) and the jump host ----
start_sshd() { # NAME PORT CONFIG
    running "$1" && return 0
    ensure_ports_free "$1" "$2"
    /usr/sbin/sshd -t -f "$3" || die "sshd -t -f $3 failed"
    launch "$1" /usr/sbin/sshd /usr/sbin/sshd -D -e -f "$3"
    started+=("$1")
}
start_sshd sshd "$SSH_PORT" "$TB/ssh/sshd_config"
start_sshd sshd-jump "$JUMP_PORT" "$TB/ssh/sshd-jump_config"

# ---------------------------------------------------------------------------------------------
# 5. Readiness
# ---------------------------------------------------------------------------------------------
# Nodes: every (re)started slurmd must have registered after this start (slurmctld restores old
# node states, so "idle" alone can be stale); all nodes must be usable.
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
                scontrol update NodeName="$name" State=RESUME >/dev/null 2>&1 || true
                return 1
            fi
        fi
        case $state in
        IDLE | MIXED | ALLOCATED | COMPLETING | IDLE+COMPLETING | MIXED+COMPLETING | ALLOCATED+COMPLETING) ok=$((ok + 1)) ;;
        *) return 1 ;;
        esac
    done < <(scontrol show node -o "$(join "${ALL_NODES[@]}")" 2>/dev/null)
    ((ok == ${#ALL_NODES[@]}))
}
if ((${#new_nodes[@]})) || ! nodes_ready; then
    wait_until "all nodes idle (${ALL_NODES[*]})" "$TB/slurm/log/slurmctld.log" nodes_ready
    ((${#new_nodes[@]})) && log "slurmd started and registered: ${new_nodes[*]}"
fi

wait_until "sacct" "$TB/slurm/log/slurmdbd.log" sacct -n -X -a -S now-1minutes
ssh_ok() { ssh -F "$CLIENT/ssh_config" -o ConnectTimeout=5 "$1" true </dev/null; }
wait_until "ssh testbed" "$LOGDIR/sshd.out" ssh_ok testbed
wait_until "ssh testbed-jump" "$LOGDIR/sshd-jump.out" ssh_ok testbed-jump

verify_started "${started[@]+"${started[@]}"}"
if [[ -n $torch_pid ]]; then
    torch_rc=0
    wait "$torch_pid" || torch_rc=$?
    torch_pid=
    if ((torch_rc == 0)); then
        log "PyTorch installed: $(tail -n 1 "$LOGDIR/torch.out") in $TORCH_VENV"
    else
        tail -n 15 "$LOGDIR/torch.out" >&2
        log "WARNING: installing PyTorch into $TORCH_VENV failed (log: $LOGDIR/torch.out): jobs that load pytorch/2.13.0-cpu will fail"
    fi
fi
if [[ -n $jupyter_pid ]]; then
    jupyter_rc=0
    wait "$jupyter_pid" || jupyter_rc=$?
    jupyter_pid=
    if ((jupyter_rc == 0)); then
        log "JupyterLab installed: $(tail -n 1 "$LOGDIR/jupyter.out") in $JUPYTER_VENV"
    else
        tail -n 15 "$LOGDIR/jupyter.out" >&2
        log "WARNING: installing JupyterLab into $JUPYTER_VENV failed (log: $LOGDIR/jupyter.out): the forward test's Jupyter case skips"
    fi
fi
if ((${#started[@]})); then
    log "started: ${started[*]}"
else
    log "already running, nothing started"
fi
log "test bed ready in $(elapsed) s: ssh -F $CLIENT/ssh_config testbed (127.0.0.1:$SSH_PORT, jump :$JUMP_PORT)"
