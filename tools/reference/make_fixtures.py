#!/usr/bin/env python3
"""Generate optimizer trajectory fixtures (format `optim-fixture/1`) from the reference code.

Every expected value in the output is produced by running the *real* reference implementation
on CPU in float32:

  sgd / adam / adamw   torch.optim.SGD / Adam / AdamW, foreach=False (single-tensor path)
  lion                 lion_pytorch.Lion (use_triton=False, decoupled_weight_decay=False)
  adopt                adopt.ADOPT from torch-adopt (foreach=False)
  decoupled_adamw      composer.optim.DecoupledAdamW, read at run time out of the mosaicml wheel
  decoupled_lionw      the DecoupledLionW code block quoted in seed 004, read at run time
  lookahead            the Lookahead of seed 002 (re-indented, same statements, see `Lookahead`)
  asgd / adadelta / adagrad / adamax / nadam / radam / rmsprop / rprop / adafactor
                       torch.optim.ASGD / ... / Adafactor, foreach=False (single-tensor path)
  sparse_adam          torch.optim.SparseAdam, each (dense) fixture gradient passed as grad.to_sparse()
  muon                 torch.optim.Muon (Newton-Schulz in bfloat16, as torch runs it); files with
                       "ns_dtype": "float32" re-run torch's Newton-Schulz source with the one
                       bfloat16 cast changed to float32 (see `float32_newton_schulz`)

Usage:
  python3 tools/reference/make_fixtures.py --out Tests/Fixtures/reference
  python3 tools/reference/make_fixtures.py --out Tests/Fixtures/reference --only-optimizer muon
  python3 tools/reference/make_fixtures.py --check-examples          # replay shared examples
  python3 tools/reference/make_fixtures.py --check Tests/Fixtures/reference   # replay any fixtures

See tools/reference/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import hashlib
import importlib.metadata
import inspect
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import types
import warnings
import zipfile
import zlib

import numpy as np
import torch

FORMAT = "optim-fixture/1"
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_SEEDS = os.path.join(REPO_ROOT, "..", "shared", "seeds")
DEFAULT_EXAMPLES = os.path.join(REPO_ROOT, "..", "shared", "fixtures", "examples")

COMPOSER_VERSION = "0.32.1"
COMPOSER_WHEEL = f"mosaicml-{COMPOSER_VERSION}-py3-none-any.whl"
COMPOSER_WHEEL_SHA256 = "d5dc601cec7af281d6a30ab8baccb7c495ee0044237893a991081f54617f8919"
COMPOSER_MEMBER = "composer/optim/decoupled_weight_decay.py"
LIONW_SEED = "004_0a3e833fb44c23ab.txt"

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-6

# Reference defaults, in the order they are written. Checked against the constructors at start-up.
DEFAULTS = {
    "sgd": {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
            "nesterov": False, "maximize": False},
    "adam": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
             "amsgrad": False, "maximize": False},
    "adamw": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-2,
              "amsgrad": False, "maximize": False},
    "decoupled_adamw": {"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-5,
                        "amsgrad": False},
    "lion": {"lr": 1e-4, "betas": [0.9, 0.99], "weight_decay": 0.0},
    "decoupled_lionw": {"lr": 1e-4, "betas": [0.9, 0.99], "weight_decay": 0.0},
    "adopt": {"lr": 1e-3, "betas": [0.9, 0.9999], "eps": 1e-6, "weight_decay": 0.0,
              "decouple": False, "clip_exponent": 0.25, "maximize": False},
    "lookahead": {"k": 5, "alpha": 0.5},
    # The rest of torch.optim (FORMAT.md, "More optimizers"), torch 2.15.
    "asgd": {"lr": 1e-2, "lambd": 1e-4, "alpha": 0.75, "t0": 1e6, "weight_decay": 0.0,
             "maximize": False},
    "adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0, "maximize": False},
    "adafactor": {"lr": 1e-2, "beta2_decay": -0.8, "eps": [None, 1e-3], "d": 1.0,
                  "weight_decay": 0.0, "maximize": False},
    "adagrad": {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0,
                "eps": 1e-10, "maximize": False},
    "adamax": {"lr": 2e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
               "maximize": False},
    "muon": {"lr": 1e-3, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True,
             "ns_coefficients": [3.4445, -4.775, 2.0315], "eps": 1e-7, "ns_steps": 5,
             "adjust_lr_fn": None},
    "nadam": {"lr": 2e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
              "momentum_decay": 4e-3, "decoupled_weight_decay": False, "maximize": False},
    "radam": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
              "decoupled_weight_decay": False, "maximize": False},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                "centered": False, "maximize": False},
    "rprop": {"lr": 1e-2, "etas": [0.5, 1.2], "step_sizes": [1e-6, 50.0], "maximize": False},
    "sparse_adam": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "maximize": False},
}
# torch.optim classes built from fixtures (name -> class name); all but sgd/adam/adamw are new.
TORCH_CLASSES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "asgd": "ASGD",
                 "adadelta": "Adadelta", "adafactor": "Adafactor", "adagrad": "Adagrad",
                 "adamax": "Adamax", "muon": "Muon", "nadam": "NAdam", "radam": "RAdam",
                 "rmsprop": "RMSprop", "rprop": "Rprop", "sparse_adam": "SparseAdam"}
# Constructors without a `foreach` argument (Muon's refuses foreach=True and has no such argument).
NO_FOREACH = {"muon", "sparse_adam"}
FLOAT_KEYS = {"lr", "momentum", "dampening", "weight_decay", "eps", "alpha", "clip_exponent",
              "lambd", "t0", "rho", "beta2_decay", "d", "lr_decay", "initial_accumulator_value",
              "momentum_decay"}
BOOL_KEYS = {"nesterov", "maximize", "amsgrad", "decouple", "centered", "decoupled_weight_decay"}
INT_KEYS = {"ns_steps"}
# Tuple-valued keys (JSON arrays); `null` elements stay None (Adafactor's eps1).
TUPLE_KEYS = {"betas", "etas", "step_sizes", "ns_coefficients"}


# --------------------------------------------------------------------------------------------
# Loading the references
# --------------------------------------------------------------------------------------------

def dist_version(name: str) -> str:
    return importlib.metadata.version(name)


class Lookahead:
    """Seed 002's `Lookahead`, whose indentation was lost in the seed; statements kept as quoted.

    (The seed subclasses torch.optim.Optimizer without calling its __init__; nothing of the base
    class is used, so this is a plain class.)
    """

    def __init__(self, optimizer, k=5, alpha=0.5):
        self.optimizer = optimizer
        self.k = k
        self.alpha = alpha
        self.step_counter = 0
        self.slow_weights = [
            [p.clone().detach() for p in group["params"]]
            for group in optimizer.param_groups
        ]

    def step(self):
        self.step_counter += 1
        self.optimizer.step()
        if self.step_counter % self.k == 0:
            for group, slow_weights in zip(self.optimizer.param_groups, self.slow_weights):
                for p, q in zip(group["params"], slow_weights):
                    # q = slow weights, p = fast weights
                    p.data.mul_(self.alpha).add_(q, alpha=1.0 - self.alpha)
                    q.data.copy_(p.data)


class References:
    """Lazily loads each reference and knows how to build it from fixture hyperparameters."""

    def __init__(self, composer_wheel: str | None, seeds_dir: str):
        self.composer_wheel = composer_wheel
        self.seeds_dir = seeds_dir
        self._decoupled_adamw = None
        self._decoupled_lionw = None
        self._composer_version = None
        self.torch_version = torch.__version__

    # -- composer DecoupledAdamW ------------------------------------------------------------
    def _load_composer(self):
        tmp = None
        wheel = self.composer_wheel
        if wheel is None:
            tmp = tempfile.TemporaryDirectory(prefix="composer-wheel-")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   f"mosaicml=={COMPOSER_VERSION}", "-d", tmp.name]
            print("fetching composer wheel:", " ".join(cmd[2:]), file=sys.stderr)
            subprocess.run(cmd, check=True)
            wheel = os.path.join(tmp.name, COMPOSER_WHEEL)
        try:
            with open(wheel, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if digest != COMPOSER_WHEEL_SHA256:
                raise SystemExit(f"{wheel}: sha256 {digest} is not that of {COMPOSER_WHEEL} "
                                 f"({COMPOSER_WHEEL_SHA256})")
            with zipfile.ZipFile(wheel) as z:
                source = z.read(COMPOSER_MEMBER).decode("utf-8")
                meta = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
                version = re.search(r"^Version: (\S+)$", z.read(meta[0]).decode(), re.M).group(1)
        finally:
            if tmp is not None:
                tmp.cleanup()
        # The module does `from composer.utils import dist`, used only by dist_reduce_metrics
        # (never by step). Provide a stub package for the duration of the exec.
        stub_names = ["composer", "composer.utils", "composer.utils.dist"]
        saved = {n: sys.modules.get(n) for n in stub_names}
        pkg = types.ModuleType("composer")
        utils = types.ModuleType("composer.utils")
        dist = types.ModuleType("composer.utils.dist")

        def _unavailable(*args, **kwargs):
            raise RuntimeError("composer.utils.dist is a stub in make_fixtures.py")

        for fn in ("all_gather_object", "all_reduce", "get_world_size"):
            setattr(dist, fn, _unavailable)
        pkg.__path__, utils.__path__ = [], []
        pkg.utils, utils.dist = utils, dist
        sys.modules.update({"composer": pkg, "composer.utils": utils, "composer.utils.dist": dist})
        try:
            module = types.ModuleType("composer.optim.decoupled_weight_decay")
            module.__file__ = f"{COMPOSER_WHEEL}!/{COMPOSER_MEMBER}"
            exec(compile(source, module.__file__, "exec"), module.__dict__)
        finally:
            for n, m in saved.items():
                if m is None:
                    sys.modules.pop(n, None)
                else:
                    sys.modules[n] = m
        self._decoupled_adamw = module.DecoupledAdamW
        self._composer_version = version

    @property
    def DecoupledAdamW(self):
        if self._decoupled_adamw is None:
            self._load_composer()
        return self._decoupled_adamw

    # -- seed 004 DecoupledLionW -------------------------------------------------------------
    @property
    def DecoupledLionW(self):
        if self._decoupled_lionw is None:
            path = os.path.join(self.seeds_dir, LIONW_SEED)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
            blocks = [b for b in blocks if "class DecoupledLionW" in b]
            if len(blocks) != 1:
                raise SystemExit(f"{path}: expected one code block with class DecoupledLionW")
            module = types.ModuleType("seed004_decoupled_lionw")
            module.__file__ = path
            exec(compile(blocks[0], path, "exec"), module.__dict__)
            self._decoupled_lionw = module.DecoupledLionW
        return self._decoupled_lionw

    # -- descriptions --------------------------------------------------------------------------
    def describe(self, optimizer: str, base: dict | None = None, ns_dtype: str | None = None) -> str:
        tv = self.torch_version
        if optimizer == "sparse_adam":
            return (f"torch.optim.SparseAdam (torch {tv}), each gradient passed as "
                    f"grad.to_sparse() of the dense gradient written here")
        if optimizer == "muon" and ns_dtype == "float32":
            return (f"torch.optim.Muon (torch {tv}) with torch's _zeropower_via_newtonschulz re-run "
                    f"in float32: its source, with the one cast to bfloat16 changed to float32, "
                    f"patched into torch.optim._muon for the run (not torch's own bfloat16 result)")
        if optimizer == "muon":
            return f"torch.optim.Muon (torch {tv}; Newton-Schulz in bfloat16, as torch runs it)"
        if optimizer in TORCH_CLASSES:
            return f"torch.optim.{TORCH_CLASSES[optimizer]} (torch {tv}, foreach=False)"
        if optimizer == "lion":
            return f"lion_pytorch.Lion {dist_version('lion-pytorch')} (torch {tv})"
        if optimizer == "adopt":
            return f"adopt.ADOPT from torch-adopt {dist_version('torch-adopt')} (torch {tv}, foreach=False)"
        if optimizer == "decoupled_adamw":
            self.DecoupledAdamW  # noqa: B018  (loads and reads the version)
            return f"composer.optim.DecoupledAdamW (mosaicml {self._composer_version}, torch {tv})"
        if optimizer == "decoupled_lionw":
            return f"DecoupledLionW code quoted in seed 004 (torch {tv})"
        if optimizer == "lookahead":
            return f"Lookahead code quoted in seed 002 wrapping {self.describe(base['optimizer'])}"
        raise ValueError(optimizer)

    # -- construction --------------------------------------------------------------------------
    @staticmethod
    def _kwargs(optimizer: str, hp: dict, *, group: bool) -> dict:
        known = DEFAULTS[optimizer]
        out = {}
        for key, value in hp.items():
            if key not in known:
                raise ValueError(f"{optimizer}: unknown hyperparameter {key!r}")
            if key in TUPLE_KEYS or (key == "eps" and isinstance(value, list)):
                out[key] = tuple(None if v is None else float(v) for v in value)
            elif key == "initial_accumulator_value" and group:
                # torch's Adagrad fills state["sum"] at construction from the constructor
                # argument, never from a group's value: a group override would be ignored.
                raise ValueError("adagrad: initial_accumulator_value cannot be overridden per group")
            elif key in INT_KEYS:
                out[key] = int(value)
            elif key == "clip_exponent":
                if group:
                    # ADOPT keeps clip_lambda on the optimizer, not in the param groups.
                    raise ValueError("adopt: clip_exponent cannot be overridden per group")
                if value is None:
                    out["clip_lambda"] = None
                else:
                    e = float(value)
                    out["clip_lambda"] = lambda step, e=e: step ** e
            elif key in FLOAT_KEYS:
                out[key] = float(value)
            elif key in BOOL_KEYS:
                out[key] = bool(value)
            else:
                out[key] = value
        return out

    def build(self, optimizer: str, hp: dict, groups: list[dict], dtype=torch.float32):
        """groups: [{"params": [tensors], "hyperparameters": {overrides}}]"""
        param_groups = [
            {"params": g["params"], **self._kwargs(optimizer, g.get("hyperparameters", {}), group=True)}
            for g in groups
        ]
        kw = self._kwargs(optimizer, hp, group=False)
        if optimizer == "adafactor" and dtype != torch.float32:
            # Adafactor's eps1=None means torch.finfo(param.dtype).eps. The float64 conditioning
            # run keeps the float32 value, so that it measures rounding, not a different eps1.
            f32_eps = float(torch.finfo(torch.float32).eps)
            kw.setdefault("eps", tuple(DEFAULTS["adafactor"]["eps"]))
            for d in [kw] + param_groups:
                if "eps" in d and d["eps"][0] is None:
                    d["eps"] = (f32_eps, d["eps"][1])
        if optimizer in TORCH_CLASSES:
            cls = getattr(torch.optim, TORCH_CLASSES[optimizer])
            if optimizer in NO_FOREACH:
                return cls(param_groups, **kw)
            return cls(param_groups, **kw, foreach=False)
        if optimizer == "lion":
            from lion_pytorch import Lion
            return Lion(param_groups, **kw, use_triton=False, decoupled_weight_decay=False)
        if optimizer == "adopt":
            from adopt import ADOPT
            return ADOPT(param_groups, **kw, foreach=False)
        if optimizer == "decoupled_adamw":
            return self.DecoupledAdamW(param_groups, **kw)
        if optimizer == "decoupled_lionw":
            return self.DecoupledLionW(param_groups, **kw)
        raise ValueError(f"unknown optimizer {optimizer!r}")

    def check_defaults(self):
        """The DEFAULTS table must be the constructors' own defaults."""
        from adopt import ADOPT
        from lion_pytorch import Lion
        classes = {"lion": Lion, "adopt": ADOPT, "decoupled_adamw": self.DecoupledAdamW,
                   "decoupled_lionw": self.DecoupledLionW}
        classes.update({name: getattr(torch.optim, cls) for name, cls in TORCH_CLASSES.items()})
        for name, cls in classes.items():
            sig = inspect.signature(cls.__init__).parameters
            for key, want in DEFAULTS[name].items():
                if key == "clip_exponent":
                    got = sig["clip_lambda"].default
                    ok = got is not None and got(16) == 16 ** want and got(3.0) == 3.0 ** want
                else:
                    got = sig[key].default
                    ok = (list(got) if isinstance(got, tuple) else got) == want
                if not ok:
                    raise SystemExit(f"default of {name}.{key} is {got!r}, table says {want!r}")
            # Every constructor argument but the implementation flags must be in the table.
            flags = {"self", "params", "foreach", "fused", "capturable", "differentiable"}
            extra = set(sig) - flags - set(DEFAULTS[name]) - {"clip_lambda"}
            if name in TORCH_CLASSES and name not in ("sgd", "adam", "adamw") and extra:
                raise SystemExit(f"{name}: constructor arguments missing from DEFAULTS: {sorted(extra)}")
        sig = inspect.signature(Lookahead.__init__).parameters
        assert sig["k"].default == 5 and sig["alpha"].default == 0.5


