#!/usr/bin/env bash
# `optim train --distributed` against a single process, on the digits: data parallel over 2 ranks,
# sharded state over 3 (uneven shards), for DecoupledLionW (the default) and AdamW; each must end
# with the single process's parameters (within float32 rounding). Then checkpoints cross over:
# a sharded run's checkpoint resumed by a single process, and a single process's resumed sharded.
# Sharded checkpoints (--sharded-checkpoint) go from 3 ranks to 2 to a single process. The
# language-model task likewise: 2 ranks overlapping communication with backward and 2 not, and
# 3 with sharded state, and 2 with sharded gradients too (ZeRO-2), each against a single process.
# Exits non-zero on any difference. Needs Open MPI and Python with numpy and safetensors.
#
#   tools/mpi/train-equivalence.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/../.."

configuration=debug
if [[ "${1:-}" == "--release" ]]; then configuration=release; fi
scratch="${MPI_SCRATCH_PATH:-.build/mpi}"
if ! python3 -c "import numpy, safetensors" 2>/dev/null; then
  echo "SKIPPED: train-equivalence needs python3 with numpy and safetensors (pip install numpy safetensors)"
  exit 0
fi

swift build -c "$configuration" --scratch-path "$scratch" --traits MPI --product optim
optim="$(swift build -c "$configuration" --scratch-path "$scratch" --traits MPI --show-bin-path)/optim"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# OPTIM_MPIRUN replaces mpirun: tools/mpi/netns-hosts.sh sets it to run the ranks on separate
# network-namespace hosts over TCP.
mpirun="${OPTIM_MPIRUN:-mpirun}"
work=$(mktemp -d /tmp/optim-mpi-train.XXXXXX)
trap 'rm -rf "$work"' EXIT
common=(--epochs 2 --hidden 64 --batch-size 32 --plain --threads 1)

# compare A B: parameters and state of two checkpoints within float32 rounding.
compare() {
  python3 - "$1" "$2" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
if sorted(a) != sorted(b):
    sys.exit(f"FAIL: tensors differ: {sorted(set(a) ^ set(b))}")
worst = max(float(np.max(np.abs(a[k] - b[k]) / (1e-5 + 1e-3 * np.abs(a[k])))) for k in a)
print(f"    max |diff| / (1e-5 + 1e-3 |value|) = {worst:.3g} over {len(a)} tensors")
if worst > 1:
    sys.exit(f"FAIL: {sys.argv[2]} differs from {sys.argv[1]}")
PY
}

for optimizer in decoupled_lionw adamw; do
  echo "== $optimizer: single process"
  "$optim" train "${common[@]}" --optimizer "$optimizer" --out "$work/$optimizer-single" | tail -2 | head -1
  echo "== $optimizer: mpirun -np 2 --distributed"
  timeout 600 "$mpirun" --oversubscribe -np 2 "$optim" train --distributed "${common[@]}" --optimizer "$optimizer" --out "$work/$optimizer-dp2" | tail -2 | head -1
  compare "$work/$optimizer-single/checkpoint.safetensors" "$work/$optimizer-dp2/checkpoint.safetensors"
  echo "== $optimizer: mpirun -np 3 --distributed --shard-state"
  timeout 600 "$mpirun" --oversubscribe -np 3 "$optim" train --distributed --shard-state "${common[@]}" --optimizer "$optimizer" --out "$work/$optimizer-zero3" | tail -2 | head -1
  compare "$work/$optimizer-single/checkpoint.safetensors" "$work/$optimizer-zero3/checkpoint.safetensors"
  echo "== $optimizer: mpirun -np 3 --distributed --shard-state --shard-gradients (ZeRO-2)"
  timeout 600 "$mpirun" --oversubscribe -np 3 "$optim" train --distributed --shard-state --shard-gradients "${common[@]}" --optimizer "$optimizer" --out "$work/$optimizer-zero2" | tail -2 | head -1
  compare "$work/$optimizer-single/checkpoint.safetensors" "$work/$optimizer-zero2/checkpoint.safetensors"
done

