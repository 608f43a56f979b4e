#!/usr/bin/env python3
"""Time PyTorch CPU optimizer steps, printing the same JSON fields as `optim bench --json`.

    python3 tools/bench/pytorch_bench.py --params 67108864 --threads 2 --steps 20

One JSON object per (optimizer, implementation) and line:
  torch.optim AdamW / Adam / SGD (momentum 0.9) with fused=True and with foreach=True,
  the rest of torch.optim's elementwise optimizers on their fastest CPU path (fused where torch has
  it, else foreach), SparseAdam on `grad.to_sparse()`, Muon on one square matrix (`--params` is
  rounded down to a square), lion-pytorch's Lion (its default single-tensor path), torch-adopt's
  ADOPT (foreach).
`--list` prints the optimizer names it has (tools/bench/make_benchmarks.py reads them).
Each runs `--steps` timed steps after 2 warm-up steps; `seconds_per_step` is the median.
Needs torch (and lion-pytorch, torch-adopt for those rows); never used by the tests or CI.
"""
import argparse
import gc
import json
import statistics
import time

import warnings

import torch

warnings.filterwarnings("ignore", category=UserWarning)


# torch 2.15's fused CPU kernels (fused=True works on CPU tensors for these).
FUSED_ON_CPU = {"adagrad"}


def implementations():
    """(optimizer name, implementation name, constructor) for everything available."""
    rows = []
    for name, cls, kwargs in [
        ("adamw", torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-2}),
        ("adam", torch.optim.Adam, {"lr": 1e-3}),
        ("sgd", torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
    ]:
        for mode in ("fused", "foreach"):
            rows.append((name, f"torch-{mode}", lambda ps, cls=cls, kw=kwargs, mode=mode: cls(ps, **kw, **{mode: True})))
    for name, cls, kwargs in [
        ("adagrad", torch.optim.Adagrad, {"lr": 1e-2}),
        ("rmsprop", torch.optim.RMSprop, {"lr": 1e-2}),
        ("adamax", torch.optim.Adamax, {"lr": 2e-3}),
        ("radam", torch.optim.RAdam, {"lr": 1e-3}),
        ("nadam", torch.optim.NAdam, {"lr": 2e-3}),
        ("adadelta", torch.optim.Adadelta, {"lr": 1.0}),
        ("rprop", torch.optim.Rprop, {"lr": 1e-2}),
        ("asgd", torch.optim.ASGD, {"lr": 1e-2, "t0": 0}),
        ("adafactor", torch.optim.Adafactor, {"lr": 1e-2}),
    ]:
        mode = "fused" if "fused" in cls.__init__.__code__.co_varnames and name in FUSED_ON_CPU else "foreach"
        rows.append((name, f"torch-{mode}", lambda ps, cls=cls, kw=kwargs, mode=mode: cls(ps, **kw, **{mode: True})))
    rows.append(("sparse_adam", "torch-sparse", lambda ps: torch.optim.SparseAdam(ps, lr=1e-3)))
    rows.append(("muon", "torch", lambda ps: torch.optim.Muon(ps, lr=1e-3)))
    try:
        from lion_pytorch import Lion
        rows.append(("lion", "lion-pytorch", lambda ps: Lion(ps, lr=1e-4, weight_decay=0.0)))
    except ImportError:
        pass
    try:
        from adopt import ADOPT
        rows.append(("adopt", "torch-adopt-foreach", lambda ps: ADOPT(ps, lr=1e-3, foreach=True)))
    except ImportError:
        pass
    return rows


def bench(make, params, tensors, steps, name=""):
    base = params // tensors
    sizes = [base] * (tensors - 1) + [params - base * (tensors - 1)]
    generator = torch.Generator().manual_seed(0)
    ps = []
    for size in sizes:
        shape = (size,)
        if name == "muon":
            side = int(size ** 0.5)
            shape = (side, side)
        p = torch.nn.Parameter(torch.rand(shape, generator=generator) * 2 - 1)
        p.grad = torch.rand(shape, generator=generator) * 2 - 1
        if name == "sparse_adam":
            p.grad = p.grad.to_sparse()
        ps.append(p)
    optimizer = make(ps)
    for _ in range(2):
        optimizer.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    del optimizer, ps
    gc.collect()
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=64 << 20)
    parser.add_argument("--tensors", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", nargs="*", help="optimizer names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the optimizer names this script has an implementation of, one a line, and exit")
    args = parser.parse_args()
    if args.list:
        print("\n".join(dict.fromkeys(name for name, _, _ in implementations())))
        return
    torch.set_num_threads(args.threads)
    for name, implementation, make in implementations():
        if args.only and name not in args.only:
            continue
        seconds = bench(make, args.params, args.tensors, args.steps, name)
        print(json.dumps({
            "optimizer": name, "implementation": implementation, "params": args.params, "tensors": args.tensors,
            "threads": args.threads, "steps": args.steps, "seconds_per_step": seconds,
            "params_per_second": args.params / seconds, "torch": torch.__version__,
        }, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