# --------------------------------------------------------------------------------------------
# Replaying a fixture
# --------------------------------------------------------------------------------------------

def lion_margin(opt, optimizer: str) -> float:
    """Smallest |c| / (|b1 m| + |(1-b1) g|) over elements, c = b1 m + (1-b1) g the Lion sign input."""
    if optimizer not in ("lion", "decoupled_lionw"):
        return math.inf
    best = math.inf
    for group in opt.param_groups:
        b1 = group["betas"][0]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad.double()
            m = opt.state[p]["exp_avg"].double() if len(opt.state[p]) else torch.zeros_like(g)
            a, b = b1 * m, (1 - b1) * g
            scale = a.abs() + b.abs()
            mask = scale > 0
            if mask.any():
                best = min(best, float(((a + b).abs()[mask] / scale[mask]).min()))
    return best


def rprop_margin(opt, optimizer: str) -> float:
    """Smallest |g * prev| (float32) over elements where both are non-zero: Rprop branches on
    sign(g * prev), so a product that underflows to 0 would turn a sign into 'no change'."""
    if optimizer != "rprop":
        return math.inf
    best = math.inf
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is None or not len(opt.state[p]):
                continue
            prod = (p.grad.float() * opt.state[p]["prev"].float()).abs()
            both = (p.grad != 0) & (opt.state[p]["prev"] != 0)
            if both.any():
                best = min(best, float(prod[both].min()))
    return best


def radam_margin(opt, optimizer: str) -> float:
    """Smallest |rho_t - 5| this step: RAdam rectifies only when rho_t > 5 (computed in double)."""
    if optimizer != "radam":
        return math.inf
    best = math.inf
    for group in opt.param_groups:
        beta2 = group["betas"][1]
        for p in group["params"]:
            if p.grad is None:
                continue
            step = (float(opt.state[p]["step"]) if len(opt.state[p]) else 0.0) + 1
            rho_inf = 2 / (1 - beta2) - 1
            rho_t = rho_inf - 2 * step * (beta2 ** step) / (1 - beta2 ** step)
            best = min(best, abs(rho_t - 5.0))
    return best


LION_MIN_MARGIN = 1e-4   # Lion-type fixtures are re-seeded until no sign input is this close to 0
RPROP_MIN_PRODUCT = 1e-30  # Rprop: no product of gradients (both non-zero) this close to underflow
RADAM_MIN_RHO_GAP = 1e-3  # RAdam: rho_t never this close to the threshold 5


