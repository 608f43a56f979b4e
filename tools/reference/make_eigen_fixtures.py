#!/usr/bin/env python3
"""Reference values for the Swift symmetric eigendecomposition and QR (`SymmetricEigen`).

Writes Tests/Fixtures/linalg/eigen.json: float32-valued test matrices and, computed from their
exact values in float64 by `torch.linalg.eigh` / `torch.linalg.qr` (numpy's `linalg.eigh` /
`linalg.qr` when torch is missing; both call LAPACK), the eigenvalues in descending order, the
eigenvectors (columns, same order) and Q, R. Signs of eigenvectors and of Q's columns are
whatever LAPACK returns: the Swift tests compare sign-independent quantities only.

Usage:
  python3 tools/reference/make_eigen_fixtures.py --out Tests/Fixtures/linalg/eigen.json
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

try:
    import torch
except ImportError:  # numpy alone gives the same LAPACK results
    torch = None


def eigh(a: np.ndarray):
    if torch is not None:
        w, v = torch.linalg.eigh(torch.from_numpy(a))
        w, v = w.numpy(), v.numpy()
    else:
        w, v = np.linalg.eigh(a)
    return w[::-1].copy(), v[:, ::-1].copy()


def qr(a: np.ndarray):
    if torch is not None:
        q, r = torch.linalg.qr(torch.from_numpy(a))
        return q.numpy(), r.numpy()
    return np.linalg.qr(a)


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def flat(a) -> list:
    return [float(x) for x in np.asarray(a, dtype=np.float64).reshape(-1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="Tests/Fixtures/linalg/eigen.json")
    args = parser.parse_args()
    rng = np.random.default_rng(20240917)

    symmetric = []

    def add_symmetric(name: str, a: np.ndarray) -> None:
        a = f32(a)
        a = np.tril(a) + np.tril(a, -1).T  # symmetric, float32 values
        w, v = eigh(a)
        symmetric.append({"name": name, "n": a.shape[0], "matrix": flat(a), "values": flat(w), "vectors": flat(v)})

    add_symmetric("one", [[2.5]])
    add_symmetric("two", [[2.0, 1.0], [1.0, 3.0]])
    add_symmetric("diagonal-unsorted", np.diag([0.5, -3.0, 7.0, 1.25, 0.0]))
    for n in (3, 5, 8, 16, 40, 64):
        x = rng.standard_normal((n, n))
        add_symmetric(f"random-{n}", (x + x.T) / 2)
    # SOAP's factors: Gram matrices G·Gᵀ of gradients, positive semi-definite, widely spread.
    for n, k, scale in ((4, 6, 1e-3), (6, 6, 1.0), (12, 20, 10.0), (7, 3, 1.0), (48, 64, 0.1), (40, 25, 1.0)):
        g = f32(rng.standard_normal((n, k)) * scale)
        add_symmetric(f"gram-{n}x{k}", g @ g.T)
    # A repeated eigenvalue (2 twice): only residual and orthogonality are meaningful there.
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    add_symmetric("repeated", q @ np.diag([5.0, 2.0, 2.0, -1.0, 0.5, 0.1]) @ q.T)
    # Only the lower triangle counts (as torch's UPLO='L'): the upper one is garbage here.
    lower = rng.standard_normal((5, 5))
    garbage = np.tril(lower) + np.triu(rng.standard_normal((5, 5)) * 100, 1)
    a = f32(np.tril(lower) + np.tril(lower, -1).T)
    w, v = eigh(a)
    symmetric.append({"name": "lower-triangle-only", "n": 5, "matrix": flat(f32(garbage)), "values": flat(w),
                      "vectors": flat(v)})

    qrs = []
    for name, m, n in (("qr-1", 1, 1), ("qr-4", 4, 4), ("qr-7", 7, 7), ("qr-30", 30, 30), ("qr-tall-6x3", 6, 3),
                       ("qr-wide-3x5", 3, 5)):
        a = f32(rng.standard_normal((m, n)))
        q, r = qr(a)
        qrs.append({"name": name, "rows": m, "columns": n, "matrix": flat(a), "q": flat(q), "r": flat(r)})
    # SOAP's power iteration: QR of GG·Q, a matrix with columns of very different lengths.
    g = f32(rng.standard_normal((5, 9)))
    gg = g @ g.T
    _, v = eigh(gg)
    a = f32(gg @ f32(v))
    q, r = qr(a)
    qrs.append({"name": "qr-power-iteration-5", "rows": 5, "columns": 5, "matrix": flat(a), "q": flat(q), "r": flat(r)})

    backend = f"torch {torch.__version__}" if torch is not None else f"numpy {np.__version__}"
    out = {"format": "optim-linalg/1", "reference": f"{backend} linalg.eigh / linalg.qr in float64",
           "symmetric": symmetric, "qr": qrs}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write('{"format": %s, "reference": %s,\n' % (json.dumps(out["format"]), json.dumps(out["reference"])))
        for key in ("symmetric", "qr"):
            f.write(' "%s": [\n' % key)
            f.write(",\n".join("  " + json.dumps(case) for case in out[key]))
            f.write("\n ]" + ("," if key == "symmetric" else "") + "\n")
        f.write("}\n")


if __name__ == "__main__":
    main()
