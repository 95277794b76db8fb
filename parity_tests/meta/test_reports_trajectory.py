"""The reports' trajectory view (reports/trajectory.py) from records alone."""

import base64
import html
import re

import pandas as pd
import pytest

from reports import load_report, trajectory, write_report
from reports.escape import markdown_cell
from reports.render import summary_html


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


@pytest.mark.parametrize(
    "losses,says",
    [((462.1, 300.0, 31.25), "462.1 to 31.25"),
     ((462.1, 5e3, 1.308e8), "462.1 to 1.308e+08 (diverges: use a smaller learning rate)"),
     ((462.1, 5e3, float("inf")), "462.1 to inf (diverges: use a smaller learning rate)")],
    ids=["falls", "explodes", "overflows"],
)  # fmt: skip
def test_loss_column_marks_a_diverging_run(losses, says):
    records = _records()
    records["against_loss"] = records["train_step"].map(dict(zip((1, 2, 3), losses)))
    assert trajectory.agreement_frame(records).iloc[0]["loss"] == says


def test_budget_by_step_worst_tensor_first():
    [(title, grid)] = trajectory.budget_by_step(_records())
    assert title == "lenet adam torch float32" and list(grid.columns) == [1, 2, 3]
    assert grid.index[0] in ("dense3.W_new", "dense3.W.m")


def test_no_view_without_trajectories():
    one_step = _records().drop(columns=["train_step"])
    assert trajectory.markdown_lines(one_step, markdown_cell) == []
    assert trajectory.html_section(one_step, html.escape) == ""
    assert "Trajectories" in "\n".join(trajectory.markdown_lines(_records(), markdown_cell))


# --- the loss curves -----------------------------------------------------------------------

LOSSES = {1: 462.0, 2: 120.5, 3: 31.25}  # the framework's; the reference's 1e-6 relative off


def _run_records(model="lenet", losses=True):
    """Complete records of a 3-step run, both frameworks and dtypes, two tensors a step."""
    rows = []
    for fw in ("torch", "tensorflow"):
        for dtype in ("float32", "float64"):
            for k, loss in LOSSES.items():
                for tensor in ("dense3.W_new", "dense3.W.m"):
                    extra = dict(against_loss=loss, impl_loss=loss * (1 + 1e-6)) if losses else {}
                    rows.append(
                        dict(check=f"test_trajectory[{tensor}@step{k}-end_to_end-{fw}-{dtype}]",
                             tensor=tensor, against=fw, dtype=dtype, mode="end_to_end",
                             impl="reference", model=model, optimiser="adam(lr=0.001)",
                             train_step=k, status="pass", passed=True, budget_used=0.1,
                             note="agrees", **extra)
                    )  # fmt: skip
    return rows


def test_loss_curves_carry_each_framework_and_dtype_per_step():
    [((model, optimiser), frame)] = trajectory.loss_curves(pd.DataFrame(_run_records()))
    assert (model, optimiser) == ("lenet", "adam(lr=0.001)")
    assert len(frame) == 2 * 2 * 3  # framework x dtype x step: one row each, not per tensor
    torch32 = frame[(frame["against"] == "torch") & (frame["dtype"] == "float32")]
    assert list(torch32["against_loss"]) == list(LOSSES.values())


@pytest.mark.parametrize("model", ["lenet", "<b>$x^2$</b> & co"], ids=["plain", "html-and-mathtext"])
def test_summary_html_draws_the_loss_curves(tmp_path, monkeypatch, model):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    paths = write_report(_run_records(model), tmp_path / "r", {"seed": 0})
    page = paths["summary.html"].read_text()
    [img] = re.findall(r'<img class="losscurve"[^>]*>', page)
    alt = re.search(r'alt="([^"]*)"', img).group(1)
    for name in ("torch float32", "torch float64", "tensorflow float32", "tensorflow float64"):
        assert name in alt
    png = base64.b64decode(re.search(r"base64,([^\"]+)", img).group(1))
    assert png.startswith(b"\x89PNG")
    if model != "lenet":
        assert "<b>$x^2$</b>" not in page and html.escape(model) in page
    assert "torch float32: 462 to 31.25 (3 steps); reference (torch&#x27;s convention)" in page
    assert "462 to 31.25" in paths["summary.md"].read_text()  # the agreement table's loss column


def test_a_report_without_the_loss_fields_loads_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    write_report(_run_records(), tmp_path / "r", {"seed": 0})
    path = tmp_path / "r" / "comparisons.csv"
    old = pd.read_csv(path, dtype=str, keep_default_na=False)
    old.drop(columns=trajectory.LOSS_FIELDS).to_csv(path, index=False, lineterminator="\n")
    df, meta = load_report(tmp_path / "r")
    page = summary_html(df, meta, heat_map=False)
    assert 'class="losscurve"' not in page
    assert "No loss per step in these records" in page
    assert "Trajectories" in page and trajectory.agreement_frame(df)["loss"].eq("").all()