def decision_margin(opt, optimizer: str) -> float:
    """How far this step is from a discrete decision that rounding could flip, as a multiple of
    the minimum allowed (>= 1 is fine): Lion's sign input, Rprop's gradient-product sign, RAdam's
    rectification threshold."""
    return min(lion_margin(opt, optimizer) / LION_MIN_MARGIN,
               rprop_margin(opt, optimizer) / RPROP_MIN_PRODUCT,
               radam_margin(opt, optimizer) / RADAM_MIN_RHO_GAP)


NS_BFLOAT16_CAST = "grad.to(dtype=torch.bfloat16, copy=True)"


def float32_newton_schulz():
    """torch's own _zeropower_via_newtonschulz source, with its one cast to bfloat16 replaced by a
    cast to float32 (float64 for the float64 conditioning run), exec'd in a copy of the module's
    globals. Everything else (transpose, norm, clamp, addmm order) is torch's code."""
    from torch.optim import _muon
    source = textwrap.dedent(inspect.getsource(_muon._zeropower_via_newtonschulz))
    if source.count(NS_BFLOAT16_CAST) != 1:
        raise SystemExit(f"torch.optim._muon: expected one `{NS_BFLOAT16_CAST}` in "
                         "_zeropower_via_newtonschulz; the float32 patch needs revisiting")
    source = source.replace(NS_BFLOAT16_CAST, "grad.to(dtype=torch.promote_types(grad.dtype, "
                                              "torch.float32), copy=True)")
    namespace = dict(_muon.__dict__)
    exec(compile(source, f"{_muon.__file__} (float32 Newton-Schulz)", "exec"), namespace)
    return namespace["_zeropower_via_newtonschulz"]


@contextlib.contextmanager
def newton_schulz_dtype(ns_dtype: str | None):
    """Inside: torch.optim.Muon runs Newton-Schulz in `ns_dtype` (None: torch's bfloat16)."""
    if ns_dtype is None:
        yield
        return
    if ns_dtype != "float32":
        raise ValueError(f"unknown ns_dtype {ns_dtype!r}")
    from torch.optim import _muon
    saved = _muon._zeropower_via_newtonschulz
    _muon._zeropower_via_newtonschulz = float32_newton_schulz()
    try:
        yield
    finally:
        _muon._zeropower_via_newtonschulz = saved


def replay(fx: dict, refs: References, dtype=torch.float32):
    """Runs the fixture's steps through the reference. Returns (snapshots, min decision margin)."""
    with newton_schulz_dtype(fx.get("ns_dtype")):
        return _replay(fx, refs, dtype)


def _replay(fx: dict, refs: References, dtype):
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    params = {}
    for spec in fx["params"]:
        arr = np.asarray(spec["data"], dtype=np_dtype).reshape(spec["shape"])
        params[spec["name"]] = torch.nn.Parameter(torch.from_numpy(arr.copy()).to(dtype))
    if "groups" in fx:
        groups = [{"params": [params[n] for n in g["params"]],
                   "hyperparameters": g.get("hyperparameters", {})} for g in fx["groups"]]
        listed = [n for g in fx["groups"] for n in g["params"]]
        if sorted(listed) != sorted(params):
            raise ValueError(f"{fx['name']}: groups must hold every parameter exactly once")
    else:
        groups = [{"params": list(params.values())}]

    optimizer = fx["optimizer"]
    if optimizer == "lookahead":
        inner_name = fx["base"]["optimizer"]
        inner = refs.build(inner_name, fx["base"].get("hyperparameters", {}), groups)
        hp = {**DEFAULTS["lookahead"], **fx.get("hyperparameters", {})}
        unknown = set(hp) - set(DEFAULTS["lookahead"])
        if unknown:
            raise ValueError(f"lookahead: unknown hyperparameters {unknown}")
        opt = Lookahead(inner, k=int(hp["k"]), alpha=float(hp["alpha"]))
    else:
        inner_name = optimizer
        inner = opt = refs.build(optimizer, fx.get("hyperparameters", {}), groups, dtype=dtype)

    snapshots, margin = [], math.inf
    for step in fx["steps"]:
        for index, lr in step.get("lr", {}).items():
            inner.param_groups[int(index)]["lr"] = float(lr)
        for name, p in params.items():
            g = step["grads"].get(name)
            if g is None:
                p.grad = None
            else:
                arr = np.asarray(g, dtype=np_dtype).reshape(p.shape)
                p.grad = torch.from_numpy(arr.copy()).to(dtype)
                if inner_name == "sparse_adam":
                    p.grad = p.grad.to_sparse()  # zero entries are absent
        margin = min(margin, decision_margin(inner, inner_name))
        opt.step()
        snapshots.append({n: p.detach().reshape(-1).double().numpy().copy() for n, p in params.items()})
    return snapshots, margin


def compare(fx: dict, snapshots) -> dict:
    """Compares every expected block with a replay. Returns error statistics."""
    tol = fx.get("tolerance", {})
    rtol, atol = tol.get("rtol", DEFAULT_RTOL), tol.get("atol", DEFAULT_ATOL)
    checks = [(i, s["expected"]) for i, s in enumerate(fx["steps"]) if "expected" in s]
    checks.append((len(fx["steps"]) - 1, fx["expected"]))
    max_abs, max_ratio, failures, count = 0.0, 0.0, [], 0
    for i, expected in checks:
        for name, want in expected.items():
            want = np.asarray(want, dtype=np.float64)
            got = snapshots[i][name]
            err = np.abs(got - want)
            allowed = atol + rtol * np.abs(want)
            count += want.size
            max_abs = max(max_abs, float(err.max(initial=0.0)))
            max_ratio = max(max_ratio, float((err / allowed).max(initial=0.0)))
            if not np.all(err <= allowed):
                failures.append(f"step {i} {name}: max err {float(err.max()):.3g}")
    return {"max_abs": max_abs, "max_ratio": max_ratio, "failures": failures, "values": count,
            "rtol": rtol, "atol": atol}


# --------------------------------------------------------------------------------------------
# Fixture definitions
# --------------------------------------------------------------------------------------------

# Parameter layouts: name -> shape, in file order. The first three have a 0-d scalar and 1-D, 2-D
# and 3-D shapes; the "matrices" ones hold only 2-D parameters (Muon accepts nothing else), tall,
# wide and square, and a single row.
LAYOUTS = {
    "small": [("w", [2, 3]), ("b", [3]), ("s", []), ("t", [2, 3, 2])],            # 22 values
    "medium": [("w", [6, 5]), ("b", [5]), ("s", []), ("t", [2, 3, 4])],           # 60 values
    "large": [("w", [16, 8]), ("b", [8]), ("s", []), ("t", [4, 3, 5])],          # 197 values
    "matrices": [("a", [8, 5]), ("c", [5, 8]), ("q", [6, 6])],                   # 116 values
    "matrices_medium": [("a", [12, 7]), ("c", [7, 12]), ("q", [9, 9]), ("r", [1, 9])],  # 258 values
}
# Gradient scales, cycled over steps and parameters so that each fixture spans 1e-3 .. 10.
SCALES = [1.0, 1e-3, 10.0, 0.1, 0.01, 3.0, 0.3]
CONDITIONING_LIMIT = 0.1  # |float32 - float64 reference| must stay below this share of the tolerance


def f32(x) -> float:
    return float(np.float32(x))


