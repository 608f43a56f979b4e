#!/usr/bin/env python3
"""Reference fixtures (`optim-fixture/1`) for the optimizers beyond torch.optim (issue 15):

  schedule_free_adamw / schedule_free_sgd   schedulefree 1.4.1 AdamWScheduleFree / SGDScheduleFree
                                            (foreach=False), train()/eval() as "mode" steps
  ademamix                                  bitsandbytes 0.50.2 AdEMAMix, optim_bits=32, CPU backend
  prodigy                                   prodigyopt 1.1.2 Prodigy
  lamb / lars / adan                        optax 0.2.8 (jax on CPU, float32, eager, one optax
                                            state per parameter, rebuilt each step with its lr)
  mars / soap                               pytorch-optimizer 4.1.0 MARS (foreach=False) / SOAP

Data (initial parameters, gradients) is drawn exactly as make_fixtures.py does: a NumPy generator
seeded with the CRC-32 of the fixture name, the same LAYOUTS and gradient SCALES.

Usage:
  python3 tools/reference/make_frontier_fixtures.py --out Tests/Fixtures/pending
  python3 tools/reference/make_frontier_fixtures.py --out DIR --only-optimizer soap
  python3 tools/reference/make_frontier_fixtures.py --check Tests/Fixtures/pending Tests/Fixtures/reference
(a registered optimizer's files live in Tests/Fixtures/reference: regenerate them with
 --out Tests/Fixtures/reference --only-optimizer NAME)

See tools/reference/README.md, section "Optimizers beyond torch.optim".
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import importlib.metadata
import inspect
import io
import json
import math
import os
import re
import sys
import textwrap
import warnings
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import (FORMAT, LAYOUTS, SCALES, DEFAULT_RTOL, DEFAULT_ATOL,  # noqa: E402
                           dumps, f32_list, nice_ceiling)

CONDITIONING_LIMIT = 0.1   # |float32 - float64 reference| must stay below this share of the tolerance
TOLERANCE_HEADROOM = 10.0  # a measured tolerance is nice_ceiling(10 x the measured gap)

# Reference defaults in the order written; checked against the constructors / functions.
# Prodigy's growth_rate default is float('inf'), which JSON cannot hold: it is left out of a file
# when it has its default (FORMAT.md: an omitted hyperparameter takes the reference default).
DEFAULTS = {
    "schedule_free_adamw": {"lr": 0.0025, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                            "warmup_steps": 0, "r": 0.0, "weight_lr_power": 2.0},
    "schedule_free_sgd": {"lr": 1.0, "momentum": 0.9, "weight_decay": 0.0, "warmup_steps": 0,
                          "r": 0.0, "weight_lr_power": 2.0},
    "ademamix": {"lr": 1e-3, "betas": [0.9, 0.999, 0.9999], "alpha": 5.0, "t_alpha": None,
                 "t_beta3": None, "eps": 1e-8, "weight_decay": 1e-2},
    "prodigy": {"lr": 1.0, "betas": [0.9, 0.999], "beta3": None, "eps": 1e-8, "weight_decay": 0.0,
                "decouple": True, "use_bias_correction": False, "safeguard_warmup": False,
                "d0": 1e-6, "d_coef": 1.0, "growth_rate": math.inf, "fsdp_in_use": False,
                "slice_p": 1},
    # optax: learning_rate has no default; `lr` is always written. Masks are not expressible.
    "lamb": {"lr": None, "b1": 0.9, "b2": 0.999, "eps": 1e-6, "eps_root": 0.0, "weight_decay": 0.0},
    "lars": {"lr": None, "weight_decay": 0.0, "trust_coefficient": 0.001, "eps": 0.0,
             "momentum": 0.9, "nesterov": False},
    "adan": {"lr": None, "b1": 0.98, "b2": 0.92, "b3": 0.99, "eps": 1e-8, "eps_root": 1e-8,
             "weight_decay": 0.0},
    "mars": {"lr": 3e-3, "betas": [0.95, 0.99], "gamma": 0.025, "mars_type": "adamw",
             "optimize_1d": False, "lr_1d": 3e-3, "betas_1d": [0.9, 0.95], "weight_decay": 0.0,
             "weight_decay_1d": 0.1, "weight_decouple": True, "fixed_decay": False,
             "ams_bound": False, "cautious": False, "eps": 1e-8, "maximize": False},
    "soap": {"lr": 3e-3, "betas": [0.95, 0.95], "shampoo_beta": None, "weight_decay": 1e-2,
             "precondition_frequency": 10, "max_precondition_dim": 10000, "merge_dims": False,
             "precondition_1d": False, "correct_bias": True, "normalize_gradient": False,
             "data_format": "channels_first", "eps": 1e-8, "maximize": False},
}
TUPLE_KEYS = {"betas", "betas_1d"}
# Constructor-only options (kept on the optimizer object, not in param groups): no group override.
OPTIMIZER_LEVEL = {"mars": {"maximize"}, "soap": {"maximize", "data_format"},
                   "prodigy": {"fsdp_in_use"}}
# Prodigy reads these from param_groups[0] only (a group override would be silently ignored).
PRODIGY_GROUP0_ONLY = {"betas", "beta3", "use_bias_correction", "d_coef", "growth_rate", "decouple"}
TORCH_OPTIMIZERS = {"schedule_free_adamw", "schedule_free_sgd", "ademamix", "prodigy", "mars", "soap"}
OPTAX_OPTIMIZERS = {"lamb", "lars", "adan"}

LAYOUTS = dict(LAYOUTS)
# SOAP: square matrices (and a 3-D tensor whose unfoldings have full rank), so that every
# Kronecker factor GG has full rank after the first gradient and its eigenbasis is unique up to
# signs (which cancel). A rank-deficient factor has an arbitrary null-space basis that eigh
# backends choose differently, and later gradients do reach that null space.
LAYOUTS["soap_small"] = [("a", [5, 5]), ("q", [4, 4]), ("b", [4]), ("s", [])]
LAYOUTS["soap_medium"] = [("a", [6, 6]), ("t", [2, 3, 4]), ("b", [5]), ("s", [])]
# precondition_1d: the 1-D factor g g^T has rank 1 after the first gradient; with 2 elements its
# null space is a line, so the eigenbasis is still unique up to signs.
LAYOUTS["soap_1d"] = [("a", [5, 5]), ("q", [4, 4]), ("b", [2]), ("s", [])]
# max_precondition_dim 4 with merge_dims: `w` [7, 4] becomes [1, 7, 4] (a 1x1 factor, 7 > 4 left
# unpreconditioned, the 4-wide factor G^T G of full rank); `m` [2, 2, 4] becomes [4, 4]; the 0-d
# `s` becomes [1] (a 1x1 factor). No 1-D parameter: with merge_dims, pytorch-optimizer 4.1.0's
# SOAP reshapes a 1-D gradient of n > 1 elements to [1] in `project` and raises.
LAYOUTS["soap_maxdim"] = [("w", [7, 4]), ("m", [2, 2, 4]), ("s", [])]
# data_format "channels_last" with merge_dims: the 4-D `k` [N, H, W, C] = [2, 2, 3, 2] is permuted
# to [2, 2, 2, 3] and merged to [4, 2, 3] (channels first it would be [4, 3, 2]); every unfolding
# has full rank. `a` [4, 4] stays [4, 4], the 0-d `s` becomes [1].
LAYOUTS["soap_4d"] = [("k", [2, 2, 3, 2]), ("a", [4, 4]), ("s", [])]


def dist_version(name: str) -> str:
    return importlib.metadata.version(name)


def describe(optimizer: str) -> str:
    tv = torch.__version__
    if optimizer == "schedule_free_adamw":
        return f"schedulefree {dist_version('schedulefree')} AdamWScheduleFree (torch {tv}, foreach=False)"
    if optimizer == "schedule_free_sgd":
        return f"schedulefree {dist_version('schedulefree')} SGDScheduleFree (torch {tv}, foreach=False)"
    if optimizer == "ademamix":
        return (f"bitsandbytes {dist_version('bitsandbytes')} AdEMAMix (optim_bits=32, CPU backend, "
                f"torch {tv})")
    if optimizer == "prodigy":
        return f"prodigyopt {dist_version('prodigyopt')} Prodigy (torch {tv})"
    if optimizer in OPTAX_OPTIMIZERS:
        import jax
        return (f"optax {dist_version('optax')} {optimizer} (jax {jax.__version__}, CPU, float32, eager; "
                f"one optax state per parameter, transformation rebuilt each step with the group's lr)")
    if optimizer == "mars":
        return f"pytorch-optimizer {dist_version('pytorch-optimizer')} MARS (torch {tv}, foreach=False)"
    if optimizer == "soap":
        return f"pytorch-optimizer {dist_version('pytorch-optimizer')} SOAP (torch {tv})"
    raise ValueError(optimizer)


def torch_class(optimizer: str):
    if optimizer == "schedule_free_adamw":
        from schedulefree import AdamWScheduleFree
        return AdamWScheduleFree
    if optimizer == "schedule_free_sgd":
        from schedulefree import SGDScheduleFree
        return SGDScheduleFree
    if optimizer == "ademamix":
        from bitsandbytes.optim import AdEMAMix
        return AdEMAMix
    if optimizer == "prodigy":
        from prodigyopt import Prodigy
        return Prodigy
    if optimizer == "mars":
        from pytorch_optimizer import MARS
        return MARS
    if optimizer == "soap":
        from pytorch_optimizer import SOAP
        return SOAP
    raise ValueError(optimizer)


def check_defaults():
    for name in TORCH_OPTIMIZERS:
        sig = inspect.signature(torch_class(name).__init__).parameters
        for key, want in DEFAULTS[name].items():
            got = sig[key].default
            got = list(got) if isinstance(got, tuple) else got
            if got != want:
                raise SystemExit(f"default of {name}.{key} is {got!r}, table says {want!r}")
        extra = set(sig) - set(DEFAULTS[name]) - {"self", "params", "foreach", "kwargs", "optim_bits",
                                                  "min_8bit_size", "is_paged"}
        if extra:
            raise SystemExit(f"{name}: constructor arguments missing from DEFAULTS: {sorted(extra)}")
    import optax
    for name in OPTAX_OPTIMIZERS:
        sig = inspect.signature(getattr(optax, name)).parameters
        for key, want in DEFAULTS[name].items():
            if key == "lr":
                continue
            if sig[key].default != want:
                raise SystemExit(f"default of optax.{name}.{key} is {sig[key].default!r}, table says {want!r}")
        extra = set(sig) - set(DEFAULTS[name]) - {"learning_rate", "mask", "weight_decay_mask",
                                                  "trust_ratio_mask"}
        if extra:
            raise SystemExit(f"optax.{name}: arguments missing from DEFAULTS: {sorted(extra)}")


def kwargs_of(optimizer: str, hp: dict) -> dict:
    out = {}
    for key, value in hp.items():
        if key not in DEFAULTS[optimizer]:
            raise ValueError(f"{optimizer}: unknown hyperparameter {key!r}")
        out[key] = tuple(value) if key in TUPLE_KEYS else value
    return out


# --------------------------------------------------------------------------------------------
# float64 variants of code that pins float32 (used only by the conditioning / tolerance runs)
# --------------------------------------------------------------------------------------------

SOAP_QR_CAST = "power_iter.to(torch.float32)"


@contextlib.contextmanager
def soap_qr_in_dtype():
    """SOAP's get_orthogonal_matrix_qr casts to float32 for torch.linalg.qr; for the float64 run its
    source is re-exec'd without that cast (a no-op in the float32 run)."""
    from pytorch_optimizer.optimizer import soap as soap_module
    cls = soap_module.SOAP
    source = textwrap.dedent(inspect.getsource(cls.get_orthogonal_matrix_qr))
    if source.count(SOAP_QR_CAST) != 1:
        raise SystemExit("SOAP.get_orthogonal_matrix_qr changed; revisit the float64 patch")
    source = source.replace(SOAP_QR_CAST, "power_iter")
    namespace = dict(soap_module.__dict__)
    exec(compile(source, soap_module.__file__ + " (qr in input dtype)", "exec"), namespace)
    saved = cls.get_orthogonal_matrix_qr
    cls.get_orthogonal_matrix_qr = namespace["get_orthogonal_matrix_qr"]
    try:
        yield
    finally:
        cls.get_orthogonal_matrix_qr = saved


