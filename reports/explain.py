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
- for updates (context old, grad, lr): old + lr g, old - 2 lr g, old, old - g, old - lr^2 g,
  every filter's step applied to one filter (D6).

Mistakes that only the run's other tensors reveal (context `tensors`: the implementation's
own named tensors of the step, by article name) are recomputed the mistaken way from those
tensors and matched against ours: a sigmoid derivative replaced by a constant (D2, dE/dZ2 =
dE/dO) or taken from the pre-activation, a conv delta averaged over the batch before the
filter gradient (D3), backprop through the updated W (D5), running partial sums stored as
the filter gradient (D7), a missing bias (D8), a true convolution in Z1, a position-major
flatten in Z2 or dE/dW. Such a suspect is `specific`: it needs a real departure (theirs vs
ours beyond the fit tolerance), and wins over a generic fit (a factor, an affine map).

A suspect fits when the relative residual ||theirs - T(ours)|| / ||theirs|| (or, for the
recomputed mistakes, ||ours - mistake(tensors)|| / ||ours||) is below a few thousand unit
roundoffs of the coarser dtype, and is much smaller than the raw mismatch. The best fit
(specific first, then the smallest residual) is returned, or None. NumPy only.
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
UPDATE_SUSPECTS = (
    "update_sign",
    "update_twice",
    "update_missing",
    "lr_missing",
    "lr_squared",
    "update_one_slice",
)


@dataclass(frozen=True)
class Explanation:
    suspect: str  # short id: factor, affine, swap_axes, flipped_kernel, ...
    message: str  # "torch's dE_dW is 200 x ours (N = 200): mean vs sum over the batch?"
    residual: float  # relative residual of the fit (0 is exact)
    factor: float | None = None
    specific: bool = False  # names one mistake from the run's tensors: preferred when it fits

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

    context (all optional): lr, n_images (N), n_filters (K), filter_size, bias (b), for
    an updated parameter old (its value before the step) and grad (our gradient), and
    tensors: the run's named tensors (A1, W, b, patches, dE_dZ2, W_new, ...), which the
    specific suspects recompute the mistaken way.
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
    if raw == 0:
        return None  # the same values: nothing to explain (any symmetry would fit exactly)
    best = None
    for fit in _fits(a64, e64, tensor, who, ctx, tol):
        # Update suspects are measured against the step size and screened in _update_fits.
        better = fit.suspect in UPDATE_SUSPECTS or fit.residual <= IMPROVEMENT * raw
        if fit.residual <= tol and better and (best is None or _rank(fit) < _rank(best)):
            best = fit
    return best


def _rank(fit: Explanation) -> tuple:
    """A specific suspect (one named mistake, recomputed from the run's tensors) before a
    generic fit that describes the same numbers (D8's missing bias is also an affine map)."""
    return (not fit.specific, fit.residual)


def _fits(a, e, tensor, who, ctx, tol) -> Iterator[Explanation]:
    if a.shape == e.shape:
        yield from _factor_fits(a, e, who, ctx, tol)
        if a.size >= MIN_FREE_SIZE:
            yield from _affine_fits(a, e, who, ctx)
            yield from _layout_fits(a, e, tensor, who, ctx)
        yield from _update_fits(a, e, who, ctx)
        yield from _context_fits(a, e, tensor, who, ctx, tol)
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
    yield from _one_slice_update(e, who, old, step, raw, scale)


def _one_slice_update(e, who, old, step, raw, scale):
    """Every filter's step subtracted from one filter (D6: `new[:, :, 0] -= lr * g[:, :, k]`
    in the loop over k): ours = old, except slice j = old_j - lr * (sum of all slices of g).

    Evidence: old and the step lr * g with at least two slices on the last axis (the filter
    axis); fits to rounding of the step, like the other update suspects.
    """
    if e.ndim < 2 or e.shape[-1] < 2:
        return
    total = step.sum(axis=-1)
    for j in range(e.shape[-1]):
        cand = old.copy()
        cand[..., j] -= total
        residual = _norm(e - cand) / scale
        if residual <= IMPROVEMENT * raw:
            yield Explanation(
                "update_one_slice",
                f"{who} = old - lr * g, ours moves only slice {j} of the last axis, by the sum "
                f"of every slice's step: all gradients applied to one filter (a fixed index in "
                f"the update loop, D6)?",
                residual,
                specific=True,
            )