def f32_list(a) -> list:
    return [f32(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def full_hp(optimizer: str, overrides: dict) -> dict:
    hp = copy.deepcopy(DEFAULTS[optimizer])
    for key in overrides:
        if key not in hp:
            raise ValueError(f"{optimizer}: unknown hyperparameter {key!r}")
    hp.update(copy.deepcopy(overrides))
    return hp


FIXTURES: list[dict] = []


def fixture(name, optimizer, hp=None, *, layout="small", steps=16, groups=None, base=None,
            missing=None, zero=None, lr=None, expect=None, sparsity=0.0, sparse_rows=0.0,
            ns_dtype=None):
    """Declares one fixture.

    missing: {param: [step indices]} with no gradient; zero: {param or "*": [steps]} all-zero
    gradients; lr: {step: {group: lr}} set before that step; expect: step indices that get an
    intermediate `expected` (default: three spread over the run). sparsity: each gradient element
    is set to exactly 0 with this probability; sparse_rows: each row (index along the first axis,
    the element of a 0-d parameter) of each gradient is set to 0 with this probability.
    ns_dtype: "float32" for Muon fixtures whose reference re-runs Newton-Schulz in float32.
    """
    assert re.fullmatch(r"[a-z0-9_-]+", name) and all(f["name"] != name for f in FIXTURES), name
    assert 10 <= steps <= 30
    assert ns_dtype in (None, "float32") and (ns_dtype is None or optimizer == "muon")
    indices = [i for v in (missing or {}).values() for i in v]
    indices += [i for v in (zero or {}).values() for i in v] + list(lr or {}) + list(expect or [])
    assert all(0 <= i < steps for i in indices), name
    FIXTURES.append(dict(name=name, optimizer=optimizer, hp=hp or {}, layout=layout, steps=steps,
                         groups=groups, base=base, missing=missing or {}, zero=zero or {},
                         lr=lr or {}, expect=expect, sparsity=sparsity, sparse_rows=sparse_rows,
                         ns_dtype=ns_dtype))


def make_fixture(spec: dict, refs: References, salt: int = 0) -> dict:
    name, optimizer = spec["name"], spec["optimizer"]
    rng = np.random.default_rng([zlib.crc32(name.encode()), salt])
    layout = LAYOUTS[spec["layout"]]
    n = spec["steps"]
    fx = {"format": FORMAT, "name": name, "reference": None, "optimizer": optimizer}
    if spec.get("ns_dtype"):
        fx["ns_dtype"] = spec["ns_dtype"]
    if optimizer == "lookahead":
        fx["hyperparameters"] = full_hp("lookahead", spec["hp"])
        fx["base"] = {"optimizer": spec["base"][0],
                      "hyperparameters": full_hp(spec["base"][0], spec["base"][1])}
        fx["reference"] = refs.describe("lookahead", fx["base"])
        inner = spec["base"][0]
    else:
        fx["hyperparameters"] = full_hp(optimizer, spec["hp"])
        fx["reference"] = refs.describe(optimizer, ns_dtype=spec.get("ns_dtype"))
        inner = optimizer
    if spec["groups"]:
        fx["groups"] = []
        for names, overrides in spec["groups"]:
            full_hp(inner, overrides)  # validates the names
            g = {"params": list(names)}
            if overrides:
                g["hyperparameters"] = copy.deepcopy(overrides)
            fx["groups"].append(g)
    fx["params"] = [{"name": pn, "shape": shape,
                     "data": f32_list(rng.standard_normal(shape))} for pn, shape in layout]
    steps = []
    for s in range(n):
        grads = {}
        for j, (pn, shape) in enumerate(layout):
            if s in spec["missing"].get(pn, ()):
                rng.standard_normal(shape)  # keep the stream independent of the pattern
                continue
            scale = SCALES[(3 * s + 2 * j) % len(SCALES)]
            g = rng.standard_normal(shape) * scale
            if spec.get("sparsity"):
                g = np.where(rng.random(shape) < spec["sparsity"], 0.0, g)
            if spec.get("sparse_rows"):
                rows = np.asarray(rng.random(shape[:1])) < spec["sparse_rows"]
                g = np.where(rows.reshape(shape[:1] + [1] * (len(shape) - 1)), 0.0, g)
            if s in spec["zero"].get(pn, ()) or s in spec["zero"].get("*", ()):
                g = np.zeros(shape)
            grads[pn] = f32_list(g)
        step = {"grads": grads}
        if s in spec["lr"]:
            step["lr"] = {str(k): float(v) for k, v in spec["lr"][s].items()}
        steps.append(step)
    fx["steps"] = steps

    snapshots, margin = replay(fx, refs)
    expect = spec["expect"] if spec["expect"] is not None else sorted({0, n // 3, (2 * n) // 3})
    for s in expect:
        steps[s]["expected"] = {pn: f32_list(snapshots[s][pn]) for pn, _ in layout}
    fx["expected"] = {pn: f32_list(snapshots[-1][pn]) for pn, _ in layout}
    for snap in snapshots:
        for v in snap.values():
            if not np.all(np.isfinite(v)):
                raise SystemExit(f"{name}: non-finite parameter")
    fx["_margin"] = margin
    return fx


# ---- sgd -------------------------------------------------------------------------------------
fixture("sgd-defaults", "sgd", {}, steps=12)
fixture("sgd-lr", "sgd", {"lr": 0.03790012836456299})
fixture("sgd-momentum", "sgd", {"lr": 0.004, "momentum": 0.9}, steps=18)
fixture("sgd-momentum-dampening", "sgd", {"lr": 0.004, "momentum": 0.85, "dampening": 0.3}, steps=18)
fixture("sgd-nesterov", "sgd", {"lr": 0.003, "momentum": 0.9, "nesterov": True}, steps=18)
fixture("sgd-wd", "sgd", {"lr": 0.02, "weight_decay": 0.05})
fixture("sgd-maximize", "sgd", {"lr": 0.01, "maximize": True})
fixture("sgd-nesterov-wd-maximize", "sgd",
        {"lr": 0.0015, "momentum": 0.95, "nesterov": True, "weight_decay": 0.01, "maximize": True},
        layout="medium", steps=16)
fixture("sgd-momentum-dampening-wd", "sgd",
        {"lr": 0.011, "momentum": 0.5, "dampening": 0.5, "weight_decay": 0.2}, steps=18)
fixture("sgd-groups", "sgd", {"lr": 0.003, "momentum": 0.9},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.05, "momentum": 0.0, "weight_decay": 0.1}),
                (["t"], {"lr": 0.003, "nesterov": True, "maximize": True, "momentum": 0.8})],
        steps=18, lr={5: {"0": 0.005}, 10: {"1": 0.025, "2": 0.0015}, 15: {"0": 0.0015}})
fixture("sgd-missing-zero-grads", "sgd", {"lr": 0.004, "momentum": 0.9, "weight_decay": 0.01},
        steps=18, missing={"b": [0, 1, 2], "t": [7, 8, 9], "s": [12]},
        zero={"w": [4, 5], "*": [15]})
fixture("sgd-lr-schedule", "sgd", {"lr": 0.005, "momentum": 0.7, "dampening": 0.1},
        steps=18, lr={3: {"0": 0.01}, 6: {"0": 0.0075}, 9: {"0": 0.0025}, 14: {"0": 0.00025}},
        expect=[2, 3, 9, 14])
fixture("sgd-large", "sgd", {"lr": 0.002, "momentum": 0.9, "nesterov": True}, layout="large",
        steps=10)

# ---- adam ------------------------------------------------------------------------------------
fixture("adam-defaults", "adam", {}, steps=14)
fixture("adam-amsgrad", "adam", {"lr": 0.003, "amsgrad": True}, steps=20)
fixture("adam-wd", "adam", {"lr": 0.002, "weight_decay": 0.1}, steps=16)
fixture("adam-maximize", "adam", {"lr": 0.0025, "maximize": True})
fixture("adam-beta1-zero", "adam", {"lr": 0.0016653835481517606, "betas": [0.0, 0.99]})
fixture("adam-eps-large", "adam", {"lr": 0.01, "eps": 0.1}, steps=16)
fixture("adam-combined", "adam",
        {"lr": 0.0042, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.05,
         "amsgrad": True, "maximize": True}, layout="medium", steps=16)
fixture("adam-groups", "adam", {"lr": 0.002},
        groups=[(["w", "t"], {"amsgrad": True}),
                (["b"], {"lr": 0.01, "betas": [0.5, 0.9], "weight_decay": 0.01}),
                (["s"], {"lr": 0.0005, "eps": 0.01, "maximize": True})],
        steps=20, lr={8: {"0": 0.001, "1": 0.02}})
fixture("adam-missing-zero-lr", "adam", {"lr": 0.003, "amsgrad": True, "weight_decay": 0.01},
        steps=24, missing={"w": [0, 1, 2, 3], "s": [10, 11], "t": [17]},
        zero={"b": [5, 6], "*": [20]}, lr={8: {"0": 0.006}, 16: {"0": 0.0015}})

# ---- adamw -----------------------------------------------------------------------------------
fixture("adamw-defaults", "adamw", {}, steps=14)
fixture("adamw-amsgrad", "adamw", {"lr": 0.003, "amsgrad": True}, steps=20)
fixture("adamw-wd-lr-schedule", "adamw", {"lr": 0.004, "weight_decay": 0.3},
        steps=20, lr={4: {"0": 0.008}, 9: {"0": 0.002}, 14: {"0": 0.0005}})
fixture("adamw-wd-zero", "adamw", {"lr": 0.002, "weight_decay": 0.0})
fixture("adamw-maximize", "adamw", {"lr": 0.0025, "maximize": True, "weight_decay": 0.05})
fixture("adamw-beta1-zero", "adamw", {"lr": 0.0011957157670567423, "betas": [0.0, 0.999]})
fixture("adamw-eps-large", "adamw", {"lr": 0.01, "eps": 0.05, "weight_decay": 0.1}, steps=16)
fixture("adamw-combined", "adamw",
        {"lr": 0.0033, "betas": [0.85, 0.98], "eps": 1e-7, "weight_decay": 0.2,
         "amsgrad": True, "maximize": True}, layout="medium", steps=16)
fixture("adamw-groups", "adamw", {"lr": 0.002, "weight_decay": 0.1},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.008, "weight_decay": 0.0, "amsgrad": True}),
                (["t"], {"lr": 0.0004, "betas": [0.7, 0.95], "weight_decay": 0.5})],
        steps=20, lr={6: {"0": 0.004, "2": 0.0008}, 13: {"1": 0.002}})
fixture("adamw-missing-zero-lr", "adamw", {"lr": 0.003, "weight_decay": 0.1},
        steps=22, missing={"t": [0, 1, 2], "b": [9, 10], "s": [16]},
        zero={"w": [4], "*": [12]}, lr={7: {"0": 0.0015}, 15: {"0": 0.006}})

# ---- decoupled_adamw (composer) --------------------------------------------------------------
fixture("decoupled_adamw-defaults", "decoupled_adamw", {}, steps=14)
fixture("decoupled_adamw-amsgrad", "decoupled_adamw", {"lr": 0.003, "amsgrad": True}, steps=20)
fixture("decoupled_adamw-wd-zero", "decoupled_adamw", {"lr": 0.002, "weight_decay": 0.0})
fixture("decoupled_adamw-wd", "decoupled_adamw", {"lr": 0.0018076983320347703, "weight_decay": 0.01},
        steps=16)
fixture("decoupled_adamw-lr-schedule", "decoupled_adamw", {"lr": 0.002, "weight_decay": 0.02},
        steps=24, lr={0: {"0": 0.0005}, 2: {"0": 0.001}, 4: {"0": 0.002}, 10: {"0": 0.0015},
                      16: {"0": 0.0005}, 20: {"0": 0.0001}}, expect=[0, 4, 10, 16])
fixture("decoupled_adamw-groups", "decoupled_adamw", {"lr": 0.002, "weight_decay": 0.01},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.01, "amsgrad": True, "weight_decay": 0.05}),
                (["t"], {"lr": 0.0005, "betas": [0.5, 0.9], "eps": 1e-6, "weight_decay": 0.0})],
        steps=20, lr={5: {"0": 0.001, "1": 0.02}, 12: {"0": 0.004, "1": 0.0025, "2": 0.001}})
