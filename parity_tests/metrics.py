"""The one comparison of the project: metrics of `actual` against `expected`.

Every check in the suite calls `compare_arrays` and stores its result in a record;
`format_mismatch` turns such a record into the failure message. `actual` is the other side
(the framework: the record's `against`), `expected` the implementation under test (the
record's `impl`); the record's fields and every message name them that way (against_*,
impl_*, "impl reference: ..., torch: ..."), never actual/expected.
"""

from __future__ import annotations

import math

import numpy as np

from reports.fields import number_text

NAN = math.nan


def _refuse_lossy(x, name: str) -> None:
    """np.asarray would quietly drop a masked array's mask and np.matrix breaks shapes."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array: its mask would be silently dropped; "
            "pass .filled(...) or a plain ndarray"
        )
    if isinstance(x, np.matrix):
        raise TypeError(f"{name}: np.matrix is not supported, pass np.asarray(x)")


def _as_real_array(x, name: str) -> np.ndarray:
    _refuse_lossy(x, name)
    if not isinstance(x, (np.ndarray, np.generic)):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (bool, int or float), got dtype {x.dtype}")
    return x


def _tolerance(tolerance, shape: tuple) -> np.ndarray:
    """The tolerance as float64 broadcast to `shape` (a read-only view, never a copy)."""
    if isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool):
        tolerance = np.float64(tolerance)
    tol = np.asarray(_as_real_array(tolerance, "tolerance"), dtype=np.float64)
    if not np.all(np.isfinite(tol)) or np.any(tol < 0):
        raise ValueError("tolerance must be finite and >= 0 everywhere")
    try:
        return np.broadcast_to(tol, shape)
    except ValueError:
        raise ValueError(
            f"tolerance of shape {tol.shape} does not broadcast to expected's shape {shape}"
        ) from None


def _abs_err(a: np.ndarray, e: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """|a - e| in float64; equal values (inf == inf, -0.0 == 0.0) give 0, NaN gives inf."""
    out = np.empty(a.shape) if out is None else out  # a 0-d result stays an array
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(np.subtract(a, e, out=out), out=out)
    if np.isnan(d.max()):  # only NaN inputs or inf - inf make a NaN here
        d[a == e] = 0.0  # inf - inf is NaN, but equal infinities agree
        d[np.isnan(a) | np.isnan(e)] = np.inf  # two NaNs at one place still disagree
    return d


def _ordered_ints(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Floats as integers of their own width whose order and spacing are those of the
    floats (-0.0 -> 0)."""
    itype = np.dtype(f"i{dtype.itemsize}")
    i = np.ascontiguousarray(x, dtype=dtype).view(itype).ravel()
    # Negative floats are sign-magnitude; fold them below zero, mirrored: MIN - i (never
    # out of the integer's range for a negative i).
    if dtype.itemsize < 8:  # branch-free, in the narrow integers: the fastest at this width
        sign = i >> (8 * dtype.itemsize - 1)  # -1 where negative, else 0
        return (i ^ (sign & np.iinfo(itype).max)) - sign  # (i ^ MAX) + 1 = MIN - i
    i = i.copy()
    np.subtract(np.iinfo(itype).min, i, out=i, where=i < 0)
    return i


def _max_ulp(actual: np.ndarray, expected: np.ndarray):
    floats = [x.dtype for x in (actual, expected) if x.dtype.kind == "f"]
    if not floats:
        return NAN
    if np.isnan(actual).any() or np.isnan(expected).any():
        return math.inf
    dtype = min(floats, key=lambda d: d.itemsize)  # count steps of the coarser grid
    oa, oe = _ordered_ints(actual, dtype), _ordered_ints(expected, dtype)
    if dtype.itemsize < 8:  # the difference fits in int64
        steps = np.subtract(oa, oe, dtype=np.int64)
        return int(max(steps.max(), -steps.min()))
    # |oa - oe| can exceed int64 for float64; unsigned wrap-around gives it exactly.
    below = oa < oe
    steps = np.subtract(oa.view(np.uint64), oe.view(np.uint64), out=oa.view(np.uint64))
    np.negative(steps, out=steps, where=below)
    return int(steps.max())


