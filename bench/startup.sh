#!/usr/bin/env bash
#
# Startup benchmark of a local Flint standalone cluster (one JobManager and
# one TaskManager with 2 task slots), started and stopped with the regular
# control scripts. Over RUNS runs (default 5) it reports the medians of:
#
#   1. the seconds from invoking scripts/start-cluster.sh until GET /overview
#      reports every TaskManager of conf/workers as registered;
#   2. the resident memory (VmRSS) of the JobManager and the TaskManager,
#      IDLE_WAIT seconds (default 30) after the start.
#
# Each run uses a fresh copy of conf/ with free REST and RPC ports, and its
# own log and pid directories; after stop-cluster.sh it checks (through the
# pid files) that no process was left behind.
#
# Environment:
#   RUNS=5            number of runs
#   IDLE_WAIT=30      seconds after the start at which memory is measured
#   READY_TIMEOUT=60  seconds to wait for the TaskManagers to register
#   NO_BUILD=1        skip "cargo build --release --bins"
#   FLINT_BIN_DIR     use binaries from elsewhere than target/release
#
# Needs bash 4.4+, curl, and Linux (/proc).

set -euo pipefail

REPO=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-5}
IDLE_WAIT=${IDLE_WAIT:-30}
READY_TIMEOUT=${READY_TIMEOUT:-60}
BIN_DIR=${FLINT_BIN_DIR:-$REPO/target/release}
SLOTS=2

die() {
    echo "startup.sh: $*" >&2
    exit 1
}

for value in "$RUNS" "$IDLE_WAIT" "$READY_TIMEOUT"; do
    [[ $value =~ ^[0-9]+$ ]] || die "RUNS, IDLE_WAIT and READY_TIMEOUT must be whole numbers (got '$value')."
done
((RUNS > 0)) || die "RUNS must be at least 1."
command -v curl >/dev/null 2>&1 || die "curl is needed."
[[ -d /proc/self ]] || die "/proc is needed to read the memory of the daemons."

# Helpers shared with the control scripts (YAML editing, pid files, ...).
# shellcheck source=../scripts/config.sh source-path=SCRIPTDIR
. "$REPO/scripts/config.sh"

if [[ ${NO_BUILD:-0} != 1 ]]; then
    echo "Building the release binaries (set NO_BUILD=1 to skip) ..."
    (cd "$REPO" && cargo build --release --bins) || die "The build failed."
fi
for binary in flint-jobmanager flint-taskmanager; do
    [[ -x $BIN_DIR/$binary ]] || die "$BIN_DIR/$binary does not exist; build it with 'cargo build --release --bins'."
done

now() {
    if [[ -n ${EPOCHREALTIME:-} ]]; then
        printf '%s\n' "${EPOCHREALTIME/,/.}"
    else
        date +%s.%N
    fi
}