fixture("decoupled_adamw-missing-zero", "decoupled_adamw", {"lr": 0.003, "weight_decay": 0.01},
        steps=20, missing={"w": [0, 1, 2], "s": [8, 9], "t": [14]},
        zero={"b": [3, 4], "*": [11]}, lr={6: {"0": 0.0015}})
fixture("decoupled_adamw-combined", "decoupled_adamw",
        {"lr": 0.0025, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.03, "amsgrad": True},
        layout="medium", steps=16, lr={3: {"0": 0.005}, 11: {"0": 0.00125}})

# ---- lion (lion-pytorch) ---------------------------------------------------------------------
fixture("lion-defaults", "lion", {}, steps=14)
fixture("lion-wd", "lion", {"lr": 0.002, "weight_decay": 0.5})
fixture("lion-betas", "lion", {"lr": 0.00439979975485268, "betas": [0.95, 0.98]})
fixture("lion-beta1-zero", "lion", {"lr": 0.001, "betas": [0.0, 0.99], "weight_decay": 0.1})
fixture("lion-beta2-zero", "lion", {"lr": 0.001, "betas": [0.9, 0.0]})
fixture("lion-wd-lr-schedule", "lion", {"lr": 0.003, "weight_decay": 0.2},
        steps=20, lr={4: {"0": 0.006}, 10: {"0": 0.0015}, 15: {"0": 0.0003}})
fixture("lion-groups", "lion", {"lr": 0.002},
        groups=[(["w", "b"], {}),
                (["s"], {"lr": 0.01, "weight_decay": 0.1}),
                (["t"], {"lr": 0.0005, "betas": [0.5, 0.9], "weight_decay": 1.0})],
        steps=20, lr={7: {"1": 0.005}, 14: {"0": 0.001, "2": 0.002}})
fixture("lion-missing-zero", "lion", {"lr": 0.002, "weight_decay": 0.1},
        steps=20, missing={"t": [0, 1, 2], "w": [9, 10], "s": [15]},
        zero={"b": [0, 1, 5], "*": [12]})
fixture("lion-combined", "lion", {"lr": 0.0015, "betas": [0.8, 0.95], "weight_decay": 0.3},
        layout="medium", steps=16, zero={"s": [0, 1], "*": [8]},
        lr={5: {"0": 0.003}, 12: {"0": 0.0005}})

# ---- decoupled_lionw (seed 004) ---------------------------------------------------------------
fixture("decoupled_lionw-defaults", "decoupled_lionw", {}, steps=14)
fixture("decoupled_lionw-wd", "decoupled_lionw", {"lr": 0.002, "weight_decay": 0.01})
fixture("decoupled_lionw-wd-lr-schedule", "decoupled_lionw", {"lr": 0.002, "weight_decay": 0.02},
        steps=24, lr={0: {"0": 0.0005}, 3: {"0": 0.001}, 6: {"0": 0.004}, 12: {"0": 0.002},
                      18: {"0": 0.0002}}, expect=[0, 6, 12, 18])
fixture("decoupled_lionw-betas", "decoupled_lionw",
        {"lr": 0.001272297810061754, "betas": [0.95, 0.98]})
fixture("decoupled_lionw-groups", "decoupled_lionw", {"lr": 0.002, "weight_decay": 0.01},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.008, "weight_decay": 0.05}),
                (["t"], {"lr": 0.0005, "betas": [0.5, 0.9], "weight_decay": 0.0})],
        steps=20, lr={4: {"0": 0.001, "1": 0.016}, 11: {"1": 0.002, "2": 0.001}})
fixture("decoupled_lionw-missing-zero", "decoupled_lionw", {"lr": 0.002, "weight_decay": 0.02},
        steps=20, missing={"b": [0, 1, 2], "w": [7, 8], "t": [13]},
        zero={"s": [0, 1, 4], "*": [10]}, lr={6: {"0": 0.003}, 15: {"0": 0.001}})

# ---- adopt (torch-adopt) ---------------------------------------------------------------------
fixture("adopt-defaults", "adopt", {}, steps=14)
fixture("adopt-wd", "adopt", {"lr": 0.002, "weight_decay": 0.05})
fixture("adopt-wd-decouple", "adopt", {"lr": 0.002, "weight_decay": 0.1, "decouple": True})
fixture("adopt-decouple-no-wd", "adopt", {"lr": 0.002, "decouple": True})
fixture("adopt-clip-none", "adopt", {"lr": 0.002, "clip_exponent": None}, steps=18)
fixture("adopt-clip-0_5", "adopt", {"lr": 0.002, "clip_exponent": 0.5}, steps=18)
fixture("adopt-clip-0_1-betas", "adopt",
        {"lr": 0.00115, "clip_exponent": 0.1, "betas": [0.5, 0.99], "eps": 1e-3}, steps=18)
fixture("adopt-maximize", "adopt", {"lr": 0.002, "maximize": True})
fixture("adopt-late-grad", "adopt", {"lr": 0.003, "weight_decay": 0.01},
        steps=20, missing={"w": [0, 1, 2, 3], "s": [0], "t": [9, 10], "b": [15]},
        zero={"b": [6], "*": [12]}, expect=[0, 4, 5, 11])
fixture("adopt-groups", "adopt", {"lr": 0.002},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.006, "weight_decay": 0.1, "decouple": True}),
                (["t"], {"lr": 0.0008, "betas": [0.8, 0.99], "weight_decay": 0.05,
                         "maximize": True})],
        steps=20, lr={5: {"0": 0.004}, 12: {"1": 0.003, "2": 0.0016}})
fixture("adopt-combined", "adopt",
        {"lr": 0.0025, "betas": [0.85, 0.999], "eps": 1e-5, "weight_decay": 0.02, "decouple": True,
         "clip_exponent": 0.5, "maximize": True},
        layout="medium", steps=16, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.005}, 15: {"0": 0.001}})
fixture("adopt-clip-none-wd-lr", "adopt",
        {"lr": 0.002, "weight_decay": 0.01, "clip_exponent": None},
        steps=20, lr={3: {"0": 0.004}, 9: {"0": 0.001}}, missing={"s": [5, 6]})

# ---- lookahead (seed 002) --------------------------------------------------------------------
fixture("lookahead-defaults", "lookahead", {}, base=("adam", {}), steps=12)
fixture("lookahead-sgd-momentum-k5-a05", "lookahead", {"k": 5, "alpha": 0.5},
        base=("sgd", {"lr": 0.004, "momentum": 0.9}), steps=20, expect=[4, 5, 9, 14])
fixture("lookahead-adam-k2-a08", "lookahead", {"k": 2, "alpha": 0.8},
        base=("adam", {"lr": 0.004}), steps=16, expect=[0, 1, 2, 7])
fixture("lookahead-adamw-amsgrad-k1-a05", "lookahead", {"k": 1, "alpha": 0.5},
        base=("adamw", {"lr": 0.003, "amsgrad": True, "weight_decay": 0.1}), steps=14)
fixture("lookahead-lion-k5-a0", "lookahead", {"k": 5, "alpha": 0.0},
        base=("lion", {"lr": 0.002, "weight_decay": 0.1}), steps=16, expect=[3, 4, 5, 9])
fixture("lookahead-decoupled_adamw-k2-a1", "lookahead", {"k": 2, "alpha": 1.0},
        base=("decoupled_adamw", {"lr": 0.003, "weight_decay": 0.01}), steps=14,
        lr={5: {"0": 0.0015}})
fixture("lookahead-adopt-k5-a08", "lookahead", {"k": 5, "alpha": 0.8},
        base=("adopt", {"lr": 0.003, "weight_decay": 0.05, "decouple": True}), steps=20,
        missing={"s": [0, 1]}, expect=[4, 9, 12])
fixture("lookahead-adam-groups-missing-k2-a05", "lookahead", {"k": 2, "alpha": 0.5},
        base=("adam", {"lr": 0.003}),
        groups=[(["w", "s"], {}), (["b", "t"], {"lr": 0.006, "amsgrad": True, "weight_decay": 0.01})],
        steps=18, missing={"t": [0, 1, 2], "b": [7], "s": [10, 11]}, lr={9: {"1": 0.002}})
fixture("lookahead-sgd-groups-k1-a08", "lookahead", {"k": 1, "alpha": 0.8},
        base=("sgd", {"lr": 0.004, "momentum": 0.9}),
        groups=[(["w"], {}), (["b", "s"], {"lr": 0.01, "nesterov": True}),
                (["t"], {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.1})],
        steps=14, missing={"s": [3, 4]}, zero={"*": [8]}, lr={6: {"0": 0.002, "2": 0.02}})
fixture("lookahead-decoupled_lionw-k5-a05", "lookahead", {"k": 5, "alpha": 0.5},
        base=("decoupled_lionw", {"lr": 0.002, "weight_decay": 0.05}),
        groups=[(["w", "b"], {}), (["s", "t"], {"lr": 0.004})],
        steps=15, missing={"b": [0, 1]}, lr={7: {"0": 0.001, "1": 0.001}})

# ---- asgd (torch.optim.ASGD) -------------------------------------------------------------------
# The running average `ax` is state only: it never feeds back into the parameters, so t0 (when
# averaging starts) cannot change a trajectory. The fixtures still set t0 (small, so that ax does
# switch to averaging within the run) so that an implementation's handling of it is replayed.
fixture("asgd-defaults", "asgd", {}, steps=14)
fixture("asgd-lambd-alpha", "asgd", {"lr": 0.05, "lambd": 1.0, "alpha": 0.5}, steps=20)
fixture("asgd-t0", "asgd", {"lr": 0.02, "lambd": 0.1, "t0": 3.0}, steps=16)
fixture("asgd-wd", "asgd", {"lr": 0.01, "weight_decay": 0.1, "lambd": 0.01})
fixture("asgd-maximize", "asgd", {"lr": 0.005, "alpha": 1.0, "lambd": 2.0, "maximize": True})
fixture("asgd-lr-schedule", "asgd", {"lr": 0.02, "lambd": 0.5, "alpha": 0.6},
        steps=20, lr={0: {"0": 0.01}, 3: {"0": 0.03}, 8: {"0": 0.005}, 14: {"0": 0.015}},
        missing={"t": [0, 1, 2, 3, 4]}, expect=[0, 3, 4, 8, 14])
