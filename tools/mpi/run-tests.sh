#!/usr/bin/env bash
# The MPI tests: builds with the MPI trait, runs the equivalence checks of optim-mpi-tests under
# `mpirun -np 2` and `-np 3` (uneven shards), then checks that an error on one rank ends the job
# with its message instead of hanging it. Exits non-zero on any failure.
#
#   tools/mpi/run-tests.sh [--release]
#
# Needs Open MPI: `apt-get install -y openmpi-bin libopenmpi-dev`. Builds into .build/mpi (or
# $MPI_SCRATCH_PATH), apart from the plain build. Ranks may outnumber cores (--oversubscribe), and
# root may run mpirun (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/../.."

configuration=debug
if [[ "${1:-}" == "--release" ]]; then configuration=release; fi
scratch="${MPI_SCRATCH_PATH:-.build/mpi}"

command -v mpirun >/dev/null || { echo "error: mpirun not found; install openmpi-bin libopenmpi-dev" >&2; exit 1; }
pkg-config --exists ompi-c || { echo "error: pkg-config cannot find ompi-c; install libopenmpi-dev" >&2; exit 1; }

started=$(date +%s)
echo "== swift build --traits MPI ($configuration)"
swift build -c "$configuration" --scratch-path "$scratch" --traits MPI --product optim-mpi-tests
runner="$(swift build -c "$configuration" --scratch-path "$scratch" --traits MPI --show-bin-path)/optim-mpi-tests"
built=$(date +%s)

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# OPTIM_MPIRUN replaces mpirun: tools/mpi/netns-hosts.sh sets it to run the ranks on separate
# network-namespace hosts over TCP.
mpirun="${OPTIM_MPIRUN:-mpirun}"
# A hang must fail the run, not stall CI: every mpirun is bounded.
for ranks in 2 3; do
  echo "== mpirun -np $ranks optim-mpi-tests"
  timeout 900 "$mpirun" --oversubscribe -np "$ranks" "$runner"
done

echo "== mpirun -np 2 optim-mpi-tests --abort-check (rank 1 fails; the job must end with its message)"
set +e
output=$(timeout 120 "$mpirun" --oversubscribe -np 2 "$runner" --abort-check 2>&1)
status=$?
set -e
echo "$output" | sed 's/^/    /'
if [[ $status -eq 124 ]]; then echo "FAIL: the job hung after rank 1's error" >&2; exit 1; fi
if [[ $status -eq 0 ]]; then echo "FAIL: the job succeeded although rank 1 failed" >&2; exit 1; fi
if ! grep -q "rank 1: deliberate failure on rank 1 for the abort check" <<<"$output"; then
  echo "FAIL: rank 1's message is missing from the output" >&2; exit 1
fi
if grep -q "still running after the abort" <<<"$output"; then echo "FAIL: a rank outlived MPI_Abort" >&2; exit 1; fi
echo "PASS the job ended with status $status and rank 1's message"

finished=$(date +%s)
echo "== MPI tests passed: build $((built - started)) s, runs $((finished - built)) s"
