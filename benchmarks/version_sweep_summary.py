"""Summarise the reports of benchmarks/version_sweep.sh: per report directory, the
comparisons, the failures (tensor, mode, framework, dtype, budget, kind) and the largest
budget used and precision excess per framework.

    python benchmarks/version_sweep_summary.py /tmp/sweep-tf220 /tmp/sweep-tf220-slow.jsonl ...

A directory is a report (comparisons.csv); a .jsonl file the log of benchmarks/sweep_log.py
(the slow sweeps' direct comparisons).

The precision excess is the quantity the precision check compares with
PRECISION_RATIO_LIMIT (parity_tests/metrics.py precision_stats): the worse side's typical
error over max(the better side's, PRECISION_FLOOR_ROUNDINGS floors). The record keeps the
bits, not the excess; from bits b = p - log2(typical / floor) (capped at p, where the side
is under one rounding and the floor term decides anyway):
    excess = 2 ** (p - min_bits) / max(2 ** (p - max_bits), PRECISION_FLOOR_ROUNDINGS).
It leaves out the verdict's other references (the floor of a long sum, a correct
computation's own error end to end), so it may exceed the limit on a check that passed:
the record's status is the verdict.
"""

import json
import sys

import numpy as np
import pandas as pd

from parity_tests.metrics import PRECISION_FLOOR_ROUNDINGS, PRECISION_RATIO_LIMIT
from reports.writer import load_report

MANTISSA = {"float64": 53, "float32": 24, "float16": 11, "bfloat16": 8}


def excess(row) -> float:
    """The precision check's ratio, recomputed from the record's bits (see the module
    docstring); NaN where the record has no precision measurement."""
    p = MANTISSA.get(str(row["dtype"]))
    a, i = row["against_bits"], row["impl_bits"]
    if p is None or not (np.isfinite(a) and np.isfinite(i)):
        return float("nan")
    return 2.0 ** (p - min(a, i)) / max(2.0 ** (p - max(a, i)), PRECISION_FLOOR_ROUNDINGS)


def summarise(report_dir: str) -> None:
    df, _ = load_report(report_dir)
    df["excess"] = df.apply(excess, axis=1)
    print(f"## {report_dir}: {len(df)} records, status {df['status'].value_counts().to_dict()}")
    bad = df[~df["status"].isin(["pass", "vacuous"])]
    for _, r in bad.iterrows():
        print(
            f"  FAIL {r['check']} tensor={r['tensor']} mode={r['mode']} against={r['against']}"
            f" dtype={r['dtype']} model={r['model']} budget={r['budget_used']:.3g}"
            f" kind={r['mismatch_kind']} bits(against/impl)={r['against_bits']:.1f}/"
            f"{r['impl_bits']:.1f} excess={r['excess']:.1f} note={str(r['note'])[:200]}"
        )
    comp = df[df["against"].isin(["torch", "tensorflow"])]
    for (fw, dt), g in comp.groupby(["against", "dtype"]):
        b = g["budget_used"].replace([np.inf], np.nan)
        top = g.loc[b.idxmax()] if b.notna().any() else None
        m = g["excess"]
        topx = g.loc[m.idxmax()] if m.notna().any() else None
        line = f"  {fw} {dt}: {len(g)} comparisons"
        if top is not None:
            line += (
                f"; max budget {b.max():.3g} ({top['tensor']} {top['mode']} {top['model'] or 'article'})"
            )
        if topx is not None:
            line += (
                f"; max bits-based precision excess {m.max():.2f} of {PRECISION_RATIO_LIMIT:g}"
                f" ({topx['tensor']} {topx['mode']} {topx['model'] or 'article'},"
                f" {int(m.notna().sum())} measured)"
            )
        if "impl_scale" in g:  # the scale verdict: |impl_scale| over its limit
            r = (g["impl_scale"].abs() / g["scale_limit"]).replace([np.inf], np.nan)
            if r.notna().any():
                at = g.loc[r.idxmax()]
                line += (
                    f"; max |scale| {r.max():.2f} of its limit ({at['tensor']} {at['mode']}"
                    f" {at['model'] or 'article'}, {int(r.notna().sum())} measured)"
                )
        print(line)


def summarise_log(path: str) -> None:
    """The same for a sweep_log.py log: its rows name the place in `where`."""
    with open(path) as f:
        df = pd.DataFrame([json.loads(line) for line in f])
    df = df[df["where"] != ""]  # a log of before sweep_log.py kept only the sweeps' calls
    df["excess"] = df.apply(excess, axis=1)
    print(f"## {path}: {len(df)} comparisons, status {df['status'].value_counts().to_dict()}")
    bad = df[~df["status"].isin(["pass", "vacuous"])]
    for _, r in bad.iterrows():
        print(
            f"  FAIL {r['where']} budget={r['budget_used']:.3g} kind={r['mismatch_kind']}"
            f" bits(against/impl)={r['against_bits']:.1f}/{r['impl_bits']:.1f} excess={r['excess']:.1f}"
        )
    for (fw, dt), g in df.groupby(["against", "dtype"]):
        b = g["budget_used"].replace([np.inf], np.nan)
        line = f"  {fw} {dt}: {len(g)} comparisons"
        if b.notna().any():
            line += f"; max budget {b.max():.3g} ({g.loc[b.idxmax(), 'where']})"
        m = g["excess"]
        if m.notna().any():
            line += (
                f"; max bits-based precision excess {m.max():.2f} of {PRECISION_RATIO_LIMIT:g}"
                f" ({g.loc[m.idxmax(), 'where']}, {int(m.notna().sum())} measured)"
            )
        if "impl_scale" in g:
            r = (g["impl_scale"].abs() / g["scale_limit"]).replace([np.inf], np.nan)
            if r.notna().any():
                line += f"; max |scale| {r.max():.2f} of its limit ({g.loc[r.idxmax(), 'where']})"
        print(line)


if __name__ == "__main__":
    for d in sys.argv[1:]:
        summarise_log(d) if d.endswith(".jsonl") else summarise(d)
