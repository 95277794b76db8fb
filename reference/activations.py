"""The sigmoid (E3, E6) and its derivative written through its output (E9, E14)."""

from __future__ import annotations

import numpy as np

from reference._validate import float_array


def sigmoid(Z: np.ndarray) -> np.ndarray:
    """E3 / E6: sigmoid(x) = 1 / (1 + e^-x), values in (0, 1); any shape, dtype kept.

    Numerically stable: e^-|x| never overflows, so |x| up to 1e4 gives no warning
    (for x < 0 it uses the equal form e^x / (1 + e^x)).
    """
    Z = float_array("Z", Z, ndim=None, allow_empty=True)
    return _sigmoid(Z)


# Elementwise chains run over blocks of BLOCK elements (1 MiB of float64): each step of
# the chain then reads and writes cache-resident data, and the scratch arrays are
# allocated once per call instead of once per step at full size. The loop runs size /
# BLOCK times (66 for the article's A1 at batch 5000), each a vectorised operation on
# ~76 images' worth of values; it is a cache-blocking loop, not a loop over images.
BLOCK = 1 << 17

def _blocks(size: int):
    for start in range(0, size, BLOCK):
        yield slice(start, min(start + BLOCK, size))


def _scratch_shape(size: int):
    """Scratch for _sigmoid on `size` values: (2, values per block)."""
    return (2, min(size, BLOCK))


def _sigmoid(Z, out=None, scratch=None):
    # e = e^-|x| <= 1 never overflows; sigmoid = 1 / (1 + e) for x >= 0, e / (1 + e) for
    # x < 0: the same values as np.where(Z >= 0, 1 / (1 + e), e / (1 + e)). The numerator
    # is chosen without a mask (masked selection is 10x slower than arithmetic here):
    # max(e, copysign(1, x)) is 1 for x >= 0 (e <= 1) and e for x < 0 (e >= 0 > -1).
    # e^-|x| underflows (to a subnormal or 0) for |x| > 708 (float64) / 87 (float32): that
    # is the correctly rounded result, not an error, so it is not signalled even under
    # np.errstate(all="raise").
    # out: C-contiguous, Z's shape and dtype; scratch: _scratch_shape(Z.size) or larger.
    out = np.empty(Z.shape, dtype=Z.dtype) if out is None else out
    z, o = np.ascontiguousarray(Z).reshape(-1), out.reshape(-1)
    if scratch is None:
        scratch = np.empty(_scratch_shape(z.size), dtype=Z.dtype)
    denom, sign = scratch
    with np.errstate(under="ignore"):
        for blk in _blocks(z.size):
            x, e = z[blk], o[blk]
            d, h = denom[:x.size], sign[:x.size]
            np.abs(x, out=e)
            np.negative(e, out=e)              # -|x| (two SIMD passes beat one copysign)
            np.exp(e, out=e)                   # e
            np.add(e, 1, out=d)                # 1 + e
            np.copysign(1, x, out=h)
            np.maximum(e, h, out=e)            # numerator: 1 (x >= 0) or e (x < 0)
            np.divide(e, d, out=e)
    return out


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