# Prints two distinct free TCP ports.
free_ports() {
    if command -v python3 >/dev/null 2>&1; then
        python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
        return
    fi
    # Without python3: probe random ports until nothing answers on them.
    local -a ports=()
    local port
    while ((${#ports[@]} < 2)); do
        port=$((20000 + RANDOM % 40000))
        [[ " ${ports[*]} " == *" $port "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            ports+=("$port")
        fi
    done
    echo "${ports[*]}"
}

# Prints the VmRSS of a process in MiB.
rss_mib() {
    awk '/^VmRSS:/ { printf "%.1f\n", $2 / 1024; found = 1 } END { exit !found }' "/proc/$1/status" 2>/dev/null
}

# Prints the median of the arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]
        else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

minimum() { printf '%s\n' "$@" | sort -g | head -n 1; }
maximum() { printf '%s\n' "$@" | sort -g | tail -n 1; }

# State of the current run, for cleanup.
WORK=
RUN_PIDS=()
FAILED=0
SLEEP_PID=

# Runs stop-cluster.sh for the current run and makes sure none of its daemons
# survives. Fails if something had to be killed.
stop_run() {
    local pid leftover=0 file
    [[ -n $WORK ]] || return 0
    run_env "$FLINT_SCRIPTS_DIR/stop-cluster.sh" >>"$WORK/stop.out" 2>&1 || true
    for file in "$WORK"/pid/*.pid; do
        [[ -e $file ]] || continue
        if [[ -n $(flint_read_pids "$file") ]]; then
            echo "  pid file $file still lists: $(flint_read_pids "$file" | paste -sd' ')" >&2
            leftover=1
        fi
    done
    for pid in "${RUN_PIDS[@]}"; do
        if flint_pid_is flint-jobmanager "$pid" || flint_pid_is flint-taskmanager "$pid"; then
            echo "  process $pid was left behind by stop-cluster.sh; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            leftover=1
        fi
    done
    return "$leftover"
}

cleanup() {
    if [[ -n $SLEEP_PID ]]; then
        kill "$SLEEP_PID" 2>/dev/null || true
    fi
    if [[ -n $WORK ]]; then
        if stop_run; then
            rm -rf -- "$WORK"
        else
            echo "Logs of the interrupted run are in $WORK" >&2
        fi
        WORK=
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_env() {
    env -u FLINK_CONF_DIR \
        FLINT_CONF_DIR="$WORK/conf" FLINT_LOG_DIR="$WORK/log" FLINT_PID_DIR="$WORK/pid" \
        FLINT_BIN_DIR="$BIN_DIR" "$@"
}

# One run; prints "startup_seconds jm_rss_mib tm_rss_mib".
STARTUP=()
JM_RSS=()
TM_RSS=()

one_run() {
    local ports rest_port rpc_port expected t0 t1 ready=0 answer registered
    local jm_pid tm_pid remaining jm_rss tm_rss deadline
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/flint-bench.XXXXXX")
    RUN_PIDS=()
    cp -R "$REPO/conf" "$WORK/conf"
    mkdir -p "$WORK/log" "$WORK/pid"
    read -r rest_port rpc_port <<<"$(free_ports)"
    local config=$WORK/conf/config.yaml
    flint_yaml_set "$config" rest.port "$rest_port"
    flint_yaml_set "$config" jobmanager.rpc.port "$rpc_port"
    flint_yaml_set "$config" taskmanager.numberOfTaskSlots "$SLOTS"
    printf 'localhost:%s\n' "$rest_port" >"$WORK/conf/masters"
    printf 'localhost\n' >"$WORK/conf/workers"
    expected=$(flint_read_hosts "$WORK/conf/workers" | wc -l)
    expected=$((expected + 0))

    t0=$(now)
    if ! run_env "$FLINT_SCRIPTS_DIR/start-cluster.sh" >"$WORK/start.out" 2>&1; then
        cat "$WORK/start.out" >&2
        return 1
    fi
    deadline=$(awk -v t="$t0" -v d="$READY_TIMEOUT" 'BEGIN { printf "%.3f", t + d }')
    while :; do
        answer=$(curl -sS --max-time 1 "http://localhost:$rest_port/overview" 2>/dev/null || true)
        registered=$(grep -o '"taskmanagers"[[:space:]]*:[[:space:]]*[0-9]*' <<<"$answer" | grep -o '[0-9]*$' || true)
        if [[ -n $registered ]] && ((registered >= expected)); then
            ready=1
            break
        fi
        if awk -v n="$(now)" -v d="$deadline" 'BEGIN { exit !(n > d) }'; then
            break
        fi
        sleep 0.02
    done
    t1=$(now)
    if ((!ready)); then
        echo "  the cluster did not report $expected task manager(s) within $READY_TIMEOUT s (last answer: ${answer:-none})" >&2
        return 1
    fi

    jm_pid=$(flint_read_pids "$WORK/pid/flint-$FLINT_IDENT_STRING-standalonesession.pid" | tail -n 1)
    tm_pid=$(flint_read_pids "$WORK/pid/flint-$FLINT_IDENT_STRING-taskexecutor.pid" | tail -n 1)
    RUN_PIDS=("$jm_pid" "$tm_pid")
    [[ -n $jm_pid && -n $tm_pid ]] || {
        echo "  missing pid file entries" >&2
        return 1
    }

    remaining=$(awk -v t0="$t0" -v n="$(now)" -v w="$IDLE_WAIT" 'BEGIN { r = t0 + w - n; printf "%.3f", (r > 0 ? r : 0) }')
    # Sleep in the background, so that a signal ends the wait at once.
    sleep "$remaining" &
    SLEEP_PID=$!
    wait "$SLEEP_PID"
    SLEEP_PID=
    jm_rss=$(rss_mib "$jm_pid") || {
        echo "  the jobmanager (pid $jm_pid) is gone" >&2
        return 1
    }
    tm_rss=$(rss_mib "$tm_pid") || {
        echo "  the taskmanager (pid $tm_pid) is gone" >&2
        return 1
    }

    if ! stop_run; then
        echo "  stop-cluster.sh left processes behind" >&2
        return 1
    fi
    STARTUP+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
    JM_RSS+=("$jm_rss")
    TM_RSS+=("$tm_rss")
    rm -rf -- "$WORK"
    WORK=
}

echo "Flint startup benchmark: $RUNS runs, 1 jobmanager + 1 taskmanager ($SLOTS slots), memory after ${IDLE_WAIT}s"
echo "Binaries: $BIN_DIR"
for ((run = 1; run <= RUNS; run++)); do
    if one_run; then
        i=$((${#STARTUP[@]} - 1))
        printf 'run %d/%d: startup %6.3f s, jobmanager %7.1f MiB, taskmanager %7.1f MiB\n' \
            "$run" "$RUNS" "${STARTUP[i]}" "${JM_RSS[i]}" "${TM_RSS[i]}"
    else
        echo "run $run/$RUNS: FAILED (logs kept in $WORK)" >&2
        stop_run || true
        WORK=
        FAILED=$((FAILED + 1))
    fi
done

if ((${#STARTUP[@]} == 0)); then
    die "all runs failed."
fi

echo
printf 'Summary over %d successful run(s) of %d\n\n' "${#STARTUP[@]}" "$RUNS"
printf '%-34s %12s %12s %12s\n' "metric" "median" "min" "max"
printf '%-34s %12s %12s %12s\n' "----------------------------------" "------------" "------------" "------------"
printf '%-34s %10.3f s %10.3f s %10.3f s\n' "startup until all TMs registered" \
    "$(median "${STARTUP[@]}")" "$(minimum "${STARTUP[@]}")" "$(maximum "${STARTUP[@]}")"
printf '%-34s %8.1f MiB %8.1f MiB %8.1f MiB\n' "jobmanager idle RSS" \
    "$(median "${JM_RSS[@]}")" "$(minimum "${JM_RSS[@]}")" "$(maximum "${JM_RSS[@]}")"
printf '%-34s %8.1f MiB %8.1f MiB %8.1f MiB\n' "taskmanager idle RSS" \
    "$(median "${TM_RSS[@]}")" "$(minimum "${TM_RSS[@]}")" "$(maximum "${TM_RSS[@]}")"

((FAILED == 0)) || exit 1