@contextlib.contextmanager
def soap_linalg_in_float64():
    """Alternative 'eigh backend' for the float32 SOAP run: eigh and QR computed in float64 from
    the float32 matrices and rounded to float32 (everything else float32). Measures how much of
    a SOAP trajectory depends on how the eigen/QR factorisations round."""
    from pytorch_optimizer.optimizer import soap as soap_module
    real_eigh, real_qr = torch.linalg.eigh, torch.linalg.qr

    def eigh(m, *a, **k):
        w, q = real_eigh(m.double(), *a, **k)
        return w.to(m.dtype), q.to(m.dtype)

    def qr(m, *a, **k):
        q, r = real_qr(m.double(), *a, **k)
        return q.to(m.dtype), r.to(m.dtype)

    # soap.py calls torch.linalg.eigh / torch.linalg.qr through the torch module.
    assert soap_module.torch is torch
    torch.linalg.eigh, torch.linalg.qr = eigh, qr
    try:
        yield
    finally:
        torch.linalg.eigh, torch.linalg.qr = real_eigh, real_qr


@contextlib.contextmanager
def mars_newton_schulz_in_input_dtype():
    """MARS's "shampoo" type runs pytorch-optimizer's zero_power_via_newton_schulz_5 in its default
    dtype, bfloat16. Inside: the same function called with dtype = the input's dtype (float32 in
    the float32 run). Used to measure the tolerance a float32 implementation needs."""
    from pytorch_optimizer.optimizer import mars as mars_module
    real = mars_module.zero_power_via_newton_schulz_5

    def ns(g, *a, **k):
        k["dtype"] = g.dtype
        return real(g, *a, **k)

    mars_module.zero_power_via_newton_schulz_5 = ns
    try:
        yield
    finally:
        mars_module.zero_power_via_newton_schulz_5 = real


