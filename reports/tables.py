"""Records as pandas tables: the full frame, outliers, the summary, the worst lines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.escape import terminal_text
from reports.fields import (
    BOOL_FIELDS,
    NUMERIC_FIELDS,
    RECORD_FIELDS,
    STATUSES,
    normalise_record,
    number_text,
)

SORT_KEYS = ("check", "tensor", "mode", "against", "dtype", "impl")
GROUP_KEYS = ["tensor", "against", "dtype", "mode", "impl"]
SUMMARY_COLUMNS = [
    "tensor",
    "equation",
    "against",
    "dtype",
    "mode",
    "impl",
    "status",
    "checks",
    "budget_used",
    "max_abs_err",
    "max_rel_err",
    "max_ulp",
    "outlier",
    "worst_check",
]
_COUNTS = (
    "n",
    "n_bad",
    "max_ulp",
)  # integers unless NaN-free ints are impossible (inf)


def typed_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Give the record columns stable dtypes, so a frame read back from CSV equals the original."""
    df = df.copy()
    for col in NUMERIC_FIELDS:
        values = pd.to_numeric(df[col], errors="coerce").astype("float64")
        finite = values.dropna()
        if (
            col in _COUNTS
            and np.isfinite(finite).all()
            and (finite.abs() < 2**53).all()
            and (finite == finite.round()).all()
        ):
            values = values.astype("Int64")  # 576, not 576.0, in the CSV
        df[col] = values
    for col in BOOL_FIELDS:
        df[col] = df[col].map(lambda v: v is True or v == "True" or v == 1).astype(bool)
    for col in set(RECORD_FIELDS) - NUMERIC_FIELDS - BOOL_FIELDS - {"seed"}:
        df[col] = df[col].fillna("").astype(str)
    return df


def records_frame(records) -> pd.DataFrame:
    """All records, normalised, columns in RECORD_FIELDS order, rows in a stable order."""
    rows = [normalise_record(r) for r in records]
    rows.sort(key=lambda r: tuple(str(r[k]) for k in SORT_KEYS))  # sort() is stable
    return typed_frame(pd.DataFrame(rows, columns=RECORD_FIELDS))


def _farthest(errs: dict) -> str:
    name = max(errs, key=errs.get)
    others = max(v for k, v in errs.items() if k != name)
    return name if errs[name] > 2 * others else "none"


def fill_outliers(df: pd.DataFrame) -> pd.DataFrame:
    """Name, per float32 tensor, which of reference / torch / tensorflow strays from float64.

    Only where both frameworks were compared with truth errors; "none" when no side is
    more than twice as far from the truth as each of the others, "" when undecidable.
    """
    df = df.copy()
    df["outlier"] = ""
    usable = (
        (df["dtype"] == "float32")
        & df["against"].isin(["torch", "tensorflow"])
        & df["actual_err_vs_truth"].notna()
        & df["expected_err_vs_truth"].notna()
    )
    keys = ["impl", "tensor", "mode", "dtype", "seed"]
    for _, g in df[usable].groupby(keys, sort=False, dropna=False):
        torch, tf = g[g["against"] == "torch"], g[g["against"] == "tensorflow"]
        if torch.empty or tf.empty:
            continue
        errs = {
            # Both rows compare against the same reference output: take the larger.
            "reference": float(g["expected_err_vs_truth"].max()),
            "torch": float(torch["actual_err_vs_truth"].max()),
            "tensorflow": float(tf["actual_err_vs_truth"].max()),
        }
        df.loc[g.index, "outlier"] = _farthest(errs)
    return df


def by_severity(df: pd.DataFrame) -> pd.DataFrame:
    """Rows worst first: error, fail, vacuous, pass; then the largest budget; stable."""
    rank = [STATUSES.index(s) if s in STATUSES else 0 for s in df["status"]]
    budget = [-b if not pd.isna(b) else math.inf for b in df["budget_used"]]
    order = sorted(range(len(df)), key=lambda i: (rank[i], budget[i]))
    return df.iloc[order]


def summary_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per tensor x against x dtype x mode x impl, worst first."""
    rows = []
    for key, g in by_severity(df).groupby(GROUP_KEYS, sort=False, dropna=False):
        worst = g.iloc[0]
        rows.append(
            {
                **dict(zip(GROUP_KEYS, key)),
                "equation": ", ".join(sorted(set(g["equation"]) - {""})),
                "status": worst["status"],
                "checks": len(g),
                "budget_used": g["budget_used"].max(),
                "max_abs_err": g["max_abs_err"].max(),
                "max_rel_err": g["max_rel_err"].max(),
                "max_ulp": g["max_ulp"].max(),
                "outlier": ", ".join(sorted(set(g["outlier"]) - {""})),
                "worst_check": worst["check"],
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def terminal_lines(df: pd.DataFrame, n: int = 10) -> list[str]:
    """The worst n comparisons, one line each (control characters shown as \\xNN)."""
    lines = []
    for _, r in by_severity(df).head(n).iterrows():
        line = (
            f"{(r['status'] or 'error').upper()} {r['tensor']} {r['against']} {r['dtype']} "
            f"{r['mode']} budget {number_text(r['budget_used'], 'n/a')} at {r['worst_index'] or 'n/a'} "
            f"abs {number_text(r['max_abs_err'], 'n/a')} rel {number_text(r['max_rel_err'], 'n/a')}"
        )
        if r["impl"] not in ("", "reference"):
            line += f" [{r['impl']}]"
        if r["status"] != "pass" and (r["error"] or r["note"]):
            line += f" | {r['error'] or r['note']}"
        lines.append(terminal_text(line))  # record strings: no escape sequences, one line
    return lines
