"""Normalisation, dropout and global average pooling (X13..X19), forward and backward.

Batch-first: images (N, C, H, W), feature vectors (N, D). Every normalisation is the same
three steps over some axes S of the input (m values per statistic):

    mu = mean over S of X,  var = mean over S of (X - mu)^2 (biased: divided by m),
    xhat = (X - mu) / sqrt(var + eps),  A = gamma xhat + beta,

and they differ only in S and in the shape of gamma and beta:

- batch norm (X13, X14): per feature over the batch (N, D) -> S = {n}; per channel after a
  convolution (N, C, H, W) -> S = {n, h, w} ("spatial" batch norm folds H and W into the
  batch); gamma, beta (D,) or (C,); training mode (the batch's own statistics);
- layer norm (X16): per image over every other axis; gamma, beta the per-image shape;
- group norm (X17): per image and group of C / G consecutive channels (and H, W); gamma,
  beta per channel (C,).

The backward of all three is X14's: with dxhat = dA gamma,

    dX = (1 / s) (dxhat - mean_S dxhat - xhat mean_S (dxhat xhat)),  s = sqrt(var + eps),
    dgamma = sum (dA xhat),  dbeta = sum dA  (over every axis gamma is broadcast along).

Batch norm's is also written as the chain of small steps through mu and var
(`batchnorm_backward_chain`); parity_tests/test_norm.py proves the two equal. EPS = 1e-5
(torch's default; Keras's is 1e-3: each framework is handed this one explicitly).

Dropout (X18) is inverted dropout with an explicit keep-mask (drawn by reference/network.py
from the run's seed, the same mask handed to every framework): A = X mask / (1 - p).
Global average pooling (X19): (N, C, H, W) -> (N, C), the mean of each channel's plane.
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np

from reference import rounding
from reference._validate import float_array
from reference.layers.conv2d import _shape4
from reference.layers.registry import CONVENTION, HOLDS, Bound, Case, Equation, LayerKind, Mistake, Site
from reference.trace import implements

EPS = 1e-5  # the reference's epsilon, inside the square root (torch's default)


def _check(X, gamma, groups=None):
    X = float_array("X", X)
    if X.ndim not in (2, 4):
        raise ValueError(f"X must be (N, D) features or (N, C, H, W) images, got shape {X.shape}")
    if gamma is not None:
        float_array("gamma", gamma, dtype=X.dtype)
    return X


def batch_axes(X: np.ndarray) -> tuple[int, ...]:
    """X13's S for batch norm: (0,) for (N, D) features, (0, 2, 3) for (N, C, H, W) maps."""
    return (0,) if X.ndim == 2 else (0, 2, 3)


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """gamma (C,) or (D,) shaped to broadcast along axis 1 of an ndim-array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _values_per_statistic(X, axes) -> int:
    return int(np.prod(np.take(X.shape, axes)))


def _check_batch(X) -> None:
    m = _values_per_statistic(X, batch_axes(X))
    if m < 2:
        what = "feature (N = 1)" if X.ndim == 2 else "channel (N x H x W = 1)"
        raise ValueError(
            f"batch norm needs more than one value per {what} to take a batch variance; "
            f"X has shape {X.shape}: use a batch of at least 2 images"
        )


def running_sum(V: np.ndarray, axes: tuple[int, ...], keepdims: bool = False) -> np.ndarray:
    """The sum over `axes` accumulated in order in V's dtype, one value after the other
    (row-major over the axes), as a framework's CPU kernel may accumulate a batch statistic.
    Over a batch of mostly blank images a statistic sums thousands of equal values, and a
    running sum of equal values rounds the same way each time: the error grows as m u, not
    as sqrt(m) u. Not the reference's own sum (NumPy's pairwise); the end-to-end rule's
    spread is measured with it (`running_sums`, parity_tests/model_harness.py)."""
    axes = tuple(np.sort(np.asarray(axes) % V.ndim).tolist())
    moved = np.moveaxis(V, axes, tuple(range(V.ndim - len(axes), V.ndim)))
    rows = moved.reshape(moved.shape[: V.ndim - len(axes)] + (-1,))
    total = np.cumsum(rows, axis=-1)[..., -1]
    return np.expand_dims(total, axes) if keepdims else total


def _pairwise_sum(V, axes, keepdims=False):
    return V.sum(axis=axes, keepdims=keepdims)


# The sums of the statistics: NumPy's pairwise sum, or, inside `running_sums()`, running_sum.
_SUM = contextvars.ContextVar("norm_sum", default=_pairwise_sum)


@contextlib.contextmanager
def running_sums():
    """Within it, every sum of this module's statistics and gradients is a running sum in the
    dtype (running_sum): the float32 run whose distance from the float64 reference the
    end-to-end rule takes as the rounding a whole-model float32 run may accumulate. A
    framework's float64 kernel summing in order errs by m u64 (torch's batch norm over
    200 MNIST images: 2.3e-12 relative in the channel means, 2e4 u); the reference's
    pairwise float32 sum errs by far less than m u32, and would not stand for it."""
    token = _SUM.set(running_sum)
    try:
        yield
    finally:
        _SUM.reset(token)


def _total(V, axes, keepdims=False):
    return _SUM.get()(V, tuple(axes), keepdims)


def _mean(V, axes):
    return _total(V, axes, keepdims=True) / V.dtype.type(_values_per_statistic(V, axes))


@implements("X13")
def moments(X: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """X13: mu = mean over `axes` of X; var = mean over `axes` of (X - mu)^2, the BIASED
    variance (divided by m, the number of values per statistic), as both frameworks
    normalise with in training. Both keep dims: shape X's with `axes` of size 1."""
    mu = _mean(X, axes)
    d = X - mu
    return mu, _mean(d * d, axes)