# --- effective precision (docs/tolerance.md, "Effective precision") ---------------------
# The stage allowance is a worst-case bound, ~250x the error a float32 result of a
# 115,200-term sum shows, so a result computed from float16 or bfloat16 operands, or in
# TF32, passes it. Both sides compute the same expression in the same dtype: each
# element's error against the float64 truth, normalised by the allowance there (the
# condition of that element's expression), has a typical size that a legitimate
# reordering changes by a small factor and a lower-precision operand by 2^7..2^13.
# Calibration (docs/tolerance.md, benchmarks/precision_floor.py): the largest legitimate
# ratio is PRECISION_LEGIT_MAX; a float16-operand dE_df is 28..62 (one seed of ten: 11).
PRECISION_QUANTILE = 90  # the typical error: a percentile, robust to a few kinks
PRECISION_MIN_ELEMENTS = 16  # fewer measured elements: no precision verdict
# The floor: a side more accurate than this many single roundings (u |t|) of the exact
# result is not held against the other, since a legitimate float32 computation may be that
# far off. A correctly rounded result (float64 accumulation) is legitimate, so the other
# side is judged against what a legitimate float32 evaluation of the same expression may
# err by, which grows with the length k of its longest sum (Tolerance.roundings, the stage
# rule's k): the roundings of the partial sums add up like a random walk, about
# sqrt(k / 6) roundings of a non-cancelling result in a left-to-right sum, more where the
# result cancels (it is measured in roundings of |t|, not of the terms). Measured: torch's
# float32 conv3.db of the normalisation sweep's conv network (28,800 terms behind a group
# norm, whose output sums to zero) is 206 roundings = 1.2 sqrt(k), 26x the reference's
# pairwise sum; torch's dE_df (115,200) 50 = 0.15 sqrt(k). The floor is
# max(PRECISION_FLOOR_ROUNDINGS, sqrt(k) / PRECISION_FLOOR_SQRT_K_DIVISOR): unchanged up to
# k = 4,096; the other side may then reach 16 / 8 = 2 sqrt(k) roundings. The divisor is the
# geometric middle of what the data allow: the legitimate conv3.db needs one under 13.2
# (206 / 16 roundings at sqrt(28,800) = 170), float16 operands at dE_df (1,197 roundings
# at the weakest seed caught before) one over 4.5 (1,197 / 16 at sqrt(115,200) = 339).
PRECISION_FLOOR_ROUNDINGS = 8.0
PRECISION_FLOOR_SQRT_K_DIVISOR = 8.0
PRECISION_RATIO_LIMIT = 16.0  # fail beyond this (4 bits)
# Legitimate pairs measured <= 9.7 over the gate's and the sweeps' networks (torch's
# conv3.db above), and 15.7 end to end in docs/normalisation.md's second cancelling network
# (torch's conv3.dF, 135,200 terms: 720 roundings, 4.8x its stage error, the rest carried
# from its own less accurate upstream gradients; in no test).
PRECISION_LEGIT_MAX = 15.7
# The scale verdict (docs/tolerance.md, "Scale"): the typical error must grow 16x past the
# floor before the verdict above fails, so a uniform scale error x (1 + e) hides up to e
# ~ 128 roundings, 10..120x what two correct float32 results differ by. A scale error is a
# bias and rounding mostly is not: the implementation's least-squares scale against the
# truth, s = <x - t, t> / <t, t> (exactly e), fails beyond SCALE_LIMIT times the largest
# of the other side's root-mean-square relative error d = |y - t| / |t| (which the scale
# error does not inflate), the implementation's own error left after its best scale
# (which a constant factor does not inflate either; it keeps a legitimately scattering
# computation, a cancelling sum, green when the other side is the truth itself, as in the
# mutant catalogue's localisation) and one rounding. Calibration
# (benchmarks/precision_bias.py, seeds 0-4, the article and lenet, stage and end to end,
# 940 checks): the correct reference's |s| reaches 2.05 of that scale (end to end a
# rounding shared upstream makes |s| up to 0.9 of its own error); a left-to-right float32
# sum of 115,200 terms (loop_impl's dE_df) 1.02. At 5 (2.4x margin) every one of those
# checks catches a scale error within 10x of the legitimate difference.
SCALE_LIMIT = 5.0
# What a check's result is measured against, and what a result short of bits suggests, by
# the check's dtype (the notes here and the explainer's; truth_name, low_precision_hint).
TRUTH_NAME = {"float32": "the float64 truth", "float64": "the extended-precision truth"}
LOW_PRECISION_HINT = {
    "float32": "float16 or bfloat16 operands (a mixed-precision policy), or TF32?",
    "float64": "float32 operands or a float32 accumulator?",
}


def truth_name(dtype) -> str:
    """What a `dtype` result is measured against, in a note ("the truth" for a dtype the
    suite's checks do not use, float16 in a bare comparison)."""
    return TRUTH_NAME.get(str(dtype), "the truth")


