#!/usr/bin/env python3
"""L-BFGS reference fixtures: torch.optim.LBFGS (torch 2.15) stepping on objectives the replay
evaluates itself.

L-BFGS calls its closure several times per step, so its fixtures cannot list gradients. They use
this project's extension of `optim-fixture/1` (tools/reference/README.md):

- a top-level "objective": {"function": "rosenbrock"} (chained Rosenbrock over the parameters
  flattened in file order) or {"function": "quadratic", "curvature": [...], "center": [...]}
  (sum of 1/2 h_i (x_i - c_i)^2);
- steps without "grads", each with "evaluations": torch's `func_evals` (closure calls since the
  start) after that step, which a replay must reproduce exactly, and optional "lr" and "expected".

The closure computes loss and gradient with NumPy float32 scalars in the order that
`Sources/OptimFixtures/Objective.swift` uses, so both sides see the same gradients bit for bit.

Usage:
  python3 tools/reference/make_lbfgs_fixtures.py --out Tests/Fixtures/reference
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import FORMAT, dumps, f32_list  # noqa: E402

DEFAULTS = {"lr": 1, "max_iter": 20, "max_eval": None, "tolerance_grad": 1e-7,
            "tolerance_change": 1e-9, "history_size": 100, "line_search_fn": None,
            "maximize": False}
F = np.float32


def check_defaults():
    sig = inspect.signature(torch.optim.LBFGS.__init__).parameters
    for key, value in DEFAULTS.items():
        if sig[key].default != value:
            raise SystemExit(f"lbfgs: default {key}={sig[key].default!r}, table says {value!r}")
    extra = set(sig) - set(DEFAULTS) - {"self", "params"}
    if extra:
        raise SystemExit(f"lbfgs: constructor arguments missing from the table: {sorted(extra)}")


def evaluate(objective: dict, x: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """Loss and gradient in float32, in the order of Objective.swift."""
    g = np.zeros(len(x), dtype=F)
    loss = F(0)
    if objective["function"] == "rosenbrock":
        for i in range(len(x) - 1):
            a = F(1) - x[i]
            b = x[i + 1] - x[i] * x[i]
            term = F(100) * (b * b) + a * a
            loss = loss + term
            g[i] = g[i] + (F(-2) * a - F(400) * x[i] * b)
            g[i + 1] = g[i + 1] + F(200) * b
    else:
        h = np.asarray(objective["curvature"], dtype=F)
        c = np.asarray(objective["center"], dtype=F)
        for i in range(len(x)):
            d = x[i] - c[i]
            e = h[i] * d
            loss = loss + F(0.5) * (e * d)
            g[i] = e
    return F(loss), g


def make(name, hp, objective, params, steps, lr=None, expect_every=1):
    full = dict(DEFAULTS)
    full.update(hp)
    torch_params = [torch.nn.Parameter(torch.tensor(np.asarray(data, dtype=F).reshape(shape)))
                    for _, shape, data in params]
    optimizer = torch.optim.LBFGS(torch_params, **full)

    def closure():
        x = np.concatenate([p.detach().numpy().reshape(-1) for p in torch_params]).astype(F)
        loss, g = evaluate(objective, x)
        offset = 0
        for p in torch_params:
            n = p.numel()
            p.grad = torch.tensor(g[offset:offset + n].reshape(p.shape))
            offset += n
        return torch.tensor(loss)

    fx = {"format": FORMAT, "name": name,
          "reference": f"torch.optim.LBFGS (torch {torch.__version__}) on the objective below",
          "optimizer": "lbfgs", "hyperparameters": full, "objective": objective,
          "params": [{"name": n, "shape": list(shape), "data": f32_list(data)} for n, shape, data in params],
          "steps": []}
    for s in range(steps):
        step = {}
        if lr and s in lr:
            optimizer.param_groups[0]["lr"] = lr[s]
            step["lr"] = {"0": lr[s]}
        optimizer.step(closure)
        step["evaluations"] = optimizer.state[torch_params[0]]["func_evals"]
        if s % expect_every == 0 or s == steps - 1:
            step["expected"] = {n: f32_list(p.detach().numpy()) for (n, _, _), p in zip(params, torch_params)}
        fx["steps"].append(step)
    fx["expected"] = {n: f32_list(p.detach().numpy()) for (n, _, _), p in zip(params, torch_params)}
    for p in torch_params:
        if not torch.isfinite(p).all():
            raise SystemExit(f"{name}: non-finite parameter")
    return fx


def quadratic(n, seed, concave=False):
    rng = np.random.default_rng(seed)
    h = np.linspace(1, 12, n) * (-1 if concave else 1)
    return {"function": "quadratic", "curvature": f32_list(h), "center": f32_list(rng.standard_normal(n))}


# torch's own optimizer tests start Rosenbrock at (1.5, 1.5); (-1.5, 2) is a harder start.
ROSENBROCK_START = [("x", [2], [1.5, 1.5])]
HARD_START = [("x", [2], [-1.5, 2.0])]
SPLIT = [("w", [2, 2], [0.5, -1.0, 1.5, 0.25]), ("b", [3], [0.0, 2.0, -0.5])]

FIXTURES = [
    ("lbfgs-defaults", {}, quadratic(7, 1), SPLIT, 3, None),
    ("lbfgs-rosenbrock", {"lr": 0.1}, {"function": "rosenbrock"}, ROSENBROCK_START, 8, None),
    ("lbfgs-rosenbrock-strong-wolfe", {"line_search_fn": "strong_wolfe"}, {"function": "rosenbrock"},
     ROSENBROCK_START, 6, None),
    ("lbfgs-rosenbrock-4d-strong-wolfe-history", {"line_search_fn": "strong_wolfe", "history_size": 3, "max_iter": 12},
     {"function": "rosenbrock"}, [("x", [4], [-1.2, 1.0, -1.2, 1.0])], 6, None),
    ("lbfgs-max-eval", {"lr": 0.5, "max_iter": 10, "max_eval": 7, "history_size": 4}, quadratic(7, 2), SPLIT, 5, None),
    ("lbfgs-tolerances", {"line_search_fn": "strong_wolfe", "tolerance_grad": 1e-3, "tolerance_change": 1e-4},
     {"function": "rosenbrock"}, ROSENBROCK_START, 6, None),
    ("lbfgs-rosenbrock-hard-start", {"lr": 0.1}, {"function": "rosenbrock"}, HARD_START, 8, None),
    ("lbfgs-maximize", {"maximize": True, "line_search_fn": "strong_wolfe"}, quadratic(7, 3, concave=True), SPLIT, 3, None),
    ("lbfgs-lr-schedule", {"lr": 0.2, "max_iter": 5}, quadratic(7, 4), SPLIT, 8, {2: 0.4, 5: 0.1}),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="Tests/Fixtures/reference")
    args = parser.parse_args(argv)
    check_defaults()
    os.makedirs(args.out, exist_ok=True)
    for name, hp, objective, params, steps, lr in FIXTURES:
        fx = make(name, hp, objective, params, steps, lr)
        path = os.path.join(args.out, name + ".json")
        with open(path, "w") as f:
            f.write(dumps(fx) + "\n")
        print(f"{name}: {fx['steps'][-1]['evaluations']} evaluations in {steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
