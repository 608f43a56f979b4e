#!/usr/bin/env python3
"""Generate 8-bit-state fixtures for the optimizers bitsandbytes has no 8-bit form of.

`decoupled_adamw` (composer's DecoupledAdamW), `decoupled_lionw` (the DecoupledLionW of the
sources) and `adopt` (torch-adopt's ADOPT) keep `state_dtype: "int8"` state in swift-optim the
way bitsandbytes' fused 8-bit optimizers do it: per step, the state is dequantized, the
optimizer's own update runs on it, and the new state is quantized again (blocks of 256, the signed
dynamic map for first moments and the unsigned one for second moments, one absmax per block;
tensors under `min_8bit_size` keep float32 state). No library offers these three in 8 bits, so the
expected values come from two real references composed exactly that way:

  - the optimizer's reference implementation (built by `make_fixtures.References`, as for the
    float32 fixtures), stepped on CPU float32 tensors, and
  - bitsandbytes 0.50.2's CPU quantizer (`torch.ops.bitsandbytes.quantize_blockwise` and
    `dequantize_blockwise`, libbitsandbytes_cpu): before each step the reference's state tensors
    are replaced by the dequantized codes; after it, its new state is quantized into the codes.

swift-optim's float32 kernels compute `add(alpha)` and `lerp` as a multiply and an add, while
torch's CPU kernels fuse them (one rounding) on AVX2 and AVX-512: the new state can differ in its
last bit, and the difference carries into the next step. The codes are compared bit for bit; a
block's absmax, which is one of the state values, within `absmax_ulps` (4) float32 ulps (2 at
most measured after 10 steps) — each state file says so.

Writes Tests/Fixtures/reference/<name>.json (optim-fixture/1) and
Tests/Fixtures/lowbit/<name>.state.json (the codes and absmax after chosen steps, as
make_lowbit_fixtures.py writes them for bitsandbytes' own optimizers).

Usage (in a venv with torch, bitsandbytes 0.50.2 and torch-adopt; composer's wheel is fetched
as make_fixtures.py does):
  python3 tools/reference/make_int8_float_kernel_fixtures.py
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402
from make_lowbit_fixtures import BLOCK, FORMAT, REPO_ROOT, draw_gradients, f32_list, load_bnb, write  # noqa: E402

STATE_NAMES = {"decoupled_adamw": ["exp_avg", "exp_avg_sq"], "decoupled_lionw": ["exp_avg"], "adopt": ["exp_avg", "exp_avg_sq"]}
SIGNED = {"exp_avg": True, "exp_avg_sq": False}
ADAM_TOLERANCE = {"rtol": 1e-6, "atol": 1e-7}
EXACT = {"rtol": 0, "atol": 0}


class Quantized:
    """One buffer held as bitsandbytes holds 8-bit state: codes and absmax."""

    def __init__(self, count: int, code: torch.Tensor):
        self.code = code
        self.codes = torch.zeros(count, dtype=torch.uint8)
        self.absmax = torch.zeros((count + BLOCK - 1) // BLOCK, dtype=torch.float32)

    def values(self, shape) -> torch.Tensor:
        return torch.ops.bitsandbytes.dequantize_blockwise(self.codes, self.absmax, self.code, BLOCK, torch.float32).reshape(shape)

    def store(self, tensor: torch.Tensor) -> None:
        self.codes, self.absmax = torch.ops.bitsandbytes.quantize_blockwise(tensor.detach().reshape(-1).contiguous(), self.code, BLOCK)


def trajectory(refs, F, name, optimizer, hp, params, steps, *, missing=None, zero=None, state_after=(), tolerance=None):
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    torch.manual_seed(0)
    initial = {p: (rng.randn(*shape) * 0.5).astype(np.float32) for p, shape in params.items()}
    tensors = {p: torch.nn.Parameter(torch.from_numpy(v.copy())) for p, v in initial.items()}
    reference_hp = {k: v for k, v in hp.items() if k not in ("state_dtype", "min_8bit_size")}
    opt = refs.build(optimizer, reference_hp, [{"params": list(tensors.values())}])
    minimum = hp.get("min_8bit_size", 4096)
    maps = {True: F.create_dynamic_map(signed=True), False: F.create_dynamic_map(signed=False)}
    held = {p: {b: Quantized(t.numel(), maps[SIGNED[b]]) for b in STATE_NAMES[optimizer]}
            for p, t in tensors.items() if t.numel() >= minimum}
    counts = {p: 0 for p in tensors}
    fixture_steps, snapshots = [], []
    missing, zero = missing or {}, zero or {}
    for step in range(steps):
        record = {"grads": {}}
        draw_gradients(rng, tensors, step, missing, zero, record)
        for p, tensor in tensors.items():
            counts[p] += tensor.grad is not None
        # The reference steps on the dequantized state ...
        for p, buffers in held.items():
            state = opt.state[tensors[p]]
            for b, q in buffers.items():
                if b in state:
                    state[b] = q.values(tensors[p].shape)
        opt.step()
        # ... and its new state is quantized (the state of a parameter without a gradient is unchanged).
        for p, buffers in held.items():
            if tensors[p].grad is not None:
                for b, q in buffers.items():
                    q.store(opt.state[tensors[p]][b])
        if step in state_after:
            record["expected"] = {p: f32_list(t.detach().numpy()) for p, t in tensors.items()}
            snapshot = {"after_step": step + 1, "parameters": {}}
            for p, tensor in tensors.items():
                if counts[p] == 0:
                    continue
                entry = {"step": counts[p], "buffers": {}}
                for b in STATE_NAMES[optimizer]:
                    if p in held:
                        q = held[p][b]
                        entry["buffers"][b] = {"codes": [int(v) for v in q.codes.numpy()], "absmax": f32_list(q.absmax.numpy())}
                    else:
                        entry["buffers"][b] = {"float32": f32_list(opt.state[tensor][b].numpy())}
                snapshot["parameters"][p] = entry
            snapshots.append(snapshot)
        fixture_steps.append(record)
    import importlib.metadata
    reference = (f"{refs.describe(optimizer)}, stepped on state dequantized and requantized by bitsandbytes "
                 f"{importlib.metadata.version('bitsandbytes')} (CPU quantize_blockwise / dequantize_blockwise, blocks of {BLOCK})")
    fixture = {
        "format": FORMAT,
        "name": name,
        "reference": reference,
        "optimizer": optimizer,
        "hyperparameters": hp,
        "params": [{"name": p, "shape": list(shape), "data": f32_list(initial[p])} for p, shape in params.items()],
        "steps": fixture_steps,
        "expected": {p: f32_list(t.detach().numpy()) for p, t in tensors.items()},
    }
    if tolerance:
        fixture["tolerance"] = tolerance
    state = {"format": "bnb-8bit-state/1", "fixture": name, "reference": reference, "block_size": BLOCK, "absmax_ulps": 4,
             "snapshots": snapshots}
    return fixture, state


def specs():
    big = {"w": [4100]}
    return [
        ("decoupled_adamw-int8-defaults", "decoupled_adamw", {"state_dtype": "int8"}, dict(params=big)),
        ("decoupled_adamw-int8-wd-missing", "decoupled_adamw",
         {"state_dtype": "int8", "min_8bit_size": 512, "lr": 0.003, "betas": [0.8, 0.99], "weight_decay": 0.1},
         dict(params={"w": [600], "v": [8, 65], "s": [40]}, missing={"w": [2, 3]}, zero={"v": [4]})),
        ("decoupled_lionw-int8-defaults", "decoupled_lionw", {"state_dtype": "int8"}, dict(params=big)),
        ("decoupled_lionw-int8-wd-missing", "decoupled_lionw",
         {"state_dtype": "int8", "min_8bit_size": 512, "lr": 3e-4, "betas": [0.95, 0.98], "weight_decay": 0.5},
         dict(params={"w": [600], "v": [8, 65], "s": [40]}, missing={"v": [1, 7]}, zero={"w": [3]})),
        ("adopt-int8-defaults", "adopt", {"state_dtype": "int8"}, dict(params=big)),
        ("adopt-int8-wd-missing", "adopt", {"state_dtype": "int8", "min_8bit_size": 512, "lr": 0.003, "weight_decay": 0.01},
         dict(params={"w": [600], "v": [8, 65], "s": [40]}, missing={"w": [2, 3]}, zero={"v": [4]})),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-reference", default=os.path.join(REPO_ROOT, "Tests", "Fixtures", "reference"))
    parser.add_argument("--out-lowbit", default=os.path.join(REPO_ROOT, "Tests", "Fixtures", "lowbit"))
    parser.add_argument("--composer-wheel", metavar="PATH", help="mosaicml wheel (else pip download fetches it)")
    parser.add_argument("--seeds", default=make_fixtures.DEFAULT_SEEDS, metavar="DIR")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    _, F = load_bnb()
    refs = make_fixtures.References(args.composer_wheel, args.seeds)
    for name, optimizer, hp, extra in specs():
        params = extra.pop("params")
        steps = 6 if params == {"w": [4100]} else 10
        tolerance = EXACT if optimizer == "decoupled_lionw" else ADAM_TOLERANCE
        fixture, state = trajectory(refs, F, name, optimizer, hp, params, steps, state_after=[0, steps // 2, steps - 1],
                                    tolerance=tolerance, **extra)
        write(os.path.join(args.out_reference, name + ".json"), fixture)
        write(os.path.join(args.out_lowbit, name + ".state.json"), state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
