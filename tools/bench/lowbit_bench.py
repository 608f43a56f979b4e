#!/usr/bin/env python3
"""Time bitsandbytes' own CPU 8-bit optimizer step (the reference of issue 13's speed target).

One float32 parameter of --params elements with a fixed random gradient, stepped by
bitsandbytes 0.50.2's `Lion8bit` / `AdamW8bit` on CPU torch tensors (its CPU backend: the
blockwise quantizer of libbitsandbytes_cpu and the update of `backends/cpu/ops.py`), and, with
--float32, torch.optim's float32 `AdamW` (foreach) or lion-pytorch's `Lion` beside it. Prints
seconds per step (median of --steps timed steps after 2 warm-up steps) and, with --json, one JSON
object per line. Compare with `optim bench --optimizer NAME --state-dtype int8 --params N
--threads T --steps S` run right before or after (BENCHMARKS.md, "8-bit optimizer state").

With --int4, torchao 0.18's `AdamW4bit` / `Adam4bit` instead (its step compiled by torch.compile,
as the optimizer runs it; compilation happens in the warm-up steps), the reference of
`optim bench --optimizer adamw --state-dtype int4`.

Usage (in a venv with torch and bitsandbytes 0.50.2):
  python3 tools/bench/lowbit_bench.py --optimizer lion --params 67108864 --threads 2 --steps 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def make(name: str, params, int8: bool, int4: bool = False):
    if int4:
        import torchao.optim
        return {"adamw": torchao.optim.AdamW4bit, "adam": torchao.optim.Adam4bit}[name](params, lr=1e-3)
    if int8:
        import bitsandbytes as bnb
        cls = {"lion": bnb.optim.Lion8bit, "adamw": bnb.optim.AdamW8bit, "adam": bnb.optim.Adam8bit}[name]
        return cls(params, lr=1e-4 if name == "lion" else 1e-3)
    if name == "lion":
        from lion_pytorch import Lion
        return Lion(params, lr=1e-4)
    return {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[name](params, lr=1e-3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizer", default="lion", choices=["lion", "adamw", "adam"])
    parser.add_argument("--params", type=int, default=1 << 26)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--float32", action="store_true", help="also time the float32 optimizer")
    parser.add_argument("--int4", action="store_true", help="torchao's 4-bit AdamW4bit/Adam4bit instead of bitsandbytes' 8-bit")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.int4 and args.optimizer == "lion":
        parser.error("--int4: torchao has no 4-bit Lion")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for int8 in ([True, False] if args.float32 else [True]):
        p = torch.nn.Parameter(torch.randn(args.params) * 0.5)
        p.grad = torch.randn(args.params) * 1e-2
        opt = make(args.optimizer, [p], int8, args.int4 and int8)
        times = []
        for step in range(args.steps + 2):
            start = time.perf_counter()
            opt.step()
            elapsed = time.perf_counter() - start
            if step >= 2:
                times.append(elapsed)
        if int8 and args.int4:
            assert type(opt.state[p]["exp_avg"]).__name__ == "OptimState4bit", "torchao kept float32 state"
            label = "torchao-" + args.optimizer + "4bit"
        elif int8:
            state = opt.state[p]
            assert state["state1"].dtype == torch.uint8, "bitsandbytes kept float32 state"
        if not (int8 and args.int4):
            label = ("bitsandbytes-" if int8 else "torch-") + args.optimizer + ("8bit" if int8 else "-float32")
        median = statistics.median(times)
        if args.json:
            print(json.dumps({"implementation": label, "seconds_per_step": median, "params": args.params,
                              "threads": args.threads, "steps": args.steps}))
        else:
            print(f"{label:28s} {median:.5f} s/step (median of {args.steps}, {args.threads} threads, {args.params} params)")
        del opt, p
    return 0


if __name__ == "__main__":
    sys.exit(main())
