#!/usr/bin/env bash
#
# Starts a Flint standalone cluster, like Flink's bin/start-cluster.sh:
#
# - without high availability (high-availability.type unset or "none"), one
#   JobManager on this machine;
# - with ZooKeeper high availability, one JobManager per line of
#   conf/masters ("host[:webui-port]"), started as
#   "jobmanager.sh start host [webui-port]";
# - then one TaskManager per line of conf/workers (a host listed twice gets
#   two TaskManagers).
#
# Hosts naming this machine are started locally; other hosts over ssh
# (options from FLINT_SSH_OPTS or env.ssh.opts), running the scripts at the
# same path as here.

set -euo pipefail

# The real directory of this script, through any symlinks.
SCRIPTS_DIR=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
# shellcheck source=config.sh source-path=SCRIPTDIR
. "$SCRIPTS_DIR/config.sh"

if (($#)); then
    echo "Usage: start-cluster.sh" >&2
    exit 1
fi

flint_require_conf_dir
rc=0

# Start the JobManager instance(s).
if [[ $(flint_ha_mode) == zookeeper ]]; then
    flint_read_hosts_file masters || exit 1
    if ((${#FLINT_HOSTS[@]} == 0)); then
        flint_die "No masters listed in '$FLINT_CONF_DIR/masters'."
    fi
    FLINT_SSH_OPTS=${FLINT_SSH_OPTS-$(flint_config_get env.ssh.opts)}
    echo "Starting HA cluster with ${#FLINT_HOSTS[@]} masters."
    masters=("${FLINT_HOSTS[@]}")
    for master in "${masters[@]}"; do
        flint_split_host_port "$master"
        args=(start "$FLINT_SPLIT_HOST")
        if [[ -n $FLINT_SPLIT_PORT ]]; then
            args+=("$FLINT_SPLIT_PORT")
        fi
        flint_run_on_host "$FLINT_SPLIT_HOST" jobmanager.sh "${args[@]}" || rc=1
    done
else
    echo "Starting cluster."
    "$FLINT_SCRIPTS_DIR/jobmanager.sh" start || rc=1
fi

# Start the TaskManager instance(s).
flint_taskmanagers start || rc=1

exit "$rc"