@implements("X13")
def normalise(X: np.ndarray, axes: tuple[int, ...], eps: float = EPS):
    """X13: xhat = (X - mu) / s, s = sqrt(var + eps) (eps inside the square root).
    -> (xhat X's shape, s with `axes` of size 1)."""
    mu, var = moments(X, axes)
    s = np.sqrt(var + X.dtype.type(eps))
    return (X - mu) / s, s


@implements("X14")
def normalise_backward(dxhat: np.ndarray, xhat: np.ndarray, s: np.ndarray, axes) -> np.ndarray:
    """X14, the simplified single expression: dX = (dxhat - mean dxhat - xhat mean(dxhat
    xhat)) / s, the means over `axes` (the terms through mu and through var folded in)."""
    mean = _mean(dxhat, axes)
    proj = _mean(dxhat * xhat, axes)
    return (dxhat - mean - xhat * proj) / s


# --- batch norm (X13, X14) ----------------------------------------------------------------


@implements("X13")
def batchnorm_forward(X: np.ndarray, gamma: np.ndarray, beta: np.ndarray, groups=None) -> np.ndarray:
    """X13 in training mode: A = gamma xhat + beta, xhat normalised with the batch's own
    statistics per feature ((N, D): over n) or per channel ((N, C, H, W): over n, h, w).
    X (N, D) or (N, C, H, W); gamma, beta (D,) or (C,) -> A: X's shape. `groups` unused
    (the norm family's calling form)."""
    X = _check(X, gamma)
    C = X.shape[1]
    gamma = float_array("gamma", gamma, (C,), dtype=X.dtype)
    beta = float_array("beta", beta, (C,), dtype=X.dtype)
    _check_batch(X)
    xhat, _ = normalise(X, batch_axes(X))
    return _per_channel(gamma, X.ndim) * xhat + _per_channel(beta, X.ndim)


@implements("X14")
def batchnorm_backward(X: np.ndarray, gamma: np.ndarray, dA: np.ndarray, groups=None) -> dict:
    """X14, simplified: {"dX", "dgamma", "dbeta"} of batchnorm_forward.

    dX = gamma / (m s) (m dA - sum dA - xhat sum (dA xhat)), sums over S (batch_axes),
    m the values per statistic; dgamma = sum over S of dA xhat; dbeta = sum over S of dA.
    X, dA: (N, D) or (N, C, H, W); gamma (D,) or (C,)."""
    X = _check(X, gamma)
    gamma = float_array("gamma", gamma, (X.shape[1],), dtype=X.dtype)
    dA = float_array("dA", dA, X.shape, dtype=X.dtype)
    _check_batch(X)
    axes = batch_axes(X)
    xhat, s = normalise(X, axes)
    dxhat = dA * _per_channel(gamma, X.ndim)
    return {
        "dX": normalise_backward(dxhat, xhat, s, axes),
        "dgamma": _total(dA * xhat, axes),
        "dbeta": _total(dA, axes),
    }


@implements("X14")
def batchnorm_backward_chain(X: np.ndarray, gamma: np.ndarray, dA: np.ndarray, groups=None) -> dict:
    """X14 as the chain of small steps of the forward graph, each local derivative on its
    own line (the CS231n staged derivation); equal to batchnorm_backward (test_norm.py).

    Forward: mu = sum X / m; d = X - mu; q = d^2; var = sum q / m; s = sqrt(var + eps);
    r = 1 / s; xhat = d r; A = gamma xhat + beta. Backward, node by node."""
    X = _check(X, gamma)
    gamma = float_array("gamma", gamma, (X.shape[1],), dtype=X.dtype)
    dA = float_array("dA", dA, X.shape, dtype=X.dtype)
    _check_batch(X)
    axes = batch_axes(X)
    m = _values_per_statistic(X, axes)
    mu = X.mean(axis=axes, keepdims=True)
    d = X - mu
    var = (d * d).mean(axis=axes, keepdims=True)
    s = np.sqrt(var + X.dtype.type(EPS))
    r = 1 / s
    xhat = d * r
    dxhat = dA * _per_channel(gamma, X.ndim)  # A = gamma xhat + beta
    dr = (dxhat * d).sum(axis=axes, keepdims=True)  # xhat = d r, through r
    dd = dxhat * r  # xhat = d r, through d
    ds = -dr / (s * s)  # r = 1 / s
    dvar = ds / (2 * s)  # s = sqrt(var + eps)
    dd = dd + 2 * d * (dvar / m)  # var = sum d^2 / m, each q = d^2
    dmu = -dd.sum(axis=axes, keepdims=True)  # d = X - mu, through mu
    dX = dd + dmu / m  # mu = sum X / m
    return {"dX": dX, "dgamma": (dA * xhat).sum(axis=axes), "dbeta": dA.sum(axis=axes)}


# --- the running statistics (X15): state, not part of the training-mode step -------------

# Each framework's convention for the running statistics (the momentum's meaning, the
# variance they store). new = keep * old + (1 - keep) * batch statistic.
RUNNING_CONVENTIONS = {
    # torch: momentum 0.1 is the weight of the NEW statistic; running_var takes the
    # UNBIASED batch variance var * m / (m - 1).
    "torch": dict(keep=0.9, unbiased=True, eps=1e-5),
    # Keras: momentum 0.99 is the weight of the OLD value; moving_variance takes the BIASED
    # batch variance (the one the layer normalised with).
    "keras": dict(keep=0.99, unbiased=False, eps=1e-3),
}


