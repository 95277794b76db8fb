"""The sigmoid (E3, E6) and its derivative written through its output (E9, E14)."""

from __future__ import annotations

import numpy as np

from reference._validate import float_array


def sigmoid(Z: np.ndarray) -> np.ndarray:
    """E3 / E6: sigmoid(x) = 1 / (1 + e^-x), values in (0, 1); any shape, dtype kept.

    Computed as written; where e^-x would overflow (x < -709 in float64) the equal form
    e^x / (1 + e^x) takes over, so any finite x (|x| up to 1e4 and beyond) gives no warning.
    """
    Z = float_array("Z", Z, ndim=None, allow_empty=True)
    return _sigmoid(Z)


# Elementwise chains run over blocks of BLOCK elements (1 MiB of float64): each step of
# the chain then reads and writes cache-resident data. The loop runs size / BLOCK times
# (66 for the article's A1 at batch 5000), each a vectorised operation on ~76 images'
# worth of values; it is a cache-blocking loop, not a loop over images.
BLOCK = 1 << 17


def _sigmoid(Z, out=None):
    # out: C-contiguous, Z's shape and dtype.
    out = np.empty(Z.shape, dtype=Z.dtype) if out is None else out
    z, o = np.ascontiguousarray(Z).reshape(-1), out.reshape(-1)
    for start in range(0, z.size, BLOCK):
        block = slice(start, start + BLOCK)
        _sigmoid_block(z[block], o[block])
    return out


def _sigmoid_block(x, e):
    """e = 1 / (1 + e^-x), E3 as written: four vectorised passes, no mask, no scratch.

    Accurate to a few ulps wherever e^-x is finite. Where it overflows (x < -709.78 in
    float64, -88.72 in float32) the true value is e^x / (1 + e^x) and 1 + e^x rounds to 1,
    so those elements get e^x itself: each element's value depends only on its x. e^-x
    underflowing to 0 for large x gives 1, the correctly rounded value, and is not signalled.
    """
    with np.errstate(over="raise", under="ignore"):
        try:
            np.negative(x, out=e)
            np.exp(e, out=e)
            np.add(e, 1, out=e)
            np.divide(1, e, out=e)
            return
        except FloatingPointError:  # rare: only very negative x
            pass
    with np.errstate(over="ignore", under="ignore"):
        np.negative(x, out=e)
        np.exp(e, out=e)
        overflow = np.isinf(e)
        np.add(e, 1, out=e)
        np.divide(1, e, out=e)
        e[overflow] = np.exp(x[overflow])


def sigmoid_grad_from_output(A: np.ndarray) -> np.ndarray:
    """E9 / E14: d sigmoid(z) / dz = A (1 - A) with A = sigmoid(z); any shape.

    E9 is dO/dZ2 = O (1 - O), E14 is dA1/dZ1 = A1 (1 - A1). The article's text calls this
    factor "sigmoid"; it means the derivative written through the output.
    """
    A = float_array("A", A, ndim=None, allow_empty=True)
    if A.size and (A.min() < 0 or A.max() > 1):
        raise ValueError(f"A must be a sigmoid output in [0, 1], got values in "
                         f"[{A.min()}, {A.max()}]")
    return A * (1 - A)