MARS_BF16_HEADROOM = 3.0  # as make_fixtures' Muon: atol = 3 x (float32 Newton-Schulz vs bfloat16)


def uses_mars_shampoo(fx: dict) -> bool:
    values = [fx["hyperparameters"].get("mars_type")]
    values += [g.get("hyperparameters", {}).get("mars_type") for g in fx.get("groups", [])]
    return fx["optimizer"] == "mars" and "shampoo" in values


def ademamix_float64(fx: dict):
    """float64 run of bitsandbytes' AdEMAMix (its CPU kernel casts to float32, so the reference
    cannot run in float64): the statements of `_optimizer_update_32bit_cpu`'s "ademamix" branch and
    AdEMAMix.update_step's alpha/beta3 schedules, transcribed in NumPy float64. Conditioning only."""
    params = {p["name"]: np.asarray(p["data"], dtype=np.float64).reshape(p["shape"]) for p in fx["params"]}
    groups = groups_of(fx)
    hps = [{**DEFAULTS["ademamix"], **fx["hyperparameters"], **g["hyperparameters"]} for g in groups]
    state, snaps = {}, []
    for step in fx["steps"]:
        for i, lr in step.get("lr", {}).items():
            hps[int(i)]["lr"] = float(lr)
        for g, hp in zip(groups, hps):
            for name in g["params"]:
                if name not in step["grads"]:
                    continue
                grad = np.asarray(step["grads"][name], dtype=np.float64).reshape(params[name].shape)
                st = state.setdefault(name, {"step": 0, "m1": np.zeros_like(grad), "m2": np.zeros_like(grad),
                                             "nu": np.zeros_like(grad)})
                st["step"] += 1
                t = st["step"]
                b1, b2, b3 = hp["betas"]
                alpha = hp["alpha"]
                if hp["t_alpha"]:
                    alpha = min(t * alpha / hp["t_alpha"], alpha)
                if hp["t_beta3"]:
                    l1, l3, sc = math.log(b1), math.log(b3), t / hp["t_beta3"]
                    b3 = min(math.exp((l1 * l3) / (((1 - sc) * l3) + (sc * l1))), b3)
                st["m1"] = st["m1"] * b1 + grad * (1 - b1)
                st["m2"] = st["m2"] * b3 + grad * (1 - b3)
                st["nu"] = st["nu"] * b2 + grad * grad * (1 - b2)
                c1, c2 = 1.0 - b1 ** t, math.sqrt(1.0 - b2 ** t)
                p = params[name]
                if hp["weight_decay"] > 0:
                    p = p * (1.0 - hp["lr"] * hp["weight_decay"])
                params[name] = p - hp["lr"] * ((st["m1"] / c1 + alpha * st["m2"]) / (np.sqrt(st["nu"]) / c2 + hp["eps"]))
        snaps.append({n: v.reshape(-1).copy() for n, v in params.items()})
    return snaps


# --------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------

def groups_of(fx: dict) -> list[dict]:
    if "groups" in fx:
        listed = sorted(n for g in fx["groups"] for n in g["params"])
        if listed != sorted(p["name"] for p in fx["params"]):
            raise ValueError(f"{fx['name']}: groups must hold every parameter exactly once")
        return [{"params": list(g["params"]), "hyperparameters": g.get("hyperparameters", {})}
                for g in fx["groups"]]
    return [{"params": [p["name"] for p in fx["params"]], "hyperparameters": {}}]


def replay(fx: dict, dtype: str = "float32", variant: str | None = None) -> list[dict]:
    """Runs the fixture's steps through the reference; one snapshot (name -> float64 flat data)
    per step object. dtype "float64" runs the reference in float64 (conditioning)."""
    opt = fx["optimizer"]
    if opt in OPTAX_OPTIMIZERS:
        return replay_optax(fx, dtype)
    if opt == "ademamix" and dtype == "float64":
        return ademamix_float64(fx)
    ctx = contextlib.nullcontext()
    if opt == "soap" and dtype == "float64":
        ctx = soap_qr_in_dtype()
    elif opt == "soap" and variant == "linalg64":
        ctx = soap_linalg_in_float64()
    elif opt == "mars" and variant == "ns_f32":
        ctx = mars_newton_schulz_in_input_dtype()
    with ctx:
        return replay_torch(fx, torch.float64 if dtype == "float64" else torch.float32)


def replay_torch(fx: dict, dtype) -> list[dict]:
    opt_name = fx["optimizer"]
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    params = {}
    for spec in fx["params"]:
        arr = np.asarray(spec["data"], dtype=np_dtype).reshape(spec["shape"])
        params[spec["name"]] = torch.nn.Parameter(torch.from_numpy(arr.copy()))
    hp = kwargs_of(opt_name, fx["hyperparameters"])
    param_groups = []
    for g in groups_of(fx):
        over = kwargs_of(opt_name, g["hyperparameters"])
        bad = set(over) & (OPTIMIZER_LEVEL.get(opt_name, set())
                           | (PRODIGY_GROUP0_ONLY if opt_name == "prodigy" else set()))
        if bad:
            raise ValueError(f"{opt_name}: {sorted(bad)} cannot be overridden per group")
        param_groups.append({"params": [params[n] for n in g["params"]], **over})
    cls = torch_class(opt_name)
    if opt_name in ("schedule_free_adamw", "schedule_free_sgd", "mars"):
        optimizer = cls(param_groups, **hp, foreach=False)
    elif opt_name == "ademamix":
        optimizer = cls(param_groups, **hp, optim_bits=32)
    elif opt_name == "prodigy":
        with contextlib.redirect_stdout(io.StringIO()):  # "Using decoupled weight decay"
            optimizer = cls(param_groups, **hp)
    else:
        optimizer = cls(param_groups, **hp)
    if opt_name.startswith("schedule_free"):
        optimizer.train()  # parameters start in train mode (the package requires the call)
    snaps = []
    for step in fx["steps"]:
        if "mode" in step:
            assert "grads" not in step
            getattr(optimizer, {"train": "train", "eval": "eval"}[step["mode"]])()
        else:
            for index, lr in step.get("lr", {}).items():
                optimizer.param_groups[int(index)]["lr"] = float(lr)
            for name, p in params.items():
                g = step["grads"].get(name)
                p.grad = None if g is None else torch.from_numpy(
                    np.asarray(g, dtype=np_dtype).reshape(p.shape).copy())
            optimizer.step()
        snaps.append({n: p.detach().reshape(-1).double().numpy().copy() for n, p in params.items()})
    return snaps


