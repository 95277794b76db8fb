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

The layers of the spec-built networks (reference/layers/, X1..X12) get the same treatment
from context `layer`: the layer's kind and the inputs its stage was fed (section "layers of
the spec-built networks" below). Their suspects: a max-pool gradient sent to every tied
maximum or spread evenly, an avg-pool gradient not divided by k^2, a conv input gradient
without the stride dilation or cropped at the wrong corner, a conv filter gradient from the
unpadded input, a conv bias gradient averaged over positions or taken at one, one-sided
padding, a ReLU mask from the upstream delta's sign, tanh / sigmoid derivatives from the
input, a dense bias gradient averaged, a channel-last flatten, the cross-entropy gradient
without (or with a spurious) 1/N, the squared error without its 1/2, and the one NaN/inf
the explainer accounts for: a softmax without the max shift, overflowing.

A suspect fits when the relative residual ||theirs - T(ours)|| / ||theirs|| (or, for the
recomputed mistakes, ||ours - mistake(tensors)|| / ||ours||) is below a few thousand unit
roundoffs of the coarser dtype, and is much smaller than the raw mismatch. No suspect is
named from fewer than MIN_EVIDENCE elements nonzero on either side (or all of a smaller
tensor): zeros on both sides fit everything. The best fit (specific first, then the
smallest residual) is returned, or None. NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from parity_tests.metrics import PRECISION_RATIO_LIMIT, low_precision_hint, truth_name
from reference import conv
from reference.layers import KINDS, conv2d
from reference.layers.registry import replay