echo "== checkpoints: sharded -> single process -> sharded (adamw, one epoch each)"
one=(--hidden 64 --batch-size 32 --plain --threads 1 --optimizer adamw)
timeout 600 "$mpirun" --oversubscribe -np 2 "$optim" train --distributed --shard-state --epochs 3 "${one[@]}" --out "$work/straight" > /dev/null
# Every leg plans the same 3 epochs (the schedule depends on it) and stops early or resumes.
timeout 600 "$mpirun" --oversubscribe -np 2 "$optim" train --distributed --shard-state --epochs 3 "${one[@]}" --stop-after-epoch 1 --out "$work/leg1" > /dev/null
"$optim" train --epochs 3 "${one[@]}" --stop-after-epoch 2 --resume "$work/leg1/checkpoint.safetensors" --out "$work/leg2" > /dev/null
timeout 600 "$mpirun" --oversubscribe -np 2 "$optim" train --distributed --shard-state --epochs 3 "${one[@]}" --resume "$work/leg2/checkpoint.safetensors" --out "$work/leg3" > /dev/null
compare "$work/straight/checkpoint.safetensors" "$work/leg3/checkpoint.safetensors"

echo "== sharded checkpoints (each rank writes its part): 3 ranks -> 2 ranks -> a single process (adamw, one epoch each)"
timeout 600 "$mpirun" --oversubscribe -np 3 "$optim" train --distributed --shard-state --sharded-checkpoint --epochs 3 "${one[@]}" --stop-after-epoch 1 --out "$work/sleg1" > /dev/null
shards=$(find "$work/sleg1/checkpoint" -name 'shard-*-of-00003.safetensors' | wc -l)
if [[ $shards -ne 3 || ! -f "$work/sleg1/checkpoint/checkpoint.safetensors.index.json" ]]; then
  echo "FAIL: a 3-rank sharded checkpoint should hold 3 shard files and an index:" >&2; ls -l "$work/sleg1/checkpoint" >&2; exit 1
fi
timeout 600 "$mpirun" --oversubscribe -np 2 "$optim" train --distributed --shard-state --sharded-checkpoint --epochs 3 "${one[@]}" --stop-after-epoch 2 --resume "$work/sleg1/checkpoint" --out "$work/sleg2" > /dev/null
"$optim" train --epochs 3 "${one[@]}" --resume "$work/sleg2/checkpoint" --out "$work/sleg3" > /dev/null
compare "$work/straight/checkpoint.safetensors" "$work/sleg3/checkpoint.safetensors"
echo "== the language model (--task austen, a small GPT): single process, -np 2 overlapped, -np 2 after backward, -np 3 sharded"
text=(--task austen --layers 1 --heads 2 --embedding 32 --context 32 --iters 20 --eval-every 10 --eval-batches 2 --sample-length 20 --plain --threads 1)
"$optim" train "${text[@]}" --out "$work/text-single" > /dev/null
timeout 600 "$mpirun" --oversubscribe -np 2 "$optim" train --distributed "${text[@]}" --out "$work/text-dp2" | grep "gradient communication"
timeout 600 "$mpirun" --oversubscribe -np 2 "$optim" train --distributed --no-overlap "${text[@]}" --out "$work/text-dp2-blocking" > /dev/null
timeout 600 "$mpirun" --oversubscribe -np 3 "$optim" train --distributed --shard-state "${text[@]}" --batch-size 12 --out "$work/text-zero3" > /dev/null
timeout 600 "$mpirun" --oversubscribe -np 2 "$optim" train --distributed --shard-state --shard-gradients --bucket-mb 0.01 "${text[@]}" --out "$work/text-zero2" > /dev/null
"$optim" train "${text[@]}" --batch-size 12 --out "$work/text-single-12" > /dev/null
for leg in text-dp2 text-dp2-blocking; do
  compare "$work/text-single/checkpoint.safetensors" "$work/$leg/checkpoint.safetensors"
  lines=$(wc -l < "$work/$leg/timeline.jsonl")
  if [[ $lines -ne 20 ]]; then echo "FAIL: $leg/timeline.jsonl has $lines lines, not one per step (20)" >&2; exit 1; fi
done
compare "$work/text-single-12/checkpoint.safetensors" "$work/text-zero3/checkpoint.safetensors"
compare "$work/text-single/checkpoint.safetensors" "$work/text-zero2/checkpoint.safetensors"
echo "== optim train --distributed matches a single process"