@contextlib.contextmanager
def jax_x64(enabled: bool):
    import jax
    saved = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", saved)


def replay_optax(fx: dict, dtype: str) -> list[dict]:
    with jax_x64(dtype == "float64"):
        return _replay_optax(fx, dtype)


def _replay_optax(fx: dict, dtype: str) -> list[dict]:
    """One optax state per parameter (lamb/lars/adan act per leaf; only the step count is shared in
    a tree, and a per-parameter count is what a missing gradient needs). Each step every group's
    transformation is rebuilt with its current lr (Python floats, as optax.lamb(lr) gets them)."""
    import jax.numpy as jnp
    import optax
    opt_name = fx["optimizer"]
    np_dtype = np.float32 if dtype == "float32" else np.float64
    params = {p["name"]: jnp.asarray(np.asarray(p["data"], dtype=np_dtype).reshape(p["shape"]))
              for p in fx["params"]}
    groups = groups_of(fx)
    hps = []
    for g in groups:
        hp = {**DEFAULTS[opt_name], **fx["hyperparameters"], **g["hyperparameters"]}
        hps.append(hp)
    which = {n: i for i, g in enumerate(groups) for n in g["params"]}

    def build(hp):
        kw = {k: v for k, v in hp.items() if k != "lr"}
        return getattr(optax, opt_name)(learning_rate=float(hp["lr"]), **kw)

    states = {n: build(hps[which[n]]).init(p) for n, p in params.items()}
    snaps = []
    for step in fx["steps"]:
        for index, lr in step.get("lr", {}).items():
            hps[int(index)]["lr"] = float(lr)
        for name in params:
            g = step["grads"].get(name)
            if g is None:
                continue
            grad = jnp.asarray(np.asarray(g, dtype=np_dtype).reshape(params[name].shape))
            tx = build(hps[which[name]])
            updates, states[name] = tx.update(grad, states[name], params[name])
            params[name] = optax.apply_updates(params[name], updates)
        snaps.append({n: np.asarray(p, dtype=np.float64).reshape(-1).copy() for n, p in params.items()})
    return snaps


# --------------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------------

FIXTURES: list[dict] = []


def fixture(name, optimizer, hp=None, *, layout="small", steps=16, groups=None, missing=None,
            zero=None, lr=None, modes=None, expect=None, zero_init=None, scales=None):
    """Declares one fixture (arguments as make_fixtures.fixture), plus:
    modes: [(k, "train" | "eval")]: a mode step inserted after k gradient steps (k = steps: at the
    end); zero_init: parameters that start at exactly zero; scales: gradient scale cycle."""
    assert re.fullmatch(r"[a-z0-9_-]+", name) and all(f["name"] != name for f in FIXTURES), name
    assert name.startswith(optimizer + "-"), name
    assert 10 <= steps <= 30
    FIXTURES.append(dict(name=name, optimizer=optimizer, hp=hp or {}, layout=layout, steps=steps,
                         groups=groups, missing=missing or {}, zero=zero or {}, lr=lr or {},
                         modes=modes or [], expect=expect, zero_init=zero_init or [],
                         scales=scales or SCALES))


def full_hp(optimizer: str, overrides: dict) -> dict:
    hp = copy.deepcopy(DEFAULTS[optimizer])
    for key in overrides:
        if key not in hp:
            raise ValueError(f"{optimizer}: unknown hyperparameter {key!r}")
    hp.update(copy.deepcopy(overrides))
    if optimizer == "prodigy" and hp["growth_rate"] == math.inf:
        del hp["growth_rate"]   # JSON has no infinity; omitted = the default, float('inf')
    return hp


def make_fixture(spec: dict) -> dict:
    name, optimizer = spec["name"], spec["optimizer"]
    rng = np.random.default_rng([zlib.crc32(name.encode()), 0])
    layout = LAYOUTS[spec["layout"]]
    n = spec["steps"]
    fx = {"format": FORMAT, "name": name, "reference": describe(optimizer), "optimizer": optimizer,
          "hyperparameters": full_hp(optimizer, spec["hp"])}
    if spec["groups"]:
        fx["groups"] = []
        for names, overrides in spec["groups"]:
            full_hp(optimizer, overrides)
            g = {"params": list(names)}
            if overrides:
                g["hyperparameters"] = copy.deepcopy(overrides)
            fx["groups"].append(g)
    fx["params"] = []
    for pn, shape in layout:
        data = rng.standard_normal(shape)
        if pn in spec["zero_init"]:
            data = np.zeros(shape)
        fx["params"].append({"name": pn, "shape": shape, "data": f32_list(data)})
    scales = spec["scales"]
    steps, grad_index = [], []
    for s in range(n + 1):
        for k, mode in spec["modes"]:
            if k == s:
                steps.append({"mode": mode})
        if s == n:
            break
        grads = {}
        for j, (pn, shape) in enumerate(layout):
            if s in spec["missing"].get(pn, ()):
                rng.standard_normal(shape)
                continue
            g = rng.standard_normal(shape) * scales[(3 * s + 2 * j) % len(scales)]
            if s in spec["zero"].get(pn, ()) or s in spec["zero"].get("*", ()):
                g = np.zeros(shape)
            grads[pn] = f32_list(g)
        step = {"grads": grads}
        if s in spec["lr"]:
            step["lr"] = {str(k): float(v) for k, v in spec["lr"][s].items()}
        grad_index.append(len(steps))
        steps.append(step)
    fx["steps"] = steps
    snaps = replay(fx)
    expect = spec["expect"] if spec["expect"] is not None else sorted({0, n // 3, (2 * n) // 3})
    marks = {grad_index[s] for s in expect} | {i for i, st in enumerate(steps) if "mode" in st}
    for i in sorted(marks):
        steps[i]["expected"] = {pn: f32_list(snaps[i][pn]) for pn, _ in layout}
    fx["expected"] = {pn: f32_list(snaps[-1][pn]) for pn, _ in layout}
    for snap in snaps:
        for v in snap.values():
            if not np.all(np.isfinite(v)):
                raise SystemExit(f"{name}: non-finite parameter")
    return fx


# ---- schedule_free_adamw -----------------------------------------------------------------------
# Mode steps: "eval" moves p to x (p.lerp_(z, 1 - 1/beta1)), "train" back to y (p.lerp_(z, 1-beta1)).
fixture("schedule_free_adamw-defaults", "schedule_free_adamw", {}, steps=14)
fixture("schedule_free_adamw-ends-in-eval", "schedule_free_adamw", {"lr": 0.01}, steps=16,
        modes=[(16, "eval")])
fixture("schedule_free_adamw-mode-switches", "schedule_free_adamw", {"lr": 0.01}, steps=20,
        modes=[(4, "eval"), (4, "train"), (9, "eval"), (9, "train"), (15, "eval"), (15, "train"),
               (20, "eval")])
fixture("schedule_free_adamw-options", "schedule_free_adamw",
        {"lr": 0.02, "betas": [0.8, 0.99], "eps": 1e-3, "weight_decay": 0.05, "warmup_steps": 6,
         "r": 1.0, "weight_lr_power": 1.0}, steps=18, modes=[(10, "eval"), (10, "train")])
fixture("schedule_free_adamw-groups", "schedule_free_adamw", {"lr": 0.01},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.03, "betas": [0.95, 0.9], "weight_decay": 0.1, "warmup_steps": 4}),
                (["t"], {"lr": 0.005, "eps": 0.01, "r": 2.0, "weight_lr_power": 0.0})],
        steps=20, lr={5: {"0": 0.02}, 12: {"1": 0.01, "2": 0.02}},
        modes=[(8, "eval"), (8, "train"), (20, "eval")])
