#!/usr/bin/env python3
"""Generate the 4-bit optimizer-state fixtures from torchao 0.18.0.

Every expected value is produced by the real reference, torchao 0.18.0's `torchao.optim`
(`AdamW4bit`, `Adam4bit`: state as `OptimState4bit`, the step `single_param_adam` run through
`torch.compile` exactly as the optimizer runs it, on CPU):

  Tests/Fixtures/lowbit/torchao-4bit-quantization.json
      the signed and unsigned 16-entry maps (`get_qmap_signed`, `get_qmap_unsigned`) and inputs
      with the packed codes (two per byte, the first element in the high nibble) and per-block
      scales `OptimState4bit.copy_` gives them (blocks of 128), and the values `dequantize` gives
      back.

  Tests/Fixtures/reference/{adamw,adam}-int4-*.json   (optim-fixture/1)
      trajectories of `AdamW4bit` and `Adam4bit`, hyperparameters written with FORMAT.md's
      `state_dtype: "int4"`; two with `amsgrad` (`max_exp_avg_sq` a third 4-bit buffer).

  Tests/Fixtures/lowbit/<fixture name>.state.json
      the state torchao holds after chosen steps: per parameter, per buffer (`exp_avg`,
      `exp_avg_sq`, `max_exp_avg_sq`), the packed codes and the float32 scales (`codes`, `scale`), or the float32
      values of a tensor torchao keeps unquantized (fewer than 4096 elements, or a count that is
      not a multiple of 128).

Usage (in a venv with torch and torchao 0.18.0, and a C++ compiler for torch.compile):
  python3 tools/reference/make_torchao_fixtures.py
  python3 tools/reference/make_torchao_fixtures.py --out-reference DIR --out-lowbit DIR
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
from make_lowbit_fixtures import FORMAT, REPO_ROOT, draw_gradients, f32_list, write  # noqa: E402

BLOCK = 128
VERSION = "0.18.0"


def load_torchao():
    version = importlib.metadata.version("torchao")
    if version != VERSION:
        sys.exit(f"torchao {version}: these fixtures are made with {VERSION}")
    import torchao.optim as optim
    from torchao.optim import subclass_4bit
    return optim, subclass_4bit


def complete_amsgrad(sub) -> None:
    """torchao 0.18's OptimState4bit implements `lerp` by dequantizing its arguments and running
    the op, but not `maximum`: `AdamW4bit(amsgrad=True)` stops with NotImplementedError at
    `torch.maximum(max_exp_avg_sq.float(), exp_avg_sq_f32)` (`.float()` of a float32 subclass is
    the subclass itself). Register `maximum` exactly as torchao registers `lerp`, so the amsgrad
    trajectories are torchao's step with that one op completed."""
    aten = torch.ops.aten

    @sub.OptimState4bit.implements(aten.maximum.default)
    def _(func, types, args, kwargs):
        args = [x.dequantize() if isinstance(x, sub.OptimState4bit) else x for x in args]
        return func(*args, **kwargs)


def reference_text(what: str) -> str:
    return f"torchao {importlib.metadata.version('torchao')} {what}, CPU, torch {torch.__version__}"


def packed(state) -> dict:
    return {"codes": [int(v) for v in state.codes.numpy()], "scale": f32_list(state.scale.numpy())}


# ---------------------------------------------------------------------------------------------
# OptimState4bit: quantize (copy_) and dequantize


