"""The trajectory view of a report: K-step training runs (parity_tests/test_trajectory.py).

Read from the records alone (their `train_step`, `optimiser`, `model`, `against`, `dtype`,
`status`, `budget_used`, `tensor`, `note`), so an old report without them has no view:

- `agreement_frame`: per run (model, optimiser, framework, dtype), the steps checked, the
  step up to which every record agreed within the drift bound, and where and why it stopped
  (the first record beyond it: failed, or passed on the chaos term; its tensor, status and
  the note's chaos / mistake verdict);
- `budget_by_step`: per run, each tensor's budget used at each step, worst tensor first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RUN_KEYS = ["model", "optimiser", "against", "dtype"]


def trajectory_records(df: pd.DataFrame) -> pd.DataFrame:
    """The records of K-step runs: end to end, with a train_step."""
    if "train_step" not in df.columns:
        return df.iloc[:0]
    steps = pd.to_numeric(df["train_step"], errors="coerce")
    return df[steps.notna() & (df["mode"] == "end_to_end")].assign(train_step=steps.astype("Int64"))


def _why(note: str) -> str:
    for verdict in ("mistake", "chaos", "agrees"):
        if verdict in str(note):
            return verdict
    return ""


def agreement_frame(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for key, run in trajectory_records(df).groupby(RUN_KEYS, sort=True):
        steps = int(run["train_step"].max())
        bad = run[run["status"] != "pass"].sort_values(
            ["train_step", "budget_used"], ascending=[True, False]
        )
        if bad.empty:
            agrees, stops = steps, ""
        else:
            first = bad.iloc[0]
            agrees = int(first["train_step"]) - 1
            stops = f"step {int(first['train_step'])}: {first['tensor']} {first['status']}"
            why = _why(first.get("note", ""))
            stops += f" ({why})" if why else ""
        rows.append(dict(zip(RUN_KEYS, key), steps=steps, agrees_up_to=agrees, stops=stops))
    return pd.DataFrame(rows, columns=[*RUN_KEYS, "steps", "agrees_up_to", "stops"])


def budget_by_step(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """[(run title, tensor x step frame of budget_used, worst tensor first)]."""
    out = []
    for key, run in trajectory_records(df).groupby(RUN_KEYS, sort=True):
        grid = run.pivot_table(index="tensor", columns="train_step", values="budget_used", aggfunc="max")
        grid = grid.loc[grid.max(axis=1).sort_values(ascending=False).index]
        out.append((" ".join(str(k) for k in key), grid))
    return out


def markdown_lines(df: pd.DataFrame, markdown_cell) -> list[str]:
    """The summary.md section ([] without K-step records)."""
    frame = agreement_frame(df)
    if frame.empty:
        return []
    lines = ["", "## Trajectories (K training steps; docs/optimisers.md)", ""]
    lines.append(frame.map(markdown_cell).to_markdown(index=False, disable_numparse=True))
    return lines


def html_section(df: pd.DataFrame, esc) -> str:
    """The summary.html section: the agreement table, then per run the budget used per step
    and tensor, worst tensor first ("" without K-step records)."""
    frame = agreement_frame(df)
    if frame.empty:
        return ""
    parts = ['<h2 id="trajectories">Trajectories (K training steps)</h2>', "<table><tr>"]
    parts += [f"<th>{esc(c)}</th>" for c in frame.columns] + ["</tr>"]
    for _, row in frame.iterrows():
        parts.append("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>")
    parts.append("</table>")
    for title, grid in budget_by_step(df):
        parts.append(f"<h3>{esc(title)}: budget used per step, worst tensor first</h3><table><tr>")
        parts.append("<th>tensor</th>" + "".join(f"<th>step {int(s)}</th>" for s in grid.columns))
        parts.append("</tr>")
        for tensor, values in grid.iterrows():
            cells = "".join(
                f"<td>{'' if not np.isfinite(v) else f'{v:.3g}'}</td>" for v in values.astype(float)
            )
            parts.append(f"<tr><td>{esc(str(tensor))}</td>{cells}</tr>")
        parts.append("</table>")
    return "\n".join(parts)