FIT_ROUNDOFFS = 2.0**12  # a fit is exact to this many unit roundoffs (relative, in norm)
IMPROVEMENT = 1e-3  # and at least 1000x better than no transform at all
MIN_FREE_SIZE = 4  # below this, only named constants count (any ratio fits a scalar)
# Elements that carry evidence: nonzero on at least one side (a zero on both sides fits every
# factor, layout and scatter alike). No suspect is named from fewer than this many of them,
# or from fewer than all of a smaller tensor: a max-pool gradient whose windows all chose
# one element is one number on each side, and "theirs is -0.18 x ours" fits it exactly.
MIN_EVIDENCE = MIN_FREE_SIZE
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
    specific suspects recompute the mistaken way; for a tensor of a spec-built network
    ("pool1.dX"), layer: its layer's kind and stage inputs (see LAYER_SUSPECTS).
    """
    a, e = np.asarray(actual), np.asarray(expected)
    if a.dtype.kind not in "biuf" or e.dtype.kind not in "biuf" or a.size == 0 or e.size == 0:
        return None
    ctx = dict(context or {})
    tol = fit_tolerance(a.dtype, e.dtype)
    who = f"{against or 'theirs'}'s {tensor}".strip() if tensor else (against or "theirs")
    if not (np.isfinite(a).all() and np.isfinite(e).all()):
        # Only an overflow recomputed from the layer's own inputs explains a NaN or inf.
        return _nonfinite_fit(a, e, tensor, who, ctx, tol)
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
    if a.shape == e.shape and evidence(a64, e64) < min(MIN_EVIDENCE, a.size):
        return None  # too few informative elements: any suspect would be a coincidence
    best = None
    for fit in _fits(a64, e64, tensor, who, ctx, tol):
        # Update suspects are measured against the step size and screened in _update_fits.
        better = fit.suspect in UPDATE_SUSPECTS or fit.residual <= IMPROVEMENT * raw
        if fit.residual <= tol and better and (best is None or _rank(fit) < _rank(best)):
            best = fit
    return best


def evidence(actual, expected) -> int:
    """How many elements can tell suspects apart: those nonzero on at least one side."""
    a, e = np.asarray(actual), np.asarray(expected)
    return int(np.count_nonzero((a != 0) | (e != 0)))


# The share of the implementation's error a scale must explain to be named before lost bits
# (bfloat16 operands in the article's dE_df shift its scale by 6e-4, 68% of their error).
SCALE_SHARE = 0.9


def explain_precision(record: Mapping, tensor: str = "", against: str = "") -> Explanation | None:
    """The suspect of a comparison failed on precision (parity_tests.metrics.precision_stats,
    mismatch_kind "precision"), or failed beyond its allowance with one side short of bits:
    the side that carries at least log2(PRECISION_RATIO_LIMIT) bits fewer than the other,
    from the record's against_bits / impl_bits; else, where the implementation's result is
    scaled against the truth beyond its limit (impl_scale, scale_limit), a constant factor;
    None where there is neither or they are not measured."""
    try:
        bits = {"against": float(record["against_bits"]), "impl": float(record["impl_bits"])}
    except (KeyError, TypeError, ValueError):
        return None
    if any(math.isnan(b) for b in bits.values()):
        return None
    scaled = _explain_scale(record, tensor)
    if scaled is not None and scaled.residual <= 1 - SCALE_SHARE:
        return scaled  # most of its error is the factor: that, not the bits it costs
    worse = min(bits, key=bits.get)
    other = "impl" if worse == "against" else "against"
    name = (against or "theirs") if worse == "against" else "ours"
    lost = bits[other] - bits[worse]
    if lost < math.log2(PRECISION_RATIO_LIMIT):
        return scaled
    what = f"{tensor} " if tensor else ""
    return Explanation(
        "precision",
        f"{name} {what}computed at about {bits[worse]:.0f} bits, {lost:.0f} fewer than the "
        f"other side's {bits[other]:.0f}: " + low_precision_hint(_dtype_of(record)),
        0.0,
        specific=True,
    )


def _explain_scale(record: Mapping, tensor: str) -> Explanation | None:
    """The implementation's result scaled against the truth (metrics.precision_stats'
    impl_scale beyond scale_limit), or None. Its residual is the share of the
    implementation's error that the factor leaves unexplained (1 - |impl_scale| /
    impl_rms): low-precision operands also shift the scale, but scatter far more."""
    try:
        s, rms, limit = (float(record[k]) for k in ("impl_scale", "impl_rms", "scale_limit"))
    except (KeyError, TypeError, ValueError):
        return None
    if not abs(s) > limit:  # NaN (not measured) included
        return None
    what = f"{tensor} " if tensor else ""
    dtype = _dtype_of(record)
    return Explanation(
        "factor",
        f"ours {what}is about 1 {s:+.3g} x {truth_name(dtype)} (least squares), beyond the "
        f"{limit:.3g} a correct {dtype} result's scatter allows: a constant factor (a wrong "
        "scale or count, a mean for a sum)?",
        1 - abs(s) / rms if rms > 0 else 0.0,
        factor=1 + s,
    )


def _dtype_of(record: Mapping) -> str:
    """The record's dtype ("float32" where it has none: a bare comparison's record)."""
    return str(record.get("dtype") or "float32")


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
        _layer_fits,
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
                conv._conv_forward(patches, g),
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


# --- layers of the spec-built networks (context `layer`) ----------------------------------
#
# ctx["layer"] describes the layer a tensor of a spec-built network belongs to (its name is
# layer-qualified: "pool1.dX", the part after the dot says which output): "kind" (a key of
# the layer registry, reference.layers.KINDS) and what its stage was fed, by the names of
# its family's calling form (registry.call_arguments): conv X, F, b, dZ, stride, pad; pool
# X, dA, k, stride; activation Z, A, dA; flatten X, dA; dense A, W, b, dZ; softmax_ce Z, P,
# labels, reduction; mse O, Y, reduction. Batch-first NCHW. Each suspect recomputes ours
# the mistaken way from them (every catalogue mistake by replaying its mutant, a few by
# hand where they say more); `_specific` decides.


def _layer_context(ctx):
    layer = ctx.get("layer")
    return layer if isinstance(layer, Mapping) and layer.get("kind") else None


def _layer_arrays(layer, *names):
    """The layer's inputs `names` as float64 arrays, or None if one is missing or not finite."""
    if any(not isinstance(layer.get(n), np.ndarray | np.generic) for n in names):
        return None
    out = [np.asarray(layer[n], dtype=np.float64) for n in names]
    return out if all(np.isfinite(x).all() for x in out) else None


