"""The reports' trajectory view (reports/trajectory.py) from records alone."""

import html

import pandas as pd

from reports import trajectory
from reports.escape import markdown_cell


def _records():
    rows = []
    for k in (1, 2, 3):
        for tensor in ("dense3.W_new", "dense3.W.m"):
            status, note = "pass", "agrees (drift bound alone: budget 0.1)"
            if k == 3 and tensor == "dense3.W.m":
                status, note = "fail", "mistake (drift bound alone: budget 40)"
            rows.append(dict(model="lenet", optimiser="adam", against="torch", dtype="float32",
                             mode="end_to_end", train_step=k, tensor=tensor, status=status,
                             budget_used=0.1 * k, note=note))  # fmt: skip
    rows.append(dict(model="lenet", optimiser="", against="torch", dtype="float32", mode="stage",
                     train_step=float("nan"), tensor="conv1.Z", status="pass", budget_used=0.5,
                     note=""))  # fmt: skip
    return pd.DataFrame(rows)


def test_agreement_says_where_and_why_it_stops():
    frame = trajectory.agreement_frame(_records())
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["steps"], row["agrees_up_to"]) == (3, 2)
    assert row["stops"] == "step 3: dense3.W.m fail (mistake)"


def test_budget_by_step_worst_tensor_first():
    [(title, grid)] = trajectory.budget_by_step(_records())
    assert title == "lenet adam torch float32" and list(grid.columns) == [1, 2, 3]
    assert grid.index[0] in ("dense3.W_new", "dense3.W.m")


def test_no_view_without_trajectories():
    one_step = _records().drop(columns=["train_step"])
    assert trajectory.markdown_lines(one_step, markdown_cell) == []
    assert trajectory.html_section(one_step, html.escape) == ""
    assert "Trajectories" in "\n".join(trajectory.markdown_lines(_records(), markdown_cell))
