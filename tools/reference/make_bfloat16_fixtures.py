#!/usr/bin/env python3
"""Generate the bfloat16-state fixtures: each optimizer's own reference, its state rounded to
bfloat16 after every step.

`state_dtype: "bfloat16"` (FORMAT.md, "Low-precision optimizer state") keeps every state buffer in
bfloat16, rounded to nearest even. The reference for it is the float32 reference optimizer whose
state tensors are rounded to bfloat16 (`t.copy_(t.to(torch.bfloat16))`, torch's round to nearest
even) before the first step and after every step: every element of the state is then exactly what
a bfloat16 tensor would hold, and each step computes in float32 from it, as swift-optim's fused
step does (widen, update in float32, round).

The references are those of `make_fixtures.py` (torch 2.15's `torch.optim`, lion-pytorch 0.2.5,
torch-adopt 0.1.0, composer 0.32.1's DecoupledAdamW, seed 004's DecoupledLionW) and, for
`ademamix`, bitsandbytes 0.50.2's `AdEMAMix(optim_bits=32)` on CPU as in
`make_frontier_fixtures.py`. The tensors rounded are the floating-point tensors in
`optimizer.state[p]` with at least as many elements as `p` (AdEMAMix's stacked `state1` included);
step counters and other scalars stay as they are, as swift-optim keeps scalar state in float32.

Writes Tests/Fixtures/reference/<optimizer>-bf16-*.json (format optim-fixture/1).

Usage (in a venv with torch, lion-pytorch, torch-adopt and bitsandbytes 0.50.2):
  python3 tools/reference/make_bfloat16_fixtures.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402  (References: how each reference is built)
import make_frontier_fixtures  # noqa: E402  (AdEMAMix from bitsandbytes)

FORMAT = "optim-fixture/1"
REPO_ROOT = make_fixtures.REPO_ROOT
SCALES = [1.0, 1e-3, 10.0, 0.1, 0.01, 3.0, 0.3]
STEPS = 12


def f32_list(a) -> list:
    return [float(np.float32(x)) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def round_state(optimizer: torch.optim.Optimizer) -> None:
    """Rounds every state tensor with at least its parameter's element count to bfloat16."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for value in optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.is_floating_point() and value.numel() >= p.numel():
                    value.copy_(value.to(torch.bfloat16))


def build(refs, optimizer: str, hp: dict, groups: list[dict]):
    if optimizer == "ademamix":
        kwargs = make_frontier_fixtures.kwargs_of("ademamix", hp)
        param_groups = [{"params": g["params"], **make_frontier_fixtures.kwargs_of("ademamix", g.get("hyperparameters", {}))}
                        for g in groups]
        return make_frontier_fixtures.torch_class("ademamix")(param_groups, **kwargs, optim_bits=32)
    return refs.build(optimizer, hp, groups)


def reference_text(refs, optimizer: str) -> str:
    if optimizer == "ademamix":
        base = make_frontier_fixtures.describe("ademamix")
    elif optimizer in make_fixtures.TORCH_CLASSES:
        base = f"torch.optim.{make_fixtures.TORCH_CLASSES[optimizer]}, torch {torch.__version__}"
    else:
        base = {"lion": "lion_pytorch.Lion, lion-pytorch " + make_fixtures.dist_version("lion-pytorch"),
                "adopt": "adopt.ADOPT, torch-adopt " + make_fixtures.dist_version("torch-adopt"),
                "decoupled_adamw": f"composer DecoupledAdamW, mosaicml {make_fixtures.COMPOSER_VERSION}",
                "decoupled_lionw": "DecoupledLionW of the seed document 004"}[optimizer]
    return base + "; its state rounded to bfloat16 (round to nearest even) before the first step and after every step"