# The reference's own window view and its adjoint (no second implementation here).
_win = conv2d._windows


def _scatter(x_shape, share, k, stride):
    """share (N, C, H_out, W_out, k, k) added into each window's positions of zeros(x_shape)."""
    share = np.asarray(share, dtype=np.float64)
    return conv2d._col2im(share.transpose(4, 5, 0, 1, 2, 3), x_shape, stride)


def _pool_geometry(layer, X, dA, e):
    k, stride = layer.get("k"), layer.get("stride")
    if not isinstance(k, int) or not isinstance(stride, int) or X.ndim != 4 or e.shape != X.shape:
        return None
    win = _win(X, k, stride)
    return (k, stride, win) if win.shape[:4] == dA.shape else None


def _max_pool_grads(a, e, who, layer, tol):
    """X6's delta to every maximum of a tied window (each gets it whole), or spread evenly
    over the window, delta / k^2 to each element. Evidence: the pool's input X (a tied window
    for the first) and its upstream delta dA."""
    found = _layer_arrays(layer, "X", "dA")
    geometry = _pool_geometry(layer, *found, e) if found else None
    if geometry is None:
        return
    (X, dA), (k, stride, win) = found, geometry
    hits = win == win.max(axis=(4, 5), keepdims=True)
    tied = int(np.count_nonzero(hits.sum(axis=(4, 5)) > 1))
    if tied:
        yield _specific(
            "pool_grad_all_maxima",
            f"ours is {who} with each window's delta given whole to every one of its tied "
            f"maxima ({tied} tied windows): the max-pool gradient must go to the first maximum "
            "only (row-major, as torch and TensorFlow do)?",
            a,
            e,
            _scatter(X.shape, np.where(hits, dA[..., None, None], 0.0), k, stride),
            tol,
        )
    yield _specific(
        "pool_grad_spread_evenly",
        f"ours is {who} with each window's delta spread evenly, delta / {k * k} to every "
        "element, a mean's gradient: the max-pool gradient must go to the window's "
        "maximum only?",
        a,
        e,
        _scatter(X.shape, np.broadcast_to(dA[..., None, None] / (k * k), win.shape), k, stride),
        tol,
    )


def _conv_settings(layer):
    stride, pad = layer.get("stride"), layer.get("pad")
    if not isinstance(stride, int) or not isinstance(pad, int):
        return None
    return stride, pad


def _conv_input_grad(dZ, F, x_shape, stride, pad, dilate=True, top=None):
    """X5: dXp[n, c, s i + u, s j + v] += dZ[n, o, i, j] F[o, c, u, v], cropped to X at
    offset `top` (pad: the right crop); dilate=False puts delta (i, j) at (i + u, j + v)."""
    N, C, H, W = x_shape
    k, (H_out, W_out) = F.shape[2], dZ.shape[2:]
    step = stride if dilate else 1
    dXp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    for u in range(k):
        for v in range(k):
            rows = slice(u, u + step * (H_out - 1) + 1, step)
            cols = slice(v, v + step * (W_out - 1) + 1, step)
            dXp[:, :, rows, cols] += np.einsum("nohw,oc->nchw", dZ, F[:, :, u, v])
    top = pad if top is None else top
    return dXp[:, :, top : top + H, top : top + W]


def _conv_inputs(layer, e, names):
    found = _layer_arrays(layer, *names)
    settings = _conv_settings(layer)
    if found is None or settings is None or any(x.ndim != 4 for x in found):
        return None
    return found, settings