@implements("X15")
def running_update(
    running_mean: np.ndarray, running_var: np.ndarray, X: np.ndarray, keep: float, unbiased: bool
) -> tuple[np.ndarray, np.ndarray]:
    """X15: the running statistics after one training-mode batch: mean_new = keep mean +
    (1 - keep) mu, var_new = keep var + (1 - keep) v, v the batch variance, biased (var of
    X13) or unbiased (times m / (m - 1)) as `unbiased` says. `keep` is 1 - torch's momentum
    and Keras's momentum itself (RUNNING_CONVENTIONS). running_*: (C,); X as batchnorm's."""
    X = _check(X, None)
    _check_batch(X)
    axes = batch_axes(X)
    mu, var = moments(X, axes)
    if unbiased:
        m = _values_per_statistic(X, axes)
        var = var * (m / (m - 1))
    new = 1 - keep
    return keep * running_mean + new * mu.reshape(-1), keep * running_var + new * var.reshape(-1)


@implements("X15")
def batchnorm_eval(X, gamma, beta, running_mean, running_var, eps: float = EPS) -> np.ndarray:
    """X15, evaluation mode: A = gamma (X - running_mean) / sqrt(running_var + eps) + beta,
    the statistics given (no batch statistics, defined for any batch size)."""
    X = _check(X, gamma)
    shape = lambda v: _per_channel(np.asarray(v, X.dtype), X.ndim)  # noqa: E731
    s = np.sqrt(shape(running_var) + X.dtype.type(eps))
    return shape(gamma) * ((X - shape(running_mean)) / s) + shape(beta)


# --- layer norm (X16) and group norm (X17) ---------------------------------------------------


def _layer_axes(X) -> tuple[int, ...]:
    return tuple(range(1, X.ndim))


@implements("X16")
def layernorm_forward(X: np.ndarray, gamma: np.ndarray, beta: np.ndarray, groups=None) -> np.ndarray:
    """X16: per image, normalised over all its values (every axis but n); A = gamma xhat +
    beta elementwise. X (N, D) or (N, C, H, W); gamma, beta the per-image shape."""
    X = _check(X, gamma)
    gamma = float_array("gamma", gamma, X.shape[1:], dtype=X.dtype)
    beta = float_array("beta", beta, X.shape[1:], dtype=X.dtype)
    xhat, _ = normalise(X, _layer_axes(X))
    return gamma * xhat + beta


@implements("X16")
def layernorm_backward(X: np.ndarray, gamma: np.ndarray, dA: np.ndarray, groups=None) -> dict:
    """X16 with X14's expression over the image's own values; dgamma = sum over n of
    dA xhat, dbeta = sum over n of dA (per-image shape)."""
    X = _check(X, gamma)
    gamma = float_array("gamma", gamma, X.shape[1:], dtype=X.dtype)
    dA = float_array("dA", dA, X.shape, dtype=X.dtype)
    axes = _layer_axes(X)
    xhat, s = normalise(X, axes)
    return {
        "dX": normalise_backward(dA * gamma, xhat, s, axes),
        "dgamma": _total(dA * xhat, (0,)),
        "dbeta": _total(dA, (0,)),
    }


def _grouped(X, G):
    """(N, C, ...) -> (N, G, C / G * ...): group g holds channels g C/G .. (g + 1) C/G - 1."""
    N, C = X.shape[:2]
    if C % G:
        raise ValueError(f"groups must divide the {C} channels, got groups={G}")
    return X.reshape(N, G, -1)


@implements("X17")
def groupnorm_forward(X: np.ndarray, gamma: np.ndarray, beta: np.ndarray, groups: int) -> np.ndarray:
    """X17: per image and group of C / G consecutive channels, normalised over the group's
    channels (and H, W); A = gamma[c] xhat + beta[c]. X (N, C[, H, W]); gamma, beta (C,)."""
    X = _check(X, gamma)
    gamma = float_array("gamma", gamma, (X.shape[1],), dtype=X.dtype)
    beta = float_array("beta", beta, (X.shape[1],), dtype=X.dtype)
    xhat, _ = normalise(_grouped(X, groups), (2,))
    return _per_channel(gamma, X.ndim) * xhat.reshape(X.shape) + _per_channel(beta, X.ndim)


@implements("X17")
def groupnorm_backward(X: np.ndarray, gamma: np.ndarray, dA: np.ndarray, groups: int) -> dict:
    """X17 with X14's expression over each group; dgamma[c] = sum over n (h, w) of dA xhat,
    dbeta[c] = sum of dA."""
    X = _check(X, gamma)
    gamma = float_array("gamma", gamma, (X.shape[1],), dtype=X.dtype)
    dA = float_array("dA", dA, X.shape, dtype=X.dtype)
    xhat, s = normalise(_grouped(X, groups), (2,))
    dxhat = _grouped(dA * _per_channel(gamma, X.ndim), groups)
    axes = batch_axes(X)
    xhat_x = xhat.reshape(X.shape)
    return {
        "dX": normalise_backward(dxhat, xhat, s, (2,)).reshape(X.shape),
        "dgamma": _total(dA * xhat_x, axes),
        "dbeta": _total(dA, axes),
    }