fixture("asgd-groups", "asgd", {"lr": 0.01, "lambd": 0.2},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.03, "alpha": 0.9, "weight_decay": 0.05, "t0": 5.0}),
                (["t"], {"lr": 0.005, "lambd": 3.0, "maximize": True})],
        steps=18, lr={6: {"0": 0.02, "2": 0.0025}, 12: {"1": 0.01}})
fixture("asgd-missing-zero", "asgd", {"lr": 0.015, "lambd": 0.3, "weight_decay": 0.02, "t0": 4.0},
        steps=20, missing={"w": [0, 1, 2], "s": [8, 9], "t": [14]},
        zero={"b": [4, 5], "*": [11]}, lr={6: {"0": 0.01}})
fixture("asgd-combined", "asgd",
        {"lr": 0.012, "lambd": 0.5, "alpha": 0.5, "t0": 2.0, "weight_decay": 0.03, "maximize": True},
        layout="medium", steps=16, zero={"*": [9]}, missing={"t": [0, 1]},
        lr={5: {"0": 0.024}, 12: {"0": 0.006}})

# ---- adadelta ----------------------------------------------------------------------------------
fixture("adadelta-defaults", "adadelta", {}, steps=14)
fixture("adadelta-rho", "adadelta", {"rho": 0.5}, steps=18)
fixture("adadelta-eps-lr", "adadelta", {"lr": 0.5, "eps": 1e-3})
fixture("adadelta-wd", "adadelta", {"weight_decay": 0.1})
fixture("adadelta-maximize", "adadelta", {"lr": 2.0, "maximize": True, "rho": 0.95})
fixture("adadelta-groups", "adadelta", {"lr": 1.0},
        groups=[(["w", "t"], {}),
                (["b"], {"lr": 3.0, "rho": 0.7, "weight_decay": 0.05}),
                (["s"], {"lr": 0.5, "eps": 1e-4, "maximize": True})],
        steps=20, lr={7: {"0": 0.5, "1": 1.5}, 14: {"2": 2.0}})
fixture("adadelta-missing-zero-lr", "adadelta", {"lr": 1.0, "weight_decay": 0.01},
        steps=22, missing={"t": [0, 1, 2], "b": [9, 10], "s": [16]},
        zero={"w": [4], "*": [12]}, lr={7: {"0": 2.0}, 15: {"0": 0.5}})
fixture("adadelta-combined", "adadelta",
        {"lr": 1.5, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.02, "maximize": True},
        layout="medium", steps=16, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 3.0}, 13: {"0": 0.75}})

# ---- adagrad -----------------------------------------------------------------------------------
# torch fills state["sum"] with the constructor's initial_accumulator_value at construction (a
# group value is ignored), so it is only set at the top level.
fixture("adagrad-defaults", "adagrad", {}, steps=14)
fixture("adagrad-lr-decay", "adagrad", {"lr": 0.05, "lr_decay": 0.1}, steps=18)
fixture("adagrad-initial-accumulator", "adagrad", {"lr": 0.03, "initial_accumulator_value": 0.5})
fixture("adagrad-eps", "adagrad", {"lr": 0.02, "eps": 1e-2})
fixture("adagrad-wd", "adagrad", {"lr": 0.02, "weight_decay": 0.1})
fixture("adagrad-maximize", "adagrad", {"lr": 0.01, "maximize": True, "lr_decay": 0.01})
fixture("adagrad-groups", "adagrad", {"lr": 0.02, "initial_accumulator_value": 0.1},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.05, "lr_decay": 0.2, "weight_decay": 0.05}),
                (["t"], {"lr": 0.01, "eps": 1e-3, "maximize": True})],
        steps=20, lr={6: {"0": 0.04, "2": 0.005}, 13: {"1": 0.025}})
fixture("adagrad-missing-zero-lr", "adagrad", {"lr": 0.02, "lr_decay": 0.05},
        steps=22, missing={"w": [0, 1, 2, 3], "s": [10, 11], "t": [17]},
        zero={"b": [0, 1, 5], "*": [13]}, lr={8: {"0": 0.04}, 16: {"0": 0.01}})
fixture("adagrad-combined", "adagrad",
        {"lr": 0.03, "lr_decay": 0.05, "weight_decay": 0.02, "initial_accumulator_value": 0.2,
         "eps": 1e-6, "maximize": True},
        layout="medium", steps=16, zero={"*": [9]}, missing={"t": [0, 1]},
        lr={5: {"0": 0.06}, 12: {"0": 0.015}})

# ---- adamax ------------------------------------------------------------------------------------
fixture("adamax-defaults", "adamax", {}, steps=14)
fixture("adamax-betas", "adamax", {"lr": 0.004, "betas": [0.5, 0.9]}, steps=18)
fixture("adamax-eps", "adamax", {"lr": 0.003, "eps": 0.01})
fixture("adamax-wd", "adamax", {"lr": 0.002, "weight_decay": 0.1})
fixture("adamax-maximize", "adamax", {"lr": 0.0025, "maximize": True})
fixture("adamax-groups", "adamax", {"lr": 0.002},
        groups=[(["w", "t"], {}),
                (["b"], {"lr": 0.01, "betas": [0.8, 0.99], "weight_decay": 0.01}),
                (["s"], {"lr": 0.0005, "eps": 0.01, "maximize": True})],
        steps=20, lr={8: {"0": 0.001, "1": 0.02}})
fixture("adamax-missing-zero-lr", "adamax", {"lr": 0.003, "weight_decay": 0.01},
        steps=22, missing={"t": [0, 1, 2], "b": [9, 10], "s": [16]},
        zero={"w": [0, 4], "*": [12]}, lr={7: {"0": 0.006}, 15: {"0": 0.0015}})
fixture("adamax-combined", "adamax",
        {"lr": 0.004, "betas": [0.85, 0.98], "eps": 1e-6, "weight_decay": 0.05, "maximize": True},
        layout="medium", steps=16, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.008}, 13: {"0": 0.001}})

# ---- nadam -------------------------------------------------------------------------------------
fixture("nadam-defaults", "nadam", {}, steps=14)
fixture("nadam-momentum-decay", "nadam", {"lr": 0.003, "momentum_decay": 0.1}, steps=20)
fixture("nadam-momentum-decay-zero", "nadam", {"lr": 0.002, "momentum_decay": 0.0})
fixture("nadam-wd", "nadam", {"lr": 0.002, "weight_decay": 0.1})
fixture("nadam-decoupled-wd", "nadam",
        {"lr": 0.003, "weight_decay": 0.2, "decoupled_weight_decay": True}, steps=18,
        lr={6: {"0": 0.006}, 12: {"0": 0.0015}})
fixture("nadam-maximize-betas-eps", "nadam",
        {"lr": 0.0025, "maximize": True, "betas": [0.8, 0.99], "eps": 1e-6})
fixture("nadam-groups", "nadam", {"lr": 0.002},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.006, "weight_decay": 0.1, "decoupled_weight_decay": True,
                              "momentum_decay": 0.02}),
                (["t"], {"lr": 0.0008, "betas": [0.7, 0.95], "weight_decay": 0.05,
                         "maximize": True})],
        steps=20, lr={5: {"0": 0.004}, 12: {"1": 0.003, "2": 0.0016}})
fixture("nadam-missing-zero-lr", "nadam", {"lr": 0.003, "weight_decay": 0.01},
        steps=22, missing={"w": [0, 1, 2], "s": [8, 9], "t": [14]},
        zero={"b": [3, 4], "*": [11]}, lr={6: {"0": 0.0015}, 17: {"0": 0.006}})
fixture("nadam-combined", "nadam",
        {"lr": 0.004, "betas": [0.85, 0.995], "eps": 1e-7, "weight_decay": 0.05,
         "momentum_decay": 0.01, "decoupled_weight_decay": True, "maximize": True},
        layout="medium", steps=16, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.008}, 13: {"0": 0.001}})

# ---- radam -------------------------------------------------------------------------------------
# With beta2 = 0.999, rho_t first exceeds 5 at a parameter's 6th gradient (4.99 at the 5th).
fixture("radam-defaults", "radam", {}, steps=14)
fixture("radam-betas", "radam", {"lr": 0.003, "betas": [0.8, 0.99]}, steps=18)
fixture("radam-beta2-small", "radam", {"lr": 0.003, "betas": [0.9, 0.6]}, steps=16)
fixture("radam-wd", "radam", {"lr": 0.002, "weight_decay": 0.1})
fixture("radam-decoupled-wd", "radam",
        {"lr": 0.003, "weight_decay": 0.2, "decoupled_weight_decay": True}, steps=18,
        lr={4: {"0": 0.006}, 11: {"0": 0.0015}})
fixture("radam-maximize-eps", "radam", {"lr": 0.0025, "maximize": True, "eps": 1e-3})
fixture("radam-groups", "radam", {"lr": 0.002},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.006, "weight_decay": 0.1, "decoupled_weight_decay": True}),
                (["t"], {"lr": 0.0008, "betas": [0.7, 0.95], "weight_decay": 0.05,
                         "maximize": True})],
        steps=20, lr={5: {"0": 0.004}, 12: {"1": 0.003, "2": 0.0016}})
fixture("radam-missing-zero-lr", "radam", {"lr": 0.003, "weight_decay": 0.01},
        steps=24, missing={"w": [0, 1, 2, 3], "s": [10, 11], "t": [17]},
        zero={"b": [5, 6], "*": [20]}, lr={8: {"0": 0.006}, 16: {"0": 0.0015}})