def low_precision_hint(dtype) -> str:
    """What a `dtype` result short of bits suggests, in a note."""
    return LOW_PRECISION_HINT.get(str(dtype), "lower-precision operands or accumulator?")


def precision_floor(roundings: int) -> float:
    """The floor of the precision verdict, in single roundings u |t| of the exact result,
    for an expression whose longest sum has `roundings` terms (the stage rule's k; 0: not
    known, the fixed floor):

        floor(k) = max(PRECISION_FLOOR_ROUNDINGS, sqrt(k) / PRECISION_FLOOR_SQRT_K_DIVISOR)
    """
    if isinstance(roundings, bool) or not isinstance(roundings, (int, np.integer)) or roundings < 0:
        raise ValueError(f"roundings must be an int >= 0 (a sum's length k), got {roundings!r}")
    return max(PRECISION_FLOOR_ROUNDINGS, math.sqrt(roundings) / PRECISION_FLOOR_SQRT_K_DIVISOR)


def _typical(x: np.ndarray) -> float:
    """The PRECISION_QUANTILE-th percentile of x, a scratch array it reorders in place.
    Errors that overflowed to inf (a grossly wrong result) make it inf, the largest typical
    error (their interpolation would give inf - inf = NaN, which no verdict would fail)."""
    with np.errstate(over="ignore", invalid="ignore"):
        q = percentile(x, PRECISION_QUANTILE)
    return math.inf if math.isnan(q) else q


# Selecting among the values above a bound, not among all of them: numpy's percentile
# partitions the whole array about four ranks (the minimum and maximum too), most of a
# comparison's time on a layer's 940,800 values. From SELECT_MIN values, a sorted strided
# sample of about SELECT_SAMPLE of them gives a bound a few standard deviations of its rank
# below the wanted rank; the values under it are counted, and the rank is selected among
# the others. A bound that came out too high (an unlucky or periodic sample) is seen in
# the count, and the whole array is partitioned instead: the result is always exact.
SELECT_MIN = 1 << 16
SELECT_SAMPLE = 4096