def _conv_input_grads(a, e, who, layer, tol):
    """X5 without the stride dilation (stride > 1), or the padded input's gradient cropped
    at a corner instead of the pad border on every side (pad > 0). Evidence: the conv's
    input X (its shape), filters F and upstream delta dZ."""
    got = _conv_inputs(layer, e, ("X", "F", "dZ"))
    if got is None:
        return
    (X, F, dZ), (stride, pad) = got
    if e.shape != X.shape or F.shape[1] != X.shape[1] or dZ.shape[1] != F.shape[0]:
        return
    magnitude = _conv_input_grad(np.abs(dZ), np.abs(F), X.shape, stride, pad)
    if stride > 1:
        yield _specific(
            "conv_grad_input_no_dilation",
            f"ours is {who} with the deltas placed side by side instead of every {stride} "
            "pixels: the stride dilation of the conv input gradient (zeros between the "
            "deltas) forgotten?",
            a,
            e,
            _conv_input_grad(dZ, F, X.shape, stride, pad, dilate=False),
            tol,
            magnitude,
        )
    if pad > 0:
        for top, where in ((0, "top-left"), (2 * pad, "bottom-right")):
            yield _specific(
                "conv_grad_input_crop",
                f"ours is {who} cropped at the {where} corner of the padded input's gradient "
                f"instead of removing the {pad}-pixel pad border on every side?",
                a,
                e,
                _conv_input_grad(dZ, F, X.shape, stride, pad, top=top),
                tol,
                magnitude,
            )


def _pad_after(X, pad):
    return np.pad(X, ((0, 0), (0, 0), (0, 2 * pad), (0, 2 * pad)))


def _conv_filter_grads(a, e, who, layer, tol):
    """X4 from the unpadded input indexed as if padded (X[s i + u] for Xp[s i + u]), pad > 0.
    Evidence: the conv's input X and upstream delta dZ."""
    got = _conv_inputs(layer, e, ("X", "dZ"))
    if got is None or e.ndim != 4 or got[1][1] == 0:
        return
    (X, dZ), (stride, pad) = got
    k = e.shape[2]
    win = _win(_pad_after(X, pad), k, stride)
    if win.shape[:1] + win.shape[2:4] != dZ.shape[:1] + dZ.shape[2:] or win.shape[1] != e.shape[1]:
        return
    abs_win = _win(_pad(np.abs(X), pad), k, stride)
    yield _specific(
        "conv_grad_filter_unpadded",
        f"ours is {who} taken from the unpadded input indexed as if padded (X[s i + u] "
        f"where the forward read Xp[s i + u], Xp with {pad} zero(s) on every side): the filter "
        "gradient must pair each delta with the padded window it came from?",
        a,
        e,
        np.einsum("nchwuv,nohw->ocuv", win, dZ, optimize=True),
        tol,
        np.einsum("nchwuv,nohw->ocuv", abs_win, np.abs(dZ), optimize=True),
    )


def _pad(X, pad):
    return np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def _conv_bias_grads(a, e, who, layer, tol):
    """X3 summed over the images but averaged over the positions, or taken at position
    (0, 0) only. Evidence: the upstream delta dZ with more than one position."""
    found = _layer_arrays(layer, "dZ")
    if found is None or found[0].ndim != 4 or found[0].shape[2] * found[0].shape[3] < 2:
        return
    dZ = found[0]
    magnitude = np.abs(dZ).sum(axis=(0, 2, 3))
    positions = dZ.shape[2] * dZ.shape[3]
    for suspect, predicted, what in (
        (
            "conv_bias_grad_mean_over_positions",
            dZ.sum(axis=0).mean(axis=(1, 2)),
            f"averaged over the {positions} positions",
        ),
        ("conv_bias_grad_one_position", dZ[:, :, 0, 0].sum(axis=0), "taken at position (0, 0) only"),
    ):
        yield _specific(
            suspect,
            f"ours is {who} summed over the images but {what}: the bias enters every "
            "position, so its gradient sums the delta over the positions too?",
            a,
            e,
            predicted,
            tol,
            magnitude,
        )