def quantization_fixture(sub) -> dict:
    rng = np.random.RandomState(20230904)
    signed_map = np.array(sub.get_qmap_signed(), dtype=np.float32)
    unsigned_map = np.array(sub.get_qmap_unsigned(), dtype=np.float32)
    cases = []

    def case(name: str, signed: bool, data):
        data = np.asarray(data, dtype=np.float32)
        assert data.size % BLOCK == 0
        state = sub.OptimState4bit.zeros(data.size, signed, BLOCK, "cpu")
        state.copy_(torch.from_numpy(data.copy()))
        back = state.dequantize()
        cases.append(dict(name=name, map="signed" if signed else "unsigned", data=f32_list(data),
                          **packed(state), dequantized=f32_list(back.numpy())))

    normal = rng.randn(1024).astype(np.float32)
    case("normal-1024", True, normal)
    case("normal-abs-1024", False, np.abs(normal))
    wide = (rng.randn(768) * 10.0 ** rng.randint(-9, 4, size=768)).astype(np.float32)
    case("wide-range-768", True, wide)
    case("wide-range-abs-768", False, np.abs(wide))
    for label, m in (("signed", signed_map), ("unsigned", unsigned_map)):
        c = m.astype(np.float64)
        mids = ((c[:-1] + c[1:]) / 2).astype(np.float32)
        nudged = np.concatenate([np.nextafter(mids, np.float32(2)), np.nextafter(mids, np.float32(-2))])
        # Each block of 128 gets an element 1.0 so that the values are their own scaled value.
        values = np.concatenate([m, mids, nudged]).astype(np.float32)
        block = np.concatenate([values, np.zeros(BLOCK - 1 - values.size, dtype=np.float32), [1.0]])
        case(f"{label}-map-entries-and-midpoints", label == "signed", block)
    case("zero-block-then-values", True, np.concatenate([np.zeros(BLOCK), rng.randn(BLOCK)]))
    case("tiny-block", True, rng.randn(BLOCK) * 1e-14)  # absmax under the 1e-12 clip
    case("outlier", True, np.concatenate([rng.randn(BLOCK - 1) * 1e-3, [50.0]]))
    grid = np.linspace(-1.0, 1.0, 1024, dtype=np.float32)
    case("uniform-grid", True, grid)
    case("uniform-grid-abs", False, np.abs(grid))
    return {
        "format": "torchao-4bit-quantization/1",
        "reference": reference_text("optim.subclass_4bit.OptimState4bit copy_ / dequantize"),
        "block_size": BLOCK,
        "maps": {"signed": f32_list(signed_map), "unsigned": f32_list(unsigned_map)},
        "cases": cases,
    }


# ---------------------------------------------------------------------------------------------
# optimizer trajectories

CLASS = {"adam": "Adam4bit", "adamw": "AdamW4bit"}
STATE_NAMES = ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]  # the last with amsgrad


def trajectory(optim, sub, name, optimizer, hp, params, steps, *, missing=None, zero=None, lr=None,
               state_after=(), tolerance=None, note=""):
    """Runs torchao's 4-bit optimizer and returns (fixture, state fixture)."""
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    torch.manual_seed(0)
    initial = {p: (rng.randn(*shape) * 0.5).astype(np.float32) for p, shape in params.items()}
    tensors = {p: torch.nn.Parameter(torch.from_numpy(v.copy())) for p, v in initial.items()}
    kwargs = {k: (tuple(v) if k == "betas" else v) for k, v in hp.items() if k != "state_dtype"}
    opt = getattr(optim, CLASS[optimizer])(list(tensors.values()), **kwargs)
    fixture_steps, snapshots = [], []
    missing, zero, lr = missing or {}, zero or {}, lr or {}
    for step in range(steps):
        record = {"grads": {}}
        if step in lr:
            record["lr"] = {str(g): v for g, v in lr[step].items()}
            for g, v in lr[step].items():
                opt.param_groups[g]["lr"].fill_(v)  # torchao keeps lr as a tensor
        draw_gradients(rng, tensors, step, missing, zero, record)
        opt.step()
        if step in state_after:
            record["expected"] = {p: f32_list(t.detach().numpy()) for p, t in tensors.items()}
            snapshot = {"after_step": step + 1, "parameters": {}}
            for p, tensor in tensors.items():
                state = opt.state[tensor]
                if not state:
                    continue
                entry = {"step": int(state["step"]), "buffers": {}}
                for buffer in [b for b in STATE_NAMES if b in state]:
                    s = state[buffer]
                    entry["buffers"][buffer] = packed(s) if isinstance(s, sub.OptimState4bit) else {"float32": f32_list(s.numpy())}
                snapshot["parameters"][p] = entry
            snapshots.append(snapshot)
        fixture_steps.append(record)
    fixture = {
        "format": FORMAT,
        "name": name,
        "reference": reference_text(f"optim.{CLASS[optimizer]}") + note,
        "optimizer": optimizer,
        "hyperparameters": hp,
        "params": [{"name": p, "shape": list(shape), "data": f32_list(initial[p])} for p, shape in params.items()],
        "steps": fixture_steps,
        "expected": {p: f32_list(t.detach().numpy()) for p, t in tensors.items()},
    }
    if tolerance:
        fixture["tolerance"] = tolerance
    state = {"format": "torchao-4bit-state/1", "fixture": name, "reference": fixture["reference"],
             "block_size": BLOCK, "snapshots": snapshots}
    return fixture, state