# --- dropout (X18) and global average pooling (X19) ------------------------------------------


def dropout_mask(shape: tuple, p: float, rng: np.random.Generator) -> np.ndarray:
    """The keep-mask of inverted dropout: True with probability 1 - p, of `shape` (N, ...)."""
    return rng.random(shape) >= p


@implements("X18")
def dropout_forward(X: np.ndarray, mask: np.ndarray | None, p: float) -> np.ndarray:
    """X18, inverted dropout in training: A = X mask / (1 - p); mask: X's shape, True where
    a unit is kept. In evaluation mode there is no mask (None): A = X, nothing dropped and
    nothing scaled (the scaling in training keeps E[A] = X, so evaluation needs none).
    Any shape."""
    X = float_array("X", X)
    if mask is None:
        return X.copy()
    mask = np.asarray(mask)
    if mask.shape != X.shape:
        raise ValueError(f"mask must have X's shape {X.shape}, got {mask.shape}")
    return X * mask / X.dtype.type(1 - p)


@implements("X18")
def dropout_backward(dA: np.ndarray, mask: np.ndarray | None, p: float) -> np.ndarray:
    """X18: dX = dA mask / (1 - p), the same mask and scale as the forward; in evaluation
    mode (mask None) dX = dA."""
    dA = float_array("dA", dA)
    if mask is None:
        return dA.copy()
    return dA * np.asarray(mask) / dA.dtype.type(1 - p)


@implements("X19")
def global_avg_pool(X: np.ndarray) -> np.ndarray:
    """X19: A[n, c] = (1 / (H W)) sum over h, w of X[n, c, h, w]. (N, C, H, W) -> (N, C).
    The sum is the statistics' (_total: a running sum inside `running_sums()`, the spread's
    float32 run, as a framework's kernel may sum in order)."""
    X = float_array("X", X, (None, None, None, None))
    return _total(X, (2, 3)) / (X.shape[2] * X.shape[3])


@implements("X19")
def global_avg_pool_backward(dA: np.ndarray, x_shape: tuple) -> np.ndarray:
    """X19: dX[n, c, h, w] = dA[n, c] / (H W). dA (N, C) -> (N, C, H, W) = x_shape."""
    N, C, H, W = _shape4("x_shape", x_shape)
    dA = float_array("dA", dA, (N, C))
    return np.broadcast_to((dA / (H * W))[:, :, None, None], x_shape).copy()


# --- the registry entries (reference/layers/registry.py) ----------------------------------


def _view(name: str, X: np.ndarray, groups):
    """(the view the statistics are taken over, their axes S in it, the axes gamma is
    broadcast along in X) for the normalisation `name`."""
    if name == "batchnorm":
        return X, batch_axes(X), batch_axes(X)
    if name == "layernorm":
        return X, _layer_axes(X), (0,)
    return _grouped(X, groups), (2,), batch_axes(X)  # groupnorm


def _affine(name: str, v: np.ndarray, ndim: int) -> np.ndarray:
    """gamma or beta shaped to broadcast against X."""
    return v if name == "layernorm" else _per_channel(v, ndim)


