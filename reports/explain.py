"""Name the likely mistake behind a mismatch: test classic derivation slips as exact fits.

`explain(actual, expected, tensor=..., against=..., context=...)` takes the framework's
array (`actual`, theirs) and the implementation's (`expected`, ours) and tries suspects,
each a transform that would turn ours into theirs if that mistake were made:

- a constant factor (named when it is N or 1/N: mean vs sum over the batch, 2 or 1/2: the
  1/2 of E7, -1: a sign, lr, 1/lr, lr^2, 255: pixel scaling), or an affine map (a dropped
  bias, a batch standardisation);
- a layout slip: swapped or both-reversed axis pairs (a transposed filter or window, a
  flipped kernel: true convolution instead of cross-correlation), transposed window
  positions (an untransposed image), filter-major vs position-major flatten order, a reshape
  where a transpose belongs, a window shifted by one, a whole-array transpose (W vs W^T);
- a missing reduction (a batch sum or mean not taken), a silent dtype change;
- for updates (context old, grad, lr): old + lr g, old - 2 lr g, old, old - g, old - lr^2 g.

A suspect fits when the relative residual ||theirs - T(ours)|| / ||theirs|| is below a few
thousand unit roundoffs of the coarser dtype, and is much smaller than the raw mismatch. The
best fit (smallest residual) is returned, or None. NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

FIT_ROUNDOFFS = 2.0**12  # a fit is exact to this many unit roundoffs (relative, in norm)
IMPROVEMENT = 1e-3  # and at least 1000x better than no transform at all
MIN_FREE_SIZE = 4  # below this, only named constants count (any ratio fits a scalar)
FILTER_TENSORS = ("f", "dE_df", "f_new")
UPDATE_SUSPECTS = ("update_sign", "update_twice", "update_missing", "lr_missing", "lr_squared")


@dataclass(frozen=True)
class Explanation:
    suspect: str  # short id: factor, affine, swap_axes, flipped_kernel, ...
    message: str  # "torch's dE_dW is 200 x ours (N = 200): mean vs sum over the batch?"
    residual: float  # relative residual of the fit (0 is exact)
    factor: float | None = None

    def __str__(self) -> str:
        return f"{self.message} [{self.suspect}; fit residual {self.residual:.1e}]"


def _norm(x) -> float:
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64).ravel()))


def _rel(theirs, predicted) -> float:
    scale = _norm(theirs)
    diff = _norm(np.asarray(theirs, np.float64) - np.asarray(predicted, np.float64))
    if scale == 0:
        return 0.0 if diff == 0 else math.inf
    return diff / scale


def fit_tolerance(*dtypes) -> float:
    floats = [np.dtype(d) for d in dtypes if np.dtype(d).kind == "f"]
    eps = max((float(np.finfo(d).eps) for d in floats), default=float(np.finfo(np.float64).eps))
    return FIT_ROUNDOFFS * eps


def explain(
    actual, expected, *, tensor: str = "", against: str = "", context: Mapping | None = None
) -> Explanation | None:
    """The best-fitting suspect for `actual` (theirs) vs `expected` (ours), or None.

    context (all optional): lr, n_images (N), n_filters (K), filter_size, bias (b), and for
    an updated parameter old (its value before the step) and grad (our gradient).
    """
    a, e = np.asarray(actual), np.asarray(expected)
    if a.dtype.kind not in "biuf" or e.dtype.kind not in "biuf" or a.size == 0 or e.size == 0:
        return None
    if not (np.isfinite(a).all() and np.isfinite(e).all()):
        return None
    ctx = dict(context or {})
    tol = fit_tolerance(a.dtype, e.dtype)
    who = f"{against or 'theirs'}'s {tensor}".strip() if tensor else (against or "theirs")
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    if a.shape == e.shape and a.dtype != e.dtype and _rel(a64, e64) <= tol:
        return Explanation(
            "dtype",
            f"{who} is {a.dtype}, ours {e.dtype} with the same values: "
            f"a silent upcast (a float64 accumulator, np.zeros without dtype) "
            f"leaked into the {a.dtype} run?",
            _rel(a64, e64),
        )
    raw = _rel(a64, e64) if a.shape == e.shape else math.inf
    best = None
    for fit in _fits(a64, e64, tensor, who, ctx, tol):
        # Update suspects are measured against the step size and screened in _update_fits.
        better = fit.suspect in UPDATE_SUSPECTS or fit.residual <= IMPROVEMENT * raw
        if fit.residual <= tol and better and (best is None or fit.residual < best.residual):
            best = fit
    return best


def _fits(a, e, tensor, who, ctx, tol) -> Iterator[Explanation]:
    if a.shape == e.shape:
        yield from _factor_fits(a, e, who, ctx, tol)
        if a.size >= MIN_FREE_SIZE:
            yield from _affine_fits(a, e, who, ctx)
            yield from _layout_fits(a, e, tensor, who, ctx)
        yield from _update_fits(a, e, who, ctx)
    else:
        yield from _shape_fits(a, e, who)


# --- constant factors ---------------------------------------------------------------------


def _named_factors(ctx) -> list[tuple[float, str, str]]:
    out = [
        (-1.0, "-1", "opposite sign: a flipped sign (y - O for -(y - O), + for - ...)?"),
        (2.0, "2", "a factor 2: the 1/2 of E = (y - O)^2 / 2 dropped on our side?"),
        (
            0.5,
            "1/2",
            "a factor 1/2: the 1/2 of E = (y - O)^2 / 2 dropped on their side, or ours doubled?",
        ),
        (1 / 255, "1/255", "ours is 255 x theirs: pixels not divided by 255 on our side (D13)?"),
        (255.0, "255", "pixels divided by 255 on our side only (D13)?"),
    ]
    N = ctx.get("n_images")
    if N and N > 1:
        out += [
            (float(N), f"N = {N}", "mean vs sum over the batch?"),
            (1.0 / N, f"1/N = 1/{N}", "sum vs mean over the batch?"),
        ]
    lr = ctx.get("lr")
    if lr and lr != 1:
        out += [
            (
                1.0 / lr,
                f"1/lr = {1 / lr:g}",
                "ours carries an extra lr: lr applied twice (in the gradient and in the update)?",
            ),
            (float(lr), f"lr = {lr:g}", "ours lacks a factor lr, or theirs has one too many?"),
            (float(lr) ** 2, f"lr^2 = {lr * lr:g}", "a factor lr^2?"),
        ]
    signed = [(-c, f"-{label}", f"{hint} And the sign is flipped.") for c, label, hint in out[1:]]
    return out + signed


def _factor_fits(a, e, who, ctx, tol):
    ee = float(np.vdot(e, e))
    if ee == 0:
        return
    c = float(np.vdot(a, e)) / ee
    residual = _rel(a, c * e)
    for value, label, hint in _named_factors(ctx):
        if abs(c / value - 1) <= max(residual, tol):
            yield Explanation(
                "factor",
                f"{who} is {c:.6g} x ours ({label}): {hint}",
                max(residual, abs(c / value - 1)),
                factor=value,
            )
            return
    if a.size >= MIN_FREE_SIZE and abs(c - 1) > 1e-6:
        yield Explanation(
            "factor",
            f"{who} is {c:.6g} x ours: a constant factor that matches no known constant",
            residual,
            factor=c,
        )


def _affine_fits(a, e, who, ctx):
    """theirs = c * ours + d with d != 0: a dropped bias, or a batch standardisation."""
    x, y = e.ravel(), a.ravel()
    mx, my = float(x.mean()), float(y.mean())
    var = float(np.vdot(x - mx, x - mx))
    if var == 0:
        return
    c = float(np.vdot(x - mx, y - my)) / var  # least squares y ~ c x + d
    d = my - c * mx
    residual = _rel(a, c * e + d)
    if abs(d) <= 1e-6 * (_norm(a) / math.sqrt(a.size) + 1e-300):
        return  # no offset: that is a factor, not affine
    if abs(mx) < 1e-6 and abs(math.sqrt(var / x.size) - 1) < 1e-6:
        msg = (
            f"{who} = {c:.6g} x ours + {d:.6g}, and ours has mean 0 and std 1: ours is "
            f"standardised over the batch, (Z - mean) / std (D1)?"
        )
    elif abs(c - 1) < 1e-6:
        b = ctx.get("bias")
        named = b is not None and abs(d - b) <= 1e-6 * max(1.0, abs(b))
        msg = f"{who} = ours + {d:.6g}" + (
            ": the bias b is missing on our side (D8)?" if named else ": a constant offset"
        )
    else:
        msg = f"{who} = {c:.6g} x ours + {d:.6g}: an affine map"
    yield Explanation("affine", msg, residual, factor=float(c))


# --- layouts ------------------------------------------------------------------------------


def _layout_fits(a, e, tensor, who, ctx):
    shape = e.shape
    filt = tensor in FILTER_TENSORS or (
        e.ndim == 3 and shape[0] == shape[1] == ctx.get("filter_size", -1)
    )
    for ax in range(e.ndim - 1):
        if shape[ax] != shape[ax + 1] or shape[ax] < 2:
            continue
        axes = (ax, ax + 1)
        what = (
            "the filter transposed (f vs f^T: the article's .T on one side only?)"
            if filt
            else "each window transposed"
            if tensor == "patches"
            else f"axes {axes} swapped: a transposed layout"
        )
        yield Explanation("swap_axes", f"ours is {who} with {what}", _rel(a, np.swapaxes(e, *axes)))
        yield Explanation(
            "flipped_kernel",
            f"ours is {who} rotated 180 degrees in axes {axes}: "
            "a flipped kernel (true convolution instead of the frameworks' "
            "cross-correlation)?",
            _rel(a, np.flip(e, axes)),
        )
        for sa, se, sense in (
            (slice(1, None), slice(None, -1), "start one later"),
            (slice(None, -1), slice(1, None), "start one earlier"),
        ):
            ia, ie = [slice(None)] * e.ndim, [slice(None)] * e.ndim
            ia[ax] = ia[ax + 1] = sa
            ie[ax] = ie[ax + 1] = se
            yield Explanation(
                "shift",
                f"ours is {who} shifted by one pixel in axes {axes}: "
                f"our windows {sense} (an off-by-one window index)?",
                _rel(a[tuple(ia)], e[tuple(ie)]),
            )
    for ax, n in enumerate(shape):
        m = math.isqrt(n)
        if m < 2 or m * m != n:
            continue
        grid = e.reshape(shape[:ax] + (m, m) + shape[ax + 1 :])
        moved = np.swapaxes(grid, ax, ax + 1)
        yield Explanation(
            "position_transpose",
            f"ours is {who} with the window positions "
            "transposed (i * m + j vs j * m + i): rows and columns of the output "
            "swapped?",
            _rel(a, moved.reshape(shape)),
        )
        if e.ndim == 4 and ax == 1 and shape[2] == shape[3]:  # patches (N, P, s, s)
            both = np.swapaxes(moved, 3, 4)  # windows transposed too
            yield Explanation(
                "image_transpose",
                f"ours is {who} of the transposed images "
                "(positions and windows both transposed): X vs X^T, the "
                "article's x_train.T on one side only?",
                _rel(a, both.reshape(shape)),
            )
    yield from _flatten_fits(a, e, who, ctx)
    if e.ndim >= 2 and shape[0] > 1 and e.size // shape[0] > 1:
        N, F = shape[0], e.size // shape[0]
        for pred in (e.reshape(N, F).T.reshape(shape), e.reshape(F, N).T.reshape(shape)):
            yield Explanation(
                "reshape_for_transpose",
                f"ours is {who} with (image, feature) "
                f"order mixed: data of shape ({N}, {F}) reshaped to ({F}, {N}) "
                "where a transpose belongs (a missing transpose)?",
                _rel(a, pred),
            )


def _flatten_fits(a, e, who, ctx):
    """Filter-major (K, P) vs position-major (P, K) order of the features."""
    shape, K = e.shape, ctx.get("n_filters")
    views = []
    if e.ndim == 3 and shape[1] > 1:  # conv map (N, K, P)
        views.append((shape[0], shape[1], shape[2]))
    if K and K > 1 and e.ndim <= 2 and shape[0] % K == 0 and shape[0] > K:  # (F, 1) / (F,)
        views.append((1, K, shape[0] // K))
    for N, K_, P in views:
        flat = e.reshape(N, K_ * P, -1)
        m = math.isqrt(P)
        grid = f"({m}, {m}, {K_})" if m * m == P else f"({P}, {K_})"
        for pred in (
            flat.reshape(N, P, K_, -1).transpose(0, 2, 1, 3),
            flat.reshape(N, K_, P, -1).transpose(0, 2, 1, 3),
        ):
            yield Explanation(
                "flatten_order",
                f"ours is {who} in the other flatten order: "
                f"features read position-major {grid} (channel-last) vs "
                f"filter-major ({K_}, {P}), a reshape that mixes filters and "
                "positions (D4)?",
                _rel(a, pred.reshape(shape)),
            )


# --- shapes -------------------------------------------------------------------------------


def _shape_fits(a, e, who):
    if e.ndim >= 2 and e.shape[::-1] == a.shape:
        yield Explanation(
            "transpose",
            f"ours is the transpose of {who}: shape {e.shape} for {a.shape} (W vs W^T?)",
            _rel(a, e.T),
        )
    if e.size == a.size:
        yield Explanation(
            "reshape",
            f"ours holds {who}'s values in shape {e.shape} instead of "
            f"{a.shape}: a missing reshape or keepdims",
            _rel(a, e.reshape(a.shape)),
        )
    for ax, n in enumerate(e.shape):
        rest = e.shape[:ax] + e.shape[ax + 1 :]
        if n < 2 or a.shape not in (rest, e.shape[:ax] + (1,) + e.shape[ax + 1 :]):
            continue
        for how, pred in (("sums", e.sum(axis=ax)), ("averages", e.mean(axis=ax))):
            yield Explanation(
                "unreduced",
                f"ours keeps axis {ax} (length {n}) that {who} "
                f"{how} over: the batch reduction is missing (e.g. dE/db not "
                f"summed over the images, E12)?",
                _rel(a, pred.reshape(a.shape)),
            )


# --- updates ------------------------------------------------------------------------------


def _update_fits(a, e, who, ctx):
    old, grad, lr = ctx.get("old"), ctx.get("grad"), ctx.get("lr")
    if old is None or grad is None or not lr:
        return
    old, grad = np.asarray(old, np.float64), np.asarray(grad, np.float64)
    if old.shape != e.shape or grad.shape != e.shape:
        return
    step = lr * grad
    scale = _norm(step)
    raw = _norm(e - a) / scale if scale else 0.0
    if scale == 0:
        return
    for suspect, cand, msg in (
        (
            "update_sign",
            old + step,
            "ours = old + lr * g: the update's sign (or lr's) is flipped, gradient ascent",
        ),
        ("update_twice", old - 2 * step, "ours = old - 2 lr * g: the update is applied twice"),
        ("update_missing", old, "ours = old: the update is not applied"),
        ("lr_missing", old - grad, "ours = old - g: lr is not applied"),
        (
            "lr_squared",
            old - lr * step,
            "ours = old - lr^2 * g: lr applied twice (once in the gradient)",
        ),
    ):
        residual = _norm(e - cand) / scale
        if residual <= IMPROVEMENT * raw:
            yield Explanation(suspect, f"{who} = old - lr * g, {msg}", residual)