def _conv_forwards(a, e, who, layer, tol):
    """X1 with all 2p zeros on one side (after the image, like TensorFlow's 'SAME' when the
    total is odd, or before it), pad > 0. Evidence: the conv's X, F (and b)."""
    got = _conv_inputs(layer, e, ("X", "F"))
    if got is None or got[1][1] == 0:
        return
    (X, F), (stride, pad) = got
    b = _layer_arrays(layer, "b")
    k = F.shape[2]
    for where, Xs in (
        ("after the image (bottom/right)", _pad_after(X, pad)),
        ("before the image (top/left)", np.pad(X, ((0, 0), (0, 0), (2 * pad, 0), (2 * pad, 0)))),
    ):
        win = _win(Xs, k, stride)
        if win.shape[1] != F.shape[1] or (e.shape[0], F.shape[0], *win.shape[2:4]) != e.shape:
            return
        Z = np.einsum("nchwuv,ocuv->nohw", win, F, optimize=True)
        if b is not None and b[0].shape == (F.shape[0],):
            Z = Z + b[0][None, :, None, None]
        yield _specific(
            "conv_pad_one_side",
            f"ours is {who} with all {2 * pad} rows and columns of zero padding {where} "
            f"instead of {pad} on every side (TensorFlow's 'SAME' pads the extra at the "
            "bottom/right)?",
            a,
            e,
            Z,
            tol,
        )


def _activation_grads(a, e, who, layer, tol):
    """The local derivative of an activation's backward taken the wrong way: ReLU's mask
    from the sign of the upstream delta instead of Z; tanh's as 1 - Z^2 (from the input)
    or 1 - A; the sigmoid's as Z (1 - Z). Evidence: the layer's Z, A and upstream dA."""
    kind = layer["kind"]
    found = _layer_arrays(layer, "Z", "A", "dA")
    if found is None or any(x.shape != e.shape for x in found):
        return
    Z, A, dA = found
    if kind == "relu":
        yield _specific(
            "relu_grad_from_upstream_sign",
            f"ours is {who} masked by the sign of the upstream delta (dA > 0) instead of "
            "by z > 0: the ReLU derivative must be read from its input?",
            a,
            e,
            np.where(dA > 0, dA, 0.0),
            tol,
        )
    elif kind == "tanh":
        yield _specific(
            "tanh_grad_of_preactivation",
            f"ours is {who} with the derivative 1 - Z^2 of the layer's input Z: tanh' = "
            "1 - A^2 with A = tanh(Z), the output?",
            a,
            e,
            dA * (1 - Z * Z),
            tol,
        )
        yield _specific(
            "tanh_grad_missing_square",
            f"ours is {who} with the derivative 1 - A: tanh' = 1 - A^2, the square forgotten?",
            a,
            e,
            dA * (1 - A),
            tol,
        )
    elif kind == "sigmoid":
        yield _specific(
            "sigmoid_grad_of_preactivation",
            f"ours is {who} with the derivative Z (1 - Z) of the layer's input Z: the "
            "sigmoid's derivative is A (1 - A) with A = sigmoid(Z), the output?",
            a,
            e,
            dA * Z * (1 - Z),
            tol,
        )


def _dense_bias_grads(a, e, who, layer, tol):
    """X10's bias gradient averaged over the images instead of summed."""
    found = _layer_arrays(layer, "dZ")
    if found is None or found[0].ndim != 2 or found[0].shape[0] < 2:
        return
    dZ = found[0]
    yield _specific(
        "dense_bias_grad_mean",
        f"ours is {who} / {dZ.shape[0]}: the dense bias gradient averaged over the "
        f"{dZ.shape[0]} images instead of summed (a mean where the loss sums)?",
        a,
        e,
        dZ.mean(axis=0),
        tol,
        np.abs(dZ).mean(axis=0),
    )


