#!/usr/bin/env python3
"""Generate the 8-bit optimizer-state fixtures from bitsandbytes' CPU backend.

Every expected value is produced by the real reference, bitsandbytes 0.50.2 on CPU torch
tensors (its native `libbitsandbytes_cpu.so` quantizer, the pure-torch 8-bit optimizer update of
`bitsandbytes/backends/cpu/ops.py`):

  Tests/Fixtures/lowbit/bnb-blockwise-quantization.json
      the signed and unsigned dynamic maps (`functional.create_dynamic_map`), and inputs with the
      codes and per-block absmax `torch.ops.bitsandbytes.quantize_blockwise` gives for them
      (blocks of 256) and the values `dequantize_blockwise` gives back.

  Tests/Fixtures/reference/{adam,adamw,lion,sgd,rmsprop,adagrad,ademamix}-int8-*.json   (optim-fixture/1)
      trajectories of `bnb.optim.Adam8bit`, `AdamW8bit`, `Lion8bit`, `SGD8bit`, `RMSprop8bit`,
      `Adagrad8bit` and `AdEMAMix8bit`, hyperparameters written
      with FORMAT.md's `state_dtype: "int8"` and `min_8bit_size`.

  Tests/Fixtures/lowbit/<fixture name>.state.json
      the quantized state bitsandbytes holds after chosen steps of each trajectory: per
      parameter, per buffer (torch's names: `exp_avg`, `exp_avg_sq`, `momentum_buffer`,
      `square_avg`, `sum`; AdEMAMix's `m1`, `m2`, `nu`), the uint8 codes and the float32 absmax
      (bitsandbytes' `state1`/`absmax1`, `state2`/`absmax2`; AdEMAMix keeps `m1` and `m2` as
      the two rows of `state1`), and the step count.

Usage (in a venv with torch and bitsandbytes 0.50.2):
  python3 tools/reference/make_lowbit_fixtures.py
  python3 tools/reference/make_lowbit_fixtures.py --out-reference DIR --out-lowbit DIR
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import zlib

import numpy as np
import torch

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FORMAT = "optim-fixture/1"
BLOCK = 256


class F32(float):
    """A float32 value, written as the shortest decimal that reads back to the same float32."""

    def __repr__(self) -> str:
        return np.format_float_positional(np.float32(self), unique=True, trim="0") if 1e-4 <= abs(self) < 1e7 or self == 0 \
            else np.format_float_scientific(np.float32(self), unique=True, trim="0")


def f32_list(a) -> list:
    return [F32(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def dumps(obj, indent=0) -> str:
    """JSON with one-space indentation; arrays of scalars stay on one line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj):
            return "[" + ", ".join(scalar(v) for v in obj) + "]"
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return scalar(obj)


def scalar(value) -> str:
    if isinstance(value, F32):
        assert np.isfinite(value)
        return repr(value)
    return json.dumps(value, allow_nan=False)


def write(path: str, obj: dict) -> None:
    with open(path, "w") as handle:
        handle.write(dumps(obj) + "\n")
    print("wrote", os.path.relpath(path, REPO_ROOT))


def load_bnb():
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    from bitsandbytes.cextension import ErrorHandlerMockBNBNativeLibrary, lib

    version = importlib.metadata.version("bitsandbytes")
    if version != "0.50.2":
        sys.exit(f"bitsandbytes {version}: these fixtures are made with 0.50.2")
    if isinstance(lib, ErrorHandlerMockBNBNativeLibrary):
        sys.exit("bitsandbytes' native CPU library did not load: its quantizer is the reference")
    return bnb, F


def reference_text(what: str) -> str:
    return (f"bitsandbytes {importlib.metadata.version('bitsandbytes')} {what}, CPU backend "
            f"(libbitsandbytes_cpu quantize_blockwise), torch {torch.__version__}")


# ---------------------------------------------------------------------------------------------
# quantize_blockwise / dequantize_blockwise


