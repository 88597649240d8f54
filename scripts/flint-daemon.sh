#!/usr/bin/env bash
#
# Runs, and stops, a Flint daemon on this host. Used by jobmanager.sh and
# taskmanager.sh; the counterpart of Flink's flink-daemon.sh and
# flink-console.sh.
#
#   flint-daemon.sh (start|start-foreground|stop|stop-all) (standalonesession|taskexecutor) [args...]
#
# start             runs the daemon in the background (nohup), logging to
#                   <log dir>/flint-<user>-<daemon>-<n>-<host>.log (tracing
#                   log, via FLINT_LOG_FILE) and .out (stdout and stderr),
#                   where n is the number of instances already running, and
#                   appends its pid to <pid dir>/flint-<user>-<daemon>.pid.
# start-foreground  replaces this script with the daemon (logging to
#                   FLINT_LOG_FILE if set, else to stderr).
# stop              stops the instance started last: SIGTERM, then SIGKILL
#                   after FLINT_STOP_TIMEOUT seconds (default 10).
# stop-all          stops every instance listed in the pid file.
#
# Only pids listed in the pid file are ever signalled, and only after
# checking that they still run the daemon's binary.

set -euo pipefail

USAGE="Usage: flint-daemon.sh (start|start-foreground|stop|stop-all) (standalonesession|taskexecutor) [args...]"

if (($# < 2)); then
    echo "$USAGE" >&2
    exit 1
fi
ACTION=$1
DAEMON=$2
shift 2

# The real directory of this script, through any symlinks.
SCRIPTS_DIR=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
# shellcheck source=config.sh source-path=SCRIPTDIR
. "$SCRIPTS_DIR/config.sh"

BINARY_NAME=$(flint_daemon_binary "$DAEMON") || flint_die "Unknown daemon '$DAEMON'. $USAGE"

case $ACTION in
    start | start-foreground | stop | stop-all) ;;
    *) flint_die "Unknown command '$ACTION'. $USAGE" ;;
esac

flint_require_conf_dir
flint_init_dirs
PID_FILE=$(flint_pid_file "$DAEMON")

STOP_TIMEOUT=${FLINT_STOP_TIMEOUT:-10}
[[ $STOP_TIMEOUT =~ ^[0-9]+$ ]] || flint_die "FLINT_STOP_TIMEOUT must be a whole number of seconds, got '$STOP_TIMEOUT'."

# Drops pid file entries whose process is gone (or is no longer ours), so
# that the instance index counts running instances only. Call with the lock
# held.
prune_pid_file() {
    local pid
    local -a alive=()
    [[ -f $PID_FILE ]] || return 0
    while read -r pid; do
        if flint_pid_is "$BINARY_NAME" "$pid"; then
            alive+=("$pid")
        fi
    done < <(flint_read_pids "$PID_FILE")
    write_pid_file "${alive[@]}"
}