def _flatten_orders(a, e, who, layer, tol, backward):
    found = _layer_arrays(layer, "X", "dA") if backward else _layer_arrays(layer, "X")
    if found is None or found[0].ndim != 4:
        return
    X = found[0]
    N, C, H, W = X.shape
    if C < 2 or H * W < 2:
        return
    if backward:
        predicted = found[1].reshape(N, H, W, C).transpose(0, 3, 1, 2)
        what = "the delta reshaped back as channel-last (N, H, W, C) features"
    else:
        predicted = X.transpose(0, 2, 3, 1).reshape(N, -1)
        what = "the features flattened channel-last, h W C + w C + c (NHWC, TensorFlow's order)"
    yield _specific(
        "flatten_channel_last",
        f"ours is {who} with {what}, not NCHW's c H W + h W + w (torch's flatten(1))?",
        a,
        e,
        predicted,
        tol,
    )


def _ce_grads(a, e, who, layer, tol):
    """X12's p - onehot(y) without the mean's 1/N, or divided by N under a sum. Evidence:
    the layer's P, labels and reduction, N > 1."""
    found = _layer_arrays(layer, "P")
    labels, reduction = layer.get("labels"), layer.get("reduction")
    if found is None or not isinstance(labels, np.ndarray) or reduction not in ("sum", "mean"):
        return
    P = found[0]
    N = P.shape[0] if P.ndim == 2 else 0
    if N < 2 or labels.shape != (N,) or P.shape != e.shape:
        return
    grad = P - (np.arange(P.shape[1]) == labels[:, None])
    if reduction == "mean":
        yield _specific(
            "ce_grad_missing_1_over_N",
            f"ours is {N} x {who}: p - onehot(y) without the 1/N of the mean reduction?",
            a,
            e,
            grad,
            tol,
        )
    else:
        yield _specific(
            "ce_grad_divided_by_N",
            f"ours is {who} / {N}: p - onehot(y) divided by N under the sum reduction?",
            a,
            e,
            grad / N,
            tol,
        )


def _mse_without_half(a, e, who, layer, tol, backward):
    """E7 without its 1/2 (torch's mse_loss form): E = sum (y - O)^2, dE/dO = 2 (O - y)."""
    found = _layer_arrays(layer, "O", "Y")
    reduction = layer.get("reduction")
    if found is None or found[0].shape != found[1].shape or reduction not in ("sum", "mean"):
        return
    O, Y = found
    scale = 1 / O.shape[0] if reduction == "mean" else 1.0
    predicted = 2 * (O - Y) * scale if backward else np.asarray(((Y - O) ** 2).sum() * scale)
    yield _specific(
        "mse_without_half",
        f"ours is 2 x {who}: the squared error without the 1/2 of E = sum (y - O)^2 / 2 "
        "(torch's mse_loss has none)?",
        a,
        e,
        predicted,
        tol,
    )


# (kind, short name of the tensor) -> its suspects, each (a, e, who, layer, tol) -> fits.
LAYER_SUSPECTS = {
    ("maxpool", "dX"): (_max_pool_grads,),
    ("conv", "Z"): (_conv_forwards,),
    ("conv", "dX"): (_conv_input_grads,),
    ("conv", "dF"): (_conv_filter_grads,),
    ("conv", "db"): (_conv_bias_grads,),
    ("relu", "dZ"): (_activation_grads,),
    ("tanh", "dZ"): (_activation_grads,),
    ("sigmoid", "dZ"): (_activation_grads,),
    ("dense", "db"): (_dense_bias_grads,),
    ("flatten", "A"): (lambda *args: _flatten_orders(*args, backward=False),),
    ("flatten", "dX"): (lambda *args: _flatten_orders(*args, backward=True),),
    ("softmax_ce", "dZ"): (_ce_grads,),
    ("mse", "E"): (lambda *args: _mse_without_half(*args, backward=False),),
    ("mse", "dO"): (lambda *args: _mse_without_half(*args, backward=True),),
}