def quantization_fixture(F) -> dict:
    rng = np.random.RandomState(20221006)
    signed_map = F.create_dynamic_map(signed=True)
    unsigned_map = F.create_dynamic_map(signed=False)
    cases = []

    def case(name: str, signed: bool, data):
        data = np.asarray(data, dtype=np.float32)
        code = (signed_map if signed else unsigned_map).clone()
        codes, absmax = torch.ops.bitsandbytes.quantize_blockwise(torch.from_numpy(data.copy()), code, BLOCK)
        back = torch.ops.bitsandbytes.dequantize_blockwise(codes, absmax, code, BLOCK, torch.float32)
        cases.append(dict(name=name, map="signed" if signed else "unsigned", data=f32_list(data),
                          codes=[int(v) for v in codes.numpy()], absmax=f32_list(absmax.numpy()),
                          dequantized=f32_list(back.numpy())))

    normal = rng.randn(1000).astype(np.float32)
    case("normal-1000", True, normal)  # 3 full blocks and a partial one of 232 (8-lane tail 0)
    case("normal-abs-1000", False, np.abs(normal))
    wide = (rng.randn(777) * 10.0 ** rng.randint(-9, 4, size=777)).astype(np.float32)
    case("wide-range-777", True, wide)  # a tail block of 9: the reference's scalar tail path
    case("wide-range-abs-777", False, np.abs(wide))
    for label, m in (("signed", signed_map), ("unsigned", unsigned_map)):
        c = m.numpy().astype(np.float64)
        mids = ((c[:-1] + c[1:]) / 2).astype(np.float32)
        nudged = np.concatenate([np.nextafter(mids, np.float32(2)), np.nextafter(mids, np.float32(-2))])
        # Each block of 256 gets an element 1.0 so that the values are their own normalised value.
        values = np.concatenate([m.numpy(), mids, nudged]).astype(np.float32)
        blocks = [np.concatenate([values[i:i + 255], [1.0]]) for i in range(0, len(values), 255)]
        case(f"{label}-map-entries-and-midpoints", label == "signed", np.concatenate(blocks))
    case("zero-block-then-values", True, np.concatenate([np.zeros(256), rng.randn(300)]))
    case("outlier", True, np.concatenate([rng.randn(255) * 1e-3, [50.0]]))
    grid = np.linspace(-1.0, 1.0, 1025, dtype=np.float32)
    case("uniform-grid", True, grid)
    case("uniform-grid-abs", False, np.abs(grid))
    return {
        "format": "bnb-blockwise-quantization/1",
        "reference": reference_text("functional.create_dynamic_map, torch.ops.bitsandbytes.quantize_blockwise / dequantize_blockwise"),
        "block_size": BLOCK,
        "maps": {"signed": f32_list(signed_map.numpy()), "unsigned": f32_list(unsigned_map.numpy())},
        "cases": cases,
    }


# ---------------------------------------------------------------------------------------------
# optimizer trajectories

SCALES = [1.0, 1e-3, 10.0, 0.1, 0.01, 3.0, 0.3]
BNB_CLASS = {"adam": "Adam8bit", "adamw": "AdamW8bit", "lion": "Lion8bit",
             "sgd": "SGD8bit", "rmsprop": "RMSprop8bit", "adagrad": "Adagrad8bit", "ademamix": "AdEMAMix8bit"}
STATE_NAMES = {"adam": ["exp_avg", "exp_avg_sq"], "adamw": ["exp_avg", "exp_avg_sq"], "lion": ["exp_avg"],
               "sgd": ["momentum_buffer"], "rmsprop": ["square_avg"], "adagrad": ["sum"], "ademamix": ["m1", "m2", "nu"]}


