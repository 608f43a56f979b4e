#!/usr/bin/env python3
"""Optimizer-metric values from the reference code, for the metrics tests.

    python3 tools/reference/make_metric_fixtures.py --out Tests/Fixtures/metrics/reference_metrics.json

Runs seed 004's DecoupledLionW and composer's DecoupledAdamW (loaded as make_fixtures.py loads
them) for a few steps, then records, for the last step:
  - "reported": the reference's own `report_per_parameter_metrics` output (norms, cosines);
  - "pre_reduced": that dictionary after the reference's `pre_reduce_metrics`;
  - "applied": the update actually applied, u = p_before - p_after, measured two-pass in torch,
    with ‖u‖ and cosine(u, g) (our definition of "update"; see OptimizerMetrics.swift).
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import References  # noqa: E402

warnings.filterwarnings("ignore")


def f32(array):
    return [float(np.float32(x)) for x in np.asarray(array, dtype=np.float32).ravel()]


def case(name, make, hyperparameters, seed):
    generator = np.random.default_rng(seed)
    shapes = {"w": [4, 6], "b": [6]}
    start = {n: generator.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    steps = [{n: (generator.standard_normal(s) * 0.5).astype(np.float32) for n, s in shapes.items()} for _ in range(4)]
    params = {n: torch.nn.Parameter(torch.tensor(v)) for n, v in start.items()}
    optimizer = make(list(params.values()), **hyperparameters)
    before = None
    for grads in steps:
        for n, p in params.items():
            p.grad = torch.tensor(grads[n])
        before = {n: p.detach().clone() for n, p in params.items()}
        optimizer.step()
    reported = {}
    for n, p in params.items():
        optimizer.report_per_parameter_metrics(p, n, reported)
    reported = {k: float(v) for k, v in reported.items()}
    pre_reduced = {k: float(v) for k, v in optimizer.pre_reduce_metrics(dict(reported)).items()}
    applied = {}
    for n, p in params.items():
        update = before[n] - p.detach()
        g = p.grad.flatten()
        applied[f"l2_norm/update/{n}"] = float(torch.linalg.vector_norm(update))
        applied[f"cosine/update_grad/{n}"] = float(torch.nn.functional.cosine_similarity(g, update.flatten(), dim=0))
    return {
        "name": name, "optimizer": make.__name__ if hasattr(make, "__name__") else str(make),
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in hyperparameters.items()},
        "params": [{"name": n, "shape": shapes[n], "data": f32(start[n])} for n in shapes],
        "steps": [{"grads": {n: f32(g[n]) for n in shapes}} for g in steps],
        "reported": reported, "pre_reduced": pre_reduced, "applied": applied,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", default=os.path.join(os.path.dirname(__file__), "../../../shared/seeds"))
    parser.add_argument("--composer-wheel")
    args = parser.parse_args()
    references = References(args.composer_wheel, os.path.abspath(args.seeds))
    cases = [
        case("decoupled_lionw", references.DecoupledLionW, {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.0}, 1),
        case("decoupled_lionw-wd", references.DecoupledLionW, {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 1e-4}, 2),
        case("decoupled_adamw", references.DecoupledAdamW, {"lr": 0.01, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.0}, 3),
    ]
    for c, optimizer in zip(cases, ["decoupled_lionw", "decoupled_lionw", "decoupled_adamw"]):
        c["optimizer"] = optimizer
    with open(args.out, "w") as f:
        json.dump({"reference": f"seed 004 DecoupledLionW and composer DecoupledAdamW (torch {torch.__version__})", "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
