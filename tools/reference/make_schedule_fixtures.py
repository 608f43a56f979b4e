#!/usr/bin/env python3
"""Learning-rate values from torch.optim.lr_scheduler, for the schedule tests.

    python3 tools/reference/make_schedule_fixtures.py --out Tests/Fixtures/schedules/torch_schedules.json

For each case: the scheduler's configuration, the base learning rate, and the learning rate in
force for steps 0..N-1 (read before each optimizer step; the scheduler steps after it), as a
training loop sees them.
"""
import argparse
import json
import math

import torch

BASE_LR = 0.1
STEPS = 60


def cases():
    yield "linear_warmup", {"kind": "linear", "start_factor": 0.1, "end_factor": 1.0, "steps": 10}, \
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10)
    yield "linear_decay", {"kind": "linear", "start_factor": 1.0, "end_factor": 0.05, "steps": 40}, \
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=40)
    yield "cosine", {"kind": "cosine", "steps": 50, "floor": 0.1}, \
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=0.1 * BASE_LR)
    yield "step", {"kind": "step", "step_size": 7, "gamma": 0.5}, \
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)
    yield "multistep", {"kind": "multistep", "milestones": [5, 20, 33], "gamma": 0.3}, \
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 20, 33], gamma=0.3)
    yield "exponential", {"kind": "exponential", "gamma": 0.95}, \
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.95)
    yield "polynomial", {"kind": "polynomial", "steps": 45, "power": 2.0}, \
        lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=45, power=2.0)
    yield "onecycle_cos", {"kind": "onecycle", "total_steps": STEPS, "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4, "anneal": "cos"}, \
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=BASE_LR, total_steps=STEPS, pct_start=0.3, anneal_strategy="cos",
                                                      div_factor=25.0, final_div_factor=1e4, cycle_momentum=False)
    yield "onecycle_linear", {"kind": "onecycle", "total_steps": STEPS, "pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0, "anneal": "linear"}, \
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=BASE_LR, total_steps=STEPS, pct_start=0.25, anneal_strategy="linear",
                                                      div_factor=10.0, final_div_factor=100.0, cycle_momentum=False)

    def warmup_cosine(o):
        warmup = torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 8, end_factor=1.0, total_iters=8)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS - 8, eta_min=0.0)
        return torch.optim.lr_scheduler.SequentialLR(o, [warmup, cosine], milestones=[8])
    yield "warmup_cosine", {"kind": "warmup_cosine", "warmup_steps": 8, "total_steps": STEPS, "floor": 0.0}, warmup_cosine


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = []
    for name, config, make in cases():
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=BASE_LR)
        scheduler = make(optimizer)
        lrs = []
        for _ in range(STEPS):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        out.append({"name": name, "config": config, "base_lr": BASE_LR, "lrs": lrs})
    with open(args.out, "w") as f:
        json.dump({"reference": f"torch.optim.lr_scheduler (torch {torch.__version__})", "cases": out}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
