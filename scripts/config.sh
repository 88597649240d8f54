# shellcheck shell=bash
#
# Shared helpers for the Flint control scripts. This file is sourced (never
# executed) by jobmanager.sh, taskmanager.sh, flint-daemon.sh,
# start-cluster.sh, stop-cluster.sh and bench/startup.sh.
#
# After sourcing, the following variables are set:
#
#   FLINT_SCRIPTS_DIR  absolute directory of these scripts
#   FLINT_HOME         $FLINT_HOME, else the parent of FLINT_SCRIPTS_DIR
#   FLINT_CONF_DIR     $FLINT_CONF_DIR, else $FLINK_CONF_DIR, else $FLINT_HOME/conf
#   FLINT_HOSTNAME     the name of this host (as used in log file names)
#   FLINT_IDENT_STRING the user name used in log and pid file names
#
# Everything else (log dir, pid dir, binaries, ...) is resolved lazily by the
# functions below, because reading the configuration file is only needed by
# some commands.
#
# Environment variables understood by the scripts:
#
#   FLINT_HOME           installation (or repository) root
#   FLINT_CONF_DIR       configuration directory (FLINK_CONF_DIR also works)
#   FLINT_BIN_DIR        directory holding flint-jobmanager / flint-taskmanager
#   FLINT_LOG_DIR        log directory (else env.log.dir, else $FLINT_HOME/log)
#   FLINT_PID_DIR        pid file directory (else env.pid.dir, else /tmp)
#   FLINT_STOP_TIMEOUT   seconds to wait after SIGTERM before SIGKILL (10)
#   FLINT_IDENT_STRING   user name used in file names (else $USER)
#   FLINT_SSH_OPTS       extra ssh options (else env.ssh.opts)
#   FLINT_MAX_LOG_FILES  rotated log files to keep (else env.log.max, else 10)

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
    echo "The Flint scripts need bash 4.4 or newer (this is bash $BASH_VERSION)." >&2
    exit 1
fi

# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------

flint_err() {
    printf '%s\n' "$*" >&2
}

flint_die() {
    flint_err "$@"
    exit 1
}

# ---------------------------------------------------------------------------
# Locations
# ---------------------------------------------------------------------------

