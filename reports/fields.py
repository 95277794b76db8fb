"""The record: one comparison of one tensor between two implementations."""

from __future__ import annotations

import json
import math
from pathlib import PurePath

import numpy as np

RECORD_FIELDS = [
    "check", "equation", "step", "tensor", "quantity", "mode", "impl", "against",
    "dtype", "device", "shape", "n", "max_abs_err", "max_rel_err", "mean_abs_err",
    "max_ulp", "worst_index", "against_at_worst", "impl_at_worst", "tol_at_worst",
    "tolerance_rule", "budget_used", "budget_q99", "n_bad", "status", "passed",
    "vacuous", "closer_to_truth", "against_err_vs_truth", "impl_err_vs_truth",
    "outlier", "init_scheme", "reduction", "seed", "data_source", "versions",
    "error", "note", "explanation", "suspect", "mismatch_kind", "first_diverging",
    "disagreeing", "disagreeing_budgets", "model", "kinks", "kinks_taken",
    "against_bits", "impl_bits", "precision_ratio", "train_step", "optimiser",
    "against_loss", "impl_loss", "precision_floor", "impl_scale", "impl_rms", "scale_limit",
]  # fmt: skip
# Whose is whose: `impl` is the implementation under test, `against` the other side (a
# framework's name in stage and end-to-end records). The *_at_worst and *_err_vs_truth
# fields say which side they hold by name; closer_to_truth is the record's `against`,
# "impl" or "tie".
# What used to be packed into `note` and parsed back, now fields of their own (`note` holds
# human text only, read by no code):
# - explanation: the mismatch explainer's text (parity_tests.explain.Explanation's str(), "no
#   simple fit", or "explainer failed: ..."), on a failing comparison;
# - suspect: its short machine name (factor, flipped_kernel, ...; "" when nothing fits);
# - mismatch_kind: how a comparison disagrees, one of MISMATCH_KINDS ("" when it agrees or
#   its producer does not say, e.g. the record of a test that failed outside a comparison;
#   "precision": within the allowance, but one side computed at markedly fewer bits);
# and, on detection records (parity_tests/detection.py), from the localised finding:
# - first_diverging: the first tensor, in forward/backward order, that disagrees ("": none);
# - disagreeing: every tensor that disagrees, comma-separated, forward/backward order;
# - disagreeing_budgets: for each of those, in the same order, its budget used (3
#   significant digits, "inf" under an exact rule) or, where there is none, its
#   mismatch kind (shape, dtype, error).
# On the records of a spec-built network (parity_tests/test_model.py):
# - model: the preset's name or the spec string ("" on the article's own checks);
# - kinks, kinks_taken: end to end, the ReLU inputs and max-pool windows upstream of the
#   tensor that lie within rounding of their kink, and how many of them the framework took
#   the other way (parity_tests/kinks.py); empty where no kinked layer reaches the tensor.
# On a comparison with a float64 truth (float32 checks), the effective precision
# (parity_tests/metrics.py, docs/tolerance.md "Effective precision"):
# - against_bits, impl_bits: the bits each side's result carries, judged by its typical
#   (90th-percentile) error against the truth, normalised by the allowance, beside the
#   other side's: the dtype's mantissa (24 in float32) minus log2 of how many times the
#   better side's (or one rounding's, if larger) typical error it is; NaN where not measured;
# - precision_ratio: the framework's typical error over the implementation's;
# - precision_floor: the floor the verdict used, in single roundings of the exact result,
#   max(8, sqrt(k) / 8) for the tensor's longest sum of k terms (NaN where not measured;
#   a report written before it has none: read as the fixed 8);
# - impl_scale: the implementation's least-squares scale error against the truth,
#   <impl - t, t> / <t, t> (e for a result t (1 + e)); impl_rms: its root-mean-square
#   relative error |impl - t| / |t| (>= |impl_scale|, equal when all of the error is a
#   scale); scale_limit: what impl_scale may reach, 5x the largest of the other side's
#   root-mean-square relative error, sqrt(impl_rms^2 - impl_scale^2) and one rounding
#   (docs/tolerance.md, "Scale").
# On the records of an optimiser or a K-step training run (parity_tests/test_optim.py,
# test_trajectory.py; docs/optimisers.md):
# - train_step: the training step, 1..K, the record is about (NaN on one-step checks: the
#   default run's records carry none and compare as before);
# - optimiser: the --parity-optim spec, e.g. "adam(lr=0.000976562)" ("" elsewhere);
# - against_loss, impl_loss: on a K-step run's records, the loss E of step train_step's
#   forward pass (before that step's update) in the framework's own loop and in the
#   implementation under test's (the reference's, or a user's rule's) run; every record
#   of one run and step carries the same two numbers (the report's loss curves,
#   reports/trajectory.py). NaN elsewhere, and where a run stopped before the step.
# Fields added after the first reports were written: a comparisons.csv without them still
# loads (reports.writer.load_report reads a missing one as "").
OPTIONAL_FIELDS = (
    "explanation", "suspect", "mismatch_kind", "first_diverging", "disagreeing",
    "disagreeing_budgets", "model", "kinks", "kinks_taken", "against_bits", "impl_bits",
    "precision_ratio", "train_step", "optimiser", "against_loss", "impl_loss", "precision_floor",
    "impl_scale", "impl_rms", "scale_limit",
)  # fmt: skip
# Columns renamed since the first reports (old name -> new name): "actual" was the other
# side, "expected" the implementation under test. reports.writer.load_report reads an older
# comparisons.csv through this (and its closer_to_truth values "actual" / "expected").
RENAMED_FIELDS = {
    "actual_at_worst": "against_at_worst",
    "expected_at_worst": "impl_at_worst",
    "actual_err_vs_truth": "against_err_vs_truth",
    "expected_err_vs_truth": "impl_err_vs_truth",
}
MISMATCH_KINDS = ("shape", "dtype", "value", "precision", "error")