def held_buffers(optimizer: str, state) -> list:
    """(state, absmax or None) per buffer of STATE_NAMES[optimizer], as bitsandbytes holds them."""
    absmax = lambda k: state.get(f"absmax{k}")
    if optimizer == "ademamix":  # state1 holds m1 and m2 as its two rows (absmax1 too)
        a1 = absmax(1)
        return [(state["state1"][0], None if a1 is None else a1[0]), (state["state1"][1], None if a1 is None else a1[1]),
                (state["state2"], absmax(2))]
    return [(state[f"state{k + 1}"], absmax(k + 1)) for k in range(len(STATE_NAMES[optimizer]))]


def draw_gradients(rng, tensors: dict, step: int, missing: dict, zero: dict, record: dict) -> None:
    """Sets each tensor's gradient for `step` (none where `missing` lists the step, zeros where
    `zero` does) from `rng`, and records it in `record["grads"]`."""
    for index, (p, tensor) in enumerate(tensors.items()):
        if step in missing.get(p, []):
            tensor.grad = None
            continue
        scale = SCALES[(step + 3 * index) % len(SCALES)]
        g = (rng.randn(*tensor.shape) * scale).astype(np.float32)
        if step in zero.get(p, []):
            g[:] = 0
        tensor.grad = torch.from_numpy(g)
        record["grads"][p] = f32_list(g)


def trajectory(bnb, name, optimizer, hp, params, steps, *, missing=None, zero=None, lr=None,
               state_after=None, tolerance=None, groups=None, note=""):
    """Runs bitsandbytes' 8-bit optimizer and returns (fixture, state fixture)."""
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    torch.manual_seed(0)
    initial = {p: (rng.randn(*shape) * 0.5).astype(np.float32) for p, shape in params.items()}
    tensors = {p: torch.nn.Parameter(torch.from_numpy(v.copy())) for p, v in initial.items()}
    kwargs = {k: (tuple(v) if k == "betas" else v) for k, v in hp.items()
              if k not in ("state_dtype", "min_8bit_size")}
    kwargs["min_8bit_size"] = hp.get("min_8bit_size", 4096)
    cls = getattr(bnb.optim, BNB_CLASS[optimizer])
    if groups:
        torch_groups = [dict(params=[tensors[p] for p in g["params"]], **g.get("hyperparameters", {})) for g in groups]
        opt = cls(torch_groups, **kwargs)
    else:
        opt = cls(list(tensors.values()), **kwargs)
    fixture_steps, snapshots = [], []
    missing, zero, lr = missing or {}, zero or {}, lr or {}
    for step in range(steps):
        record = {"grads": {}}
        if step in lr:
            record["lr"] = {str(g): v for g, v in lr[step].items()}
            for g, v in lr[step].items():
                opt.param_groups[g]["lr"] = v
        draw_gradients(rng, tensors, step, missing, zero, record)
        opt.step()
        if state_after and step in state_after:
            record["expected"] = {p: f32_list(t.detach().numpy()) for p, t in tensors.items()}
            snapshot = {"after_step": step + 1, "parameters": {}}
            for p, tensor in tensors.items():
                state = opt.state[tensor]
                if not state:
                    continue
                entry = {"step": int(state["step"]), "buffers": {}}
                quantized = state["state1"].dtype == torch.uint8
                for buffer, (s, a) in zip(STATE_NAMES[optimizer], held_buffers(optimizer, state)):
                    if quantized:
                        entry["buffers"][buffer] = {"codes": [int(v) for v in s.reshape(-1).numpy()],
                                                    "absmax": f32_list(a.numpy())}
                    else:
                        entry["buffers"][buffer] = {"float32": f32_list(s.numpy())}
                snapshot["parameters"][p] = entry
            snapshots.append(snapshot)
        fixture_steps.append(record)
    fixture = {
        "format": FORMAT,
        "name": name,
        "reference": reference_text(f"bnb.optim.{BNB_CLASS[optimizer]}") + note,
        "optimizer": optimizer,
        "hyperparameters": hp,
    }
    if groups:
        fixture["groups"] = groups
    fixture["params"] = [{"name": p, "shape": list(shape), "data": f32_list(initial[p])} for p, shape in params.items()]
    fixture["steps"] = fixture_steps
    fixture["expected"] = {p: f32_list(t.detach().numpy()) for p, t in tensors.items()}
    if tolerance:
        fixture["tolerance"] = tolerance
    state = {"format": "bnb-8bit-state/1", "fixture": name, "reference": fixture["reference"],
             "block_size": BLOCK, "snapshots": snapshots}
    return fixture, state