fixture("radam-combined", "radam",
        {"lr": 0.004, "betas": [0.85, 0.99], "eps": 1e-6, "weight_decay": 0.05,
         "decoupled_weight_decay": True, "maximize": True},
        layout="medium", steps=20, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.008}, 15: {"0": 0.001}})

# ---- rmsprop -----------------------------------------------------------------------------------
fixture("rmsprop-defaults", "rmsprop", {}, steps=14)
fixture("rmsprop-alpha", "rmsprop", {"lr": 0.003, "alpha": 0.9}, steps=18)
fixture("rmsprop-centered", "rmsprop", {"lr": 0.002, "centered": True}, steps=18)
fixture("rmsprop-momentum", "rmsprop", {"lr": 0.001, "momentum": 0.9}, steps=18)
fixture("rmsprop-centered-momentum", "rmsprop",
        {"lr": 0.001, "alpha": 0.95, "momentum": 0.5, "centered": True}, steps=18)
fixture("rmsprop-wd-eps", "rmsprop", {"lr": 0.002, "weight_decay": 0.1, "eps": 1e-3})
fixture("rmsprop-maximize", "rmsprop", {"lr": 0.002, "maximize": True})
fixture("rmsprop-groups", "rmsprop", {"lr": 0.002},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.001, "momentum": 0.8, "centered": True}),
                (["t"], {"lr": 0.004, "alpha": 0.9, "weight_decay": 0.05, "maximize": True})],
        steps=20, lr={5: {"0": 0.004}, 12: {"1": 0.0005, "2": 0.002}})
fixture("rmsprop-missing-zero-lr", "rmsprop", {"lr": 0.002, "momentum": 0.7, "weight_decay": 0.01},
        steps=22, missing={"t": [0, 1, 2], "b": [9, 10], "s": [16]},
        zero={"w": [0, 4], "*": [12]}, lr={7: {"0": 0.004}, 15: {"0": 0.001}})
fixture("rmsprop-combined", "rmsprop",
        {"lr": 0.0015, "alpha": 0.95, "eps": 1e-6, "weight_decay": 0.05, "momentum": 0.6,
         "centered": True, "maximize": True},
        layout="medium", steps=16, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.003}, 13: {"0": 0.00075}})

# ---- rprop -------------------------------------------------------------------------------------
# Rprop reads `lr` only when a parameter's state is created (its first gradient): later changes
# of group['lr'] (schedulers) have no effect. Exact zeros in the gradients give sign 0 (factor 1,
# no move, prev = 0).
fixture("rprop-defaults", "rprop", {}, steps=14)
fixture("rprop-etas", "rprop", {"lr": 0.02, "etas": [0.3, 1.5]}, steps=18, sparsity=0.2)
fixture("rprop-step-sizes", "rprop", {"lr": 0.01, "step_sizes": [0.004, 0.03]}, steps=20)
fixture("rprop-maximize", "rprop", {"lr": 0.005, "maximize": True}, sparsity=0.3)
fixture("rprop-lr-schedule", "rprop", {"lr": 0.01},
        steps=18, lr={0: {"0": 0.02}, 3: {"0": 0.005}, 9: {"0": 0.04}},
        missing={"b": [0, 1, 2, 3, 4], "t": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}, expect=[0, 4, 5, 10])
fixture("rprop-groups", "rprop", {"lr": 0.01},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.03, "etas": [0.25, 1.1], "step_sizes": [0.001, 0.1]}),
                (["t"], {"lr": 0.002, "maximize": True})],
        steps=20, lr={6: {"0": 0.02}})
fixture("rprop-missing-zero", "rprop", {"lr": 0.01, "etas": [0.6, 1.25]},
        steps=20, missing={"w": [0, 1, 2], "s": [8, 9], "t": [14]},
        zero={"b": [3, 4], "*": [11]}, sparsity=0.1)
fixture("rprop-combined", "rprop",
        {"lr": 0.015, "etas": [0.4, 1.3], "step_sizes": [0.0005, 0.2], "maximize": True},
        layout="medium", steps=24, zero={"*": [10]}, missing={"t": [0, 1]}, sparsity=0.15,
        lr={6: {"0": 0.03}})

# ---- sparse_adam (torch.optim.SparseAdam on grad.to_sparse()) ----------------------------------
# Gradients have many exact zeros: those elements (absent from the sparse gradient) keep their
# value and moments; the parameter's step count still advances, even for an all-zero gradient.
fixture("sparse_adam-defaults", "sparse_adam", {}, steps=14, sparsity=0.4)
fixture("sparse_adam-rows", "sparse_adam", {"lr": 0.003}, steps=20, sparse_rows=0.5)
fixture("sparse_adam-betas", "sparse_adam", {"lr": 0.004, "betas": [0.5, 0.9]}, steps=18,
        sparsity=0.5)
fixture("sparse_adam-eps", "sparse_adam", {"lr": 0.01, "eps": 0.05}, sparsity=0.3)
fixture("sparse_adam-maximize", "sparse_adam", {"lr": 0.0025, "maximize": True}, sparsity=0.5)
fixture("sparse_adam-groups", "sparse_adam", {"lr": 0.002},
        groups=[(["w", "t"], {}),
                (["b"], {"lr": 0.01, "betas": [0.8, 0.99]}),
                (["s"], {"lr": 0.0005, "eps": 0.01, "maximize": True})],
        steps=20, sparsity=0.4, lr={8: {"0": 0.001, "1": 0.02}})
fixture("sparse_adam-missing-zero-lr", "sparse_adam", {"lr": 0.003},
        steps=22, missing={"w": [0, 1, 2], "b": [9, 10], "s": [16]},
        zero={"t": [0, 1, 4], "*": [12]}, sparsity=0.5, lr={7: {"0": 0.006}, 15: {"0": 0.0015}})
fixture("sparse_adam-combined", "sparse_adam",
        {"lr": 0.004, "betas": [0.85, 0.98], "eps": 1e-6, "maximize": True},
        layout="medium", steps=16, zero={"*": [10]}, missing={"t": [0, 1]}, sparsity=0.3,
        sparse_rows=0.3, lr={6: {"0": 0.008}, 13: {"0": 0.001}})

# ---- adafactor ---------------------------------------------------------------------------------
# "small" holds a 2-D and a 3-D parameter (factored: row_var / col_var over the last two axes), a
# 1-D and a 0-d one (full `variance`).
fixture("adafactor-defaults", "adafactor", {}, steps=14)
fixture("adafactor-lr-rho", "adafactor", {"lr": 0.3}, steps=20)   # rho_t = 1/sqrt(t) from t = 12
fixture("adafactor-beta2-decay", "adafactor", {"lr": 0.02, "beta2_decay": -0.5}, steps=18)
fixture("adafactor-eps1", "adafactor", {"lr": 0.02, "eps": [1e-2, 1e-3]}, steps=18)
fixture("adafactor-eps2", "adafactor", {"lr": 0.02, "eps": [None, 2.0]})
fixture("adafactor-d", "adafactor", {"lr": 0.02, "d": 1.5}, steps=18)
fixture("adafactor-wd", "adafactor", {"lr": 0.02, "weight_decay": 0.5})
fixture("adafactor-maximize", "adafactor", {"lr": 0.015, "maximize": True})
fixture("adafactor-groups", "adafactor", {"lr": 0.01},
        groups=[(["w"], {}),
                (["b", "s"], {"lr": 0.03, "beta2_decay": -1.0, "weight_decay": 0.1}),
                (["t"], {"lr": 0.02, "eps": [1e-3, 0.5], "d": 2.0, "maximize": True})],
        steps=20, lr={5: {"0": 0.02}, 12: {"1": 0.2, "2": 0.005}})
fixture("adafactor-missing-zero-lr", "adafactor", {"lr": 0.02, "weight_decay": 0.05},
        steps=22, missing={"w": [0, 1, 2], "b": [9, 10], "s": [16]},
        zero={"t": [0, 4], "*": [12]}, lr={7: {"0": 0.04}, 15: {"0": 0.5}})
fixture("adafactor-combined", "adafactor",
        {"lr": 0.25, "beta2_decay": -0.6, "eps": [1e-3, 1e-2], "d": 1.2, "weight_decay": 0.02,
         "maximize": True},
        layout="medium", steps=20, zero={"*": [10]}, missing={"t": [0, 1]},
        lr={6: {"0": 0.05}, 15: {"0": 0.4}})