fixture("schedule_free_adamw-missing-zero", "schedule_free_adamw", {"lr": 0.01, "weight_decay": 0.02},
        steps=22, missing={"w": [0, 1, 2], "b": [9, 10], "s": [16]}, zero={"t": [0, 4], "*": [12]},
        lr={7: {"0": 0.02}, 15: {"0": 0.005}}, modes=[(1, "eval"), (1, "train"), (22, "eval")])
fixture("schedule_free_adamw-combined", "schedule_free_adamw",
        {"lr": 0.015, "betas": [0.85, 0.995], "eps": 1e-6, "weight_decay": 0.01, "warmup_steps": 5,
         "r": 0.5, "weight_lr_power": 3.0},
        layout="medium", steps=24, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.03}, 15: {"0": 0.01}}, modes=[(12, "eval"), (12, "train"), (24, "eval")])

# ---- schedule_free_sgd -------------------------------------------------------------------------
fixture("schedule_free_sgd-defaults", "schedule_free_sgd", {"lr": 0.01}, steps=14)
fixture("schedule_free_sgd-lr-default", "schedule_free_sgd", {}, steps=12, scales=[0.01, 0.003, 0.02])
fixture("schedule_free_sgd-ends-in-eval", "schedule_free_sgd", {"lr": 0.02}, steps=16,
        modes=[(16, "eval")])
fixture("schedule_free_sgd-mode-switches", "schedule_free_sgd", {"lr": 0.02, "momentum": 0.8},
        steps=20, modes=[(3, "eval"), (3, "train"), (10, "eval"), (10, "train"), (16, "eval"),
                         (16, "train"), (20, "eval")])
fixture("schedule_free_sgd-options", "schedule_free_sgd",
        {"lr": 0.03, "momentum": 0.7, "weight_decay": 0.05, "warmup_steps": 6, "r": 1.0,
         "weight_lr_power": 1.0}, steps=18, modes=[(9, "eval"), (9, "train")])
fixture("schedule_free_sgd-groups", "schedule_free_sgd", {"lr": 0.01},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.03, "momentum": 0.5, "weight_decay": 0.1, "warmup_steps": 4}),
                (["t"], {"lr": 0.005, "r": 2.0, "weight_lr_power": 0.0})],
        steps=20, lr={5: {"0": 0.02}, 12: {"1": 0.01, "2": 0.02}},
        modes=[(8, "eval"), (8, "train"), (20, "eval")])
fixture("schedule_free_sgd-missing-zero", "schedule_free_sgd", {"lr": 0.01, "weight_decay": 0.02},
        steps=22, missing={"w": [0, 1, 2], "b": [9, 10], "s": [16]}, zero={"t": [0, 4], "*": [12]},
        lr={7: {"0": 0.02}, 15: {"0": 0.005}}, modes=[(1, "eval"), (1, "train"), (22, "eval")])
fixture("schedule_free_sgd-combined", "schedule_free_sgd",
        {"lr": 0.015, "momentum": 0.95, "weight_decay": 0.01, "warmup_steps": 5, "r": 0.5,
         "weight_lr_power": 3.0},
        layout="medium", steps=24, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.03}, 15: {"0": 0.01}}, modes=[(12, "eval"), (12, "train"), (24, "eval")])

# ---- ademamix (bitsandbytes, 32-bit, CPU) ------------------------------------------------------
fixture("ademamix-defaults", "ademamix", {}, steps=14)
fixture("ademamix-betas-alpha", "ademamix", {"lr": 0.005, "betas": [0.8, 0.99, 0.995], "alpha": 2.0},
        steps=18)
fixture("ademamix-schedulers", "ademamix", {"lr": 0.005, "t_alpha": 10, "t_beta3": 12}, steps=20)
fixture("ademamix-eps-wd", "ademamix", {"lr": 0.005, "eps": 1e-3, "weight_decay": 0.2})
fixture("ademamix-wd0", "ademamix", {"lr": 0.005, "weight_decay": 0.0})
fixture("ademamix-groups", "ademamix", {"lr": 0.004},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.01, "betas": [0.85, 0.98, 0.999], "t_alpha": 6}),
                (["t"], {"lr": 0.002, "alpha": 8.0, "t_beta3": 8, "eps": 1e-4, "weight_decay": 0.0})],
        steps=20, lr={5: {"0": 0.008}, 12: {"1": 0.004, "2": 0.006}})
fixture("ademamix-missing-zero-lr", "ademamix", {"lr": 0.005, "t_alpha": 8},
        steps=22, missing={"w": [0, 1, 2], "b": [9, 10], "s": [16]}, zero={"t": [0, 4], "*": [12]},
        lr={7: {"0": 0.01}, 15: {"0": 0.002}})
