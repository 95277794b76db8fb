"""The reference's fast path: the same step as reference.model, computed faster.

reference.model is the model an auditor reads: one call per article equation, through the
stage functions of this package. This module computes the same tensors with kernels
written for speed, and is what `--parity-impl reference` (the default) checks:

- E1 and E16 straight from the images with banded ("Toeplitz") filters, so no
  s^2-times-the-input copy of the windows is made (`_conv_forward_images`,
  `_conv_grad_filter_images`);
- the sigmoid (E3, E6) and the E13/E14 chain over cache-sized blocks (`_sigmoid`,
  `_conv_deltas`);
- every large array of a step carved out of one allocation (`_Arena`).

Each kernel computes the sums of its equation, in another order. parity_tests/test_fast_path.py
proves every tensor of this step equal to reference.model's stage function fed the same
inputs, within the stage tolerance policy, at batch 1, 7, the run's batch and 1000, in both
dtypes and for several seeds; the parity report records those checks (against "readable").
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from reference import activations, conv, dense, flatten, loss, update
from reference._validate import choice, float_array, mapping
from reference.layers import activations as layer_activations
from reference.layers import conv2d
from reference.layers import dense as layer_dense
from reference.model import _required, check_params, sgd_step  # noqa: F401  (sgd_step: same API)
from reference.patches import _patches_view_images
from reference.tensors import Tensors
from reference.trace import implements

# Elementwise chains run over blocks of BLOCK elements (1 MiB of float64): each step of
# the chain then reads and writes cache-resident data. The loop runs size / BLOCK times
# (66 for the article's A1 at batch 5000), each a vectorised operation on ~76 images'
# worth of values; it is a cache-blocking loop, not a loop over images.
BLOCK = 1 << 17


@implements("E3", "E6", proven_equal_to=(activations.sigmoid,))
def _sigmoid(Z, out=None):
    """E3 / E6 over blocks of BLOCK elements; the same values as activations.sigmoid."""
    # out: C-contiguous, Z's shape and dtype.
    out = np.empty(Z.shape, dtype=Z.dtype) if out is None else out
    z, o = np.ascontiguousarray(Z).reshape(-1), out.reshape(-1)
    for start in range(0, z.size, BLOCK):  # cache blocks of BLOCK values, not images or pixels
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


# --- Kernels on the images themselves (the model's fast path) ---------------------------
#
# `patches` holds every window of every image: s^2 m^2 values per image (14,400 for the
# article, 18x the image). The kernels below compute the same E1 and E16 sums from the
# images directly, as BLAS products with a banded ("Toeplitz") form of the filters:
#
#   Z1[N, k, i, j] = sum over u, b of rows_i[N, (u, b)] * T[k, j, (u, b)]
#   rows_i[N, (u, b)] = X[i + u, b, N]          (output row i reads s whole image rows)
#   T[k, j, (u, b)]   = f[u, b - j, k] if 0 <= b - j < s, else 0
#
# rows_i is a strided view of the images (no copy) and T is tiny (K x m x s*n), so nothing
# larger than Z1 is ever allocated. The price is arithmetic on the zeros of T (n/s = 5.6x
# the products of E1 for the article), which BLAS does faster than a copy of the patches
# can be written. Every sum has exactly the terms of E1 / E16 (the extra terms are exact
# zeros), only in another order: results agree with the patch form to rounding.


def _images(X, out=None):
    """(n, n, N) article layout -> (N, n, n) C-contiguous, images[N, a, b] = X[a, b, N].

    Free for an X already laid out that way, else one small copy (into `out` if given).
    """
    images = X.transpose(2, 0, 1)
    if images.flags.c_contiguous:
        return images
    if out is None:
        return np.ascontiguousarray(images)
    np.copyto(out, images)
    return out


def _row_windows(images, s):
    """rows[i, N, u * n + b] = images[N, i + u, b]: (m, N, s * n), a view (no copy)."""
    N, n, _ = images.shape
    t = images.strides
    return as_strided(images, (n - s + 1, N, s * n), (t[1], t[0], t[2]), writeable=False)


def _banded_filters(f, n):
    """T[k, j, u, b] = f[u, b - j, k] for 0 <= b - j < s, else 0; shape (K, m, s, n)."""
    s, _, K = f.shape
    T = np.zeros((K, n - s + 1, s, n), dtype=f.dtype)
    t = T.strides
    # T[k, j, u, j + v] for all k, j, u, v is one strided view: fill it with f[u, v, k].
    band = as_strided(T, (K, n - s + 1, s, s), (t[0], t[1] + t[3], t[2], t[3]))
    band[...] = f.transpose(2, 0, 1)[:, None]
    return T


@implements("E1", proven_equal_to=(conv2d.conv2d_forward,))
def _conv_forward_images(images, f, out=None):
    """E1 from the images: (N, n, n) and f (s, s, K) -> Z1 (N, K, m * m) (into `out`)."""
    N, n, _ = images.shape
    s, _, K = f.shape
    m = n - s + 1
    T = _banded_filters(f, n).reshape(K, m, s * n)
    Z1 = np.empty((N, K, m, m), dtype=images.dtype) if out is None else out.reshape(N, K, m, m)
    # One BLAS product (N, s*n) @ (s*n, m) per output row i and filter k, written in place
    # into Z1 (viewed as [i, k, N, j]); numpy runs the m*K products in C.
    np.matmul(_row_windows(images, s)[:, None], T.transpose(0, 2, 1)[None], out=Z1.transpose(2, 1, 0, 3))
    return Z1.reshape(N, K, m * m)


def _grad_work_shape(n, s, K):
    """Shape of the scratch `work` that _conv_grad_filter_images may be given."""
    return (n - s + 1, K, n - s + 1, s * n)


@implements("E16", proven_equal_to=(conv2d._grad_filter,))
def _conv_grad_filter_images(images, dE_dZ1, s, work=None):
    """E16 from the images: (N, n, n), dE_dZ1 (N, K, m * m) -> dE_df (s, s, K).

    G[k, j, (u, b)] = sum over i, N of dE_dZ1[N, k, i, j] * images[N, i + u, b] (the
    transpose of the forward product), then dE_df[u, v, k] = sum over j of G[k, j, u, j + v].
    """
    N, n, _ = images.shape
    K = dE_dZ1.shape[1]
    m = n - s + 1
    delta = dE_dZ1.reshape(N, K, m, m).transpose(2, 1, 3, 0)  # [i, k, j, N]
    G = np.matmul(delta, _row_windows(images, s)[:, None], out=work)  # (m, K, m, s*n)
    G = G.sum(axis=0)  # (K, m, s*n)
    G = G.reshape(K, m, s, n)
    g = G.strides
    band = as_strided(G, (K, m, s, s), (g[0], g[1] + g[3], g[2], g[3]))  # [k, j, u, v]
    return np.ascontiguousarray(band.sum(axis=1).transpose(1, 2, 0))


def forward(params, X: np.ndarray) -> Tensors:
    """E1..E6: returns X, patches, Z1, A1, Z2, O (article layout and names).

    Z1 is computed from the images directly (reference.conv's banded-filter kernel, the
    same sums as conv_forward(patches, f)), so no s^2-times-the-input copy of the windows
    is made. `patches` is returned as a read-only strided view holding exactly
    extract_patches(X, s)'s values and shape, over a buffer of s column-shifted images
    (s * n * m values per image: 4.3x the input for the article, not 18.4x).
    """
    f, W, b = check_params(params, _required("X", X))
    buf = _Arena(f, X, backward=False)
    return _forward(f, W, b, X, _images(X, out=buf.images), buf)


def _forward(f, W, b, X, images, buf):
    Z1 = _conv_forward_images(images, f, out=buf.Z1)
    A1 = _sigmoid(Z1, out=buf.A1)
    Z2 = dense._dense_forward(flatten._flatten(A1), W, b)
    O = _sigmoid(Z2)
    P = _patches_view_images(images, f.shape[0], out=buf.shifted)
    return Tensors(X=X, patches=P, Z1=Z1, A1=A1, Z2=Z2, O=O)


class _Arena:
    """The large arrays of one call, carved out of ONE allocation.

    A step makes ~8 arrays the size of Z1 or larger; allocated one by one, the C allocator
    hands their memory back to the OS after every step and takes it again (page faults cost
    more than the arithmetic at batch 200 here). One block is recycled whole instead (and
    gets NumPy's huge-page advice once it is >= 4 MiB). The arrays returned to the caller
    (Z1, A1, the patches buffer, dE_dA1, dE_dZ1) are disjoint C-contiguous views of it, so
    the block is freed when the last of them is.
    """

    def __init__(self, f, X=None, *, N=None, m=None, forward=True, backward=True):
        s, K = f.shape[0], f.shape[2]
        if X is not None:
            n, N = X.shape[0], X.shape[2]
            m = n - s + 1
        n = m + s - 1
        conv_map = (N, K, m * m)
        copy = X is not None and not X.transpose(2, 0, 1).flags.c_contiguous
        want = {
            "images": (N, n, n) if copy else None,
            "scratch": (2, min(N * K * m * m, BLOCK)),
        }  # for the E14 chain
        if forward:
            want.update(Z1=conv_map, A1=conv_map, shifted=(N, s, n, m))
        if backward:
            want.update(dE_dA1=conv_map, dE_dZ1=conv_map, work=_grad_work_shape(n, s, K))
        align = max(1, 64 // f.dtype.itemsize)  # every view starts on 64 bytes
        sizes = {k: -(-int(np.prod(v)) // align) * align for k, v in want.items() if v}
        block = np.empty(sum(sizes.values()), dtype=f.dtype)
        start = 0
        for name in ("images", "scratch", "Z1", "A1", "shifted", "dE_dA1", "dE_dZ1", "work"):
            view = None
            if want.get(name):
                view = block[start : start + int(np.prod(want[name]))].reshape(want[name])
                start += sizes[name]
            setattr(self, name, view)


def backward(params, cache, y: np.ndarray, reduction: str = "sum") -> Tensors:
    """E7..E16: the loss E and every derivative, each in the shape of what it differentiates.

    dE_dO, dO_dZ2, dE_dZ2: (1, N); dE_dW: (F, 1); dE_db: (1,); dE_dA1, dE_dZ1: (N, K, P);
    dE_df: (s, s, K). `cache` is forward()'s result. E16 is summed over the images
    cache['X'] when the cache has them (its form in the article, and what forward()
    returns); only a cache without X is read through cache['patches'].
    """
    f, W, b = check_params(params)
    mapping("cache", cache, ("A1", "O"))
    O = float_array("cache['O']", cache["O"], (1, None), dtype=f.dtype)
    A1 = float_array("cache['A1']", cache["A1"], (O.shape[1], f.shape[2], None), dtype=f.dtype)
    s, N, K = f.shape[0], O.shape[1], f.shape[2]
    images = P = None
    if "X" in cache:
        X = float_array("cache['X']", cache["X"], (None, None, N), dtype=f.dtype)
        if X.shape[0] != X.shape[1] or X.shape[0] < s or (X.shape[0] - s + 1) ** 2 != A1.shape[2]:
            raise ValueError(
                f"cache['X'] must hold square images (n, n, {N}) with "
                f"(n - {s} + 1)^2 = {A1.shape[2]} windows for A1 of shape "
                f"{A1.shape}, got {X.shape}"
            )
    else:
        mapping("cache", cache, ("patches", "A1", "O"))
        P = float_array("cache['patches']", cache["patches"], (N, A1.shape[2], s, s), dtype=f.dtype)
    if W.shape[0] != K * A1.shape[2]:
        raise ValueError(
            f"params['W'] must have {K * A1.shape[2]} rows for A1 of shape {A1.shape}, got {W.shape}"
        )
    y = float_array("y", y, O.shape, dtype=O.dtype)
    reduction = choice("reduction", reduction, loss.REDUCTIONS)
    if P is None:
        buf = _Arena(f, X, forward=False)
        images = _images(X, out=buf.images)
    else:
        buf = _Arena(f, N=N, m=math.isqrt(A1.shape[2]), forward=False)
    return _backward(W, s, O, A1, y, reduction, images, P, buf)


def _backward(W, s, O, A1, y, reduction, images, P, buf):
    E = loss.half_squared_error(O, y, reduction)
    dE_dO = loss._loss_grad_output(O, y, reduction)
    dO_dZ2 = activations._sigmoid_grad_from_output(O)
    dE_dZ2 = dE_dO * dO_dZ2
    A1_flat = flatten._flatten(A1)
    dE_dW = dense._dense_grad_weights(A1_flat, dE_dZ2)
    dE_db = dense._dense_grad_bias(dE_dZ2)
    dE_dA1, dE_dZ1 = _conv_deltas(W, dE_dZ2, A1, buf)
    if images is not None:
        dE_df = _conv_grad_filter_images(images, dE_dZ1, s, work=buf.work)
    else:
        dE_df = conv._conv_grad_filter(P, dE_dZ1)
    return Tensors(
        E=E,
        dE_dO=dE_dO,
        dO_dZ2=dO_dZ2,
        dE_dZ2=dE_dZ2,
        dE_dW=dE_dW,
        dE_db=dE_db,
        dE_dA1=dE_dA1,
        dE_dZ1=dE_dZ1,
        dE_df=dE_df,
    )


@implements(
    "E4",
    "E13",
    "E14",
    proven_equal_to=(
        layer_dense.dense_backward,
        layer_dense.flatten_backward,
        layer_activations.sigmoid_backward,
    ),
)
def _conv_deltas(W, dE_dZ2, A1, buf):
    """E13 + unflatten, then E14: dE_dA1 and dE_dZ1 = dE_dA1 * (A1 * (1 - A1)), (N, K, P).

    dE_dA1[n, k, p] = W[k * P + p] * dE_dZ2[n]: the entries of the outer product W . dE_dZ2
    (one product each, as the matrix product gives them), written directly in A1's layout.
    Evaluated over blocks of images (BLOCK values each) so that 1 - A1 and its
    product stay in cache: same operations, same order, same values as the whole-array form.
    """
    N, K, P = A1.shape
    F = K * P
    A1 = A1.reshape(N, F)
    dz2, w = dE_dZ2.reshape(N, 1), W.reshape(1, F)
    dE_dA1, dE_dZ1 = buf.dE_dA1.reshape(N, F), buf.dE_dZ1.reshape(N, F)
    rows = max(1, BLOCK // F)  # images per block
    if min(rows, N) * F <= buf.scratch.size:
        scratch = buf.scratch.reshape(-1)[: min(rows, N) * F].reshape(-1, F)
    else:  # images wider than 2 BLOCKs
        scratch = np.empty((min(rows, N), F), dtype=A1.dtype)
    for start in range(0, N, rows):  # cache blocks of `rows` images, not one image at a time
        r = slice(start, start + rows)
        a = A1[r]
        t = scratch[: a.shape[0]]
        np.multiply(dz2[r], w, out=dE_dA1[r])
        np.subtract(1, a, out=t)
        np.multiply(a, t, out=t)
        np.multiply(dE_dA1[r], t, out=dE_dZ1[r])
    return dE_dA1.reshape(N, K, P), dE_dZ1.reshape(N, K, P)


def train_step(params, X, y, lr: float = 0.1, reduction: str = "sum") -> Tensors:
    """forward + backward + update: every named tensor of one step, incl. f_new, W_new, b_new."""
    # Validated once here, then the same kernels as forward() and backward() run on the
    # checked arrays (the images are laid out once for both convolutions).
    f, W, b = check_params(params, _required("X", X))
    y = float_array("y", y, (1, X.shape[2]), dtype=f.dtype)
    reduction = choice("reduction", reduction, loss.REDUCTIONS)
    lr = update._learning_rate(lr)
    buf = _Arena(f, X)
    images = _images(X, out=buf.images)
    cache = _forward(f, W, b, X, images, buf)
    g = _backward(W, f.shape[0], cache.O, cache.A1, y, reduction, images, None, buf)
    return Tensors(
        f=f,
        W=W,
        b=b,
        **cache,
        **g,
        f_new=update._sgd_update(f, g.dE_df, lr),
        W_new=update._sgd_update(W, g.dE_dW, lr),
        b_new=update._sgd_update(b, g.dE_db, lr),
    )
