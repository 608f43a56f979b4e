#!/usr/bin/env python3
"""Muon side by side: torch.optim.Muon and `optim bench --optimizer muon`, alternately.

One square float32 matrix of side `--side` (default 4096, issue #10's target), Muon's defaults
(bfloat16 Newton–Schulz, 5 steps), `--threads` threads on both sides. Each round runs
`tools/bench/pytorch_bench.py --only muon` and then `optim bench --no-reference --json`, each the
median of `--steps` timed steps after 2 warm-up steps; the rounds alternate so that both sides
see the same machine. Prints every round, then the medians over the rounds and the ratio
torch ÷ Swift (above 1: Swift is faster).

    /tmp/venv/bin/python tools/bench/muon_bench.py --optim .build/release/optim --side 4096 --rounds 3 --steps 3

Needs torch (for the torch side only); never used by the tests or CI.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def last_json(output):
    rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return rows[-1]["seconds_per_step"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optim", default=".build/release/optim", help="the optim executable")
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    params = args.side * args.side
    torch_times, swift_times = [], []
    for round_ in range(args.rounds):
        torch_out = subprocess.run(
            [sys.executable, os.path.join(HERE, "pytorch_bench.py"), "--only", "muon", "--params", str(params),
             "--threads", str(args.threads), "--steps", str(args.steps)],
            check=True, capture_output=True, text=True).stdout
        torch_times.append(last_json(torch_out))
        swift_out = subprocess.run(
            [args.optim, "bench", "--optimizer", "muon", "--params", str(params), "--threads", str(args.threads),
             "--steps", str(args.steps), "--no-reference", "--json"],
            check=True, capture_output=True, text=True).stdout
        swift_times.append(last_json(swift_out))
        print(json.dumps({"round": round_, "torch_s_per_step": torch_times[-1], "swift_s_per_step": swift_times[-1]}),
              flush=True)
    torch_median, swift_median = statistics.median(torch_times), statistics.median(swift_times)
    print(json.dumps({"side": args.side, "threads": args.threads, "steps": args.steps, "rounds": args.rounds,
                      "torch_median_s": torch_median, "swift_median_s": swift_median,
                      "torch_over_swift": torch_median / swift_median}), flush=True)


if __name__ == "__main__":
    main()
