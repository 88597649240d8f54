#!/usr/bin/env bash
#
# Starts or stops a Flint JobManager (the "standalonesession" daemon) on this
# host, like Flink's bin/jobmanager.sh.
#
#   jobmanager.sh start [host] [webui-port] [-D key=value]...
#   jobmanager.sh start-foreground [host] [webui-port] [-D key=value]...
#   jobmanager.sh stop
#   jobmanager.sh stop-all
#
# host becomes -D jobmanager.rpc.address=host and webui-port becomes
# -D rest.port=port. See flint-daemon.sh and config.sh for file locations
# and environment variables.

set -euo pipefail

USAGE="Usage: jobmanager.sh ((start|start-foreground) [host] [webui-port] [-D key=value]...)|stop|stop-all"

# The real directory of this script, through any symlinks.
SCRIPTS_DIR=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")

if (($# < 1)); then
    echo "$USAGE" >&2
    exit 1
fi
ACTION=$1
shift

case $ACTION in
    start | start-foreground)
        # Up to two leading positional arguments: host and web UI port.
        host=
        port=
        if (($#)) && [[ $1 != -* ]]; then
            host=$1
            shift
            if (($#)) && [[ $1 != -* ]]; then
                port=$1
                shift
            fi
        fi
        args=()
        if [[ -n $host ]]; then
            args+=(-D "jobmanager.rpc.address=$host")
        fi
        if [[ -n $port ]]; then
            if [[ ! $port =~ ^[0-9]+$ ]] || ((10#$port > 65535)); then
                echo "Invalid web UI port '$port'." >&2
                echo "$USAGE" >&2
                exit 1
            fi
            args+=(-D "rest.port=$((10#$port))")
        fi
        exec "$SCRIPTS_DIR/flint-daemon.sh" "$ACTION" standalonesession "${args[@]}" "$@"
        ;;
    stop | stop-all)
        exec "$SCRIPTS_DIR/flint-daemon.sh" "$ACTION" standalonesession
        ;;
    *)
        echo "Unknown command '$ACTION'." >&2
        echo "$USAGE" >&2
        exit 1
        ;;
esac