# torchao's compiled step (no contraction of multiply-adds, IEEE division and square root, float32
# `beta ** step`) is replayed bit for bit: parameters and quantized state alike. A tensor torchao
# keeps in float32 inside a 4-bit optimizer is stepped by torchao's own arithmetic, which rounds
# differently from torch.optim's (our float32 rule): within 1e-5 relative.
EXACT = {"rtol": 0, "atol": 0}
MIXED_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
STEPS = 6


def optimizer_fixtures(optim, sub):
    # torchao quantizes a tensor of at least 4096 elements whose count is a multiple of 128;
    # 'b' (4100) and 's' (40) keep float32 state and torchao's own float32 update.
    specs = [
        ("adamw-int4-defaults", "adamw", {"state_dtype": "int4"}, dict(params={"w": [4096]})),
        ("adamw-int4-betas-eps-wd", "adamw", {"state_dtype": "int4", "lr": 0.003, "betas": [0.8, 0.99],
                                               "eps": 1e-6, "weight_decay": 0.1}, dict(params={"w": [32, 160]})),
        ("adamw-int4-missing-zero-lr", "adamw", {"state_dtype": "int4", "lr": 0.002},
         dict(params={"w": [4096], "v": [32, 128]}, missing={"w": [2, 3]}, zero={"v": [4]}, lr={3: {0: 0.0005}, 5: {0: 0.004}})),
        ("adamw-int4-mixed-sizes", "adamw", {"state_dtype": "int4"}, dict(params={"w": [4224], "b": [4100], "s": [40]})),
        ("adam-int4-defaults", "adam", {"state_dtype": "int4"}, dict(params={"w": [4096]})),
        ("adam-int4-betas-lr-wd", "adam", {"state_dtype": "int4", "lr": 0.01, "betas": [0.5, 0.9], "weight_decay": 0.01},
         dict(params={"w": [4608]}, lr={4: {0: 0.001}})),
        # amsgrad: max_exp_avg_sq a third 4-bit buffer. A small beta2 lets v fall below its running
        # maximum within six steps, so the maximum is not simply v.
        ("adamw-int4-amsgrad", "adamw", {"state_dtype": "int4", "amsgrad": True, "lr": 0.003, "betas": [0.8, 0.6],
                                          "weight_decay": 0.05}, dict(params={"w": [4096], "v": [32, 128]})),
        ("adam-int4-amsgrad-wd", "adam", {"state_dtype": "int4", "amsgrad": True, "betas": [0.9, 0.5], "weight_decay": 0.01},
         dict(params={"w": [4608]}, missing={"w": [2]})),
    ]
    for name, optimizer, hp, extra in specs:
        params = extra.pop("params")
        note, tolerance = "", EXACT
        if hp.get("amsgrad"):
            note = "; amsgrad with aten.maximum registered on OptimState4bit as torchao registers lerp (dequantize, then the op)"
        if "s" in params:
            note = "; 'b' and 's' keep float32 state (not a multiple of 128 elements, or under 4096) and torchao's float32 update"
            tolerance = MIXED_TOLERANCE
        yield trajectory(optim, sub, name, optimizer, hp, params, STEPS, state_after=[0, STEPS // 2, STEPS - 1],
                         tolerance=tolerance, note=note, **extra)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-reference", default=os.path.join(REPO_ROOT, "Tests", "Fixtures", "reference"))
    parser.add_argument("--out-lowbit", default=os.path.join(REPO_ROOT, "Tests", "Fixtures", "lowbit"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    optim, sub = load_torchao()
    complete_amsgrad(sub)
    os.makedirs(args.out_lowbit, exist_ok=True)
    write(os.path.join(args.out_lowbit, "torchao-4bit-quantization.json"), quantization_fixture(sub))
    for fixture, state in optimizer_fixtures(optim, sub):
        write(os.path.join(args.out_reference, fixture["name"] + ".json"), fixture)
        write(os.path.join(args.out_lowbit, fixture["name"] + ".state.json"), state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