def _norm_bound(site: Site, short: str) -> Bound:
    """X13, X14, X16, X17: the first-order error of one evaluation, on absolute values in
    float64, in two parts (k = rounding.norm_roundings):

    - charged at the worst case k u (`coherent`): the statistics' errors and the terms of a
      few roundings each (c roundings carry c / k). A framework's running sum of many
      equal values (the statistic of a mostly blank batch) rounds the same way each time:
      torch's float64 channel means over 200 MNIST images err by 0.13 m u, TensorFlow's
      float32 ones by 5.7e-4 relative, beyond the probabilistic estimate;
    - charged at the rule's gamma(k): the long sums of products of the backward (dgamma,
      dbeta, the means of dxhat and dxhat xhat), whose terms differ.

    The statistics, per group of m values: mu errs by e <= k u mean|X|, the same for every
    element of the group; var = mean (X - mu)^2 and mean (X - mu) = 0, so e moves var by
    e^2 only: err(var) <= k u (var (1 + 1/k) + k u mean X^2 + (2/k) mean(|d| D)), d = X - mu,
    D = |X| + |mu| (the subtraction's own rounding is relative to its operands: X - mu
    cancels); s = sqrt(var + eps) errs relatively by k u sig, sig = that / (2 k u s^2) +
    2/k. xhat = d / s then errs by a common part k u (mean|X| / s + |xhat| sig) (`Ec`) and
    its own k u (3/k)(D / s + |xhat|) (`Er`).

    A: |gamma| (Ec + Er) + (2/k) |beta|, all coherent. dbeta: sum |dA|. dgamma: sum
    |dA| D / s (autograd of x inv + (beta - mu inv), TensorFlow's form, sums dA x and
    mu dA apart) + coherent sum |dA| Er + the common part, which a per-channel statistic
    sums with dA's signs (batch norm: |dbeta| mean|X| / s + |dgamma| sig; the others
    sum |dA| Ec). dX, with G = |dA gamma|, P = mean G|xhat|, T = G + mean G + |xhat| P
    (X14's bracket on absolute values), p = mean(dxhat xhat) and g = mean dxhat (signed):
    (mean G + |xhat| mean(G D / s)) / s (mean(dxhat xhat) again as a difference) +
    coherent (Ec |p| + |xhat| (|g| mean|X| / s + |p| sig) + Er |p| + |xhat| mean(G Er) +
    T (sig + 4/k)) / s."""
    name, f = site.layer.kind, np.float64
    X = site.x.astype(f)
    groups = getattr(site.layer, "groups", None)
    V, S, sum_axes = _view(name, X, groups)
    m = _values_per_statistic(V, S)
    k = rounding.norm_roundings(m, _values_per_statistic(X, sum_axes))
    ku = k * float(np.finfo(site.x.dtype).eps) / 2

    def mean(a):
        return a.mean(axis=S, keepdims=True)

    mu, var = moments(V, S)
    s = np.sqrt(var + EPS)
    d = V - mu
    xhat = np.abs(d) / s
    D = np.abs(V) + np.abs(mu)
    e_mu = mean(np.abs(V))  # mu's error, in units of k u
    sig = (var * (1 + 1 / k) + ku * mean(V * V) + (2 / k) * mean(np.abs(d) * D)) / (2 * s * s) + 2 / k
    Ec = e_mu / s + xhat * sig
    Er = (3 / k) * (D / s + xhat)
    gamma = np.abs(_affine(name, site.params["gamma"].astype(f), X.ndim))
    if short == "A":
        beta = np.abs(_affine(name, site.params["beta"].astype(f), X.ndim))
        M = gamma * (Ec + Er).reshape(X.shape) + (2 / k) * beta
        return Bound(M, k, "|gamma|(Ec+Er)+(2/k)|beta|", deterministic=True)
    dA = site.upstream.astype(f)
    if short == "dbeta":
        return Bound(np.abs(dA).sum(axis=sum_axes), k, "sum |dA|")
    if short == "dgamma":
        # Autograd of x inv + (beta - mu inv) (TensorFlow's batch_normalization) sums
        # dA x and mu dA apart and subtracts: the long sums are relative to D / s.
        M = (np.abs(dA) * (D / s).reshape(X.shape)).sum(axis=sum_axes)
        # The common part is the same for every value of a statistic's group: within the
        # part of a group one gamma entry sums over, it adds up with dA's signs.
        xh = (d / s).reshape(X.shape)
        if name == "batchnorm":  # one statistic per channel, all of dgamma[c]'s sum
            shift = np.abs(dA.sum(axis=sum_axes)) * (e_mu / s).reshape(-1)
            common = shift + np.abs((dA * xh).sum(axis=sum_axes)) * sig.reshape(-1)
        elif name == "groupnorm" and X.ndim == 4:  # per (n, group): dgamma[c] sums h, w
            N, C = X.shape[:2]
            per = (
                np.repeat((e_mu / s).reshape(N, -1), C // groups, 1),
                np.repeat(sig.reshape(N, -1), C // groups, 1),
            )
            common = np.abs(dA.sum(axis=(2, 3))) * per[0] + np.abs((dA * xh).sum(axis=(2, 3))) * per[1]
            common = common.sum(axis=0)
        else:  # one value of each group per gamma entry (layer norm, group norm of features)
            common = (np.abs(dA) * Ec.reshape(X.shape)).sum(axis=sum_axes)
        coherent = common + (np.abs(dA) * Er.reshape(X.shape)).sum(axis=sum_axes)
        return Bound(M, k, "sum |dA|D/s + coherent [common shift + sum |dA| Er]", coherent=coherent)
    dxhat = (dA * _affine(name, site.params["gamma"].astype(f), X.ndim)).reshape(V.shape)
    G = np.abs(dxhat)
    P = mean(G * xhat)
    T = G + mean(G) + xhat * P
    p = np.abs(mean(dxhat * d / s))
    g = np.abs(mean(dxhat))
    M = (mean(G) + xhat * mean(G * D / s)) / s  # mean(dxhat xhat) as a difference of sums
    coherent = Ec * p + xhat * (g * e_mu / s + p * sig) + Er * p + xhat * mean(G * Er)
    coherent = (coherent + T * (sig + 4 / k)) / s
    return Bound(
        M.reshape(X.shape),
        k,
        "(mean G+|xhat|mean(G D/s))/s + coherent (Ec|p|+|xhat|(|g|mean|X|/s+|p|sig)+Er|p|+...)/s",
        coherent=coherent.reshape(X.shape),
    )


def _norm_init(layer, in_shape):
    """gamma and beta drawn U(-1, 1) (fan-in 1), not torch's start 1 and 0: at gamma = 1,
    beta = 0 a gamma or beta left out of a derivation would not show."""
    shape = in_shape if layer.kind == "layernorm" else in_shape[:1]
    return 1, {"gamma": shape, "beta": shape}


def _dropout_draws(layer, x_shape, rng):
    # Evaluation mode draws nothing: no mask, the layer is the identity.
    return {"mask": dropout_mask(x_shape, layer.p, rng) if layer.train else None}


def _dropout_bound(site: Site, short: str) -> Bound:
    """X18: one value scaled by 1 / (1 - p), or a dropped 0 (exact on both sides; the
    backward's M need not know the mask)."""
    if short == "A":
        return Bound(np.abs(site.ours["A"]), rounding.DROPOUT_ROUNDINGS, "|A|")
    if not site.layer.train:  # evaluation mode: a copy
        return Bound(np.abs(site.upstream), rounding.DROPOUT_ROUNDINGS, "|dA|")
    M = np.abs(site.upstream) / (1 - site.layer.p)
    return Bound(M, rounding.DROPOUT_ROUNDINGS, "|dA|/(1-p)")


def _gap_bound(site: Site, short: str) -> Bound:
    """X19: an H W-term mean forward; backward one scaling per position."""
    H, W = site.x.shape[2:]
    if short == "A":
        return Bound(
            global_avg_pool(np.abs(site.x)), rounding.roundings_global_avg_pool(H * W), "mean |X|"
        )
    M = global_avg_pool_backward(np.abs(site.upstream), site.x.shape)
    return Bound(M, rounding.GLOBAL_AVG_POOL_BACKWARD_ROUNDINGS, "|dA|/(HW)")


# --- the mistakes (registry entries' catalogues; parity_tests/model_mutants.py runs them) ---


def _chain(X, gamma, dA):
    """The pieces of batchnorm_backward_chain: (axes, m, d, r, s, xhat, dxhat)."""
    axes = batch_axes(X)
    m = _values_per_statistic(X, axes)
    d = X - _mean(X, axes)
    s = np.sqrt(_mean(d * d, axes) + X.dtype.type(EPS))
    r = 1 / s
    return axes, m, d, r, s, d * r, dA * _per_channel(gamma, X.ndim)


def _with_params_grads(X, dA, xhat, axes, dX):
    return {"dX": dX, "dgamma": _total(dA * xhat, axes), "dbeta": _total(dA, axes)}


def batchnorm_backward_without_mean_terms(X, gamma, dA, groups=None):
    """X14 with the path through mu left out: dX = dxhat / s + the variance's term only."""
    axes, m, d, r, s, xhat, dxhat = _chain(X, gamma, dA)
    dvar = -_total(dxhat * d, axes, keepdims=True) / (s * s) / (2 * s)
    return _with_params_grads(X, dA, xhat, axes, dxhat * r + 2 * d * (dvar / m))


def batchnorm_backward_without_variance_terms(X, gamma, dA, groups=None):
    """X14 with the path through var left out: dX = dxhat / s - mean(dxhat) / s, as if s
    were a constant."""
    axes, m, d, r, s, xhat, dxhat = _chain(X, gamma, dA)
    dd = dxhat * r
    return _with_params_grads(X, dA, xhat, axes, dd - _total(dd, axes, keepdims=True) / m)


def _affine_out(X, xhat, gamma, beta):
    return _per_channel(gamma, X.ndim) * xhat + _per_channel(beta, X.ndim)


def batchnorm_forward_unbiased(X, gamma, beta, groups=None):
    """X13 normalised with the UNBIASED batch variance (m / (m - 1)): torch's running-variance
    convention used where the batch is normalised (the two swapped)."""
    axes = batch_axes(X)
    m = _values_per_statistic(X, axes)
    mu, var = moments(X, axes)
    return _affine_out(X, (X - mu) / np.sqrt(var * (m / (m - 1)) + X.dtype.type(EPS)), gamma, beta)


def batchnorm_forward_eps_outside_sqrt(X, gamma, beta, groups=None):
    """X13 with eps added outside the square root: (X - mu) / (sqrt(var) + eps)."""
    mu, var = moments(X, batch_axes(X))
    return _affine_out(X, (X - mu) / (np.sqrt(var) + X.dtype.type(EPS)), gamma, beta)


def batchnorm_forward_per_position(X, gamma, beta, groups=None):
    """Spatial batch norm without folding H and W into the batch: a statistic per channel
    AND position, over the images only."""
    xhat, _ = normalise(X, (0,))
    return _affine_out(X, xhat, gamma, beta)


def layernorm_forward_over_batch(X, gamma, beta, groups=None):
    """Layer norm over the batch axis (each feature over the images, batch norm's axis)
    instead of over each image's own values."""
    xhat, _ = normalise(X, (0,))
    return gamma * xhat + beta


def groupnorm_forward_interleaved(X, gamma, beta, groups):
    """Group norm with channel c put in group c mod G (groups interleaved) instead of the
    C / G consecutive channels c // (C / G)."""
    N, C = X.shape[:2]
    strided = X.reshape((N, C // groups, groups) + X.shape[2:])  # [n, j, g]: channel j G + g
    axes = (1, *range(3, strided.ndim))
    xhat, _ = normalise(strided, axes)
    return _affine_out(X, xhat.reshape(X.shape), gamma, beta)


def dropout_forward_unscaled(X, mask, p):
    """Dropout without the 1 / (1 - p): the kept values are not scaled up (in evaluation
    mode, mask None, it is right: the identity)."""
    return X.copy() if mask is None else X * np.asarray(mask)


def dropout_backward_unscaled(dA, mask, p):
    return dA.copy() if mask is None else dA * np.asarray(mask)


def dropout_forward_scaled_at_eval(X, mask, p):
    """Dropout in evaluation mode still scaling by 1 / (1 - p) (as if every unit were kept
    in training): evaluation outputs 1 / (1 - p) too large."""
    return X / X.dtype.type(1 - p) if mask is None else dropout_forward(X, mask, p)


def dropout_backward_scaled_at_eval(dA, mask, p):
    return dA / dA.dtype.type(1 - p) if mask is None else dropout_backward(dA, mask, p)


BN_CASE = Case("conv(4,3)-batchnorm-relu-dense(10)-softmax_ce")
BN_DENSE_CASE = Case("dense(16)-batchnorm-relu-dense(10)-softmax_ce")
BATCHNORM_MISTAKES = (
    Mistake(
        id="bn_grad_without_mean_terms",
        equation="X14",
        first="batchnorm2.dX",
        case=BN_CASE,
        title="batch-norm input gradient without the terms through the batch mean",
        explains="bn_grad_without_mean_terms",
        backward=batchnorm_backward_without_mean_terms,
    ),
    Mistake(
        id="bn_grad_without_variance_terms",
        equation="X14",
        first="batchnorm2.dX",
        case=BN_CASE,
        title="batch-norm input gradient without the terms through the batch variance",
        explains="bn_grad_without_variance_terms",
        backward=batchnorm_backward_without_variance_terms,
    ),
    Mistake(
        id="bn_unbiased_variance",
        equation="X13",
        first="batchnorm2.A",
        case=BN_DENSE_CASE,
        title="batch normalised with the unbiased variance (m / (m - 1), torch's running-"
        "variance convention) instead of the biased one",
        explains="bn_unbiased_variance",
        forward=batchnorm_forward_unbiased,
        caught_on="few values per statistic (per feature after a dense layer: m = N = 32)",
    ),
    Mistake(
        id="bn_eps_outside_sqrt",
        equation="X13",
        first="batchnorm2.A",
        case=Case("dense(16)-batchnorm-relu-dense(10)-softmax_ce", pixel_scale=0.001),
        title="batch-norm eps added outside the square root: sqrt(var) + eps",
        explains="bn_eps_outside_sqrt",
        forward=batchnorm_forward_eps_outside_sqrt,
        caught_on="a batch variance not far above eps (images scaled down here)",
    ),
    Mistake(
        id="spatial_bn_per_position",
        equation="X13",
        first="batchnorm2.A",
        case=BN_CASE,
        title="spatial batch norm without folding H and W into the batch: a statistic per "
        "channel and position",
        explains="spatial_bn_per_position",
        forward=batchnorm_forward_per_position,
    ),
)
LAYERNORM_MISTAKES = (
    Mistake(
        id="layernorm_over_batch",
        equation="X16",
        first="layernorm2.A",
        case=Case("dense(16)-layernorm-relu-dense(10)-softmax_ce"),
        title="layer norm over the batch axis (each feature over the images) instead of over "
        "each image's values",
        explains="layernorm_over_batch",
        forward=layernorm_forward_over_batch,
    ),
)
GROUPNORM_MISTAKES = (
    Mistake(
        id="groupnorm_channels_interleaved",
        equation="X17",
        first="groupnorm2.A",
        case=Case("conv(8,3)-groupnorm(2)-relu-dense(10)-softmax_ce"),
        title="group norm with channel c in group c mod G instead of the consecutive "
        "channels c // (C / G)",
        explains="groupnorm_channels_interleaved",
        forward=groupnorm_forward_interleaved,
        caught_on="G > 1 groups of more than one channel",
    ),
)
DROPOUT_MISTAKES = (
    Mistake(
        id="dropout_unscaled",
        equation="X18",
        first="dropout1.A",
        case=Case("dense(16)-relu-dropout(0.5)-dense(10)-softmax_ce"),
        title="dropout without the 1 / (1 - p) scaling of the kept values, forward and backward",
        explains="dropout_unscaled",
        forward=dropout_forward_unscaled,
        backward=dropout_backward_unscaled,
        caught_on="training mode",
        blind=Case("dense(16)-relu-dropout(0.5,train=false)-dense(10)-softmax_ce"),
    ),
    Mistake(
        id="dropout_scaled_at_eval",
        equation="X18",
        first="dropout1.A",
        case=Case("dense(16)-relu-dropout(0.5,train=false)-dense(10)-softmax_ce"),
        title="dropout in evaluation mode still scaled by 1 / (1 - p), forward and backward",
        explains="dropout_scaled_at_eval",
        forward=dropout_forward_scaled_at_eval,
        backward=dropout_backward_scaled_at_eval,
        caught_on="evaluation mode (train=false)",
        blind=Case("dense(16)-relu-dropout(0.5)-dense(10)-softmax_ce"),
    ),
)


# Which per-channel constants each normalisation removes: batch norm every one (its mean runs
# over each channel); a layer norm's mean runs over the whole image, so only with one channel
# (the grammar refuses one over a single feature); a group norm's over each group, so only
# with one channel a group.
_SHIFT_INVARIANT = {
    "batchnorm": True,
    "layernorm": lambda layer, shape: shape[0] == 1,
    "groupnorm": lambda layer, shape: shape[0] // layer.groups == 1,
}


def _norm(name, forward, backward, equations, mistakes=(), user=()) -> LayerKind:
    return LayerKind(
        shift_invariant=_SHIFT_INVARIANT[name],
        name=name,
        family="norm",
        outputs=("A",),
        input_grad="dX",
        equations=dict(zip(("A", "dX", "dgamma", "dbeta"), equations)),
        forward=forward,
        backward=backward,
        bound=_norm_bound,
        params=("gamma", "beta"),
        init=_norm_init,
        mistakes=mistakes,
        user=user,
    )


# The CS231n functions --parity-layer takes (parity_tests/own_layers.py): batchnorm's are the
# (N, D) ones (the spatial pair is its kind `spatial_batchnorm` there), with the optional
# single-expression backward; groupnorm's the spatial ones, gamma and beta (1, C, 1, 1).
BATCHNORM = _norm(
    "batchnorm",
    batchnorm_forward,
    batchnorm_backward,
    ("X13", "X14", "X14", "X14"),
    BATCHNORM_MISTAKES,
    user=(
        "batchnorm_forward(x, gamma, beta, bn_param) -> (out, cache)",
        "batchnorm_backward(dout, cache) -> (dx, dgamma, dbeta)",
        "batchnorm_backward_alt(dout, cache) -> (dx, dgamma, dbeta)",
    ),
)
LAYERNORM = _norm(
    "layernorm",
    layernorm_forward,
    layernorm_backward,
    ("X16", "X16", "X16", "X16"),
    LAYERNORM_MISTAKES,
    user=(
        "layernorm_forward(x, gamma, beta, ln_param) -> (out, cache)",
        "layernorm_backward(dout, cache) -> (dx, dgamma, dbeta)",
    ),
)
GROUPNORM = _norm(
    "groupnorm",
    groupnorm_forward,
    groupnorm_backward,
    ("X17", "X17", "X17", "X17"),
    GROUPNORM_MISTAKES,
    user=(
        "spatial_groupnorm_forward(x, gamma, beta, G, gn_param) -> (out, cache)",
        "spatial_groupnorm_backward(dout, cache) -> (dx, dgamma, dbeta)",
    ),
)
DROPOUT = LayerKind(
    passes_on=True,
    name="dropout",
    family="dropout",
    outputs=("A",),
    input_grad="dX",
    equations={"A": "X18", "dX": "X18"},
    forward=dropout_forward,
    backward=dropout_backward,
    bound=_dropout_bound,
    draws=_dropout_draws,
    mistakes=DROPOUT_MISTAKES,
    # CS231n's p is the probability of KEEPING a value (the spec's is of dropping it).
    user=(
        "dropout_forward(x, dropout_param) -> (out, cache)",
        "dropout_backward(dout, cache) -> dx",
    ),
)


def global_avg_pool_backward_undivided(dA, x_shape):
    """X19's backward without the 1 / (H W): every position gets the whole delta."""
    return np.broadcast_to(dA[:, :, None, None], x_shape).copy()


GAP = LayerKind(
    passes_on=True,
    mistakes=(
        Mistake(
            id="gap_grad_not_divided",
            equation="X19",
            first="gap.dX",
            case=Case("conv(4,3)-relu-gap-dense(10)-softmax_ce"),
            title="global-average-pool gradient not divided by H W: every position gets the whole delta",
            explains="gap_grad_not_divided",
            backward=global_avg_pool_backward_undivided,
        ),
    ),
    name="gap",
    family="flatten",
    outputs=("A",),
    input_grad="dX",
    equations={"A": "X19", "dX": "X19"},
    forward=global_avg_pool,
    backward=global_avg_pool_backward,
    bound=_gap_bound,
)

# Its layer kinds' registry entries, collected in reference.layers.KINDS.
ENTRIES = (
    BATCHNORM,
    LAYERNORM,
    GROUPNORM,
    DROPOUT,
    GAP,
)

# Its equations' audit records (reference/equations.py, docs/extensions.md).
EQUATIONS = (
    Equation(
        "X13",
        "batch norm, training mode: per feature of (N, D) over n, per channel of (N, C, H, W) "
        "over n, h, w: mu = the mean, var = the mean of (X - mu)^2, xhat = (X - mu) / "
        "sqrt(var + eps), A = gamma xhat + beta",
        CONVENTION,
        convention="eps = 1e-5 inside the square root, handed to both frameworks explicitly "
        "(torch's default; Keras's is 1e-3); the biased variance (divided by m), as both "
        "normalise with",
        note="spatial batch norm folds H and W into the batch; batch norm over one value per "
        "statistic (N = 1 after a dense layer) is refused as a usage error",
    ),
    Equation(
        "X14",
        "normalisation backward: dbeta = sum dA, dgamma = sum dA xhat, dX = (dxhat - mean "
        "dxhat - xhat mean(dxhat xhat)) / sqrt(var + eps), dxhat = dA gamma, the sums and "
        "means over the statistic's values",
        HOLDS,
        note="written twice, as the chain of small steps through mu and var and as the "
        "simplified expression, proven equal (parity_tests/test_norm.py); the gradient into "
        "a batch norm sums to 0 per channel, so a bias right before it has dE/db = 0",
    ),
    Equation(
        "X15",
        "running statistics after a training step: new = keep old + (1 - keep) batch "
        "statistic, for the mean and the variance",
        CONVENTION,
        convention="torch: momentum 0.1 is 1 - keep and the running variance takes the "
        "unbiased batch variance (m / (m - 1)); Keras: momentum 0.99 is keep itself and it "
        "takes the biased one; each checked in its own convention",
        note="after one step of an 8 x 3 x 5 x 5 batch at the same keep, the two conventions' "
        "running variances differ by 9.9e-4 relative (1 / (m - 1) of the update)",
    ),
    Equation(
        "X16",
        "layer norm: each image normalised over all its own values (every axis but n), "
        "A = gamma xhat + beta with gamma, beta of the per-image shape; backward X14's",
        HOLDS,
    ),
    Equation(
        "X17",
        "group norm (G groups): each image normalised per group of C / G consecutive "
        "channels and their positions, A = gamma[c] xhat + beta[c]; backward X14's",
        HOLDS,
        note="group g holds channels g C/G .. (g + 1) C/G - 1 (torch's and Keras's order)",
    ),
    Equation(
        "X18",
        "inverted dropout in training: A = X mask / (1 - p), dX = dA mask / (1 - p), the "
        "keep-mask drawn from the run's seed and handed to every framework",
        HOLDS,
    ),
    Equation(
        "X19",
        "global average pooling: A[n, c] = the mean of channel c's H x W values; "
        "dX[n, c, h, w] = dA[n, c] / (H W)",
        HOLDS,
    ),
)