# torch's float32 `sqrt` on CPU (the Adam denominators) is not correctly rounded on every
# machine (MKL/SLEEF vector paths differ from IEEE sqrt by 1 ulp in ~17% of elements here), so
# Adam's parameters are compared with a tolerance; its quantized state never reads a square root
# and replays bit for bit (checked through the .state.json files). Lion reads none: exact.
ADAM_TOLERANCE = {"rtol": 1e-6, "atol": 1e-7}
EXACT = {"rtol": 0, "atol": 0}
STEPS = 10
STATE_AFTER = [0, 4, STEPS - 1]


def optimizer_fixtures(bnb):
    # Parameters at the default min_8bit_size (4096) are large; the other files lower it so that
    # small tensors are quantized (bitsandbytes' own option) and the files stay small. Sizes that
    # are not multiples of 256 (and of 8) exercise the partial last block.
    big = {"w": [4100]}
    small = {"min_8bit_size": 1000}
    specs = [
        ("adamw-int8-defaults", "adamw", {"state_dtype": "int8"}, dict(params=big)),
        ("adamw-int8-betas-eps-wd", "adamw", {"state_dtype": "int8", **small, "lr": 0.003, "betas": [0.8, 0.99],
                                               "eps": 1e-6, "weight_decay": 0.1}, dict(params={"w": [20, 55]})),
        ("adamw-int8-missing-zero-lr", "adamw", {"state_dtype": "int8", "min_8bit_size": 512, "lr": 0.002},
         dict(params={"w": [600], "v": [8, 65]}, missing={"w": [2, 3]}, zero={"v": [4]}, lr={6: {0: 0.0005}, 8: {0: 0.004}})),
        ("adamw-int8-mixed-min-size", "adamw", {"state_dtype": "int8", "min_8bit_size": 300},
         dict(params={"w": [700], "b": [300], "s": [40]})),
        ("adam-int8-defaults", "adam", {"state_dtype": "int8"}, dict(params=big)),
        ("adam-int8-betas-lr", "adam", {"state_dtype": "int8", **small, "lr": 0.01, "betas": [0.5, 0.9]},
         dict(params={"w": [1100]}, lr={5: {0: 0.001}})),
        ("lion-int8-defaults", "lion", {"state_dtype": "int8"}, dict(params=big)),
        ("lion-int8-betas-wd", "lion", {"state_dtype": "int8", **small, "lr": 3e-4, "betas": [0.95, 0.98],
                                         "weight_decay": 0.5}, dict(params={"w": [20, 55]})),
        ("lion-int8-missing-zero-lr", "lion", {"state_dtype": "int8", "min_8bit_size": 512, "lr": 1e-3},
         dict(params={"w": [600], "v": [8, 65]}, missing={"v": [1, 7]}, zero={"w": [3]}, lr={4: {0: 2e-4}})),
        ("lion-int8-mixed-min-size", "lion", {"state_dtype": "int8", "min_8bit_size": 300},
         dict(params={"w": [700], "b": [300], "s": [40]})),
        # One-state optimizers: SGD8bit (momentum), RMSprop8bit, Adagrad8bit.
        ("sgd-int8-momentum", "sgd", {"state_dtype": "int8", "lr": 0.01, "momentum": 0.9}, dict(params=big)),
        ("sgd-int8-wd-missing-lr", "sgd", {"state_dtype": "int8", "min_8bit_size": 512, "lr": 0.05, "momentum": 0.5,
                                           "weight_decay": 0.01},
         dict(params={"w": [600], "v": [8, 65]}, missing={"w": [2, 3]}, zero={"v": [4]}, lr={6: {0: 0.01}})),
        ("sgd-int8-mixed-min-size", "sgd", {"state_dtype": "int8", "min_8bit_size": 300, "lr": 0.01, "momentum": 0.95},
         dict(params={"w": [700], "b": [300], "s": [40]})),
        ("rmsprop-int8-defaults", "rmsprop", {"state_dtype": "int8"}, dict(params=big)),
        ("rmsprop-int8-alpha-eps-wd", "rmsprop", {"state_dtype": "int8", **small, "lr": 0.003, "alpha": 0.9, "eps": 1e-6,
                                                  "weight_decay": 0.1},
         dict(params={"w": [20, 55]}, missing={"w": [3]}, lr={5: {0: 0.001}})),
        ("adagrad-int8-defaults", "adagrad", {"state_dtype": "int8"}, dict(params=big)),
        ("adagrad-int8-eps-wd", "adagrad", {"state_dtype": "int8", "min_8bit_size": 300, "lr": 0.05, "eps": 1e-6,
                                            "weight_decay": 0.1},
         dict(params={"w": [700], "b": [300], "s": [40]}, zero={"w": [4]}, lr={5: {0: 0.02}})),
        # AdEMAMix8bit: three buffers, its alpha and beta3 warm-ups.
        ("ademamix-int8-defaults", "ademamix", {"state_dtype": "int8"}, dict(params=big)),
        ("ademamix-int8-warmups-wd", "ademamix", {"state_dtype": "int8", **small, "lr": 0.003, "betas": [0.8, 0.99, 0.999],
                                                  "alpha": 3.0, "t_alpha": 4, "t_beta3": 6, "eps": 1e-6, "weight_decay": 0.1},
         dict(params={"w": [20, 55]}, missing={"w": [3]}, lr={5: {0: 0.001}})),
        ("ademamix-int8-mixed-min-size", "ademamix", {"state_dtype": "int8", "min_8bit_size": 300},
         dict(params={"w": [700], "b": [300], "s": [40]})),
    ]
    for name, optimizer, hp, extra in specs:
        params = extra.pop("params")
        tolerance = EXACT if optimizer in ("lion", "sgd") else ADAM_TOLERANCE
        note = ""
        if "s" in params:
            # A tensor under min_8bit_size keeps float32 state and bitsandbytes steps it with its
            # 32-bit update (Lion: `mul/add(alpha)` with a fused multiply-add; Adam: another
            # order of operations), which rounds differently from the float32 rule.
            tolerance = {"rtol": 1e-5, "atol": 1e-6}
            note = "; 's' (under min_8bit_size) keeps float32 state and bitsandbytes' 32-bit update"
        steps = 6 if params is big else STEPS  # 4100 elements a step: keep the file near 300 KB
        yield trajectory(bnb, name, optimizer, hp, params, steps, state_after=[0, steps // 2, steps - 1],
                         tolerance=tolerance, note=note, **extra)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-reference", default=os.path.join(REPO_ROOT, "Tests", "Fixtures", "reference"))
    parser.add_argument("--out-lowbit", default=os.path.join(REPO_ROOT, "Tests", "Fixtures", "lowbit"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    bnb, F = load_bnb()
    os.makedirs(args.out_lowbit, exist_ok=True)
    write(os.path.join(args.out_lowbit, "bnb-blockwise-quantization.json"), quantization_fixture(F))
    for fixture, state in optimizer_fixtures(bnb):
        write(os.path.join(args.out_reference, fixture["name"] + ".json"), fixture)
        write(os.path.join(args.out_lowbit, fixture["name"] + ".state.json"), state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
