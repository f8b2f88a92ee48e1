# Shared helpers of start.sh / stop.sh / check.sh (sourced, not run).
# shellcheck shell=bash disable=SC2034

TB=${TESTBED_DIR:-/tmp/testbed}
PIDS=$TB/pids
LOGDIR=$TB/log
CLIENT=$TB/client

_T0=${_T0:-${EPOCHREALTIME/./}}

# Seconds since the script started, e.g. "3.14".
elapsed() {
    local now=${EPOCHREALTIME/./}
    local us=$((now - _T0))
    printf '%d.%02d' $((us / 1000000)) $(((us % 1000000) / 10000))
}

log() { printf '[testbed %6ss] %s\n' "$(elapsed)" "$*"; }
die() { printf '[testbed %6ss] ERROR: %s\n' "$(elapsed)" "$*" >&2; exit 1; }

# State letter of a process from /proc/PID/stat ("" if it does not exist).
# A stopped daemon can stay a zombie for a while (PID 1 here reaps late).
proc_state() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    printf '%s' "${stat%% *}"
}

# True if PID is alive (not a zombie) and its binary is EXE (already resolved).
pid_is() {
    local pid=$1 exe=$2 st
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    st=$(proc_state "$pid")
    [[ -n $st && $st != Z && $st != X ]] || return 1
    # Debian alternatives: /usr/sbin/slurmd -> slurmd-wlm; /proc/PID/exe shows the
    # resolved name, so both sides are compared after readlink -f.
    [[ $(readlink -f "/proc/$pid/exe" 2>/dev/null) == "$exe" ]]
}

# True if the daemon NAME recorded in $PIDS is running (pid alive with the recorded exe).
running() {
    local pf=$PIDS/$1.pid ef=$PIDS/$1.exe
    [[ -f $pf && -f $ef ]] || return 1
    pid_is "$(<"$pf")" "$(<"$ef")"
}

recorded_pid() { cat "$PIDS/$1.pid" 2>/dev/null || true; }

# True if something listens on TCP PORT (any address, v4 or v6).
port_listening() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Stop the recorded daemons NAMES (in parallel): SIGTERM, wait, SIGKILL after TIMEOUT s.
# Removes their pid files. Only processes whose pid AND exe match the record are signalled.
stop_daemons() {
    local timeout=$1; shift
    local name pid live=()
    for name in "$@"; do
        if running "$name"; then
            pid=$(recorded_pid "$name")
            kill -TERM "$pid" 2>/dev/null || true
            live+=("$name")
        fi
    done
    local stopping=("${live[@]+"${live[@]}"}")
    local deadline=$((${EPOCHREALTIME/./} + timeout * 1000000)) still killed=0
    while ((${#live[@]})); do
        still=()
        for name in "${live[@]}"; do
            running "$name" && still+=("$name")
        done
        live=("${still[@]+"${still[@]}"}")
        ((${#live[@]})) || break
        if ((${EPOCHREALTIME/./} > deadline)); then
            ((killed)) && break
            for name in "${live[@]}"; do
                log "$name (pid $(recorded_pid "$name")) ignored SIGTERM for ${timeout}s: SIGKILL"
                kill -KILL "$(recorded_pid "$name")" 2>/dev/null || true
            done
            killed=1
            deadline=$((${EPOCHREALTIME/./} + 5000000))
        fi
        sleep 0.05
    done
    ((${#stopping[@]})) && log "stopped ${stopping[*]}"
    for name in "$@"; do
        if running "$name"; then
            log "WARNING: $name (pid $(recorded_pid "$name")) is still running"
        else
            rm -f "$PIDS/$name.pid" "$PIDS/$name.exe"
        fi
    done
}
