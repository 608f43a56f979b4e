#!/usr/bin/env bash
# A rank killed at a random moment: TRIALS times, start `optim train --distributed` on 2 ranks
# (ZeRO-1 with --shard-state on odd trials), SIGKILL one of the ranks, chosen at random, at a
# random moment between 10 % and 90 % of an uninterrupted run's time (measured first), and check
# that
#   - the job ends within 30 s of the kill (no rank left waiting in a collective),
#   - mpirun's message names the killed rank,
#   - the run folder still holds a complete checkpoint (or none, if the kill came before the
#     first one), and `--resume` from it (or a fresh start) completes the run.
# Exits non-zero on the first failure. Run it under tools/mpi/netns-hosts.sh to put the ranks on
# separate network-namespace hosts.
#
#   tools/mpi/fault-trials.sh [--trials N] [--release]
set -euo pipefail
cd "$(dirname "$0")/../.."

trials=10
configuration=debug
while [[ $# -gt 0 ]]; do
  case "$1" in
    --trials) trials="$2"; shift 2 ;;
    --release) configuration=release; shift ;;
    *) echo "fault-trials: unknown option $1" >&2; exit 2 ;;
  esac
done
scratch="${MPI_SCRATCH_PATH:-.build/mpi}"
swift build -c "$configuration" --scratch-path "$scratch" --traits MPI --product optim
optim="$(swift build -c "$configuration" --scratch-path "$scratch" --traits MPI --show-bin-path)/optim"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun="${OPTIM_MPIRUN:-mpirun}"
work=$(mktemp -d /tmp/optim-mpi-faults.XXXXXX)
trap 'pkill -9 -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
# A checkpoint after every epoch (the kill may also come before the first).
common=(--epochs 100 --hidden 32 --batch-size 64 --plain --threads 1 --optimizer adamw)

# How long a whole run takes here: each kill comes at a random moment between 10 % and 90 % of it.
started=$(date +%s.%N)
"$mpirun" --oversubscribe -np 2 "$optim" train --distributed "${common[@]}" --out "$work/calibration" > "$work/calibration.log" 2>&1 \
  || { echo "the uninterrupted run failed:" >&2; cat "$work/calibration.log" >&2; exit 1; }
duration=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
echo "an uninterrupted run takes ${duration} s"

