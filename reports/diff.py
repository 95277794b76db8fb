"""Compare two runs' records: what broke, what vanished, whose budget grew, whose precision
dropped."""

from __future__ import annotations

import math
import numbers
import re

import numpy as np
import pandas as pd

from reports.escape import markdown_cell, markdown_text, terminal_text
from reports.fields import number_text
from reports.tables import by_severity

KEY = ["check", "tensor", "mode", "against", "dtype", "impl"]
REGRESSIONS = ("new failure", "vanished", "precision dropped", "budget grew")
# "grew within the error model": grew more than the factor but stays at or below `within`
# of its allowance (reported, not a regression). "not run": a baseline check a partial run
# did not run (not a regression); listed last.
WITHIN_CHANGE = "grew within the error model"
CHANGES = REGRESSIONS + (WITHIN_CHANGE, "fixed", "new check", "not run")  # display order
NOT_RUN_SHOWN = 3  # format_diff counts "not run" rows and names only this many checks
# A budget that grows more than this many times (over max(baseline, 1/factor^2)) grew ...
DEFAULT_FACTOR = 10.0
# ... and regresses only past this fraction of its allowance (docs/tolerance.md, "Regression
# gate"): the largest budgets of the suite's complete runs are 0.48 and 0.4998
# (reports/latest, baselines/ci-synthetic), so growth that ends at or below half the
# allowance ends where legitimate results already are (oneDNN with two BLAS threads moved
# LeNet's pool1.A TensorFlow float32 end to end from 0 to 0.272).
DEFAULT_WITHIN = 0.5
# A precision drop, the precision check's own test (parity_tests/metrics.py) applied between
# the baseline's and this run's bits of one side: it regresses when the side's typical error
# grew more than PRECISION_RATIO_LIMIT = 16 times (4 bits) over the baseline's, or over the
# verdict's floor if that is larger: the record's precision_floor roundings (max(8,
# sqrt(k) / 8) for a k-term sum), PRECISION_FLOOR_ROUNDINGS = 8 (3 bits below the
# mantissa) where a record has none (written before the field, or not measured).
PRECISION_DROP_BITS = 4.0  # log2(PRECISION_RATIO_LIMIT)
PRECISION_FLOOR_BITS = 3.0  # log2(PRECISION_FLOOR_ROUNDINGS)
BITS = ("impl", "against")  # the sides: impl_bits, against_bits
# The facts that make two runs the same experiment: the gate compares only such runs.
EXPERIMENT_KEYS = ("seed", "n_images", "init_scheme", "reduction", "data_sha256", "impl", "lr", "model")
# --parity-layer's layers, {kind: option value}: recorded only when given, so a run without
# them is the same experiment as before they existed.
EXPERIMENT_KEYS += ("layers",)
DIFF_COLUMNS = KEY + [
    "change",
    "status_before",
    "status_after",
    "budget_before",
    "budget_after",
    "ratio",
    "precision",  # "impl 24 -> 13 bits" where a side's precision dropped, else ""
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


def _bits_index(df: pd.DataFrame) -> dict:
    """key -> {side: its fewest bits over the key's records, "floor": the largest
    precision_floor} (NaN where not measured: an older report without the fields, float64,
    too few elements)."""
    out = {}
    cols = [f"{side}_bits" for side in BITS]
    frame = df.reindex(columns=KEY + cols + ["precision_floor"])
    values = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    floors = pd.to_numeric(frame["precision_floor"], errors="coerce").to_numpy(dtype=float)
    for keys, row, floor in zip(frame[KEY].astype(str).itertuples(index=False), values, floors):
        k = tuple(keys)
        row = np.append(row, floor)
        if k in out:
            row = np.append(np.fmin(out[k][:-1], row[:-1]), np.fmax(out[k][-1], row[-1]))
        out[k] = row
    return {k: dict(zip((*BITS, "floor"), map(float, v))) for k, v in out.items()}


def _mantissa(dtype: str) -> int | None:
    try:
        d = np.dtype(dtype)
    except TypeError:
        return None
    return int(np.finfo(d).nmant) + 1 if d.kind == "f" else None


def precision_drops(before: dict, after: dict, dtype: str) -> str:
    """ "impl 24 -> 13 bits" for each side whose bits fell below
    min(baseline bits, mantissa - floor bits) - PRECISION_DROP_BITS, the floor bits
    log2 of this run's precision_floor (PRECISION_FLOOR_BITS without one); "" when none
    did or either run did not measure them."""
    p = _mantissa(dtype)
    if p is None:
        return ""
    floor = after.get("floor", math.nan)
    floor_bits = math.log2(floor) if floor >= 1 else PRECISION_FLOOR_BITS  # False for NaN
    out = []
    for side in BITS:
        b, a = before.get(side, math.nan), after.get(side, math.nan)
        if a < min(b, p - floor_bits) - PRECISION_DROP_BITS:  # False for NaN
            out.append(f"{side} {b:.1f} -> {a:.1f} bits")
    return ", ".join(out)


def _names(index: dict, absent: bool) -> set:
    """(tensor, dtype, impl) of the keys that are (absent=True) or are not "absent"
    records; a key's dtype also as "" (an absent record without a dtype covers every one)."""
    out = set()
    for k, (_, status, _) in index.items():
        if (status == "absent") == absent:
            out |= {(k[1], k[4], k[5]), (k[1], "", k[5])}
    return out


def _name(k: tuple) -> tuple:
    return k[1], k[4], k[5]  # tensor, dtype, impl (KEY order)


def _real(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    return float(x)


def _check_policy(factor, floor, within) -> float:
    """Validate; return the floor (None: 1 / factor**2)."""
    w = _real(within)
    if w is None or not 0 <= w <= 1:
        raise ValueError(f"within must be a number in 0..1, got {within!r}")
    f = _real(factor)
    if f is None or not math.isfinite(f) or not f > 1:
        raise ValueError(f"factor must be a finite number > 1, got {factor!r}")
    if floor is None:
        return 1.0 / f**2
    fl = _real(floor)
    if fl is None or not math.isfinite(fl) or not fl >= 0:
        raise ValueError(f"floor must be a finite number >= 0, got {floor!r}")
    return fl


def diff_reports(
    baseline_df: pd.DataFrame,
    current_df: pd.DataFrame,
    factor: float = DEFAULT_FACTOR,
    floor: float | None = None,
    *,
    partial: bool = False,
    within: float = DEFAULT_WITHIN,
) -> pd.DataFrame:
    """One row per changed check, regressions first.

    A budget grew when current budget > factor * max(baseline budget, floor). The floor
    (None: 1 / factor**2) keeps noise in tiny budgets from counting: a budget that stays
    below 1 / factor of its allowance never grew, however it moved (0 -> 0.0067 with the
    defaults is no change). Growth is a regression ("budget grew") only when the budget
    ends past `within` of its allowance; growth that ends at or below it is listed as
    "grew within the error model" (0 -> 0.272 with the defaults; 0.05 -> 0.9 regresses).
    within=0 makes every growth a regression. factor: a finite number > 1; floor: finite
    and >= 0; within: 0..1 (ValueError otherwise).

    "precision dropped" (a regression, whatever the budget did): a check that passed, or
    failed, in both runs, one of whose sides' effective precision (`impl_bits`,
    `against_bits`, the fewest over the key's records) fell by more than the precision
    check allows (precision_drops); the `precision` column says which side, from what to
    what, also on a "new failure" whose precision dropped (mismatch kind "precision").
    Records without the fields (an older baseline) or without a measurement (NaN) have
    no precision verdict.

    partial=True (the current run ran only some checks): a baseline key whose `check`
    never occurs in current_df is "not run", not "vanished".

    A name the implementation did not provide is one "absent" record (mode contract), not
    the comparisons it stands for: a baseline check of a tensor (same dtype and impl) that
    is absent now is a "new failure" if it passed (status after: absent), and a check of a
    tensor that was absent in the baseline is "fixed" if it passes (status before: absent),
    else a "new check"; the absent records themselves are then not listed.
    """
    floor = _check_policy(factor, floor, within)
    factor, within = float(factor), float(within)
    base, cur = _index(baseline_df), _index(current_df)
    bits_before, bits_after = _bits_index(baseline_df), _bits_index(current_df)
    ran = {str(c) for c in current_df["check"]}
    absent_now, absent_before = _names(cur, True), _names(base, True)
    present_now, present_before = _names(cur, False), _names(base, False)
    rows = []
    for k in sorted(set(base) | set(cur)):
        (p0, s0, b0), (p1, s1, b1) = (
            base.get(k, (None, "", math.nan)),
            cur.get(k, (None, "", math.nan)),
        )
        denom = float(np.fmax(b0, floor))  # NaN baseline -> floor
        dropped = precision_drops(bits_before.get(k, {}), bits_after.get(k, {}), k[4])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(np.divide(b1, denom))
        if k not in cur and s0 == "absent" and _name(k) in present_now:
            continue  # provided now: its checks say how that went
        elif k not in cur and s0 != "absent" and _name(k) in absent_now:
            if not p0:
                continue  # did not pass before either
            change, s1 = "new failure", "absent"
        elif k not in cur:
            change = "not run" if partial and k[0] not in ran else "vanished"
        elif k not in base and s1 == "absent" and _name(k) in present_before:
            continue  # listed as the new failures of the checks it stands for
        elif k not in base and s1 != "absent" and _name(k) in absent_before:
            change, s0 = ("fixed" if p1 else "new check"), "absent"
        elif k not in base:
            change = "new check"
        elif p0 and not p1:
            change = "new failure"
        elif p1 and not p0:
            change = "fixed"
        elif dropped:
            change = "precision dropped"
        elif b1 > factor * denom:  # False for a NaN current budget
            change = "budget grew" if b1 > within else WITHIN_CHANGE
        else:
            continue
        rows.append([*k, change, s0, s1, b0, b1, ratio, dropped])
    diff = pd.DataFrame(rows, columns=DIFF_COLUMNS)
    order = sorted(range(len(diff)), key=lambda i: CHANGES.index(diff["change"].iat[i]))
    return diff.iloc[order].reset_index(drop=True)


def _same_fact(a, b) -> bool:
    x, y = _real(a), _real(b)
    if x is not None and y is not None:
        return x == y or (math.isnan(x) and math.isnan(y))  # 0.0625 == 0.0625, 0 == 0.0
    return (x is None) == (y is None) and a == b


def experiment_mismatches(baseline_meta: dict, current_meta: dict) -> list[str]:
    """One message per EXPERIMENT_KEYS fact that differs between two runs' meta (run.json).

    e.g. "seed: baseline 0, this run 1". A fact the baseline lacks but this run records
    is a mismatch too (an older baseline cannot vouch for it); one neither records is not.
    """
    out = []
    for key in EXPERIMENT_KEYS:
        in_base, in_cur = key in baseline_meta, key in current_meta
        if not in_base and not in_cur:
            continue
        if not in_base:
            out.append(
                f"{key}: not recorded in the baseline (re-create it with this version of the suite)"
            )
        elif not in_cur:
            out.append(f"{key}: baseline {baseline_meta[key]}, not recorded in this run")
        elif not _same_fact(baseline_meta[key], current_meta[key]):
            out.append(f"{key}: baseline {baseline_meta[key]}, this run {current_meta[key]}")
    return out


def environment_changes(baseline_meta: dict, current_meta: dict) -> list[str]:
    """What differs in meta["environment"] (library versions, pinned settings), by key:
    "torch 2.13.0 -> 2.14.1", "keras (absent) -> 3.1". Empty when equal or when either
    run did not record its environment."""
    before, after = baseline_meta.get("environment"), current_meta.get("environment")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    out = []
    for key in sorted(set(before) | set(after), key=str):
        b = str(before[key]) if key in before else "(absent)"
        a = str(after[key]) if key in after else "(absent)"
        if b != a or (key in before) != (key in after):
            out.append(f"{key} {b} -> {a}")
    return out


def is_regression(diff_df: pd.DataFrame) -> bool:
    return bool(diff_df["change"].isin(REGRESSIONS).any())


def _change_table(diff_df: pd.DataFrame, brief: bool = False) -> pd.DataFrame:
    """The changes as display text, one row each; brief: change, check, status, the budget
    before and after, ratio."""
    table = pd.DataFrame({"change": diff_df["change"], "check": diff_df["check"]})
    if not brief:
        for col in ("tensor", "against", "dtype", "mode", "impl"):
            table[col] = diff_df[col]
    table["status"] = (
        diff_df["status_before"].replace("", "-") + " -> " + diff_df["status_after"].replace("", "-")
    )
    before, after = ("before", "after") if brief else ("budget before", "budget after")
    table[before] = diff_df["budget_before"].map(number_text)
    table[after] = diff_df["budget_after"].map(number_text)
    table["ratio"] = diff_df["ratio"].map(number_text)
    if "precision" in diff_df and diff_df["precision"].astype(bool).any():
        table["precision"] = diff_df["precision"].replace("", "-")
    return table


def _not_run_names(not_run: pd.DataFrame, escape) -> str:
    names = list(dict.fromkeys(not_run["check"]))
    return ", ".join(map(escape, names[:NOT_RUN_SHOWN])) + (
        ", ..." if len(names) > NOT_RUN_SHOWN else ""
    )


def diff_headline(diff_df: pd.DataFrame) -> str:
    """The diff's first line: "REGRESSION: 1 budget grew", "no regression: 2 grew within
    the error model", or "No changes: ..." when nothing changed."""
    if diff_df.empty:
        return "No changes: every check kept its status and its budget within the factor."
    counts = diff_df["change"].value_counts()
    head = ", ".join(
        f"{int(counts[c])} {c}{'s' if c == 'new check' and counts[c] > 1 else ''}"
        for c in CHANGES
        if c in counts
    )
    return f"{'REGRESSION' if is_regression(diff_df) else 'no regression'}: {head}"


def format_diff(diff_df: pd.DataFrame, brief: bool = False) -> str:
    """A plain-text table of the changes with the budget before, after and their ratio (and
    a `precision` column, "impl 24 -> 13 bits", when a side's precision dropped).

    Checks a partial run did not run ("not run") are counted, not listed row by row.
    brief=True leaves out the columns the check id already names (tensor, against, dtype,
    mode, impl): the gate's failure message, short enough for JUnit's message attribute.
    """
    if diff_df.empty:
        return diff_headline(diff_df)
    parts = [diff_headline(diff_df)]
    not_run = diff_df[diff_df["change"] == "not run"]
    diff_df = diff_df[diff_df["change"] != "not run"]
    if len(not_run):
        shown = _not_run_names(not_run, terminal_text)
        parts.append(f"{len(not_run)} baseline checks not run in this (partial) run (e.g. {shown})")
    if len(diff_df):
        table = _change_table(diff_df, brief).map(terminal_text)  # one line each, no escapes
        parts.append(table.to_markdown(index=False, tablefmt="simple", disable_numparse=True))
    return "\n\n".join(parts)


GATE_VERDICT_PREFIX = "- **verdict**: "


def gate_verdict(markdown: str) -> tuple[bool, str]:
    """(regression?, the verdict as plain text) of a regression.md regression_markdown
    wrote: what `python -m reports show` prints and exits by. ValueError when it holds no
    verdict line."""
    for line in markdown.splitlines():
        if line.startswith(GATE_VERDICT_PREFIX):
            text = line[len(GATE_VERDICT_PREFIX) :]
            regression = text.startswith("**REGRESSION**")
            plain = re.sub(r"\\(.)", r"\1", text.replace("**", ""))  # Markdown escapes undone
            return regression, plain
    raise ValueError(f"no line starting {GATE_VERDICT_PREFIX.strip()!r}")


def policy_text(
    factor: float = DEFAULT_FACTOR, floor: float | None = None, within: float = DEFAULT_WITHIN
) -> str:
    """The gate's policy as the verdict names it: "factor 10", and the floor and the
    within fraction only where they are not the defaults ("factor 10, floor 0.05")."""
    parts = [f"factor {factor:g}"]
    if floor is not None:
        parts.append(f"floor {floor:g}")
    if within != DEFAULT_WITHIN:
        parts.append(f"within {within:g}")
    return ", ".join(parts)


def regression_markdown(
    diff_df: pd.DataFrame,
    baseline,
    factor: float = DEFAULT_FACTOR,
    environment: list[str] | tuple = (),
    policy: str | None = None,
) -> str:
    """regression.md: the gate's verdict against `baseline` under its policy (policy_text;
    None: "factor F"), the environment facts that changed, and one table row per changed
    check ("not run" ones counted). Every record string is escaped for Markdown."""
    regression = is_regression(diff_df)
    verdict = "**REGRESSION**" if regression else "no regression"
    not_run = diff_df[diff_df["change"] == "not run"]
    shown = diff_df[diff_df["change"] != "not run"]
    lines = [
        "# Regression gate",
        "",
        f"- **verdict**: {verdict} against the baseline {markdown_text(baseline)} "
        f"({markdown_text(policy or policy_text(factor))})",
        f"- **changes**: {markdown_text(diff_headline(diff_df).split(': ', 1)[-1])}",
        "- **environment changed**: "
        + ("; ".join(map(markdown_text, environment)) if environment else "nothing recorded changed"),
    ]
    if len(not_run):
        lines.append(
            f"- **not run**: {len(not_run)} baseline checks not run in this (partial) run (e.g. "
            f"{_not_run_names(not_run, markdown_text)})"
        )
    if len(shown):
        table = _change_table(shown).map(markdown_cell)
        lines += ["", table.to_markdown(index=False, tablefmt="github", disable_numparse=True)]
    return "\n".join(lines) + "\n"
