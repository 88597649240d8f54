#!/usr/bin/env bash
#
# Starts or stops a Flint TaskManager (the "taskexecutor" daemon) on this
# host, like Flink's bin/taskmanager.sh.
#
#   taskmanager.sh start [-D key=value]...
#   taskmanager.sh start-foreground [-D key=value]...
#   taskmanager.sh stop
#   taskmanager.sh stop-all
#
# See flint-daemon.sh and config.sh for file locations and environment
# variables.

set -euo pipefail

USAGE="Usage: taskmanager.sh (start|start-foreground [-D key=value]...)|stop|stop-all"

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
        exec "$SCRIPTS_DIR/flint-daemon.sh" "$ACTION" taskexecutor "$@"
        ;;
    stop | stop-all)
        exec "$SCRIPTS_DIR/flint-daemon.sh" "$ACTION" taskexecutor
        ;;
    *)
        echo "Unknown command '$ACTION'." >&2
        echo "$USAGE" >&2
        exit 1
        ;;
esac
