"""A pytest plugin for benchmarks/version_sweep.sh: logs every comparison the slow sweeps
make (they compare directly, not through the report) to the JSON-lines file $SWEEP_LOG,
so the largest budget used and precision excess of a whole sweep can be read back
(benchmarks/version_sweep_summary.py --log).

    SWEEP_LOG=/tmp/x.jsonl python -m pytest -p benchmarks.sweep_log ...

It wraps parity_tests.metrics.compare_arrays, which Harness.budgets and
ModelHarness.budgets import at call time, and logs only their calls (the comparisons of the
seed, batch and generated-network sweeps, where no check may fail; the mutant and precision
tests' planted mistakes, which must fail, go through other callers); the comparison's
place ("<label> <tensor> <framework> <dtype> <mode>") is their local `where`, read from the
caller's frame. Nothing else changes: the wrapper returns compare_arrays' result untouched.
"""

import json
import os
import sys

import parity_tests.metrics as metrics

_compare = metrics.compare_arrays
_FIELDS = (
    "against", "status", "mismatch_kind", "budget_used", "against_bits", "impl_bits",
    "impl_scale", "scale_limit",
)  # fmt: skip


def _logged(actual, expected, tolerance, **kwargs):
    out = _compare(actual, expected, tolerance, **kwargs)
    path = os.environ.get("SWEEP_LOG")
    caller = sys._getframe(1)
    if caller.f_code.co_name == "compare_check":  # budgets compare a Check through it
        caller = caller.f_back
    # Only the sweeps' own comparisons (no false alarm allowed there): not the planted
    # mistakes of the mutant and precision tests, which must fail.
    if path and caller.f_code.co_name == "budgets":
        where = caller.f_locals.get("where", "")
        row = {k: out.get(k, kwargs.get(k)) for k in _FIELDS}
        row.update(where=str(where), dtype=str(getattr(actual, "dtype", "")))
        with open(path, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
    return out


metrics.compare_arrays = _logged