def _catalogue_fits(a, e, short, who, layer, tol):
    """Each catalogue mistake of the layer's kind (its registry entry's `mistakes`), its
    mutant replayed on the stage's own inputs: ours recomputed the mistaken way."""
    kind = KINDS.get(layer["kind"])
    if kind is None:
        return
    arrays = {k: np.asarray(v, np.float64) if isinstance(v, np.ndarray) else v for k, v in layer.items()}
    backward = short not in kind.outputs
    right = None
    for mistake in kind.mistakes:
        fn = mistake.backward if backward else mistake.forward
        if fn is None:
            continue
        try:
            with np.errstate(all="ignore"):
                predicted = replay(kind, fn, arrays, backward).get(short)
                if right is None:
                    right = replay(kind, kind.backward if backward else kind.forward, arrays, backward)
        except Exception:  # noqa: BLE001  (inputs the mutant cannot take: no fit, no crash)
            continue
        if predicted is None:
            continue
        # A mistake that leaves this tensor as it is (a backward mistake's dgamma) says
        # nothing about it.
        correct = right.get(short)
        predicted = np.asarray(predicted, np.float64)
        if correct is None or np.shape(correct) != predicted.shape:
            continue
        if _rel(np.asarray(correct, np.float64), predicted) > tol:
            yield _specific(
                mistake.explains, f"ours is {who} with the {mistake.title}?", a, e, predicted, tol
            )


def _layer_fits(a, e, tensor, who, ctx, tol):
    layer = _layer_context(ctx)
    if layer is None:
        return
    short = tensor.rsplit(".", 1)[-1]
    for suspect in LAYER_SUSPECTS.get((layer["kind"], short), ()):
        yield from suspect(a, e, who, layer, tol)
    yield from _catalogue_fits(a, e, short, who, layer, tol)


def _nonfinite_fit(a, e, tensor, who, ctx, tol) -> Explanation | None:
    """NaN / inf in ours where theirs is finite, matched by a softmax without the max shift
    recomputed in ours' dtype from the layer's logits Z: exp(Z) overflows once a logit
    exceeds log(max float) (88.7 in float32), and inf / inf is NaN. Matched by which
    elements are not finite (a NaN for an inf counts: softmax_loss written as -log(p[y])
    gives NaN where z - log(sum) gives inf). Everything else that is not finite is left
    unexplained (None)."""
    layer = _layer_context(ctx)
    short = tensor.rsplit(".", 1)[-1]
    if layer is None or layer["kind"] != "softmax_ce" or short not in ("P", "E"):
        return None
    Z, labels, reduction = layer.get("Z"), layer.get("labels"), layer.get("reduction")
    if not isinstance(Z, np.ndarray) or Z.ndim != 2 or not np.isfinite(Z).all():
        return None
    if not np.isfinite(a).all() or e.dtype.kind != "f":
        return None
    Zd = Z.astype(e.dtype)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ex = np.exp(Zd)
        total = ex.sum(axis=1, keepdims=True)
        if short == "P":
            predicted = ex / total
        else:
            if not isinstance(labels, np.ndarray) or labels.shape != (Z.shape[0],):
                return None
            logP = Zd - np.log(total)
            picked = np.take_along_axis(logP, labels.astype(np.intp)[:, None], axis=1)
            predicted = np.asarray(-(picked.sum() if reduction == "sum" else picked.mean()))
    if predicted.shape != e.shape or np.isfinite(predicted).all():
        return None
    # The same elements not finite: NaN or inf by how the softmax is written (-log(e / s) of
    # an inf / inf is NaN, z - log(s) is -inf), so only which elements, not which non-finite.
    if not (np.isfinite(predicted) == np.isfinite(e)).all():
        return None
    ok = np.isfinite(e)
    residual = _rel(e[ok], predicted[ok]) if ok.any() else 0.0
    if residual > tol:
        return None
    limit = float(np.log(np.finfo(e.dtype).max))
    bad = int(e.size - np.count_nonzero(ok))
    return Explanation(
        "softmax_no_max_shift",
        f"ours has {bad} NaN/inf value(s) where {who} is finite, as exp(Z) gives when a logit "
        f"exceeds log(max {e.dtype}) = {limit:.4g} (the largest here: {float(Z.max()):.4g}): "
        "the softmax taken without subtracting each row's maximum logit?",
        residual,
        specific=True,
    )