fixture("ademamix-combined", "ademamix",
        {"lr": 0.003, "betas": [0.9, 0.995, 0.999], "alpha": 4.0, "t_alpha": 12, "t_beta3": 15,
         "eps": 1e-6, "weight_decay": 0.05},
        layout="medium", steps=24, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.006}, 15: {"0": 0.002}})

# ---- prodigy -----------------------------------------------------------------------------------
# lr must be equal in every group, or 0 (Prodigy raises otherwise); lr changes set all groups.
fixture("prodigy-defaults", "prodigy", {}, steps=14)
fixture("prodigy-d0-coef", "prodigy", {"d0": 1e-3, "d_coef": 0.5}, steps=18)
fixture("prodigy-growth-rate", "prodigy", {"d0": 1e-4, "growth_rate": 1.05}, steps=20)
fixture("prodigy-bias-correction-safeguard", "prodigy",
        {"use_bias_correction": True, "safeguard_warmup": True, "d0": 1e-3}, steps=18)
fixture("prodigy-betas-beta3-eps", "prodigy", {"betas": [0.8, 0.99], "beta3": 0.9, "eps": 1e-4,
                                                "d0": 1e-3})
fixture("prodigy-beta1-zero", "prodigy", {"betas": [0.0, 0.99], "d0": 1e-3})
fixture("prodigy-wd-decoupled", "prodigy", {"weight_decay": 0.1, "d0": 1e-3})
fixture("prodigy-wd-coupled", "prodigy", {"weight_decay": 0.1, "decouple": False, "d0": 1e-3})
fixture("prodigy-slice-p", "prodigy", {"slice_p": 3, "d0": 1e-3}, layout="medium")
fixture("prodigy-groups", "prodigy", {"lr": 0.5, "d0": 1e-3},
        groups=[(["w"], {}),
                (["b", "s"], {"weight_decay": 0.05, "eps": 1e-6, "safeguard_warmup": True}),
                (["t"], {"lr": 0.0, "d0": 1e-2, "slice_p": 2})],
        steps=20, lr={5: {"0": 1.0, "1": 1.0}, 12: {"0": 0.3, "1": 0.3}})
fixture("prodigy-missing-zero-lr", "prodigy", {"d0": 1e-3, "weight_decay": 0.01},
        steps=22, missing={"w": [0, 1, 2], "b": [9, 10], "s": [16]}, zero={"t": [0, 4], "*": [12]},
        lr={7: {"0": 0.5}, 15: {"0": 1.5}})
fixture("prodigy-all-zero-first", "prodigy", {"d0": 1e-3}, steps=12, zero={"*": [0, 1]})
fixture("prodigy-combined", "prodigy",
        {"lr": 0.8, "betas": [0.85, 0.995], "beta3": 0.95, "eps": 1e-6, "weight_decay": 0.02,
         "decouple": True, "use_bias_correction": True, "safeguard_warmup": True, "d0": 1e-4,
         "d_coef": 2.0, "growth_rate": 1.2, "slice_p": 2},
        layout="medium", steps=24, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 1.0}, 15: {"0": 0.5}})

# ---- lamb (optax) ------------------------------------------------------------------------------
fixture("lamb-defaults", "lamb", {"lr": 0.01}, steps=14)
fixture("lamb-betas-eps", "lamb", {"lr": 0.01, "b1": 0.8, "b2": 0.99, "eps": 1e-3, "eps_root": 1e-4})
fixture("lamb-wd", "lamb", {"lr": 0.01, "weight_decay": 0.1})
fixture("lamb-zero-init", "lamb", {"lr": 0.01}, zero_init=["b", "s"], zero={"t": [0, 5]})
fixture("lamb-groups", "lamb", {"lr": 0.01},
        groups=[(["w"], {}), (["b", "s"], {"lr": 0.03, "b1": 0.5, "weight_decay": 0.05}),
                (["t"], {"lr": 0.005, "eps": 1e-4, "b2": 0.9})],
        steps=20, lr={5: {"0": 0.02}, 12: {"1": 0.01, "2": 0.02}})
fixture("lamb-missing-zero-lr", "lamb", {"lr": 0.01, "weight_decay": 0.01},
        steps=22, missing={"w": [0, 1, 2], "b": [9, 10], "s": [16]}, zero={"t": [0, 4], "*": [12]},
        lr={7: {"0": 0.02}, 15: {"0": 0.005}})
fixture("lamb-combined", "lamb",
        {"lr": 0.02, "b1": 0.85, "b2": 0.995, "eps": 1e-5, "eps_root": 1e-8, "weight_decay": 0.02},
        layout="medium", steps=24, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.04}, 15: {"0": 0.01}})

# ---- lars (optax) ------------------------------------------------------------------------------
fixture("lars-defaults", "lars", {"lr": 1.0}, steps=14)
fixture("lars-trust-eps", "lars", {"lr": 0.5, "trust_coefficient": 0.01, "eps": 1e-3})
fixture("lars-wd", "lars", {"lr": 1.0, "weight_decay": 0.1})
fixture("lars-nesterov-momentum", "lars", {"lr": 1.0, "momentum": 0.8, "nesterov": True}, steps=18)
fixture("lars-momentum0", "lars", {"lr": 1.0, "momentum": 0.0})
fixture("lars-zero-init", "lars", {"lr": 0.1}, zero_init=["b", "s"], zero={"t": [0, 5]})
fixture("lars-groups", "lars", {"lr": 1.0},
        groups=[(["w"], {}), (["b", "s"], {"lr": 2.0, "momentum": 0.5, "weight_decay": 0.05}),
                (["t"], {"lr": 0.5, "trust_coefficient": 0.005, "nesterov": True})],
        steps=20, lr={5: {"0": 2.0}, 12: {"1": 1.0, "2": 1.5}})
fixture("lars-missing-zero-lr", "lars", {"lr": 1.0, "weight_decay": 0.01},
        steps=22, missing={"w": [0, 1, 2], "b": [9, 10], "s": [16]}, zero={"t": [0, 4], "*": [12]},
        lr={7: {"0": 2.0}, 15: {"0": 0.5}})
fixture("lars-combined", "lars",
        {"lr": 1.5, "weight_decay": 0.02, "trust_coefficient": 0.002, "eps": 1e-4, "momentum": 0.85,
         "nesterov": True},
        layout="medium", steps=24, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 3.0}, 15: {"0": 1.0}})

