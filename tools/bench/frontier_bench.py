#!/usr/bin/env python3
"""Time the reference packages of the optimizers beyond torch.optim on CPU, printing the same JSON
fields as `optim bench --json`.

    python3 tools/bench/frontier_bench.py --params 67108864 --threads 2 --steps 10

One JSON object per (optimizer, implementation) and line, each on its reference package's fastest
CPU path:
  schedulefree 1.4.1 AdamWScheduleFree / SGDScheduleFree (foreach=True, their default);
  bitsandbytes 0.50.2 AdEMAMix(optim_bits=32) on CPU tensors (its CPU backend);
  prodigyopt 1.1.2 Prodigy (its only path);
  pytorch-optimizer 4.1.0 MARS (foreach=True, mars_type "adamw"), SOAP (on a square matrix);
  optax 0.2.8 lamb / lars / adan under jax.jit, the update and apply_updates fused in one jitted
  function with the parameters, gradients and state donated (updated in place).
Each runs `--steps` timed steps after 2 warm-up steps; `seconds_per_step` is the median. A package
that fails to import is skipped with a note on stderr. Never used by the tests or CI.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def torch_rows():
    import torch
    rows = []
    try:
        import schedulefree
        rows.append(("schedule_free_adamw", "schedulefree-foreach",
                     lambda ps: _train(schedulefree.AdamWScheduleFree(ps, lr=2.5e-3, foreach=True))))
        rows.append(("schedule_free_sgd", "schedulefree-foreach",
                     lambda ps: _train(schedulefree.SGDScheduleFree(ps, lr=1.0, foreach=True))))
    except ImportError as error:
        print(f"skipping schedulefree: {error}", file=sys.stderr)
    try:
        import bitsandbytes as bnb
        rows.append(("ademamix", "bitsandbytes-32bit-cpu", lambda ps: bnb.optim.AdEMAMix(ps, lr=1e-3, optim_bits=32)))
    except Exception as error:  # bitsandbytes raises more than ImportError without a GPU
        print(f"skipping bitsandbytes: {error}", file=sys.stderr)
    try:
        import prodigyopt
        rows.append(("prodigy", "prodigyopt", lambda ps: prodigyopt.Prodigy(ps, lr=1.0)))
    except ImportError as error:
        print(f"skipping prodigyopt: {error}", file=sys.stderr)
    try:
        import pytorch_optimizer
        rows.append(("mars", "pytorch-optimizer-foreach", lambda ps: pytorch_optimizer.MARS(ps, lr=3e-3, foreach=True)))
        rows.append(("soap", "pytorch-optimizer", lambda ps: pytorch_optimizer.SOAP(ps, lr=3e-3)))
    except ImportError as error:
        print(f"skipping pytorch-optimizer: {error}", file=sys.stderr)
    return rows


def _train(optimizer):
    optimizer.train()
    return optimizer


def bench_torch(make, params, tensors, steps, name):
    import torch
    base = params // tensors
    sizes = [base] * (tensors - 1) + [params - base * (tensors - 1)]
    generator = torch.Generator().manual_seed(0)
    ps = []
    for size in sizes:
        shape = (size,)
        if name == "soap":
            side = int(size ** 0.5)
            shape = (side, side)
        p = torch.nn.Parameter(torch.rand(shape, generator=generator) * 2 - 1)
        p.grad = torch.rand(shape, generator=generator) * 2 - 1
        ps.append(p)
    optimizer = make(ps)
    with torch.no_grad():
        for _ in range(2):
            optimizer.step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            optimizer.step()
            times.append(time.perf_counter() - start)
    del optimizer, ps
    gc.collect()
    return statistics.median(times), {"torch": torch.__version__}


def bench_optax(name, params, tensors, steps):
    import jax
    import jax.numpy as jnp
    import optax
    transformation = {"lamb": lambda: optax.lamb(1e-3), "lars": lambda: optax.lars(1.0),
                      "adan": lambda: optax.adan(1e-3)}[name]()
    base = params // tensors
    sizes = [base] * (tensors - 1) + [params - base * (tensors - 1)]
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * len(sizes))
    p = [jax.random.uniform(keys[2 * i], (size,), jnp.float32, -1, 1) for i, size in enumerate(sizes)]
    g = [jax.random.uniform(keys[2 * i + 1], (size,), jnp.float32, -1, 1) for i, size in enumerate(sizes)]
    state = transformation.init(p)

    def step(p, state, g):
        updates, state = transformation.update(g, state, p)
        return optax.apply_updates(p, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    for _ in range(2):
        p, state = step(p, state, g)
        jax.block_until_ready(p)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        p, state = step(p, state, g)
        jax.block_until_ready(p)
        times.append(time.perf_counter() - start)
    return statistics.median(times), {"jax": jax.__version__, "optax": optax.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=64 << 20)
    parser.add_argument("--tensors", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--only", nargs="*", help="optimizer names to run (default: all)")
    args = parser.parse_args()

    def report(name, implementation, seconds, versions):
        print(json.dumps({
            "optimizer": name, "implementation": implementation, "params": args.params, "tensors": args.tensors,
            "threads": args.threads, "steps": args.steps, "seconds_per_step": seconds,
            "params_per_second": args.params / seconds, **versions,
        }, sort_keys=True), flush=True)

    wanted = lambda name: not args.only or name in args.only
    # XLA's CPU backend uses every core of the machine (2 here, as --threads in the figures).
    import torch
    torch.set_num_threads(args.threads)
    for name, implementation, make in torch_rows():
        if wanted(name):
            report(name, implementation, *bench_torch(make, args.params, args.tensors, args.steps, name))
    for name in ("lamb", "lars", "adan"):
        if wanted(name):
            try:
                seconds, versions = bench_optax(name, args.params, args.tensors, args.steps)
            except ImportError as error:
                print(f"skipping optax: {error}", file=sys.stderr)
                continue
            report(name, "optax-jit", seconds, versions)


if __name__ == "__main__":
    main()
