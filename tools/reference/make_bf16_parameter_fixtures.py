#!/usr/bin/env python3
"""Generate the bfloat16-parameter fixtures from torchao 0.18.0.

A bfloat16 parameter (`param_dtype: "bfloat16"`, FORMAT.md "Low-precision parameters") is updated
in float32 and stored back rounded to bfloat16: to nearest even, or stochastically as torchao's
`_fp32_to_bf16_sr` does (`bf16_stochastic_round: true`). torchao draws the random 16-bit numbers
with `torch.randint`; swift-optim draws them from a counter-based generator so that a step is
deterministic and a resume bit-exact:

    r(i) = fmix32(fmix32(i mod 2^32 XOR k0) XOR k1) >> 16
    (k0, k1) = low and high 32 bits of splitmix64(seed XOR splitmix64(tensor * 2^32 + step))

`tensor` is the parameter's position in the optimizer (groups in order), `step` its step count
(1 on its first update), `seed` the hyperparameter `bf16_rounding_seed`. This script computes
those numbers independently (NumPy, below) and hands them to torchao's own code by replacing
`torch.randint` while torchao runs, so every expected value is torchao's output:

  Tests/Fixtures/lowbit/torchao-bf16-stochastic-rounding.json
      float32 inputs (edge cases: ties, the largest finite values, infinities, NaNs, subnormals,
      signed zeros; and random values), the keys and random numbers, and the bfloat16 bits of
      `torchao.optim.quant_utils._fp32_to_bf16_sr` for them; and nearest-even bits (`.bfloat16()`).

  Tests/Fixtures/reference/adamw-bf16params-*.json   (optim-fixture/1)
      trajectories of torchao's AdamW on bfloat16 parameters (and bfloat16 gradients, as torch
      requires for a bfloat16 parameter): `_AdamW` (whose state, `zeros_like(p)`, is bfloat16:
      swift-optim's `state_dtype: "bfloat16"`) and `AdamW4bit` (4-bit state), with
      `bf16_stochastic_round` true and false.

torchao runs its step through `torch.compile`; here `torch.compile` is replaced by the identity so
that the replaced `torch.randint` is called as Python (eager mode: the same operations, each
rounded to float32). Where swift-optim's arithmetic is torchao's (the 4-bit AdamW update) the
trajectories replay bit for bit; `_AdamW`'s float32 arithmetic (`lerp` for both moments,
`p - lr * wd * p`) is not torch.optim.AdamW's, which swift-optim's float32 rule follows: with
nearest-even rounding the bfloat16 results still agree bit for bit; with stochastic rounding a
decision flips where the float32 values differ in their last bit (1 value in 2600 after 8 steps,
one bfloat16 step away), so that file has a tolerance of one bfloat16 step.

Usage (in a venv with torch and torchao 0.18.0):
  python3 tools/reference/make_bf16_parameter_fixtures.py [--out-reference DIR] [--out-lowbit DIR]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_lowbit_fixtures import FORMAT, REPO_ROOT, SCALES, f32_list, write  # noqa: E402

VERSION = "0.18.0"
M64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def key(seed: int, tensor: int, step: int) -> tuple[int, int]:
    k = splitmix64(seed ^ splitmix64(((tensor & 0xFFFFFFFF) << 32) | (step & 0xFFFFFFFF)))
    return k & 0xFFFFFFFF, k >> 32


def fmix32(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h = (h.astype(np.uint64) * 0x85EBCA6B & 0xFFFFFFFF).astype(np.uint32)
    h ^= h >> np.uint32(13)
    h = (h.astype(np.uint64) * 0xC2B2AE35 & 0xFFFFFFFF).astype(np.uint32)
    h ^= h >> np.uint32(16)
    return h


def randoms(count: int, k: tuple[int, int]) -> np.ndarray:
    index = np.arange(count, dtype=np.uint64).astype(np.uint32)
    return fmix32(fmix32(index ^ np.uint32(k[0])) ^ np.uint32(k[1])) >> np.uint32(16)


class RandomFeed:
    """Replaces torch.randint for torchao's `_fp32_to_bf16_sr`: each call takes the next queued
    array of random numbers, which must have the shape asked for."""

    def __init__(self):
        self.queue: list[np.ndarray] = []
        self.original = torch.randint

    def __call__(self, low, high, size, *args, device=None, dtype=None, **kwargs):
        assert (low, high, dtype) == (0, 1 << 16, torch.int32), (low, high, dtype)
        values = self.queue.pop(0)
        assert tuple(values.shape) == tuple(size), (values.shape, size)
        return torch.from_numpy(values.astype(np.int32))

    def __enter__(self):
        torch.randint = self
        return self

    def __exit__(self, *exc):
        torch.randint = self.original
        assert not self.queue or exc[0] is not None, f"{len(self.queue)} random arrays not used"


def load_torchao():
    version = importlib.metadata.version("torchao")
    if version != VERSION:
        sys.exit(f"torchao {version}: these fixtures are made with {VERSION}")
    import torchao.optim as optim
    from torchao.optim import quant_utils
    torch.compile = lambda fn, **kwargs: fn  # eager: see the module docstring
    return optim, quant_utils


def reference_text(what: str) -> str:
    return f"torchao {importlib.metadata.version('torchao')} {what}, CPU, eager, torch {torch.__version__}"


def bf16_bits(t: torch.Tensor) -> list:
    return [int(v) for v in t.view(torch.int16).numpy().astype(np.uint16)]


# ---------------------------------------------------------------------------------------------
# the rounding itself


def rounding_fixture(quant_utils) -> dict:
    rng = np.random.RandomState(20201015)
    special = np.array([
        0x00000000, 0x80000000, 0x3F800000, 0x3F808000, 0x3F818000, 0x3F80FFFF, 0x3F800001, 0xBF80FFFF,
        0xBF800001, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F0000, 0x7F7F8000, 0x7F800000, 0xFF800000, 0x7FC00000,
        0xFFC00000, 0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FBFFFFF, 0x00000001, 0x8000FFFF, 0x007FFFFF,
        0x00800000, 0x0000FFFF, 0x00010000, 0x4B7FFFFF, 0xC2F7FFFF, 0x3DCCCCCD,
    ], dtype=np.uint32)
    normal = (rng.randn(2048) * 10.0 ** rng.randint(-6, 6, size=2048)).astype(np.float32).view(np.uint32)
    bits = np.concatenate([special, normal]).astype(np.uint32)
    values = torch.from_numpy(bits.view(np.float32).copy())
    cases = []
    for seed, tensor, step in [(0, 0, 1), (1234, 3, 17), (2 ** 53, 41, 4_294_967_297)]:
        k = key(seed, tensor, step)
        r = randoms(bits.size, k)
        with RandomFeed() as feed:
            feed.queue.append(r)
            out = quant_utils._fp32_to_bf16_sr(values.clone())
        cases.append({"seed": seed, "tensor": tensor, "step": step, "key": [k[0], k[1]],
                      "random": [int(v) for v in r], "stochastic": bf16_bits(out)})
    return {
        "format": "bf16-rounding/1",
        "reference": reference_text("optim.quant_utils._fp32_to_bf16_sr (torch.randint replaced by the counter-based numbers); "
                                    "nearest: torch Tensor.bfloat16()"),
        "inputs": [int(v) for v in bits],
        "nearest": bf16_bits(values.bfloat16()),
        "cases": cases,
    }


# ---------------------------------------------------------------------------------------------
# optimizer trajectories


def to_bf16(a: np.ndarray) -> np.ndarray:
    return torch.from_numpy(a.astype(np.float32)).bfloat16().float().numpy()


def trajectory(optim, name, cls, hp, params, steps, *, missing=None, lr=None, tolerance=None, note=""):
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    initial = {p: to_bf16(rng.randn(*shape) * 0.5) for p, shape in params.items()}
    tensors = {p: torch.nn.Parameter(torch.from_numpy(v.copy()).bfloat16()) for p, v in initial.items()}
    kwargs = {k: (tuple(v) if k == "betas" else v) for k, v in hp.items()
              if k not in ("state_dtype", "bf16_stochastic_round", "bf16_rounding_seed")}
    stochastic = hp.get("bf16_stochastic_round", False)
    seed = int(hp.get("bf16_rounding_seed", 0))
    opt = getattr(optim, cls)(list(tensors.values()), bf16_stochastic_round=stochastic, **kwargs)
    counts = {p: 0 for p in params}
    fixture_steps = []
    missing, lr = missing or {}, lr or {}
    for step in range(steps):
        record = {"grads": {}}
        if step in lr:
            record["lr"] = {str(g): v for g, v in lr[step].items()}
            for g, v in lr[step].items():
                opt.param_groups[g]["lr"].fill_(v)
        with RandomFeed() as feed:
            for index, (p, tensor) in enumerate(tensors.items()):
                if step in missing.get(p, []):
                    tensor.grad = None
                    continue
                scale = SCALES[(step + 3 * index) % len(SCALES)]
                g = to_bf16(rng.randn(*tensor.shape) * scale)
                tensor.grad = torch.from_numpy(g).bfloat16()
                record["grads"][p] = f32_list(g)
                counts[p] += 1
                if stochastic:
                    feed.queue.append(randoms(tensor.numel(), key(seed, index, counts[p])).reshape(tensor.shape))
            opt.step()
        fixture_steps.append(record)
    fixture = {
        "format": FORMAT,
        "name": name,
        "reference": reference_text(f"optim.{cls} on bfloat16 parameters") + note,
        "optimizer": "adamw",
        "param_dtype": "bfloat16",
        "hyperparameters": hp,
        "params": [{"name": p, "shape": list(shape), "data": f32_list(initial[p])} for p, shape in params.items()],
        "steps": fixture_steps,
        "expected": {p: f32_list(t.detach().float().numpy()) for p, t in tensors.items()},
    }
    if tolerance:
        fixture["tolerance"] = tolerance
    return fixture


EXACT = {"rtol": 0, "atol": 0}
# _AdamW's arithmetic differs from torch.optim.AdamW's (swift-optim's float32 rule) in the last bit
# of some float32 values; where that crosses a stochastic rounding threshold the parameter lands
# one bfloat16 step (2^-8 to 2^-7 relative) away. Measured: 1 value of 2600 after 8 steps; with
# nearest-even rounding and with the 4-bit rule (torchao's arithmetic) none.
ONE_STEP = {"rtol": 0.008, "atol": 1e-6}
STEPS = 8


def optimizer_fixtures(optim):
    four = {"state_dtype": "int4"}
    specs = [
        ("adamw-bf16params-int4-stochastic", "AdamW4bit", {**four, "bf16_stochastic_round": True, "bf16_rounding_seed": 7},
         dict(params={"w": [4096], "v": [32, 128]}, missing={"v": [2]}, lr={4: {0: 0.003}}), EXACT),
        ("adamw-bf16params-int4-nearest", "AdamW4bit", {**four, "lr": 0.01, "weight_decay": 0.1},
         dict(params={"w": [4096]}), EXACT),
        ("adamw-bf16params-bf16state-stochastic", "_AdamW",
         {"state_dtype": "bfloat16", "lr": 0.003, "bf16_stochastic_round": True, "bf16_rounding_seed": 123},
         dict(params={"w": [64, 40], "b": [40]}), ONE_STEP),
        ("adamw-bf16params-bf16state-nearest", "_AdamW", {"state_dtype": "bfloat16", "lr": 0.003},
         dict(params={"w": [64, 40], "b": [40]}), EXACT),
    ]
    for name, cls, hp, extra, tolerance in specs:
        params = extra.pop("params")
        yield trajectory(optim, name, cls, hp, params, STEPS, tolerance=tolerance, **extra)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-reference", default=os.path.join(REPO_ROOT, "Tests", "Fixtures", "reference"))
    parser.add_argument("--out-lowbit", default=os.path.join(REPO_ROOT, "Tests", "Fixtures", "lowbit"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    optim, quant_utils = load_torchao()
    write(os.path.join(args.out_lowbit, "torchao-bf16-stochastic-rounding.json"), rounding_fixture(quant_utils))
    for fixture in optimizer_fixtures(optim):
        write(os.path.join(args.out_reference, fixture["name"] + ".json"), fixture)
    return 0


if __name__ == "__main__":
    sys.exit(main())