# ---- adan (optax) ------------------------------------------------------------------------------
fixture("adan-defaults", "adan", {"lr": 0.01}, steps=14)
fixture("adan-betas", "adan", {"lr": 0.01, "b1": 0.9, "b2": 0.8, "b3": 0.95}, steps=18)
fixture("adan-eps", "adan", {"lr": 0.01, "eps": 1e-3, "eps_root": 1e-4})
fixture("adan-wd", "adan", {"lr": 0.01, "weight_decay": 0.1})
fixture("adan-groups", "adan", {"lr": 0.01},
        groups=[(["w"], {}), (["b", "s"], {"lr": 0.03, "b1": 0.9, "weight_decay": 0.05}),
                (["t"], {"lr": 0.005, "b2": 0.5, "b3": 0.9, "eps": 1e-4})],
        steps=20, lr={5: {"0": 0.02}, 12: {"1": 0.01, "2": 0.02}})
fixture("adan-missing-zero-lr", "adan", {"lr": 0.01, "weight_decay": 0.01},
        steps=22, missing={"w": [0, 1, 2], "b": [9, 10], "s": [16]}, zero={"t": [0, 4], "*": [12]},
        lr={7: {"0": 0.02}, 15: {"0": 0.005}})
fixture("adan-combined", "adan",
        {"lr": 0.02, "b1": 0.95, "b2": 0.9, "b3": 0.995, "eps": 1e-6, "eps_root": 1e-6,
         "weight_decay": 0.02},
        layout="medium", steps=24, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.04}, 15: {"0": 0.01}})

# ---- mars (pytorch-optimizer) ------------------------------------------------------------------
# "small": w [2,3] and t [2,3,2] take the MARS path (ndim >= 2), b and s the 1-D AdamW path.
fixture("mars-defaults", "mars", {}, steps=14)
fixture("mars-gamma-betas", "mars", {"lr": 0.005, "gamma": 0.1, "betas": [0.9, 0.95]}, steps=18)
fixture("mars-lion", "mars", {"lr": 0.002, "mars_type": "lion"})
fixture("mars-shampoo", "mars", {"lr": 0.005, "mars_type": "shampoo"}, layout="matrices")
fixture("mars-optimize-1d", "mars", {"lr": 0.005, "optimize_1d": True, "weight_decay": 0.1})
fixture("mars-1d-options", "mars", {"lr": 0.005, "lr_1d": 0.01, "betas_1d": [0.8, 0.99],
                                    "weight_decay_1d": 0.0})
fixture("mars-wd-coupled", "mars", {"lr": 0.005, "weight_decay": 0.1, "weight_decouple": False,
                                    "weight_decay_1d": 0.05})
fixture("mars-fixed-decay", "mars", {"lr": 0.005, "weight_decay": 0.01, "fixed_decay": True})
fixture("mars-ams-cautious-eps", "mars", {"lr": 0.005, "ams_bound": True, "cautious": True, "eps": 1e-4})
fixture("mars-maximize", "mars", {"lr": 0.005, "maximize": True})
fixture("mars-groups", "mars", {"lr": 0.004},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.01, "betas_1d": [0.85, 0.9], "weight_decay_1d": 0.0}),
                (["t"], {"lr": 0.002, "gamma": 0.05, "mars_type": "lion", "weight_decay": 0.05})],
        steps=20, lr={5: {"0": 0.008}, 12: {"1": 0.004, "2": 0.006}})
fixture("mars-missing-zero-lr", "mars", {"lr": 0.005, "weight_decay": 0.01},
        steps=22, missing={"w": [0, 1, 2], "b": [9, 10], "s": [16]}, zero={"t": [0, 4], "*": [12]},
        lr={7: {"0": 0.01}, 15: {"0": 0.002}})
fixture("mars-combined", "mars",
        {"lr": 0.004, "betas": [0.9, 0.98], "gamma": 0.05, "optimize_1d": True, "lr_1d": 0.002,
         "betas_1d": [0.85, 0.97], "weight_decay": 0.02, "weight_decay_1d": 0.03, "ams_bound": True,
         "cautious": True, "eps": 1e-6, "maximize": True},
        layout="medium", steps=24, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.008}, 15: {"0": 0.002}})

# ---- soap (pytorch-optimizer) ------------------------------------------------------------------
# No all-zero gradient at a parameter's first gradient: GG would be 0 and eigh's basis arbitrary.
# No matrix parameter whose first gradient comes after the group's first step: SOAP then updates
# it in the same step, in the eigenbasis of that very gradient, where the projected gradient is
# diagonal plus rounding noise that Adam's m/sqrt(v) normalises to O(1) (see the README).
fixture("soap-defaults", "soap", {}, layout="soap_small", steps=14)
fixture("soap-refresh", "soap", {"lr": 0.005, "precondition_frequency": 3}, layout="soap_small",
        steps=20)
fixture("soap-betas-shampoo-beta", "soap", {"lr": 0.005, "betas": [0.9, 0.99], "shampoo_beta": 0.8,
                                            "precondition_frequency": 4}, layout="soap_small")
fixture("soap-no-bias-correction-normalize", "soap",
        {"lr": 0.005, "correct_bias": False, "normalize_gradient": True, "eps": 1e-4,
         "weight_decay": 0.1, "precondition_frequency": 5}, layout="soap_small")
fixture("soap-maxdim-merge", "soap", {"lr": 0.005, "max_precondition_dim": 4, "merge_dims": True,
                                      "precondition_frequency": 4}, layout="soap_maxdim")
fixture("soap-channels-last-merge", "soap", {"lr": 0.005, "max_precondition_dim": 4, "merge_dims": True,
                                             "data_format": "channels_last", "precondition_frequency": 3},
        layout="soap_4d")
fixture("soap-precondition-1d-maximize", "soap",
        {"lr": 0.005, "precondition_1d": True, "maximize": True, "data_format": "channels_last",
         "precondition_frequency": 4}, layout="soap_1d", scales=[1.0, 0.3, 3.0, 0.5])
fixture("soap-groups", "soap", {"lr": 0.004, "precondition_frequency": 4},
        groups=[(["a"], {}),
                (["q", "b"], {"lr": 0.01, "betas": [0.9, 0.9], "weight_decay": 0.0,
                              "precondition_frequency": 3}),
                (["s"], {"lr": 0.002, "eps": 1e-4})],
        layout="soap_small", steps=20, lr={5: {"0": 0.008}, 12: {"1": 0.004, "2": 0.006}})
fixture("soap-missing-zero-lr", "soap", {"lr": 0.005, "precondition_frequency": 4},
        layout="soap_small", steps=22, missing={"a": [3, 4, 5], "b": [9, 10], "s": [0, 16]},
        zero={"q": [4, 5], "*": [12]}, lr={7: {"0": 0.01}, 15: {"0": 0.002}})