# Missing numbers become NaN (not "") so the CSV columns stay numeric.
NUMERIC_FIELDS = frozenset({
    "n", "max_abs_err", "max_rel_err", "mean_abs_err", "max_ulp", "against_at_worst",
    "impl_at_worst", "tol_at_worst", "budget_used", "budget_q99", "n_bad",
    "against_err_vs_truth", "impl_err_vs_truth", "kinks", "kinks_taken", "against_bits",
    "impl_bits", "precision_ratio", "train_step", "against_loss", "impl_loss", "precision_floor",
    "impl_scale", "impl_rms", "scale_limit",
})  # fmt: skip
# A record that never said it passed must not look green: missing flags are False.
BOOL_FIELDS = frozenset({"passed", "vacuous"})
# Worst first. "absent": a name the implementation under test did not provide (a finding,
# not a comparison: mode "contract", against "", no numbers, passed False).
STATUSES = ("error", "fail", "vacuous", "absent", "pass")


def _plain(value, key: str):
    """One value as a JSON-safe Python scalar or string."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return math.nan if key in NUMERIC_FIELDS else ""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        # str() of a tuple uses repr(), which spells numpy ints as np.int64(2).
        items = ", ".join(repr(_plain(v, key)) for v in value)
        if isinstance(value, list):
            return f"[{items}]"
        return f"({items},)" if len(value) == 1 else f"({items})"
    if isinstance(value, dict):
        return json.dumps({str(k): _plain(v, key) for k, v in value.items()}, sort_keys=True)
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"record field {key!r}: cannot store {type(value).__name__} {value!r}")


def normalise_record(rec: dict) -> dict:
    """Return a copy with every field of RECORD_FIELDS, in order, as plain Python values.

    Records cross the pytest-xdist channel as JSON, where numpy scalars break.
    """
    unknown = sorted(set(rec) - set(RECORD_FIELDS))
    if unknown:
        raise ValueError(f"unknown record field(s): {', '.join(map(repr, unknown))}")
    out = {}
    for key in RECORD_FIELDS:
        if key in rec:
            out[key] = _plain(rec[key], key)
        elif key in BOOL_FIELDS:
            out[key] = False
        else:
            out[key] = math.nan if key in NUMERIC_FIELDS else ""
    return out


def number_text(x, na: str = "", spec: str = ".3g") -> str:
    """A number as report text (three significant digits by default); a missing value
    (None, NA, NaN) or anything that is not a number as `na`. The one number formatter of
    the reports."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return na
    return na if math.isnan(value) else format(value, spec)
