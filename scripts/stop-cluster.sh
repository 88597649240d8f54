#!/usr/bin/env bash
#
# Stops a Flint standalone cluster started with start-cluster.sh, like
# Flink's bin/stop-cluster.sh: first "taskmanager.sh stop" once per line of
# conf/workers, then "jobmanager.sh stop" once per line of conf/masters with
# ZooKeeper high availability, else once on this machine.

set -euo pipefail

# The real directory of this script, through any symlinks.
SCRIPTS_DIR=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
# shellcheck source=config.sh source-path=SCRIPTDIR
. "$SCRIPTS_DIR/config.sh"

if (($#)); then
    echo "Usage: stop-cluster.sh" >&2
    exit 1
fi

flint_require_conf_dir
rc=0

# Stop the TaskManager instance(s).
flint_taskmanagers stop || rc=1

# Stop the JobManager instance(s).
if [[ $(flint_ha_mode) == zookeeper ]]; then
    flint_read_hosts_file masters || exit 1
    FLINT_SSH_OPTS=${FLINT_SSH_OPTS-$(flint_config_get env.ssh.opts)}
    masters=("${FLINT_HOSTS[@]}")
    for master in "${masters[@]}"; do
        flint_split_host_port "$master"
        flint_run_on_host "$FLINT_SPLIT_HOST" jobmanager.sh stop || rc=1
    done
else
    "$FLINT_SCRIPTS_DIR/jobmanager.sh" stop || rc=1
fi

exit "$rc"