# Rewrites the pid file with the given pids (removes it when there are none).
write_pid_file() {
    if (($#)); then
        printf '%s\n' "$@" >"$PID_FILE.tmp"
        mv -f -- "$PID_FILE.tmp" "$PID_FILE"
    else
        rm -f -- "$PID_FILE"
    fi
}

# Keeps up to FLINT_MAX_LOG_FILES (else env.log.max, else 10) old copies of a
# log file as FILE.1 (newest) ... FILE.N.
rotate_log_file() {
    local file=$1 n=$MAX_LOG_FILES prev
    if [[ ! -f $file ]] || ((n < 1)); then
        return 0
    fi
    while ((n > 1)); do
        prev=$((n - 1))
        if [[ -f $file.$prev ]]; then
            mv -f -- "$file.$prev" "$file.$n"
        fi
        n=$prev
    done
    mv -f -- "$file" "$file.1"
}

# Sends SIGTERM to the given pids, waits up to STOP_TIMEOUT seconds for them
# to exit, then sends SIGKILL to those left. Fails if a process survives.
terminate() {
    local pid ticks
    local -a left=()
    for pid in "$@"; do
        if flint_pid_is "$BINARY_NAME" "$pid" && ! kill -TERM "$pid" 2>/dev/null; then
            flint_err "Could not send SIGTERM to $DAEMON daemon (pid: $pid) on host $FLINT_HOSTNAME."
        fi
    done
    ticks=$((STOP_TIMEOUT * 10))
    while :; do
        left=()
        for pid in "$@"; do
            if flint_pid_is "$BINARY_NAME" "$pid"; then
                left+=("$pid")
            fi
        done
        if ((${#left[@]} == 0 || ticks <= 0)); then
            break
        fi
        sleep 0.1
        ticks=$((ticks - 1))
    done
    ((${#left[@]})) || return 0

    for pid in "${left[@]}"; do
        echo "$DAEMON daemon (pid: $pid) did not stop within $STOP_TIMEOUT seconds; killing it (SIGKILL)." >&2
        if flint_pid_is "$BINARY_NAME" "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    ticks=50
    while ((ticks > 0)); do
        left=()
        for pid in "$@"; do
            if flint_pid_is "$BINARY_NAME" "$pid"; then
                left+=("$pid")
            fi
        done
        ((${#left[@]})) || return 0
        sleep 0.1
        ticks=$((ticks - 1))
    done
    flint_err "Could not stop $DAEMON daemon (pid: ${left[*]}) on host $FLINT_HOSTNAME."
    return 1
}

start() {
    local bin id prefix pid deadline
    bin=$(flint_find_binary "$BINARY_NAME") || exit 1
    MAX_LOG_FILES=${FLINT_MAX_LOG_FILES:-$(flint_config_get env.log.max 10)}
    [[ $MAX_LOG_FILES =~ ^[0-9]+$ ]] || MAX_LOG_FILES=10

    flint_lock
    prune_pid_file
    id=$(flint_read_pids "$PID_FILE" | wc -l)
    id=$((id + 0))
    prefix="$FLINT_LOG_DIR/flint-$FLINT_IDENT_STRING-$DAEMON-$id-$FLINT_HOSTNAME"
    rotate_log_file "$prefix.log"
    rotate_log_file "$prefix.out"

    echo "Starting $DAEMON daemon on host $FLINT_HOSTNAME."
    (
        # The daemon must not inherit (and so keep holding) the lock.
        if [[ -n $FLINT_LOCK_FD ]]; then
            exec {FLINT_LOCK_FD}<&-
        fi
        export FLINT_LOG_FILE="$prefix.log"
        # Detach from the terminal's session where possible, so that neither
        # a hangup nor a Ctrl-C in the terminal reaches the daemon. (This
        # subshell is not a process group leader, so setsid does not fork
        # and the daemon keeps the pid recorded below.)
        launcher=(nohup)
        if command -v setsid >/dev/null 2>&1; then
            launcher=(setsid nohup)
        fi
        exec "${launcher[@]}" "$bin" --configDir "$FLINT_CONF_DIR" "$@" >"$prefix.out" 2>&1 </dev/null
    ) &
    pid=$!
    # Wait until the child runs the binary, so that its pid file entry is
    # recognised as ours from the start (see prune_pid_file). A wall-clock
    # bound: on a loaded machine the fork and exec alone can take seconds.
    deadline=$((SECONDS + 30))
    until flint_pid_is "$BINARY_NAME" "$pid" || ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); do
        sleep 0.005
    done
    if flint_pid_is "$BINARY_NAME" "$pid"; then
        echo "$pid" >>"$PID_FILE"
    else
        flint_unlock
        flint_die "Error starting $DAEMON daemon (see $prefix.out)."
    fi
    flint_unlock
}

start_foreground() {
    local bin
    bin=$(flint_find_binary "$BINARY_NAME") || exit 1
    flint_lock
    prune_pid_file
    # exec keeps our pid, so the pid file names the daemon itself.
    echo "$$" >>"$PID_FILE"
    flint_unlock
    exec "$bin" --configDir "$FLINT_CONF_DIR" "$@"
}

stop() {
    local to_stop rc=0
    local -a pids=()
    flint_lock
    mapfile -t pids < <(flint_read_pids "$PID_FILE")
    if ((${#pids[@]} == 0)); then
        rm -f -- "$PID_FILE"
        flint_unlock
        echo "No $DAEMON daemon to stop on host $FLINT_HOSTNAME."
        return 0
    fi
    to_stop=${pids[-1]}
    unset 'pids[-1]'
    if flint_pid_is "$BINARY_NAME" "$to_stop"; then
        echo "Stopping $DAEMON daemon (pid: $to_stop) on host $FLINT_HOSTNAME."
        if ! terminate "$to_stop"; then
            pids+=("$to_stop")
            rc=1
        fi
    else
        echo "No $DAEMON daemon (pid: $to_stop) is running anymore on $FLINT_HOSTNAME."
    fi
    write_pid_file "${pids[@]}"
    flint_unlock
    return "$rc"
}

stop_all() {
    local pid rc=0
    local -a pids=() running=() survivors=()
    flint_lock
    mapfile -t pids < <(flint_read_pids "$PID_FILE")
    if ((${#pids[@]} == 0)); then
        rm -f -- "$PID_FILE"
        flint_unlock
        echo "No $DAEMON daemon to stop on host $FLINT_HOSTNAME."
        return 0
    fi
    for pid in "${pids[@]}"; do
        if flint_pid_is "$BINARY_NAME" "$pid"; then
            echo "Stopping $DAEMON daemon (pid: $pid) on host $FLINT_HOSTNAME."
            running+=("$pid")
        else
            echo "No $DAEMON daemon (pid: $pid) is running anymore on $FLINT_HOSTNAME."
        fi
    done
    if ((${#running[@]})) && ! terminate "${running[@]}"; then
        rc=1
        for pid in "${running[@]}"; do
            if flint_pid_is "$BINARY_NAME" "$pid"; then
                survivors+=("$pid")
            fi
        done
    fi
    write_pid_file "${survivors[@]}"
    flint_unlock
    return "$rc"
}

case $ACTION in
    start)
        flint_parse_daemon_args "$@"
        start "${FLINT_DAEMON_ARGS[@]}"
        ;;
    start-foreground)
        flint_parse_daemon_args "$@"
        start_foreground "${FLINT_DAEMON_ARGS[@]}"
        ;;
    stop) stop ;;
    stop-all) stop_all ;;
esac
