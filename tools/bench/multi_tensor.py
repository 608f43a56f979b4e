#!/usr/bin/env python3
"""The multi-tensor target: AdamW over 20,000 tensors against one tensor of the same total size.

    python3 tools/bench/multi_tensor.py                       # 5 alternating rounds, 81,920,000 parameters
    python3 tools/bench/multi_tensor.py --rounds 9 --binary .build/release/optim --contiguous

Runs `optim bench --no-reference --json` for `--tensors 1` and `--tensors 20000` in turn, `--rounds`
times (alternating, so that both see the same machine), and prints each run, the medians of the
runs' medians, and their ratio (the target: ≤ 1.10). `--contiguous` also times the 20,000 tensors
borrowing one flat allocation (`optim bench --contiguous`), to separate the caller's memory layout
from the optimizer's own per-tensor cost. Builds nothing: build `optim` first
(`swift build -c release --product optim`).
"""
import argparse
import json
import os
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "optim"))
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--params", type=int, default=81920000)
    parser.add_argument("--tensors", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--contiguous", action="store_true")
    args = parser.parse_args()
    cases = [("1 tensor", ["--tensors", "1"]), (f"{args.tensors} tensors", ["--tensors", str(args.tensors)])]
    if args.contiguous:
        cases.append((f"{args.tensors} tensors, contiguous", ["--tensors", str(args.tensors), "--contiguous"]))
    times = {label: [] for label, _ in cases}
    for round in range(args.rounds):
        for label, extra in cases:
            output = subprocess.run([args.binary, "bench", "--json", "--no-reference", "--optimizer", args.optimizer, "--params",
                                     str(args.params), "--threads", str(args.threads), "--steps", str(args.steps)] + extra,
                                    check=True, capture_output=True, text=True).stdout
            row = next(r for r in map(json.loads, output.strip().splitlines()) if r["implementation"] == "swift")
            times[label].append(row["seconds_per_step"])
            print(f"round {round + 1}: {label}: {row['seconds_per_step']:.5f} s/step", flush=True)
    one = statistics.median(times[cases[0][0]])
    for label, _ in cases:
        median = statistics.median(times[label])
        print(f"{label}: median {median:.5f} s/step, {median / one:.3f}× one tensor")


if __name__ == "__main__":
    main()