# --- mistakes recomputed from the run's tensors --------------------------------------------
#
# ctx["tensors"] holds the implementation's own tensors of the step by article name (conv map
# (N, K, P), patches (N, P, s, s), f (s, s, K), W (K * P, 1), b (1,), row tensors (1, N)).
# Each suspect recomputes ours the mistaken way from them; `_specific` decides whether ours
# is that recomputation (to rounding) while theirs is not.

# tensor: (pre-activation, upstream gradient (None: 1), the activation's name)
LOCAL_DERIVATIVES = {
    "dO_dZ2": ("Z2", None, "O"),
    "dE_dZ2": ("Z2", "dE_dO", "O"),
    "dE_dZ1": ("Z1", "dE_dA1", "A1"),
}


def _tensors(ctx, *names):
    """The run's tensors `names` as float64 arrays, or None if one is missing."""
    found = ctx.get("tensors") or {}
    if any(found.get(n) is None for n in names):
        return None
    out = [np.asarray(found[n], dtype=np.float64) for n in names]
    return out if all(np.isfinite(x).all() for x in out) else None


def _specific(suspect, message, a, e, predicted, tol, magnitude=None):
    """An Explanation when ours (e) is `predicted` (ours recomputed the mistaken way) to
    rounding and theirs (a) departs from ours by more than rounding; else None.

    The residual is ||ours - predicted|| relative to ||ours|| or, for a long sum with
    cancellation, to `magnitude` (the same sum on absolute values), whichever is larger.
    "explain" still requires it to be within `tol` and far below the raw mismatch.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    if predicted.shape != e.shape or not np.isfinite(predicted).all() or _rel(a, e) <= tol:
        return None
    scale = max(_norm(e), _norm(magnitude) if magnitude is not None else 0.0)
    if scale == 0:
        return None
    return Explanation(suspect, message, _norm(e - predicted) / scale, specific=True)


def _context_fits(a, e, tensor, who, ctx, tol):
    for suspect in (
        _missing_bias,
        _local_derivative,
        _true_convolution,
        _position_major_flatten,
        _updated_weights_backprop,
        _batch_mean_delta,
        _running_partial_sums,
    ):
        for fit in suspect(a, e, tensor, who, ctx, tol):
            if fit is not None:
                yield fit


def _missing_bias(a, e, tensor, who, ctx, tol):
    """Z2 = W^T A1 without the + b of E5 (D8): ours = theirs - b, to rounding.

    Evidence: the bias b (context `bias`, else the run's one-element b), non-zero; Z2 only.
    """
    if tensor != "Z2":
        return
    b = ctx.get("bias")
    if b is None:
        found = _tensors(ctx, "b")
        b = float(found[0].ravel()[0]) if found and found[0].size == 1 else None
    if not b:
        return
    yield _specific(
        "missing_bias",
        f"{who} = ours + {b:.6g} = ours + b: the bias b is missing from our Z2 = W^T A1 + b (D8)?",
        a,
        e,
        a - b,
        tol,
    )


def _local_derivative(a, e, tensor, who, ctx, tol):
    """A sigmoid layer's backward step dE/dZ = upstream * s (1 - s) (E9, E11, E14) with the
    wrong local derivative: replaced by a constant (ours = c * upstream: `A1 + (1 - A1)` is
    1, D2; dE/dZ2 = dE/dO), or taken from the pre-activation (ours = upstream * Z (1 - Z)).

    Evidence: the pre-activation Z (Z1 or Z2) and the upstream gradient (dE/dA1, dE/dO; 1
    for dO/dZ2 itself) among the run's tensors.
    """
    if tensor not in LOCAL_DERIVATIVES:
        return
    z_name, up_name, s_name = LOCAL_DERIVATIVES[tensor]
    found = _tensors(ctx, z_name) if up_name is None else _tensors(ctx, z_name, up_name)
    if found is None:
        return
    z = found[0]
    up = np.ones_like(z) if up_name is None else found[1]
    if z.shape != e.shape or up.shape != e.shape:
        return
    uu = float(np.vdot(up, up))
    if uu > 0:
        c = float(np.vdot(e, up)) / uu
        const = "1" if abs(c - 1) <= tol else f"{c:.6g}"
        ours = const if up_name is None else f"{up_name} x {const}"
        yield _specific(
            "derivative_dropped",
            f"ours is {ours}: the local derivative {s_name} (1 - {s_name}) in {tensor} "
            f"replaced by a constant (`{s_name} + (1 - {s_name})` is 1, D2) or dropped?",
            a,
            e,
            c * up,
            tol,
        )
    yield _specific(
        "sigmoid_grad_of_preactivation",
        f"ours is {up_name + ' x ' if up_name else ''}{z_name} (1 - {z_name}): the sigmoid "
        f"derivative taken from the pre-activation {z_name}, not from the output "
        f"{s_name} = sigmoid({z_name})?",
        a,
        e,
        up * z * (1 - z),
        tol,
    )


def _conv(patches, f):
    """Z1[n, k, p] = sum over u, v of patches[n, p, u, v] f[u, v, k] (E1)."""
    N, P, s, _ = patches.shape
    z = patches.reshape(N * P, s * s) @ f.reshape(s * s, -1)
    return z.reshape(N, P, -1).transpose(0, 2, 1)


def _true_convolution(a, e, tensor, who, ctx, tol):
    """Z1 computed with the filter rotated 180 degrees (a true convolution, not the
    frameworks' cross-correlation), or transposed (f vs f^T).

    Evidence: the run's patches and f, f not symmetric under that rotation / transpose.
    """
    if tensor != "Z1":
        return
    found = _tensors(ctx, "patches", "f")
    if found is None:
        return
    patches, f = found
    if patches.ndim != 4 or f.ndim != 3 or patches.shape[2:] != f.shape[:2]:
        return
    for suspect, g, what in (
        (
            "flipped_kernel",
            f[::-1, ::-1],
            "rotated 180 degrees: a true convolution instead of the frameworks' cross-correlation",
        ),
        ("swap_axes", f.transpose(1, 0, 2), "transposed (f vs f^T: the article's .T on one side only?)"),
    ):
        if _rel(f, g) > tol:
            yield _specific(
                suspect,
                f"ours is {tensor} computed with the filter {what}",
                a,
                e,
                _conv(patches, g),
                tol,
            )


def _position_major(A1):
    """(N, K, P) -> (P * K, N), feature p * K + k (channel-last) instead of k * P + p."""
    N, K, P = A1.shape
    return A1.transpose(0, 2, 1).reshape(N, P * K).T


def _position_major_flatten(a, e, tensor, who, ctx, tol):
    """Z2 (or dE/dW) from A1 flattened position-major (p * K + k, channel-last) where W's
    rows are filter-major (k * P + p): ours = W^T flat'(A1) + b, or flat'(A1) dE/dZ2^T.

    Evidence: the run's A1 (N, K, P) with K, P >= 2, and W and b (Z2) or dE/dZ2 (dE/dW).
    """
    needs = {"Z2": ("A1", "W", "b"), "dE_dW": ("A1", "dE_dZ2")}.get(tensor)
    found = _tensors(ctx, *needs) if needs else None
    if found is None or found[0].ndim != 3 or min(found[0].shape[1:]) < 2:
        return
    flat = _position_major(found[0])
    if tensor == "Z2":
        W, b = found[1], found[2]
        if W.shape[0] != flat.shape[0]:
            return
        predicted = W.T @ flat + b.reshape(-1, 1)
    else:
        dZ2 = found[1]
        if dZ2.ndim != 2 or dZ2.shape[1] != flat.shape[1]:
            return
        predicted = flat @ dZ2.T
    N, K, P = found[0].shape
    yield _specific(
        "flatten_order",
        f"ours is {tensor} computed from A1 flattened position-major (feature p * {K} + k, "
        f"channel-last) while W's rows are filter-major (k * {P} + p): E4's order (D4)?",
        a,
        e,
        predicted,
        tol,
    )


def _updated_weights_backprop(a, e, tensor, who, ctx, tol):
    """dE/dA1 = W dE/dZ2 taken with the already updated W (W_new: the update ran before
    the backward pass reached the conv layer, D5).

    Evidence: the run's W_new (different from W), dE/dZ2 and A1 (for the K filters).
    """
    if tensor != "dE_dA1":
        return
    found = _tensors(ctx, "W", "W_new", "dE_dZ2", "A1")
    if found is None:
        return
    W, W_new, dZ2, A1 = found
    if W_new.shape != W.shape or A1.shape != e.shape or _rel(W, W_new) <= tol:
        return
    if W_new.ndim != 2 or dZ2.ndim != 2 or W_new.shape[1] != dZ2.shape[0]:
        return
    N, K, P = A1.shape
    flat = W_new @ dZ2  # (K * P, N)
    if flat.shape != (K * P, N):
        return
    yield _specific(
        "updated_weights",
        f"ours is {tensor} backpropagated through the updated W_new = W - lr dE/dW instead "
        f"of the forward pass's W: the update ran before dZ2/dA1 was taken (D5)?",
        a,
        e,
        flat.T.reshape(N, K, P),
        tol,
    )


def _filter_grad_inputs(ctx, e):
    """(patches (N, P, s, s), dE/dZ1 (N, K, P)) matching dE/df's shape e (s, s, K), or None."""
    found = _tensors(ctx, "patches", "dE_dZ1")
    if found is None:
        return None
    patches, delta = found
    if patches.ndim != 4 or delta.ndim != 3 or e.ndim != 3:
        return None
    N, P, s, s2 = patches.shape
    if delta.shape[0] != N or delta.shape[2] != P or (s, s2, delta.shape[1]) != e.shape:
        return None
    return patches, delta


def _batch_mean_delta(a, e, tensor, who, ctx, tol):
    """dE/df from the conv delta averaged over the images first (D3): one mean map
    convolved with every image, ours = sum_n patches_n * mean_n(dE/dZ1).

    Evidence: the run's patches and dE/dZ1 with N >= 2 images whose deltas differ.
    """
    found = _filter_grad_inputs(ctx, e) if tensor == "dE_df" else None
    if found is None or found[0].shape[0] < 2:
        return
    patches, delta = found
    mean = delta.mean(axis=0)
    if _rel(delta, np.broadcast_to(mean, delta.shape)) <= tol:
        return
    summed = patches.sum(axis=0)  # (P, s, s)
    predicted = np.einsum("puv,kp->uvk", summed, mean)
    magnitude = np.einsum("puv,kp->uvk", np.abs(patches).sum(axis=0), np.abs(delta).mean(axis=0))
    yield _specific(
        "batch_mean_delta",
        f"ours is {tensor} computed from the conv delta dE/dZ1 averaged over the images "
        f"first: one mean map convolved with every image (D3)?",
        a,
        e,
        predicted,
        tol,
        magnitude,
    )


def _running_partial_sums(a, e, tensor, who, ctx, tol):
    """dE/df holding running partial sums (the sum stored inside the image loop, D7): the
    loop appends S[k, n] = sum over images n' <= n of filter k's contribution, and its
    first K entries become the K filters. Either loop order: filters outer (entry j holds
    S[0, j] when N > K) or images outer (entry k holds S[k, 0], one image).

    Evidence: the run's patches and dE/dZ1 with N >= 2 images.
    """
    found = _filter_grad_inputs(ctx, e) if tensor == "dE_df" else None
    if found is None or found[0].shape[0] < 2:
        return
    patches, delta = found
    N, K = delta.shape[:2]
    parts = np.einsum("npuv,nkp->nkuv", patches, delta)  # (N, K, s, s): one image's share
    sums = np.cumsum(parts, axis=0)  # S[n, k]
    magnitude = np.cumsum(np.einsum("npuv,nkp->nkuv", np.abs(patches), np.abs(delta)), axis=0)
    for order, index in (
        ("filters outer, images inner", lambda j: divmod(j, N)),
        ("images outer, filters inner", lambda j: divmod(j, K)[::-1]),
    ):
        picks = [index(j) for j in range(K)]  # (k, n) of entry j
        yield _specific(
            "partial_sums",
            f"ours is {tensor} holding running partial sums ({order}): the sum stored inside "
            f"the image loop and the first K stored entries kept (D7)?",
            a,
            e,
            np.stack([sums[n, k] for k, n in picks], axis=-1),
            tol,
            np.stack([magnitude[n, k] for k, n in picks], axis=-1),
        )