# ---- muon (2-D parameters only) ----------------------------------------------------------------
# Each declared twice: "muon-*" against torch's own bfloat16 Newton-Schulz, with a tolerance
# measured at generation (a float32 Newton-Schulz against it, see muon_tolerance and the README),
# and "muon-f32-*" (top-level "ns_dtype": "float32") against torch's update with Newton-Schulz
# re-run in float32.
MUON_FIXTURES = [
    ("defaults", {}, dict(steps=14)),
    ("lr", {"lr": 0.02}, dict(steps=16)),
    ("no-nesterov", {"lr": 0.02, "nesterov": False}, dict()),
    ("momentum", {"lr": 0.02, "momentum": 0.8}, dict()),
    ("momentum0-eps", {"lr": 0.01, "momentum": 0.0, "eps": 0.05}, dict(zero={"*": [8]})),
    ("wd", {"lr": 0.02, "weight_decay": 0.5}, dict()),
    ("wd0", {"lr": 0.02, "weight_decay": 0.0}, dict()),
    ("ns-steps", {"lr": 0.02, "ns_steps": 2}, dict()),
    ("ns-coefficients", {"lr": 0.02, "ns_coefficients": [1.875, -1.25, 0.375], "ns_steps": 8},
     dict()),
    ("adjust-original", {"lr": 0.02, "adjust_lr_fn": "original"}, dict()),
    ("adjust-match-rms-adamw", {"lr": 0.005, "adjust_lr_fn": "match_rms_adamw"}, dict()),
    ("adjust-spectral-unclamped", {"lr": 0.02, "adjust_lr_fn": "spectral_unclamped"}, dict()),
    ("groups", {"lr": 0.02},
     dict(groups=[(["a"], {}),
                  (["c"], {"lr": 0.01, "momentum": 0.9, "nesterov": False,
                           "adjust_lr_fn": "match_rms_adamw"}),
                  (["q"], {"lr": 0.03, "weight_decay": 0.0, "ns_steps": 3,
                           "adjust_lr_fn": "spectral_unclamped"})],
          steps=20, lr={5: {"0": 0.04}, 12: {"1": 0.005, "2": 0.015}})),
    ("missing-zero-lr", {"lr": 0.02, "weight_decay": 0.05},
     dict(steps=22, missing={"a": [0, 1, 2], "c": [9, 10], "q": [16]},
          zero={"q": [0, 4], "*": [12]}, lr={7: {"0": 0.04}, 15: {"0": 0.01}})),
    ("combined", {"lr": 0.015, "weight_decay": 0.05, "momentum": 0.9, "nesterov": True,
                  "ns_coefficients": [3.0, -3.2, 1.2], "eps": 1e-5, "ns_steps": 6,
                  "adjust_lr_fn": "spectral_unclamped"},
     dict(layout="matrices_medium", steps=16, zero={"*": [10]}, missing={"r": [0, 1]},
          lr={6: {"0": 0.03}, 13: {"0": 0.005}})),
]
for _ns_dtype, _prefix in ((None, "muon-"), ("float32", "muon-f32-")):
    for _suffix, _hp, _kw in MUON_FIXTURES:
        fixture(_prefix + _suffix, "muon", _hp, **{"layout": "matrices", "steps": 18, **_kw},
                ns_dtype=_ns_dtype)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

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
            return "[" + ", ".join(json.dumps(v, allow_nan=False) for v in obj) + "]"
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False)


def conditioning(fx: dict, refs: References) -> float:
    """Largest |float32 reference - float64 reference|, after any step, as a share of the allowed
    error: how much of the tolerance plain float32 rounding already uses on this trajectory."""
    snapshots32, _ = replay(fx, refs)
    snapshots64, _ = replay(fx, refs, dtype=torch.float64)
    tol = fx.get("tolerance", {})
    rtol, atol = tol.get("rtol", DEFAULT_RTOL), tol.get("atol", DEFAULT_ATOL)
    worst = 0.0
    for a, b in zip(snapshots32, snapshots64):
        for name in a:
            worst = max(worst, float((np.abs(a[name] - b[name]) / (atol + rtol * np.abs(b[name]))).max()))
    return worst


def nice_ceiling(x: float) -> float:
    """x rounded up to 1, 2 or 5 times a power of ten."""
    e = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * 10.0 ** e >= x * (1 - 1e-12):
            return float(f"{m * 10.0 ** e:.0e}")
    raise AssertionError


def error_against(fx: dict, snapshots) -> tuple[float, float]:
    """Max |replay - recorded| over every expected block, and the largest movement of any value
    from its initial value (for scale)."""
    checks = [(i, st["expected"]) for i, st in enumerate(fx["steps"]) if "expected" in st]
    checks.append((len(fx["steps"]) - 1, fx["expected"]))
    initial = {p["name"]: np.asarray(p["data"], dtype=np.float64) for p in fx["params"]}
    err = move = 0.0
    for i, expected in checks:
        for name, want in expected.items():
            want = np.asarray(want, dtype=np.float64)
            err = max(err, float(np.abs(snapshots[i][name] - want).max()))
            move = max(move, float(np.abs(want - initial[name]).max()))
    return err, move


MUON_BF16_HEADROOM = 3.0   # bfloat16 Muon fixtures: atol = this x (float32 NS vs torch's bfloat16)
MUON_F32_HEADROOM = 20.0   # float32-NS Muon fixtures: atol = this x (float32 vs float64 NS), if > 1e-6


def muon_tolerance(fx: dict, refs: References) -> tuple[dict | None, str]:
    """The tolerance a Muon fixture needs, measured (see README):
    - torch's bfloat16 reference: replay with Newton-Schulz in float32 (what a float32
      implementation computes); atol = nice_ceiling(MUON_BF16_HEADROOM x max abs difference).
    - float32-NS reference: replay in float64 (float64 NS); if 20x that gap exceeds the default
      atol, atol = nice_ceiling(MUON_F32_HEADROOM x gap), else the default tolerance (None)."""
    if fx.get("ns_dtype") == "float32":
        gap, move = error_against(fx, replay(fx, refs, dtype=torch.float64)[0])
        if MUON_F32_HEADROOM * gap <= DEFAULT_ATOL:
            return None, f"f64-NS gap {gap:.2e}, default tolerance, max move {move:.3g}"
        atol = nice_ceiling(MUON_F32_HEADROOM * gap)
        return ({"rtol": DEFAULT_RTOL, "atol": atol},
                f"f64-NS gap {gap:.2e} -> atol {atol:g}, max move {move:.3g}")
    f32 = dict(fx, ns_dtype="float32")
    err, move = error_against(fx, replay(f32, refs)[0])
    atol = nice_ceiling(MUON_BF16_HEADROOM * err)
    return ({"rtol": DEFAULT_RTOL, "atol": atol},
            f"f32-NS vs bf16 {err:.2e} -> atol {atol:g}, max move {move:.3g} ({move / atol:.0f} x atol)")


def generate(out_dir: str, refs: References, only: list[str] | None,
             only_optimizers: list[str] | None = None) -> int:
    os.makedirs(out_dir, exist_ok=True)
    total, problems = 0, []
    for spec in FIXTURES:
        if only and spec["name"] not in only:
            continue
        if only_optimizers and spec["optimizer"] not in only_optimizers:
            continue
        for salt in range(20):
            fx = make_fixture(spec, refs, salt)
            margin = fx.pop("_margin")
            if margin >= 1.0:
                break
        else:
            problems.append(f"{spec['name']}: no seed with every decision margin above its minimum")
        note = ""
        if fx["optimizer"] == "muon":
            tolerance, note = muon_tolerance(fx, refs)
            if tolerance:
                fx["tolerance"] = tolerance
        cond = conditioning(fx, refs)
        if cond > CONDITIONING_LIMIT:
            problems.append(f"{spec['name']}: float32 vs float64 reference uses {cond:.3f} of tolerance")
        text = dumps(fx) + "\n"
        # The file must replay exactly to what was recorded.
        check = compare(json.loads(text), replay(json.loads(text), refs)[0])
        if check["max_abs"] != 0.0:
            problems.append(f"{spec['name']}: replay of the written file differs ({check['max_abs']})")
        path = os.path.join(out_dir, spec["name"] + ".json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        total += len(text)
        nvals = sum(len(p["data"]) for p in fx["params"])
        print(f"{spec['name']:40s} {fx['optimizer']:16s} {len(fx['steps']):2d} steps {nvals:4d} values "
              f"{len(text):6d} B  salt {salt}  margin x{margin:.2e}  f64-gap {cond:.4f}  {note}")
    print(f"{total} bytes in total")
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    return 1 if problems else 0


def check_files(paths: list[str], refs: References) -> int:
    bad = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            fx = json.load(f)
        assert fx.get("format") == FORMAT, path
        snapshots, _ = replay(fx, refs)
        r = compare(fx, snapshots)
        status = "ok" if not r["failures"] else "FAIL"
        bad += bool(r["failures"])
        print(f"{status:4s} {os.path.basename(path):40s} {r['values']:5d} values checked, "
              f"max abs err {r['max_abs']:.3e}, max err/allowed {r['max_ratio']:.4f} "
              f"(rtol {r['rtol']:g}, atol {r['atol']:g})")
        for failure in r["failures"]:
            print("     ", failure)
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="directory to write <name>.json fixtures into")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="generate only these fixtures")
    ap.add_argument("--only-optimizer", nargs="+", metavar="OPT",
                    help="generate only the fixtures of these optimizers (the `optimizer` field)")
    ap.add_argument("--list", action="store_true", help="list the fixture names")
    ap.add_argument("--check-examples", nargs="?", const=DEFAULT_EXAMPLES, metavar="DIR",
                    help=f"replay the fixtures in DIR (default {DEFAULT_EXAMPLES}) and compare")
    ap.add_argument("--check", nargs="+", metavar="PATH", help="replay fixture files or directories")
    ap.add_argument("--composer-wheel", metavar="PATH",
                    help=f"{COMPOSER_WHEEL} (default: pip download it into a temporary directory)")
    ap.add_argument("--seeds", default=DEFAULT_SEEDS, metavar="DIR",
                    help="the seed documents (default: ../shared/seeds beside the repository)")
    args = ap.parse_args(argv)

    if args.list:
        print("\n".join(f["name"] for f in FIXTURES))
        return 0
    if not (args.out or args.check_examples or args.check):
        ap.error("give --out, --check-examples or --check")

    logging.disable(logging.WARNING)  # composer / seed 004 warn about large weight decay
    warnings.filterwarnings("ignore", message=r".*torch._utils.is_compiling.*")  # torch-adopt
    torch.set_num_threads(1)
    refs = References(args.composer_wheel, os.path.abspath(args.seeds))
    refs.check_defaults()
    rc = 0
    if args.check_examples:
        rc |= check_files(sorted(glob.glob(os.path.join(args.check_examples, "*.json"))), refs)
    if args.check:
        paths = []
        for p in args.check:
            paths += sorted(glob.glob(os.path.join(p, "*.json"))) if os.path.isdir(p) else [p]
        rc |= check_files(paths, refs)
    if args.out:
        rc |= generate(args.out, refs, args.only, args.only_optimizer)
    return rc


if __name__ == "__main__":
    sys.exit(main())
