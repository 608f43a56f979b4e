#!/bin/sh
# Training-step throughput (forward, backward, clipping at 1, AdamW) of the example GPT on Jane
# Austen, default shape (4 layers, 4 heads, 128 wide, context 64, batch 12), in tokens/s: the
# release `optim bench-model` (GPT.benchmark) beside PyTorch eager running nanoGPT's model on the
# same shape and step (tools/austen/torch_reference.py bench, torch.set_num_threads(THREADS)).
# Each side prints the median of RUNS runs of 20 steps after 5 warm-up steps; the two alternate
# ROUNDS times so that a busy machine slows both alike.
#
#   tools/austen/bench.sh [ROUNDS] [THREADS]      (env: PYTHON, OPTIM, RUNS)
#
# OPTIM defaults to the portable release build (.build/release/optim, built if missing); for the
# CPU-specific build: swift build -c release -Xswiftc -target-cpu -Xswiftc native, then OPTIM=...
set -eu
cd "$(dirname "$0")/../.."
rounds=${1:-3}
threads=${2:-2}
python=${PYTHON:-/tmp/venv/bin/python}
optim=${OPTIM:-.build/release/optim}
runs=${RUNS:-5}
[ -x "$optim" ] || swift build -c release --product optim
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
i=1
while [ "$i" -le "$rounds" ]; do
    swift_json=$("$optim" bench-model --threads "$threads" --runs "$runs" --json)
    torch_json=$("$python" tools/austen/torch_reference.py bench --threads "$threads" --runs "$runs")
    "$python" - "$swift_json" "$torch_json" <<'PY'
import json, sys
s, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"swift {s['tokens_per_second']:8.0f} tokens/s   torch {t['tokens_per_second']:8.0f} tokens/s   ratio {s['tokens_per_second'] / t['tokens_per_second']:.2f}")
PY
    i=$((i + 1))
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