fixture("soap-combined", "soap",
        {"lr": 0.004, "betas": [0.9, 0.98], "shampoo_beta": 0.9, "weight_decay": 0.02,
         "precondition_frequency": 5, "normalize_gradient": True, "eps": 1e-6, "maximize": True},
        layout="soap_medium", steps=24, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.008}, 15: {"0": 0.002}})


# --------------------------------------------------------------------------------------------
# Checks and output
# --------------------------------------------------------------------------------------------

def gap(a_snaps, b_snaps) -> tuple[float, float]:
    """(max abs difference, max difference / (atol + rtol |b|) at the default tolerance)."""
    worst_abs = worst_rel = 0.0
    for a, b in zip(a_snaps, b_snaps):
        for name in a:
            d = np.abs(a[name] - b[name])
            worst_abs = max(worst_abs, float(d.max(initial=0.0)))
            worst_rel = max(worst_rel, float((d / (DEFAULT_ATOL + DEFAULT_RTOL * np.abs(b[name]))).max(initial=0.0)))
    return worst_abs, worst_rel


def share_of(a_snaps, b_snaps, tol) -> float:
    rtol, atol = tol.get("rtol", DEFAULT_RTOL), tol.get("atol", DEFAULT_ATOL)
    worst = 0.0
    for a, b in zip(a_snaps, b_snaps):
        for name in a:
            worst = max(worst, float((np.abs(a[name] - b[name]) / (atol + rtol * np.abs(b[name]))).max(initial=0.0)))
    return worst


def compare(fx: dict, snaps) -> dict:
    tol = fx.get("tolerance", {})
    rtol, atol = tol.get("rtol", DEFAULT_RTOL), tol.get("atol", DEFAULT_ATOL)
    checks = [(i, s["expected"]) for i, s in enumerate(fx["steps"]) if "expected" in s]
    checks.append((len(fx["steps"]) - 1, fx["expected"]))
    max_abs, max_ratio, failures = 0.0, 0.0, []
    for i, expected in checks:
        for name, want in expected.items():
            want = np.asarray(want, dtype=np.float64)
            err = np.abs(snaps[i][name] - want)
            max_abs = max(max_abs, float(err.max(initial=0.0)))
            max_ratio = max(max_ratio, float((err / (atol + rtol * np.abs(want))).max(initial=0.0)))
            if not np.all(err <= atol + rtol * np.abs(want)):
                failures.append(f"step {i} {name}: max err {float(err.max()):.3g}")
    return {"max_abs": max_abs, "max_ratio": max_ratio, "failures": failures}


def generate(out_dir: str, only, only_optimizers) -> int:
    os.makedirs(out_dir, exist_ok=True)
    problems, total = [], 0
    for spec in FIXTURES:
        if only and spec["name"] not in only:
            continue
        if only_optimizers and spec["optimizer"] not in only_optimizers:
            continue
        fx = make_fixture(spec)
        snaps32 = replay(fx)
        snaps64 = replay(fx, "float64")
        g64_abs, g64_rel = gap(snaps32, snaps64)
        note = f"f64 gap {g64_abs:.2e} ({g64_rel:.3f} of default tol)"
        measured = g64_abs
        if fx["optimizer"] == "soap":
            alt = replay(fx, variant="linalg64")
            galt, _ = gap(snaps32, alt)
            note += f", eigh/qr-in-f64 gap {galt:.2e}"
            measured = max(measured, galt)
        if uses_mars_shampoo(fx):
            gns, _ = gap(snaps32, replay(fx, variant="ns_f32"))
            atol = nice_ceiling(MARS_BF16_HEADROOM * gns)
            fx["tolerance"] = {"rtol": DEFAULT_RTOL, "atol": atol}
            note += f", f32-NS vs bf16-NS gap {gns:.2e} -> atol {atol:g}"
        elif fx["optimizer"] == "soap" or g64_rel * TOLERANCE_HEADROOM > 1.0:
            atol = max(DEFAULT_ATOL, nice_ceiling(TOLERANCE_HEADROOM * measured))
            fx["tolerance"] = {"rtol": DEFAULT_RTOL, "atol": atol}
            note += f" -> atol {atol:g}"
        cond = share_of(snaps32, snaps64, fx.get("tolerance", {}))
        if cond > CONDITIONING_LIMIT:
            problems.append(f"{spec['name']}: float32 vs float64 uses {cond:.3f} of its tolerance")
        text = dumps(fx) + "\n"
        again = make_fixture(spec)
        if "tolerance" in fx:
            again["tolerance"] = fx["tolerance"]
        if dumps(again) + "\n" != text:
            problems.append(f"{spec['name']}: a second generation differs")
        check = compare(json.loads(text), replay(json.loads(text)))
        if check["max_abs"] != 0.0:
            problems.append(f"{spec['name']}: replay of the written file differs ({check['max_abs']})")
        with open(os.path.join(out_dir, spec["name"] + ".json"), "w", encoding="utf-8") as f:
            f.write(text)
        total += len(text)
        nsteps = sum("grads" in s for s in fx["steps"])
        moves = max(float(np.abs(np.asarray(fx["expected"][p["name"]]) - np.asarray(p["data"])).max())
                    for p in fx["params"])
        print(f"{spec['name']:42s} {nsteps:2d} steps {len(text):6d} B  max move {moves:.3g}  {note}  "
              f"cond {cond:.4f}")
    print(f"{total} bytes in total")
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    return 1 if problems else 0


def check_files(paths) -> int:
    bad = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            fx = json.load(f)
        assert fx.get("format") == FORMAT, path
        if fx.get("optimizer") not in DEFAULTS:
            continue  # a torch.optim fixture beside ours in Tests/Fixtures/reference (make_fixtures.py's)
        r = compare(fx, replay(fx))
        bad += bool(r["failures"])
        print(f"{'FAIL' if r['failures'] else 'ok':4s} {os.path.basename(path):44s} max abs err "
              f"{r['max_abs']:.3e}, err/allowed {r['max_ratio']:.4f}")
        for failure in r["failures"]:
            print("     ", failure)
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="directory to write <name>.json fixtures into")
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--only-optimizer", nargs="+", metavar="OPT")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--check", nargs="+", metavar="PATH", help="replay fixture files or directories")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(f["name"] for f in FIXTURES))
        return 0
    if not (args.out or args.check):
        ap.error("give --out or --check")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    check_defaults()
    rc = 0
    if args.check:
        paths = []
        for p in args.check:
            paths += sorted(glob.glob(os.path.join(p, "*.json"))) if os.path.isdir(p) else [p]
        rc |= check_files(paths)
    if args.out:
        rc |= generate(args.out, args.only, args.only_optimizer)
    return rc


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.exit(main())