for ((trial = 1; trial <= trials; trial++)); do
  run="$work/run$trial"
  shard=()
  if (( trial % 2 == 1 )); then shard=(--shard-state); fi
  victim=$(( RANDOM % 2 ))
  delay=$(awk -v r="$RANDOM" -v d="$duration" 'BEGIN { printf "%.2f", d * (0.1 + 0.8 * r / 32767) }')
  if [[ -n "${carried:-}" ]]; then delay=$carried; carried=""; fi
  # A run that finishes before its kill (this run faster than the calibration) is run again with
  # half the delay, in a fresh folder: up to four attempts.
  for ((attempt = 1; attempt <= 4; attempt++)); do
    rm -rf "$run"
    "$mpirun" --oversubscribe -np 2 "$optim" train --distributed "${shard[@]}" "${common[@]}" --out "$run" \
      > "$work/out$trial.log" 2>&1 &
    job=$!
    sleep "$delay"
    # The rank's process: an optim whose environment says OMPI_COMM_WORLD_RANK=victim and whose
    # command line names this trial's run folder.
    pid=""
    look=0
    while [[ -z "$pid" && $look -lt 50 ]]; do  # the ranks may not have started yet
      look=$((look + 1))
      for candidate in $(pgrep -f -- "--out $run" || true); do
        [[ -r /proc/$candidate/environ ]] || continue
        if tr '\0' '\n' < "/proc/$candidate/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$victim" \
            && [[ "$(readlink "/proc/$candidate/exe" 2>/dev/null)" == "$(readlink -f "$optim")" ]]; then
          pid=$candidate
        fi
      done
      if [[ -z "$pid" ]]; then kill -0 "$job" 2>/dev/null || break; sleep 0.1; fi
  done
  if [[ -n "$pid" ]]; then break; fi
  if ! wait "$job"; then cat "$work/out$trial.log" >&2; exit 1; fi
  echo "trial $trial: the run finished before the kill at ${delay} s; again with half the delay"
  delay=$(awk -v d="$delay" 'BEGIN { printf "%.2f", d / 2 }')
  done
  if [[ -z "$pid" ]]; then echo "FAIL trial $trial: four runs finished before their kills" >&2; exit 1; fi
  killed=$(date +%s.%N)
  kill -9 "$pid"
  ended=""
  for ((tenth = 0; tenth < 300; tenth++)); do
    if ! kill -0 "$job" 2>/dev/null; then ended=$(date +%s.%N); break; fi
    sleep 0.1
  done
  if [[ -z "$ended" ]]; then
    echo "FAIL trial $trial: the job still runs 30 s after rank $victim was killed" >&2
    pkill -9 -f -- "--out $run" || true
    exit 1
  fi
  set +e; wait "$job"; status=$?; set -e
  seconds=$(awk -v a="$killed" -v b="$ended" 'BEGIN { printf "%.1f", b - a }')
  if [[ $status -eq 0 ]]; then echo "FAIL trial $trial: the job exited 0 after a rank was killed" >&2; exit 1; fi
  if ! grep -q "rank $victim" "$work/out$trial.log"; then
    echo "FAIL trial $trial: the job's output does not name rank $victim:" >&2; sed 's/^/    /' "$work/out$trial.log" >&2; exit 1
  fi
  # A kill that came after the run had written its summary (the ranks were exiting) leaves
  # nothing to resume: the trial is run again with half the delay, as a run that finished first.
  if python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("status") != "completed")' "$run/summary.json" 2>/dev/null; then
    redone=$(( ${redone:-0} + 1 ))
    if (( redone > 4 )); then echo "FAIL trial $trial: five kills in a row came after the run had completed" >&2; exit 1; fi
    echo "trial $trial: rank $victim was killed at ${delay} s, after the run had completed (the job ended ${seconds} s later, status $status, named the rank); again with half the delay"
    carried=$(awk -v d="$delay" 'BEGIN { printf "%.2f", d / 2 }')
    trial=$((trial - 1))
    continue
  fi
  redone=0
  # Resume from the last complete checkpoint, on the same number of ranks.
  if [[ -f "$run/checkpoint.safetensors" ]]; then
    from="resumed from its checkpoint"
    timeout 600 "$mpirun" --oversubscribe -np 2 "$optim" train --distributed "${shard[@]}" \
      --resume "$run/checkpoint.safetensors" > "$work/resume$trial.log" 2>&1 \
      || { echo "FAIL trial $trial: the resume failed:" >&2; sed 's/^/    /' "$work/resume$trial.log" >&2; exit 1; }
  else
    from="no checkpoint yet: started again"
    timeout 600 "$mpirun" --oversubscribe -np 2 "$optim" train --distributed "${shard[@]}" "${common[@]}" --out "$run" --force \
      > "$work/resume$trial.log" 2>&1 \
      || { echo "FAIL trial $trial: the restart failed:" >&2; sed 's/^/    /' "$work/resume$trial.log" >&2; exit 1; }
  fi
  python3 - "$run/summary.json" <<'PY' || exit 1
import json, sys
status = json.load(open(sys.argv[1])).get("status")
if status != "completed":
    sys.exit(f"FAIL: the resumed run's summary says {status!r}, not 'completed'")
PY
  echo "PASS trial $trial: rank $victim killed at ${delay} s${shard:+ (ZeRO-1)}; the job ended ${seconds} s later (status $status), named the rank; $from, and completed"
done
echo "== $trials kills: every job ended within 30 s and every run completed on resume"