def trajectory(refs, name: str, optimizer: str, hp: dict, params: dict, *, missing=None, zero=None, lr=None,
               tolerance=None) -> dict:
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    initial = {p: (rng.randn(*shape) * 0.5).astype(np.float32) for p, shape in params.items()}
    tensors = {p: torch.nn.Parameter(torch.from_numpy(v.copy())) for p, v in initial.items()}
    reference_hp = {k: v for k, v in hp.items() if k != "state_dtype"}
    opt = build(refs, optimizer, reference_hp, [{"params": list(tensors.values())}])
    missing, zero, lr = missing or {}, zero or {}, lr or {}
    steps = []
    round_state(opt)  # state a constructor made (Adagrad's sum) starts rounded too
    for step in range(STEPS):
        record = {"grads": {}}
        if step in lr:
            record["lr"] = {"0": lr[step]}
            opt.param_groups[0]["lr"] = lr[step]
        for index, (p, tensor) in enumerate(tensors.items()):
            if step in missing.get(p, []):
                tensor.grad = None
                continue
            g = (rng.randn(*tensor.shape) * SCALES[(step + 3 * index) % len(SCALES)]).astype(np.float32)
            if step in zero.get(p, []):
                g[:] = 0
            tensor.grad = torch.from_numpy(g)
            record["grads"][p] = f32_list(g)
        round_state(opt)
        opt.step()
        round_state(opt)
        if step in (STEPS // 3, 2 * STEPS // 3):
            record["expected"] = {p: f32_list(t.detach().numpy()) for p, t in tensors.items()}
        steps.append(record)
    fixture = {
        "format": FORMAT,
        "name": name,
        "reference": reference_text(refs, optimizer),
        "optimizer": optimizer,
        "hyperparameters": hp,
        "params": [{"name": p, "shape": list(shape), "data": f32_list(initial[p])} for p, shape in params.items()],
        "steps": steps,
        "expected": {p: f32_list(t.detach().numpy()) for p, t in tensors.items()},
    }
    if tolerance:
        fixture["tolerance"] = tolerance
    return fixture


# The default tolerance of the format (rtol 1e-5, atol 1e-6): a one-ulp difference of the float32
# arithmetic (torch's fused multiply-adds, its `sqrt`) could move a state element across a
# bfloat16 rounding boundary, one bfloat16 ulp (2⁻⁸ relative), but in these files swift-optim
# stays within 5e-7 of every parameter (`optim verify`), and float32 state misses by far more.
TOLERANCE = None
PARAMS = {"w": [24, 40], "b": [40]}
SPECS = [
    ("sgd-bf16-momentum-nesterov", "sgd", {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, {}),
    ("adam-bf16-defaults", "adam", {"lr": 1e-3}, dict(missing={"b": [3]})),
    ("adam-bf16-amsgrad-wd", "adam", {"lr": 2e-3, "amsgrad": True, "weight_decay": 0.01}, dict(lr={6: 5e-4})),
    ("adamw-bf16-defaults", "adamw", {"lr": 1e-3, "weight_decay": 0.1}, dict(zero={"w": [4]}, lr={8: 3e-3})),
    ("decoupled_adamw-bf16-defaults", "decoupled_adamw", {"lr": 1e-3, "weight_decay": 1e-4}, {}),
    ("lion-bf16-betas-wd", "lion", {"lr": 1e-4, "betas": [0.5, 0.99], "weight_decay": 0.1}, dict(missing={"w": [2]})),
    ("decoupled_lionw-bf16-defaults", "decoupled_lionw", {"lr": 1e-4, "weight_decay": 1e-4}, {}),
    ("adopt-bf16-defaults", "adopt", {"lr": 1e-3}, {}),
    ("rmsprop-bf16-centered-momentum", "rmsprop", {"lr": 1e-3, "momentum": 0.9, "centered": True}, {}),
    ("adagrad-bf16-initial-value", "adagrad", {"lr": 0.01, "initial_accumulator_value": 0.1, "lr_decay": 0.01}, {}),
    ("ademamix-bf16-defaults", "ademamix", {"lr": 1e-3}, {}),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "Tests", "Fixtures", "reference"))
    parser.add_argument("--seeds", default=make_fixtures.DEFAULT_SEEDS)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    refs = make_fixtures.References(None, os.path.abspath(args.seeds))
    os.makedirs(args.out, exist_ok=True)
    for name, optimizer, hp, extra in SPECS:
        full = {**make_fixtures.DEFAULTS.get(optimizer, make_frontier_fixtures.DEFAULTS.get(optimizer, {})), **hp,
                "state_dtype": "bfloat16"}
        fixture = trajectory(refs, name, optimizer, full, PARAMS, tolerance=TOLERANCE, **extra)
        path = os.path.join(args.out, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(make_fixtures.dumps(fixture) + "\n")
        print("wrote", os.path.relpath(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