def _smallest(x: np.ndarray, ranks: list[int]) -> list[float]:
    """The `ranks`-th smallest values of 1-d `x` (0-based, ascending, no NaN in x), exactly;
    x is reordered."""
    n = x.size
    if n >= SELECT_MIN:
        sample = np.sort(x[:: n // SELECT_SAMPLE])
        m, p = sample.size, ranks[0] / n
        below_rank = min(int(p * m - 6 * math.sqrt(m * p * (1 - p)) - 2), m - 1)
        if below_rank > 0:
            keep = x >= sample[below_rank]
            under = n - int(np.count_nonzero(keep))
            if under <= ranks[0]:  # the bound is at most the wanted value: select above it
                rest = x[keep]
                shifted = [r - under for r in ranks]
                rest.partition(shifted)
                return [float(rest[r]) for r in shifted]
    x.partition(ranks)
    return [float(x[r]) for r in ranks]


def percentile(x: np.ndarray, q: float, method: str = "linear") -> float:
    """np.percentile(x, q, method=method) for 1-d float64 `x` ("linear" or "higher"): the
    same value to the bit (a zero's sign aside: -0.0 and 0.0 rank equal), selected faster
    (_smallest); x is a scratch array it reorders. NaN anywhere gives NaN, as numpy's does,
    and so does interpolating between infinities (inf - inf), even at a whole rank."""
    if method not in ("linear", "higher") or not 0 <= q <= 100:
        raise ValueError(
            f"percentile takes q in [0, 100] and method linear or higher, got {q!r}, {method!r}"
        )
    n = x.size
    if math.isnan(x.max()):
        return NAN
    h = (n - 1) * (q / 100)  # numpy's virtual index, computed as numpy computes it
    if method == "higher":
        return _smallest(x, [min(math.ceil(h), n - 1)])[0]
    if h >= n - 1:  # numpy takes index -1 for both, and its gamma is then h - (-1)
        a = b = _smallest(x, [n - 1])[0]
        gamma = h + 1
    else:
        j = math.floor(h)
        a, b = _smallest(x, [j, j + 1])
        gamma = h - j
    # numpy's _lerp, operation for operation
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def _scaled_err(x: np.ndarray, t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """|x - t| / w in one fresh buffer (a scratch array for _typical); inf where a grossly
    wrong result's error overflows it."""
    buf = np.subtract(x, t)
    np.abs(buf, out=buf)
    with np.errstate(over="ignore"):
        return np.divide(buf, w, out=buf)


def precision_stats(a, e, truth, tol, dtype, roundings: int = 0, legit=None) -> dict | None:
    """The effective precision of both sides against the truth (float64 for a float32
    check, extended precision for a float64 one: harness.truth_dtype), or None where it is
    not measured: a non-float dtype, no element with a non-zero allowance and finite
    values, fewer than PRECISION_MIN_ELEMENTS such elements without `legit` (with it: the
    scale verdict alone, the bits NaN), or no error and no rounding to measure (both sides
    equal to a truth of zeros).

    a, e: the two sides as float64 (the framework's, the implementation's); `dtype` theirs;
    `roundings`: the length k of the expression's longest sum (Tolerance.roundings; 0: not
    known). e_i = |x_i - t_i| / tol_i; a side's typical error is the PRECISION_QUANTILE-th
    percentile of e_i; one rounding is the same statistic of u |t_i| / tol_i, one rounding
    of the exact result to the dtype. Returns
      against_bits, impl_bits: the mantissa (24 in float32) minus log2 of the side's
        typical error over the floor (at most the mantissa): 24 correctly rounded, about
        20 for torch's float32 dE_df (a 115,200-term sum), 13 from float16 operands;
      precision_ratio: the framework's typical error over the implementation's;
      worse: "against" or "impl" where that side's typical error exceeds
        PRECISION_RATIO_LIMIT times the other's (or precision_floor(roundings) roundings,
        where the other side is more accurate than that), else "";
      excess: the larger typical error over the other's (or that floor; versus_floor);
      floor_roundings: that floor, in roundings;
      versus: what the excess is over: "other" (the more accurate side), "floor", or
        "legit" where `legit` is given (elementwise magnitudes of a correct computation's
        error in this dtype: the reference's own, end to end over the spread's weight
        points, ModelHarness.legit_error; a small tensor's layer alone, stage_legit) and
        its typical error is the largest of the three: a side that is merely luckier than
        a correct computation is no reference;
      dtype: the checked dtype's name (which truth, which hint, in the notes);
      impl_scale: the implementation's least-squares scale error against the truth,
        <e - t, t> / <t, t> (e for a result t (1 + e));
      impl_rms: its root-mean-square relative error |e - t| / |t| (>= |impl_scale|; equal
        where all of its error is a scale);
      scale_limit: SCALE_LIMIT x max(the framework's rms relative error |a - t| / |t|,
        sqrt(impl_rms^2 - impl_scale^2), one rounding); scaled: |impl_scale| > scale_limit.
    """
    floor_roundings = precision_floor(roundings)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return None
    w = np.broadcast_to(tol, truth.shape)
    keep = (w > 0) & np.isfinite(a) & np.isfinite(e)
    n = int(np.count_nonzero(keep))
    if n == 0 or (n < PRECISION_MIN_ELEMENTS and legit is None):
        return None
    lg = None if legit is None else np.broadcast_to(legit, truth.shape)
    if n == keep.size:  # the usual case: no element left out, no masked copies
        a, e, t, w = a.ravel(), e.ravel(), truth.ravel(), w.ravel()
        lg = None if lg is None else lg.ravel()
    else:
        a, e, t, w = a[keep], e[keep], truth[keep], w[keep]
        lg = None if lg is None else lg[keep]
    if n < PRECISION_MIN_ELEMENTS:  # too few for a typical error: the scale verdict alone
        scale = _scale_verdict(a, e, t, lg, dtype)
        return None if scale is None else dict(_NO_BITS, n=n, dtype=dtype.name, **scale)
    err_a = _typical(_scaled_err(a, t, w))
    err_e = _typical(_scaled_err(e, t, w))
    err_l = 0.0 if lg is None else _typical(np.divide(lg, w, dtype=np.float64))
    floor = np.abs(t)
    floor *= float(np.finfo(dtype).eps) / 2
    floor = _typical(np.divide(floor, w, out=floor))
    if floor == 0:  # most of the truth is exactly zero: no scale to measure bits on
        return None
    p = int(np.finfo(dtype).nmant) + 1

    def bits(err: float) -> float:
        return p - max(0.0, math.log2(err / floor)) if err > 0 else float(p)

    scale = _scale_verdict(a, e, t, None, dtype)  # its own scatter speaks for a correct one
    ref = max(min(err_a, err_e), floor_roundings * floor, err_l)
    versus = "other" if ref == min(err_a, err_e) else "legit" if ref == err_l else "floor"
    worse, excess = "", max(err_a, err_e) / ref
    if excess > PRECISION_RATIO_LIMIT:
        worse = "against" if err_a > err_e else "impl"
    ratio = err_a / err_e if err_e > 0 else (math.inf if err_a > 0 else NAN)
    return dict(
        against_bits=bits(err_a),
        impl_bits=bits(err_e),
        precision_ratio=ratio,
        worse=worse,
        excess=excess,
        versus_floor=versus == "floor",
        versus=versus,
        floor_roundings=floor_roundings,
        mantissa=p,
        n=n,
        dtype=dtype.name,
        **scale,
    )


# precision_stats' fields that a tensor of fewer than PRECISION_MIN_ELEMENTS elements has no
# value for: no typical error, no bits; only its scale is judged.
_NO_BITS = dict(
    against_bits=NAN, impl_bits=NAN, precision_ratio=NAN, worse="", excess=NAN,
    versus_floor=False, versus="", floor_roundings=NAN, mantissa=NAN,
)  # fmt: skip


def _scale_verdict(a, e, t, legit, dtype) -> dict | None:
    """The scale verdict, on the implementation only (None where the truth is all zeros):
    the other side is the comparator whose own dispersion says how far a correct result's
    scale may wander. With few elements (a loss, a bias of 6 channels) that is the whole
    precision verdict (one value's error against the truth is its scale), the
    implementation's scatter about its scale says little, and a correct computation's own
    error (`legit`: end to end, or a small tensor's layer alone) joins the other side's:
    one framework's value may be correctly rounded by luck."""
    tt = float(np.dot(t, t))
    if tt == 0:
        return None
    de, da = e - t, a - t
    with np.errstate(over="ignore"):  # a grossly wrong result: inf, which the allowance fails
        impl_scale = float(np.dot(de, t)) / tt
        impl_rms = math.sqrt(float(np.dot(de, de)) / tt)
        d_against = math.sqrt(float(np.dot(da, da)) / tt)
        d_legit = 0.0 if legit is None else math.sqrt(float(np.dot(legit, legit)) / tt)
    # What is left of its error once the best scale is taken out: a legitimate computation
    # that scatters (a cancelling sum, a long left-to-right one) may shift its scale by a
    # share of that, a constant factor adds nothing to it. (inf - inf: unbounded scatter.)
    residual = math.sqrt(max(impl_rms * impl_rms - impl_scale * impl_scale, 0.0))
    if math.isnan(residual):
        residual = math.inf
    one = float(np.finfo(dtype).eps) / 2
    scale_limit = SCALE_LIMIT * max(d_against, d_legit, residual, one)
    return dict(
        impl_scale=impl_scale,
        impl_rms=impl_rms,
        scale_limit=scale_limit,
        scaled=abs(impl_scale) > scale_limit,
    )


def _blank(shape: tuple, n: int) -> dict:
    return {
        "n": n, "shape": shape, "max_abs_err": NAN, "max_rel_err": NAN,
        "mean_abs_err": NAN, "max_ulp": NAN, "worst_index": "", "against_at_worst": NAN,
        "impl_at_worst": NAN, "tol_at_worst": NAN, "budget_used": NAN,
        "budget_q99": NAN, "n_bad": NAN, "vacuous": False, "passed": False,
        "status": "fail", "note": "", "against_err_vs_truth": NAN,
        "impl_err_vs_truth": NAN, "closer_to_truth": "", "mismatch_kind": "",
        "against_bits": NAN, "impl_bits": NAN, "precision_ratio": NAN, "precision_floor": NAN,
        "impl_scale": NAN, "impl_rms": NAN, "scale_limit": NAN,
    }  # fmt: skip


def compare_arrays(
    actual,
    expected,
    tolerance,
    *,
    truth=None,
    expect_zero=False,
    truth_zero=False,
    brief=False,
    against="against",
    roundings=0,
    precision=True,
    legit=None,
) -> dict:
    """Compare `actual` with `expected` element by element: shape, then dtype, then values.

    `actual` is the other side (a framework's result in stage and end-to-end checks),
    `expected` the implementation under test's; `against` names the other side (the
    record's `against`, e.g. "torch") in the notes and in closer_to_truth, where the
    implementation under test is "impl". The result's against_* fields hold `actual`'s
    values, its impl_* fields `expected`'s.

    `tolerance` is an absolute allowance per element (broadcast to `expected`; 0 means
    exact). An element's budget is |actual - expected| / tolerance; the check passes
    when every budget is <= 1 and the check is not vacuous (both sides within tolerance
    of zero everywhere), unless `expect_zero` says zeros are the right answer, or the
    float64 truth is exactly zero at every element (`truth_zero`, or a `truth` of zeros):
    then zero is what the maths gives here (a dead ReLU, a zero bias, a class no label
    has) and the check passes, declared in its note; where the truth is not zero, two
    sides of zeros stay "vacuous" (a failure: the check could not have failed).
    `truth` (float64, expected's shape) tells which side is nearer the exact result
    (closer_to_truth: `against`, "impl" or "tie"), and where it exists the effective
    precision verdict is applied (precision_stats; `roundings`: the length k of the
    expression's longest sum, Tolerance.roundings, which sets its floor), unless
    `precision` is False (waived: the truth then only says where zeros are right and which
    side is nearer it); `legit`: a correct computation's elementwise error magnitudes, the
    verdict's least reference (precision_stats).
    brief=True leaves out the ULP distance, the 99th-percentile budget and the truth
    comparison (NaN / blank): for checks that only localise (mutants, variants) and are
    not reported one by one. Returns record fields as plain Python values.
    """
    _refuse_lossy(tolerance, "tolerance")  # before the shape check, which returns early
    against = str(against) or "against"
    actual = _as_real_array(actual, "actual")
    expected = _as_real_array(expected, "expected")
    shape = tuple(int(s) for s in expected.shape)
    if truth is not None:
        truth = _as_real_array(truth, "truth")
    out = _blank(shape, int(expected.size))
    if actual.shape != expected.shape:
        out["note"] = f"shape mismatch: {against} {actual.shape}, impl {expected.shape}"
        out["mismatch_kind"] = "shape"
        return out
    # After the shape check: the truth has the right shape, which a wrongly shaped result
    # does not (a recorded failure, not a crash).
    if truth is not None and (truth.dtype != np.float64 or truth.shape != expected.shape):
        raise ValueError(f"truth must be float64 of shape {shape}, got {truth.dtype} {truth.shape}")
    if actual.dtype != expected.dtype:
        out["note"] = f"dtype mismatch: {against} {actual.dtype}, impl {expected.dtype}"
        out["mismatch_kind"] = "dtype"
        return out
    if expected.size == 0:
        out.update(status="error", note="empty", mismatch_kind="error")
        return out
    # After the shape check: a wrongly shaped result is a recorded failure, not a crash.
    tol = _tolerance(tolerance, shape)

    # Views where the dtype allows, one scratch buffer: at the size of `patches` every
    # temporary costs more in page faults than in arithmetic.
    a = np.asarray(actual, dtype=np.float64).reshape(shape)
    e = np.asarray(expected, dtype=np.float64).reshape(shape)
    d = _abs_err(a, e)
    scratch = np.empty(shape)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        abs_e = np.abs(e, out=scratch)
        # Vacuous: both sides within tolerance of zero everywhere; |expected| usually settles
        # it, so |actual| is only looked at when |expected| is within tolerance.
        vacuous = bool(np.all(abs_e <= tol)) and bool(np.all(np.abs(a) <= tol))
        max_abs, mean_abs = float(d.max()), float(d.mean())  # a huge sum may overflow: inf
        # An infinite error (NaN or inf involved) is an infinite relative error; otherwise a
        # NaN can only be 0 / 0, two agreeing zeros, which fmax skips.
        max_rel = (
            math.inf
            if math.isinf(max_abs)
            else float(np.fmax.reduce(np.divide(d, abs_e, out=scratch), axis=None))
        )
        max_rel = 0.0 if math.isnan(max_rel) else max_rel
        budget = np.divide(d, tol, out=np.empty(shape))  # 0 / 0 where the tolerance is 0
        if not np.all(tol):
            budget[d == 0] = 0.0
    budget = budget.ravel()
    k = int(np.argmax(budget))  # first of equal maxima
    notes = []
    nan_a, nan_e = int(np.isnan(a).sum()), int(np.isnan(e).sum())
    if nan_a or nan_e:
        notes.append(f"NaN: {nan_a} in {against}, {nan_e} in impl (counted as mismatches)")

    budget_used = float(budget[k])
    unresolved = False
    truth_zero = bool(truth_zero) or (truth is not None and not np.any(truth))
    if vacuous and truth_zero and not expect_zero:
        status = "pass"
        exact = not np.any(a) and not np.any(e)
        notes.append(
            ("exactly zero on both sides" if exact else "both sides within tolerance of zero")
            + ", as the truth is exactly zero here (declared)"
        )
    elif (
        unresolved := vacuous
        and not expect_zero
        and truth is not None
        and bool(np.all(np.abs(truth) <= tol))
    ):
        # Not a zero the maths gives, but a value the dtype cannot resolve here: a sum that
        # cancels to below its own rounding allowance (a bias gradient summed over a batch).
        # The float64 check of the same tensor is the one that can tell it from zero, and the
        # precision verdict below still applies.
        status = "pass"
        i = np.unravel_index(int(np.argmax(np.abs(truth))), shape)
        notes.append(
            f"both sides within tolerance of zero, and so is the truth (largest "
            f"|truth| {abs(float(truth[i])):.3g}, allowed {float(tol[i]):.3g} there): the "
            "value cannot be told from zero at this dtype (declared"
            + ("; the float64 check tests it)" if actual.dtype == np.float32 else ")")
        )
    elif vacuous and not expect_zero:
        status = "vacuous"
        notes.append("both sides are within tolerance of zero: the check proves nothing")
    elif vacuous:
        status = "pass"
        notes.append("zeros expected")
    else:
        status = "pass" if budget_used <= 1 else "fail"

    worst = np.unravel_index(k, shape)
    out.update(
        max_abs_err=max_abs,
        max_rel_err=max_rel,
        mean_abs_err=mean_abs,
        max_ulp=NAN if brief else _max_ulp(actual, expected),
        worst_index=tuple(int(i) for i in worst),
        against_at_worst=float(a[worst]),
        impl_at_worst=float(e[worst]),
        tol_at_worst=float(tol[worst]),
        budget_used=budget_used,
        n_bad=int(np.count_nonzero(budget > 1)),
        # "higher": an actual element's budget, and no inf - inf interpolation. Last: it
        # reorders `budget` in place.
        budget_q99=NAN if brief else percentile(budget, 99, method="higher"),
        vacuous=vacuous,
        passed=status == "pass",
        status=status,
        mismatch_kind="value" if status == "fail" else "",
        note="; ".join(notes),
    )
    if precision and truth is not None and status in ("pass", "fail") and (not vacuous or unresolved):
        prec = precision_stats(a, e, truth, tol, actual.dtype, roundings, legit)
        if prec is not None:
            out.update(
                against_bits=prec["against_bits"],
                impl_bits=prec["impl_bits"],
                precision_ratio=prec["precision_ratio"],
                precision_floor=prec["floor_roundings"],
                impl_scale=prec["impl_scale"],
                impl_rms=prec["impl_rms"],
                scale_limit=prec["scale_limit"],
            )
            lines = [_precision_note(prec, against)] if prec["worse"] else []
            if prec["scaled"]:
                lines.append(_scale_note(prec, against))
            if lines:
                out["note"] = "; ".join(p for p in (out["note"], *lines) if p)
                if status == "pass":
                    out.update(status="fail", passed=False, mismatch_kind="precision")
    if truth is not None and not brief:
        err_a = float(_abs_err(a, truth, out=scratch).max())
        err_e = float(_abs_err(e, truth, out=scratch).max())
        closer = "tie" if err_a == err_e else against if err_a < err_e else "impl"
        out.update(
            against_err_vs_truth=err_a,
            impl_err_vs_truth=err_e,
            closer_to_truth=closer,
        )
    return out


def compare_check(
    c, *, against: str = "against", brief: bool = False, expect_zero: bool = False
) -> dict:
    """compare_arrays on one check's parts (a harness.Check, or anything with `actual`,
    `expected`, a `tolerance` with its `array` and `roundings`, `truth`, `truth_zero`,
    `precision` and `legit`):
    the one way a check reaches the comparison, so that none of them is left behind (the
    precision floor's k, the declared zero truth)."""
    return compare_arrays(
        c.actual,
        c.expected,
        c.tolerance.array,
        truth=getattr(c, "truth", None),
        expect_zero=expect_zero,
        truth_zero=getattr(c, "truth_zero", False),
        brief=brief,
        against=against,
        roundings=getattr(c.tolerance, "roundings", 0),
        precision=getattr(c, "precision", True),
        legit=getattr(c, "legit", None),
    )


def _precision_note(prec: dict, against: str) -> str:
    """The failure note of a side computed at markedly fewer bits than the other."""
    worse = prec["worse"]
    name, other = ("impl", against) if worse == "impl" else (against, "impl")
    p, mine, theirs = (
        prec["mantissa"],
        prec[f"{worse}_bits"],
        prec["impl_bits" if worse == "against" else "against_bits"],
    )
    dtype = prec["dtype"]
    versus = {
        "floor": f"{prec['floor_roundings']:.3g} roundings of the exact result",
        "legit": f"the reference's own {dtype} error at the spread's weight points",
    }.get(prec["versus"], f"{other}'s")
    return (
        f"precision: {name} computed at about {mine:.0f} bits where the dtype gives {p} "
        f"and {other} {theirs:.0f} (its typical error against {truth_name(dtype)} is "
        f"{prec['excess']:.3g}x {versus}; legitimate orders of summation stay within "
        f"{PRECISION_LEGIT_MAX:g}x, the limit is {PRECISION_RATIO_LIMIT:g}x): "
        + low_precision_hint(dtype)
    )


def _scale_note(prec: dict, against: str) -> str:
    """The failure note of an implementation whose result is scaled against the truth."""
    dtype = prec["dtype"]
    return (
        f"scale: impl is scaled by 1 {prec['impl_scale']:+.3g} against {truth_name(dtype)} "
        f"(least squares), beyond {prec['scale_limit']:.3g}, {SCALE_LIMIT:g}x the larger of "
        f"{against}'s root-mean-square relative error, the reference's own {dtype} error "
        "(a loss or a bias) and impl's scatter about its scale: "
        "rounding scatters, a constant factor (a wrong scale, a mean for a sum, a learning "
        "rate) scales"
    )


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return NAN


def format_mismatch(record: dict, reproduce: str) -> str:
    """The failure message for one record, in the manner of torch.testing.assert_close."""
    r = record.get
    where = ", ".join(str(p) for p in (r("equation", ""), r("mode", "")) if p)
    head = f"`{r('tensor', '?')}`" + (f" ({where})" if where else "")
    pair = f"{r('impl', '?')} and {r('against', '?')} [{r('dtype', '?')}]"
    # Whose is whose: "impl reference" (the implementation under test), "torch" (the other).
    impl, other = f"impl {r('impl') or '?'}", str(r("against") or "against")
    status = r("status", "")
    if status == "vacuous":
        lines = [
            (
                f"{head} proves nothing between {pair}: both sides are indistinguishable from "
                f"zero ({impl} and {other} within the tolerance of zero at every element), so "
                "the comparison proves nothing"
            )
        ]
    elif status == "error":
        lines = [f"{head} could not be compared between {pair}"]
    elif status == "absent":
        lines = [f"{head} was not provided by {impl} [{r('dtype', '?')}]: nothing to compare"]
    else:
        lines = [f"{head} differs between {pair}"]

    n, n_bad = _num(r("n")), _num(r("n_bad"))
    if not math.isnan(n_bad) and n > 0:
        lines.append(f"Mismatched elements: {int(n_bad)} / {int(n)} ({100 * n_bad / n:.1f}%)")
        theirs, ours = _num(r("against_at_worst")), _num(r("impl_at_worst"))
        diff = 0.0 if theirs == ours else abs(theirs - ours)

        def g(key_or_value, spec=".3g"):
            value = r(key_or_value) if isinstance(key_or_value, str) else key_or_value
            return number_text(value, "n/a", spec)

        lines += [
            f"Greatest budget used: {g('budget_used')} (error / tolerance) at index "
            f"{r('worst_index')}: {impl}: {g(ours, '.9g')}, {other}: {g(theirs, '.9g')}, "
            f"|diff| {g(diff, '.2g')}, allowed {g('tol_at_worst', '.2g')}",
            f"Greatest absolute difference: {g('max_abs_err')} (mean {g('mean_abs_err')})",
            f"Greatest relative difference: {g('max_rel_err')}",
            f"Greatest ULP distance: {g('max_ulp', '.0f')}",
        ]
    closer = r("closer_to_truth")
    if closer:
        lines.append(
            f"Closer to the float64 truth: {impl if closer == 'impl' else closer} (error of "
            f"{impl} {number_text(r('impl_err_vs_truth'), 'n/a')}, of {other} "
            f"{number_text(r('against_err_vs_truth'), 'n/a')})"
        )
    for label, key in (
        ("Tolerance rule", "tolerance_rule"),
        ("Note", "note"),
        ("Error", "error"),
    ):
        if r(key):
            lines.append(f"{label}: {r(key)}")
    lines.append(f"reproduce: {reproduce}")
    return "\n".join(lines)
