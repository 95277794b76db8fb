"""Compare two runs' records: what broke, what vanished, whose budget grew."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.tables import by_severity

KEY = ["check", "tensor", "mode", "against", "dtype", "impl"]
REGRESSIONS = ("new failure", "vanished", "budget grew")
CHANGES = REGRESSIONS + ("fixed", "new check")  # display order
DIFF_COLUMNS = KEY + [
    "change",
    "status_before",
    "status_after",
    "budget_before",
    "budget_after",
    "ratio",
]


def _index(df: pd.DataFrame) -> dict:
    """key -> (all passed, worst status, max budget); a key may occur more than once."""
    out = {}
    for _, r in by_severity(df).iterrows():  # worst first, so the first status is the worst
        k = tuple(str(r[c]) for c in KEY)
        b = float(r["budget_used"]) if not pd.isna(r["budget_used"]) else math.nan
        if k in out:
            p, s, b0 = out[k]
            out[k] = (p and bool(r["passed"]), s, float(np.fmax(b0, b)))
        else:
            out[k] = (bool(r["passed"]), str(r["status"]), b)
    return out


def diff_reports(
    baseline_df: pd.DataFrame,
    current_df: pd.DataFrame,
    factor: float = 10.0,
    floor: float = 1e-3,
) -> pd.DataFrame:
    """One row per changed check, regressions first.

    "budget grew" means current budget > factor * max(baseline budget, floor): the floor
    keeps a budget of 1e-9 growing to 1e-7 from counting as a regression.
    """
    if not factor > 0 or not floor >= 0:
        raise ValueError(f"factor must be > 0 and floor >= 0, got factor={factor}, floor={floor}")
    base, cur = _index(baseline_df), _index(current_df)
    rows = []
    for k in sorted(set(base) | set(cur)):
        (p0, s0, b0), (p1, s1, b1) = (
            base.get(k, (None, "", math.nan)),
            cur.get(k, (None, "", math.nan)),
        )
        denom = float(np.fmax(b0, floor))  # NaN baseline -> floor
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(np.divide(b1, denom))
        if k not in cur:
            change = "vanished"
        elif k not in base:
            change = "new check"
        elif p0 and not p1:
            change = "new failure"
        elif p1 and not p0:
            change = "fixed"
        elif b1 > factor * denom:  # False for a NaN current budget
            change = "budget grew"
        else:
            continue
        rows.append([*k, change, s0, s1, b0, b1, ratio])
    diff = pd.DataFrame(rows, columns=DIFF_COLUMNS)
    order = sorted(range(len(diff)), key=lambda i: CHANGES.index(diff["change"].iat[i]))
    return diff.iloc[order].reset_index(drop=True)


def is_regression(diff_df: pd.DataFrame) -> bool:
    return bool(diff_df["change"].isin(REGRESSIONS).any())


def _g(x) -> str:
    return "" if pd.isna(x) else f"{x:.3g}"


def format_diff(diff_df: pd.DataFrame) -> str:
    """A plain-text table of the changes with the budget before, after and their ratio."""
    if diff_df.empty:
        return "No changes: every check kept its status and its budget within the factor."
    counts = diff_df["change"].value_counts()
    head = ", ".join(f"{int(counts[c])} {c}" for c in CHANGES if c in counts)
    verdict = "REGRESSION" if is_regression(diff_df) else "no regression"
    table = pd.DataFrame(
        {
            "change": diff_df["change"],
            "check": diff_df["check"],
            "tensor": diff_df["tensor"],
            "against": diff_df["against"],
            "dtype": diff_df["dtype"],
            "mode": diff_df["mode"],
            "impl": diff_df["impl"],
            "status": diff_df["status_before"].replace("", "-")
            + " -> "
            + diff_df["status_after"].replace("", "-"),
            "budget before": diff_df["budget_before"].map(_g),
            "budget after": diff_df["budget_after"].map(_g),
            "ratio": diff_df["ratio"].map(_g),
        }
    )
    body = table.to_markdown(index=False, tablefmt="simple", disable_numparse=True)
    return f"{verdict}: {head}\n\n{body}"
