#!/bin/sh
# Open MPI's launch agent for hosts that are Linux network namespaces on this machine (used by
# tools/mpi/netns-hosts.sh as `--mca plm_rsh_agent`, in place of ssh). Open MPI calls it as
# `AGENT HOST COMMAND...`, HOST being an address 10.77.0.K from the hostfile; it runs COMMAND
# (the remote daemon, orted) inside namespace optim-h(K-1), as ssh would run it on that host.
set -eu
host="$1"
shift
case "$host" in
  10.77.0.*) index=$(( ${host##*.} - 1 )) ;;
  *) echo "netns-agent: unknown host '$host' (expected 10.77.0.K)" >&2; exit 255 ;;
esac
exec ip netns exec "optim-h$index" /bin/sh -c "$*"