# Prints the absolute, symlink-free directory containing the given file.
flint_abs_dir_of() {
    local src=$1 dir
    while [[ -L $src ]]; do
        dir=$(cd -P -- "$(dirname -- "$src")" && pwd)
        src=$(readlink -- "$src")
        [[ $src == /* ]] || src=$dir/$src
    done
    cd -P -- "$(dirname -- "$src")" && pwd
}

# Prints the absolute form of a path (which need not exist) without
# resolving symlinks.
flint_abs_path() {
    local p=$1
    if [[ $p != /* ]]; then
        p=$PWD/$p
    fi
    printf '%s\n' "$p"
}

# The FLINT_* settings given through the environment (forwarded over ssh).
FLINT_GIVEN_ENV=()
for _flint_var in FLINT_HOME FLINT_CONF_DIR FLINT_BIN_DIR FLINT_LOG_DIR FLINT_PID_DIR \
    FLINT_STOP_TIMEOUT FLINT_IDENT_STRING FLINT_MAX_LOG_FILES; do
    if [[ -n ${!_flint_var:-} ]]; then
        FLINT_GIVEN_ENV+=("$_flint_var=${!_flint_var}")
    fi
done
if [[ -z ${FLINT_CONF_DIR:-} && -n ${FLINK_CONF_DIR:-} ]]; then
    FLINT_GIVEN_ENV+=("FLINT_CONF_DIR=$FLINK_CONF_DIR")
fi
unset _flint_var

FLINT_SCRIPTS_DIR=$(flint_abs_dir_of "${BASH_SOURCE[0]}")
if [[ -z ${FLINT_HOME:-} ]]; then
    FLINT_HOME=$(cd -P -- "$FLINT_SCRIPTS_DIR/.." && pwd)
fi
FLINT_HOME=$(flint_abs_path "$FLINT_HOME")
FLINT_CONF_DIR=$(flint_abs_path "${FLINT_CONF_DIR:-${FLINK_CONF_DIR:-$FLINT_HOME/conf}}")
FLINT_HOSTNAME=${HOSTNAME:-$(hostname 2>/dev/null || uname -n)}
FLINT_IDENT_STRING=${FLINT_IDENT_STRING:-${USER:-$(id -un 2>/dev/null || echo unknown)}}
export FLINT_HOME FLINT_CONF_DIR

# Fails unless the configuration directory exists.
flint_require_conf_dir() {
    [[ -d $FLINT_CONF_DIR ]] ||
        flint_die "The configuration directory '$FLINT_CONF_DIR' does not exist (set FLINT_CONF_DIR or FLINK_CONF_DIR)."
}

# Prints the configuration file to read: config.yaml, else the legacy
# flink-conf.yaml, else nothing (all defaults).
flint_config_file() {
    if [[ -f $FLINT_CONF_DIR/config.yaml ]]; then
        printf '%s\n' "$FLINT_CONF_DIR/config.yaml"
    elif [[ -f $FLINT_CONF_DIR/flink-conf.yaml ]]; then
        printf '%s\n' "$FLINT_CONF_DIR/flink-conf.yaml"
    fi
}

# ---------------------------------------------------------------------------
# Configuration reading
# ---------------------------------------------------------------------------

# The awk program behind flint_yaml_get / flint_yaml_set. It understands the
# subset of YAML used by configuration files: nested block mappings (keys are
# joined with '.'), flat dotted keys, any mix of the two, plain, single- and
# double-quoted scalars, comments, and it skips sequences and block scalars.
# With legacy=1 it instead parses like Flink's legacy flink-conf.yaml reader:
# flat "key: value" lines, everything after the first '#' is a comment, no
# unquoting, last occurrence wins.
#
# Variables: want (the dotted key), mode ("get" or "set"), legacy (0/1),
# sq (a single quote), newval (mode=set only).
# shellcheck disable=SC2016
FLINT_YAML_AWK='
function trim(s) { sub(/^[ \t\r]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }

# Decodes a scalar value: quoted forms are unquoted, plain forms lose their
# trailing comment. Sets "ok" to 0 for values we cannot represent (flow
# collections, block scalars).
function scalar(v,   q, i, c, out, n) {
    ok = 1
    v = trim(v)
    # Drop a tag such as !!str.
    if (v ~ /^!/) { sub(/^![^ \t]*[ \t]*/, "", v) }
    q = substr(v, 1, 1)
    if (q == "\"") {
        out = ""; n = length(v)
        for (i = 2; i <= n; i++) {
            c = substr(v, i, 1)
            if (c == "\\" && i < n) {
                i++; c = substr(v, i, 1)
                if (c == "n") c = "\n"; else if (c == "t") c = "\t"
                out = out c
            } else if (c == "\"") {
                return out
            } else {
                out = out c
            }
        }
        return out
    }
    if (q == sq) {
        out = ""; n = length(v)
        for (i = 2; i <= n; i++) {
            c = substr(v, i, 1)
            if (c == sq) {
                if (substr(v, i + 1, 1) == sq) { out = out c; i++ } else { return out }
            } else {
                out = out c
            }
        }
        return out
    }
    if (q == "{" || q == "[" || q == "|" || q == ">") { ok = 0; return "" }
    if (match(v, /[ \t]#/)) v = substr(v, 1, RSTART - 1)
    else if (v ~ /^#/) v = ""
    v = trim(v)
    if (v == "~" || v == "null" || v == "Null" || v == "NULL") v = ""
    return v
}

function emit(line) { if (mode == "set") print line }

BEGIN { depth = 0; skip = -1; found = 0; result = ""; newval = ENVIRON["FLINT_AWK_NEWVAL"] }

{
    raw = $0
    sub(/\r$/, "", raw)

    if (legacy) {
        line = raw
        i = index(line, "#"); if (i) line = substr(line, 1, i - 1)
        line = trim(line)
        i = index(line, ": ")
        if (line != "" && i) {
            k = trim(substr(line, 1, i - 1)); v = trim(substr(line, i + 2))
            if (k == want && v != "") {
                if (mode == "set") {
                    if (!found) print want ": " newval
                    found = 1; next
                }
                found = 1; result = v
            }
        }
        emit(raw); next
    }

    line = raw
    match(line, /^[ \t]*/); indent = RLENGTH
    body = substr(line, indent + 1)

    if (body == "" || body ~ /^#/ || body ~ /^(---|\.\.\.)([ \t]|$)/) { emit(raw); next }

    # Inside a sequence or block scalar: skip more deeply indented lines.
    if (skip >= 0) {
        if (indent > skip) { emit(raw); next }
        skip = -1
    }
    if (body ~ /^-([ \t]|$)/) { skip = indent; emit(raw); next }

    # Split "key: value".
    if (substr(body, 1, 1) == "\"" || substr(body, 1, 1) == sq) {
        q = substr(body, 1, 1)
        i = index(substr(body, 2), q)
        if (!i) { emit(raw); next }
        k = substr(body, 2, i - 1)
        rest = substr(body, i + 2)
        if (!match(rest, /^[ \t]*:([ \t]|$)/)) { emit(raw); next }
        keytext = substr(body, 1, i + 1)
        rest = substr(rest, RLENGTH + 1)
    } else {
        if (!match(body, /:([ \t]|$)/)) { emit(raw); next }
        k = trim(substr(body, 1, RSTART - 1))
        keytext = substr(body, 1, RSTART - 1)
        rest = substr(body, RSTART + 1)
    }

    while (depth > 0 && ind[depth] >= indent) depth--
    full = k
    for (d = depth; d >= 1; d--) full = key[d] "." full

    v = scalar(rest)
    vt = trim(rest)
    if (vt == "" || vt ~ /^#/ || vt ~ /^&[^ \t]*([ \t]+#.*)?$/) {
        # A mapping (or null) value: its children follow on deeper lines.
        depth++; ind[depth] = indent; key[depth] = k
        emit(raw); next
    }
    if (vt ~ /^[|>]/) skip = indent

    if (full == want && ok) {
        if (mode == "set") {
            print substr(raw, 1, indent) keytext ": " newval
            found = 1; next
        }
        found = 1; result = v
    }
    emit(raw)
}

END {
    if (mode == "set") {
        if (!found) print want ": " newval
    } else if (found) {
        print result
    }
    exit(found ? 0 : 1)
}
'

# flint_yaml_get FILE KEY: prints the value of the dotted KEY in FILE and
# succeeds, or fails if the key is not set. flink-conf.yaml files are read
# with Flink's legacy (flat) rules.
flint_yaml_get() {
    local file=$1 key=$2 legacy=0
    [[ -r $file ]] || return 1
    [[ ${file##*/} == flink-conf.yaml ]] && legacy=1
    awk -v want="$key" -v mode=get -v legacy="$legacy" -v sq="'" "$FLINT_YAML_AWK" "$file"
}

# flint_yaml_set FILE KEY VALUE: replaces the value of KEY in FILE (keeping
# its place, indentation and nesting), or appends "KEY: VALUE" if it is not
# set. VALUE is written verbatim (quote it yourself if needed).
flint_yaml_set() {
    local file=$1 key=$2 value=$3 legacy=0 tmp
    [[ ${file##*/} == flink-conf.yaml ]] && legacy=1
    tmp=$(mktemp "$file.XXXXXX")
    if [[ -f $file ]]; then
        FLINT_AWK_NEWVAL=$value awk -v want="$key" -v mode=set -v legacy="$legacy" -v sq="'" \
            "$FLINT_YAML_AWK" "$file" >"$tmp" || true
    else
        printf '%s: %s\n' "$key" "$value" >"$tmp"
    fi
    mv -f -- "$tmp" "$file"
}

# flint_config_get KEY [DEFAULT]: prints the configured value of KEY, else
# DEFAULT (which may be empty).
flint_config_get() {
    local key=$1 default=${2-} file value
    file=$(flint_config_file)
    if [[ -n $file ]] && value=$(flint_yaml_get "$file" "$key") && [[ -n $value ]]; then
        printf '%s\n' "$value"
    else
        printf '%s\n' "$default"
    fi
}

# Prints the high-availability mode in lower case ("none" if unset).
flint_ha_mode() {
    local mode
    mode=$(flint_config_get high-availability.type)
    [[ -n $mode ]] || mode=$(flint_config_get high-availability)
    mode=${mode,,}
    printf '%s\n' "${mode:-none}"
}

# Resolves (and creates) FLINT_LOG_DIR and FLINT_PID_DIR.
flint_init_dirs() {
    if [[ -z ${FLINT_LOG_DIR:-} ]]; then
        FLINT_LOG_DIR=$(flint_config_get env.log.dir "$FLINT_HOME/log")
    fi
    if [[ -z ${FLINT_PID_DIR:-} ]]; then
        FLINT_PID_DIR=$(flint_config_get env.pid.dir /tmp)
    fi
    FLINT_LOG_DIR=$(flint_abs_path "$FLINT_LOG_DIR")
    FLINT_PID_DIR=$(flint_abs_path "$FLINT_PID_DIR")
    mkdir -p -- "$FLINT_LOG_DIR" || flint_die "Could not create the log directory '$FLINT_LOG_DIR'."
    mkdir -p -- "$FLINT_PID_DIR" || flint_die "Could not create the pid directory '$FLINT_PID_DIR'."
    export FLINT_LOG_DIR FLINT_PID_DIR
}

# ---------------------------------------------------------------------------
# Binaries
# ---------------------------------------------------------------------------

# flint_find_binary NAME: prints the path of the Flint binary NAME, looking in
# $FLINT_BIN_DIR, <conf dir>/../bin, $FLINT_HOME/bin and
# $FLINT_HOME/target/release, in that order.
flint_find_binary() {
    local name=$1 dir
    if [[ -n ${FLINT_BIN_DIR:-} ]]; then
        if [[ -x $FLINT_BIN_DIR/$name && ! -d $FLINT_BIN_DIR/$name ]]; then
            printf '%s\n' "$(flint_abs_path "$FLINT_BIN_DIR")/$name"
            return 0
        fi
        flint_err "Could not find the executable '$name' in FLINT_BIN_DIR ('$FLINT_BIN_DIR')."
        return 1
    fi
    local -a dirs=()
    for dir in "$(dirname -- "$FLINT_CONF_DIR")/bin" "$FLINT_HOME/bin" "$FLINT_HOME/target/release"; do
        if [[ " ${dirs[*]} " != *" $dir "* ]]; then
            dirs+=("$dir")
        fi
    done
    for dir in "${dirs[@]}"; do
        if [[ -x $dir/$name && ! -d $dir/$name ]]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    flint_err "Could not find the executable '$name' (looked in: ${dirs[*]})."
    flint_err "Build it with 'cargo build --release --bins' or point FLINT_BIN_DIR at it."
    return 1
}

# Maps a daemon (role) name to its binary name.
flint_daemon_binary() {
    case $1 in
        standalonesession) printf '%s\n' flint-jobmanager ;;
        taskexecutor) printf '%s\n' flint-taskmanager ;;
        *) return 1 ;;
    esac
}

# ---------------------------------------------------------------------------
# Processes and pid files
# ---------------------------------------------------------------------------

# flint_pid_file ROLE: the pid file of a role (needs flint_init_dirs).
flint_pid_file() {
    printf '%s\n' "$FLINT_PID_DIR/flint-$FLINT_IDENT_STRING-$1.pid"
}

# flint_pid_is BINARY PID: succeeds if PID is a live (non-zombie) process
# running the Flint binary BINARY. Used before every signal so that a pid
# recycled by an unrelated process is never signalled.
flint_pid_is() {
    local name=$1 pid=$2 arg
    local -a argv=()
    [[ $pid =~ ^[1-9][0-9]*$ ]] || return 1
    if [[ -d /proc/$pid ]]; then
        mapfile -d '' -t argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
    elif [[ ! -d /proc/self ]] && command -v ps >/dev/null 2>&1; then
        # No procfs (e.g. macOS): fall back to ps.
        read -r -a argv <<<"$(ps -p "$pid" -o args= 2>/dev/null)" || true
    else
        return 1
    fi
    # argv[0] is the binary; argv[1] covers interpreters running a script.
    for arg in "${argv[@]:0:2}"; do
        [[ ${arg##*/} == "$name" ]] && return 0
    done
    return 1
}

# flint_read_pids FILE: prints the pids in a pid file, one per line.
flint_read_pids() {
    [[ -f $1 ]] || return 0
    awk '{ gsub(/[ \t\r]/, "") } /^[0-9]+$/ { print }' "$1"
}

# flint_lock / flint_unlock: serialise pid file updates through an flock on
# the pid directory (when flock is available). FLINT_LOCK_FD must not be
# inherited by daemons; close it with {FLINT_LOCK_FD}<&- when forking.
FLINT_LOCK_FD=
flint_lock() {
    if command -v flock >/dev/null 2>&1; then
        exec {FLINT_LOCK_FD}<"$FLINT_PID_DIR"
        flock "$FLINT_LOCK_FD"
    fi
}

flint_unlock() {
    if [[ -n $FLINT_LOCK_FD ]]; then
        flock -u "$FLINT_LOCK_FD" || true
        exec {FLINT_LOCK_FD}<&-
        FLINT_LOCK_FD=
    fi
}

# ---------------------------------------------------------------------------
# Hosts
# ---------------------------------------------------------------------------

# flint_read_hosts FILE: prints the host entries of a masters/workers file:
# comments (#...) and blank lines dropped, surrounding whitespace trimmed, and
# a network-hierarchy prefix (/rack/host) reduced to the host.
flint_read_hosts() {
    awk '{
        sub(/\r$/, ""); sub(/#.*/, "")
        gsub(/^[ \t]+|[ \t]+$/, "")
        if ($0 == "") next
        h = $1
        if (h ~ /\//) { n = split(h, parts, "/"); h = parts[n] }
        if (h != "") print h
    }' "$1"
}

# flint_split_host_port ENTRY: splits "host", "host:port", "[v6]:port" or a
# bare IPv6 address; sets FLINT_SPLIT_HOST and FLINT_SPLIT_PORT (may be empty).
# shellcheck disable=SC2034
flint_split_host_port() {
    local entry=$1
    FLINT_SPLIT_HOST=$entry
    FLINT_SPLIT_PORT=
    if [[ $entry =~ ^\[([^]]+)\](:([0-9]*))?$ ]]; then
        FLINT_SPLIT_HOST=${BASH_REMATCH[1]}
        FLINT_SPLIT_PORT=${BASH_REMATCH[3]}
    elif [[ $entry =~ ^([^:]+):([^:]*)$ ]]; then
        FLINT_SPLIT_HOST=${BASH_REMATCH[1]}
        FLINT_SPLIT_PORT=${BASH_REMATCH[2]}
    fi
}

FLINT_LOCAL_NAMES=
# flint_is_local_host HOST: succeeds if HOST names this machine.
flint_is_local_host() {
    local host=${1,,} name
    host=${host#[}
    host=${host%]}
    case $host in
        localhost | localhost.localdomain | 127.* | ::1 | 0.0.0.0 | "${FLINT_HOSTNAME,,}") return 0 ;;
    esac
    if [[ -z $FLINT_LOCAL_NAMES ]]; then
        FLINT_LOCAL_NAMES=" $(hostname 2>/dev/null) $(hostname -s 2>/dev/null) $(hostname -f 2>/dev/null) "
        FLINT_LOCAL_NAMES=${FLINT_LOCAL_NAMES,,}
    fi
    for name in $FLINT_LOCAL_NAMES; do
        [[ $host == "$name" ]] && return 0
    done
    return 1
}

# flint_remote_command SCRIPT ARGS...: prints a shell command line that runs
# one of our scripts on another host with the same layout, forwarding the
# FLINT_* settings that were given explicitly through the environment (paths
# are made absolute, as the remote shell starts in the home directory).
flint_remote_command() {
    local cmd="" setting name value
    for setting in "${FLINT_GIVEN_ENV[@]}"; do
        name=${setting%%=*}
        value=${setting#*=}
        case $name in
            FLINT_HOME | FLINT_CONF_DIR | FLINT_BIN_DIR | FLINT_LOG_DIR | FLINT_PID_DIR)
                value=$(flint_abs_path "$value")
                ;;
        esac
        cmd+="$name=$(printf '%q' "$value") "
    done
    cmd+="/bin/bash -l $(printf '%q' "$FLINT_SCRIPTS_DIR/$1")"
    shift
    if (($#)); then
        cmd+=" $(printf '%q ' "$@")"
    fi
    printf '%s\n' "${cmd% }"
}

# flint_ssh HOST COMMAND: runs COMMAND on HOST with $FLINT_SSH_OPTS (else
# env.ssh.opts).
flint_ssh() {
    local host=$1 cmd=$2 opts
    local -a ssh_opts=()
    opts=${FLINT_SSH_OPTS-$(flint_config_get env.ssh.opts)}
    read -r -a ssh_opts <<<"$opts" || true
    ssh -n "${ssh_opts[@]}" -- "$host" "$cmd"
}

# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------

# flint_parse_daemon_args ARGS...: validates the arguments passed through to
# a daemon and stores them in FLINT_DAEMON_ARGS. Dynamic properties may be
# written "-D key=value" or "-Dkey=value"; both are passed on as
# "-D key=value". Any other argument is passed through unchanged.
FLINT_DAEMON_ARGS=()
flint_parse_daemon_args() {
    FLINT_DAEMON_ARGS=()
    while (($#)); do
        case $1 in
            -D)
                (($# >= 2)) || flint_die "Option -D needs an argument of the form key=value."
                [[ $2 == ?*=* ]] || flint_die "Invalid dynamic property '-D $2', expected -D key=value."
                FLINT_DAEMON_ARGS+=(-D "$2")
                shift 2
                ;;
            -D?*)
                [[ ${1#-D} == ?*=* ]] || flint_die "Invalid dynamic property '$1', expected -D key=value."
                FLINT_DAEMON_ARGS+=(-D "${1#-D}")
                shift
                ;;
            *)
                FLINT_DAEMON_ARGS+=("$1")
                shift
                ;;
        esac
    done
}

# ---------------------------------------------------------------------------
# Cluster helpers (start-cluster.sh / stop-cluster.sh)
# ---------------------------------------------------------------------------

# flint_read_hosts_file NAME: reads conf/NAME (masters or workers) into the
# array FLINT_HOSTS; fails with a message if the file is missing.
FLINT_HOSTS=()
flint_read_hosts_file() {
    local file=$FLINT_CONF_DIR/$1
    FLINT_HOSTS=()
    if [[ ! -f $file ]]; then
        flint_err "No $1 file. Please specify $1 in '$file'."
        return 1
    fi
    mapfile -t FLINT_HOSTS < <(flint_read_hosts "$file")
}

# flint_run_on_host HOST SCRIPT ARGS...: runs one of our scripts, locally if
# HOST is this machine, else over ssh.
flint_run_on_host() {
    local host=$1 script=$2
    shift 2
    if flint_is_local_host "$host"; then
        "$FLINT_SCRIPTS_DIR/$script" "$@"
    else
        flint_ssh "$host" "$(flint_remote_command "$script" "$@")"
    fi
}

# flint_taskmanagers ACTION: runs "taskmanager.sh ACTION" once per line of
# conf/workers; local ones one after another, remote ones in parallel.
flint_taskmanagers() {
    local action=$1 worker rc=0 job
    local -a jobs=()
    flint_read_hosts_file workers || return 1
    if ((${#FLINT_HOSTS[@]} == 0)); then
        flint_err "No workers listed in '$FLINT_CONF_DIR/workers'."
        return 1
    fi
    FLINT_SSH_OPTS=${FLINT_SSH_OPTS-$(flint_config_get env.ssh.opts)}
    for worker in "${FLINT_HOSTS[@]}"; do
        if flint_is_local_host "$worker"; then
            flint_run_on_host "$worker" taskmanager.sh "$action" || rc=1
        else
            flint_run_on_host "$worker" taskmanager.sh "$action" &
            jobs+=("$!")
        fi
    done
    for job in "${jobs[@]}"; do
        wait "$job" || rc=1
    done
    return "$rc"
}
