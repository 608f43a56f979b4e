#!/usr/bin/env python3
"""Swift, its C reference and PyTorch, side by side on one machine.

    /tmp/venv/bin/python tools/bench/side_by_side.py --only adamw sgd lion --rounds 5

For each optimizer in turn, each round: `optim bench --json` (Swift and the C reference, alternating
inside the run) and then `tools/bench/pytorch_bench.py --only NAME` (torch's paths; the fastest is
kept). Rounds alternate over the optimizers, so every side sees the same machine. Prints each
round as JSON, then a Markdown row per optimizer: medians, the per-round Swift ÷ C and
torch ÷ Swift ratios, and their medians. Builds nothing: `swift build -c release --product optim`
first. Needs torch (a venv under /tmp); never used by the tests or CI.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rows(output):
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "optim"))
    parser.add_argument("--only", nargs="+", required=True, help="registry names")
    parser.add_argument("--params", type=int, default=67108864)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15, help="timed steps of optim bench (torch: 10)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs = {name: [] for name in args.only}
    for round in range(args.rounds):
        for name in args.only:
            ours = rows(subprocess.run([args.binary, "bench", "--json", "--optimizer", name, "--params", str(args.params), "--threads",
                                        str(args.threads), "--steps", str(args.steps)], capture_output=True, text=True).stdout)
            theirs = rows(subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench", "pytorch_bench.py"), "--params", str(args.params),
                                          "--threads", str(args.threads), "--steps", "10", "--only", name], capture_output=True, text=True).stdout)
            run = {"round": round, "optimizer": name}
            for row in ours:
                run["swift" if row["implementation"] == "swift" else "c"] = row["seconds_per_step"]
            if theirs:
                best = min(theirs, key=lambda row: row["seconds_per_step"])
                run["torch"], run["torch_path"] = best["seconds_per_step"], best["implementation"]
            runs[name].append(run)
            print(json.dumps(run), flush=True)
    print("| optimizer | Swift s/step | C s/step | Swift ÷ C per round | median | torch s/step (path) | torch ÷ Swift per round | median |")
    print("| --- | ---: | ---: | --- | ---: | ---: | --- | ---: |")
    for name, rounds in runs.items():
        swift = [r["swift"] for r in rounds if "swift" in r]
        versus_c = [r["c"] / r["swift"] for r in rounds if "c" in r and "swift" in r]
        versus_torch = [r["torch"] / r["swift"] for r in rounds if "torch" in r and "swift" in r]
        c = [r["c"] for r in rounds if "c" in r]
        torch = [r["torch"] for r in rounds if "torch" in r]
        def median(values, form):
            return form.format(statistics.median(values)) if values else "—"
        print(f"| {name} | {median(swift, '{:.4f}')} | {median(c, '{:.4f}')} | {' / '.join(f'{v:.3f}' for v in versus_c) or '—'} | "
              f"{median(versus_c, '{:.3f}')} | {median(torch, '{:.4f}')} ({rounds[-1].get('torch_path', '—')}) | "
              f"{' / '.join(f'{v:.2f}' for v in versus_torch) or '—'} | {median(versus_torch, '{:.2f}×')} |")


if __name__ == "__main__":
    main()
