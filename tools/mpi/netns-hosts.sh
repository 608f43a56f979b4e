#!/usr/bin/env bash
# Runs COMMAND with N "hosts": Linux network namespaces optim-h0 … optim-h(N-1), each with its own
# network stack and one address 10.77.0.(i+1)/24 on a veth link into one bridge. It exports
# OPTIM_MPIRUN, an mpirun that starts in optim-h0 with a hostfile of the N addresses (one slot
# each: rank i runs on host i), launches the remote daemons through tools/mpi/netns-agent.sh
# instead of ssh, binds no rank to a core (the "hosts" share this machine's cores, and each would
# pin its rank to its first core: the same one; and with more ranks than cores, ranks that spin
# while they wait take the cores from the ranks they wait for, so they yield), launches with
# direct routing, and allows only the TCP transport (`--mca btl tcp,self`: no shared memory
# between ranks) on the bridge's subnet. The MPI test scripts run their mpirun through it.
#
#   tools/mpi/netns-hosts.sh [--hosts N] [--rate RATE] COMMAND [ARGS...]
#
# --rate (say 1gbit) shapes each host's link with a token bucket (tc tbf). Needs root, iproute2
# and Open MPI. The namespaces and the bridge are removed on exit, whatever the outcome.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"

hosts=3
rate=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --hosts) hosts="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --) shift; break ;;
    -*) echo "netns-hosts: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $# -gt 0 ]] || { echo "usage: tools/mpi/netns-hosts.sh [--hosts N] [--rate RATE] COMMAND [ARGS...]" >&2; exit 2; }
[[ "$hosts" =~ ^[1-9][0-9]*$ && "$hosts" -le 200 ]] || { echo "netns-hosts: --hosts must be 1…200, not '$hosts'" >&2; exit 2; }
command -v ip >/dev/null || { echo "netns-hosts: iproute2 (ip) is missing: apt-get install iproute2" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "netns-hosts: mpirun not found; install openmpi-bin libopenmpi-dev" >&2; exit 1; }

work=$(mktemp -d /tmp/optim-netns.XXXXXX)
# Deleting a namespace frees its veth pair asynchronously (the kernel's cleanup_net work), so a
# second run started at once can meet the old optim-vK and fail with "File exists". Delete the
# host-side links first (synchronous), then the namespaces, and wait until no optim-* link is left.
teardown() {
  local i ns link
  for link in $(ip -o link show | awk -F': ' '$2 ~ /^optim-v[0-9]+/ {sub(/@.*/, "", $2); print $2}'); do
    ip link del "$link" 2>/dev/null || true
  done
  for ns in $(ip netns list | awk '/^optim-h[0-9]+/ {print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  ip link del optim-br0 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    ip -o link show | grep -q ': optim-' || return 0
    sleep 0.1
  done
  echo "netns-hosts: links named optim-* are still there after 10 s: $(ip -o link show | awk -F': ' '/optim-/ {print $2}' | tr '\n' ' ')" >&2
  return 1
}
cleanup() {
  teardown || true
  rm -rf "$work"
}
trap cleanup EXIT
teardown # left over by a run that was killed before its trap ran
mkdir -p "$work"

ip link add optim-br0 type bridge
ip link set optim-br0 up
: > "$work/hostfile"
for ((i = 0; i < hosts; i++)); do
  ns="optim-h$i"
  ip netns add "$ns"
  ip link add "optim-v$i" type veth peer name eth0 netns "$ns"
  ip link set "optim-v$i" master optim-br0 up
  ip -n "$ns" addr add "10.77.0.$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  if [[ -n "$rate" ]]; then
    ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$rate" burst 256kb latency 100ms
  fi
  echo "10.77.0.$((i + 1)) slots=1" >> "$work/hostfile"
done

cat > "$work/mpirun" <<WRAPPER
#!/bin/sh
exec ip netns exec optim-h0 mpirun --hostfile "$work/hostfile" --bind-to none --mca mpi_yield_when_idle 1 \\
  --mca plm_rsh_agent "$root/tools/mpi/netns-agent.sh" \\
  --mca routed direct --mca plm_rsh_no_tree_spawn 1 --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 "\$@"
WRAPPER
chmod +x "$work/mpirun"
export OPTIM_MPIRUN="$work/mpirun"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# Each rank must be on its own host: N ranks report N different addresses.
addresses=$(timeout 60 "$OPTIM_MPIRUN" -np "$hosts" sh -c 'ip -4 -o addr show dev eth0 | awk "{print \$4}"' | sort -u | wc -l)
if [[ "$addresses" -ne "$hosts" ]]; then
  echo "netns-hosts: $hosts ranks reported $addresses different addresses; expected one host per rank" >&2
  exit 1
fi
echo "== $hosts network-namespace hosts up (10.77.0.1-$hosts, TCP only${rate:+, $rate links}); running: $*"
"$@"
