#!/usr/bin/env bash
# Swift ÷ C reference throughput for every optimizer that has a C reference: `optim bench` at
# 64M parameters, 2 threads, 15 steps (Swift and C alternate inside each run), the whole list
# PASSES times in turn (default 2). Prints "pass optimizer swift-s/step ratio" a line. Builds
# nothing: `swift build -c release --product optim` first.
#   tools/bench/every_ratio.sh [PASSES] [BINARY]
set -euo pipefail
passes="${1:-2}"
binary="${2:-$(dirname "$0")/../../.build/release/optim}"
names=$("$binary" list --json | python3 -c 'import json, sys; print(" ".join(r["name"] for r in map(json.loads, sys.stdin) if r["benchmark"]["reference"]["kind"] != "none"))')
for pass in $(seq "$passes"); do
  for name in $names; do
    out=$("$binary" bench --optimizer "$name" --params 67108864 --threads 2 --steps 15 2>&1) || { echo "$pass $name failed"; continue; }
    echo "$pass $name $(echo "$out" | awk '$1 == "swift" {print $2}') $(echo "$out" | awk '/^ratio/ {print $NF}')"
  done
done
