"""The trajectory view of a report: K-step training runs (parity_tests/test_trajectory.py).

Read from the records alone (their `train_step`, `optimiser`, `model`, `against`, `dtype`,
`status`, `budget_used`, `tensor`, `note`), so an old report without them has no view:

- `agreement_frame`: per run (model, optimiser, framework, dtype), the steps checked, the
  step up to which every record agreed within the drift bound, and where and why it stopped
  (the first record beyond it: failed, or passed on the chaos term; its tensor, status and
  the note's chaos / mistake verdict);
- `budget_by_step`: per run, each tensor's budget used at each step, worst tensor first;
- `loss_curves`: per network and optimiser, the loss at each step of each framework's own
  loop and of the run it is checked against (the reference in that framework's convention,
  or the optimiser under test), from the records' `against_loss` and `impl_loss`; drawn by
  `loss_figure` (one column per dtype: the losses, then their relative difference) and
  inlined in summary.html as the heat map is. Reports written before those fields have
  the tables and a note instead of the curves.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from reports.escape import plot_label

RUN_KEYS = ["model", "optimiser", "against", "dtype"]
LOSS_FIELDS = ["against_loss", "impl_loss"]
DIVERGES_AT = 10.0  # a last loss this many times the first marks the run as diverging
LOSS_DPI = 150  # drawn at 150 dpi, shown at 96 CSS px per inch, as the heat map
CSS_PX_PER_INCH = 96


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
        rows.append(
            dict(zip(RUN_KEYS, key), steps=steps, agrees_up_to=agrees, stops=stops, loss=_loss_text(run))
        )
    return pd.DataFrame(rows, columns=[*RUN_KEYS, "steps", "agrees_up_to", "stops", "loss"])


def _loss_text(run: pd.DataFrame) -> str:
    """The framework's loss at the first and the last step it has ("462 to 31.2"), "" in
    records without the field; a loss that ends over DIVERGES_AT times where it began is
    marked, since a run that agrees while its training explodes checks chaos, not training
    ("462.1 to 1.308e+08 (diverges: use a smaller learning rate)")."""
    if "against_loss" not in run.columns:
        return ""
    per_step = pd.to_numeric(run["against_loss"], errors="coerce").groupby(run["train_step"]).first()
    per_step = per_step.dropna()
    if per_step.empty:
        return ""
    first, last = per_step.iloc[0], per_step.iloc[-1]
    text = f"{first:.4g} to {last:.4g}"
    if not (abs(last) <= DIVERGES_AT * abs(first)):  # a NaN or inf last loss diverged too
        text += " (diverges: use a smaller learning rate)"
    return text


def loss_curves(df: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """[((model, optimiser), frame)]: per network and optimiser, one row per framework, dtype
    and step: against, dtype, impl, train_step, against_loss, impl_loss (NaN where the
    records carry none)."""
    records = trajectory_records(df)
    out = []
    for key, run in records.groupby(["model", "optimiser"], sort=True):
        cols = {
            c: pd.to_numeric(run[c], errors="coerce") if c in run.columns else np.nan
            for c in LOSS_FIELDS
        }
        run = run.assign(impl=run["impl"] if "impl" in run.columns else "", **cols)
        frame = (
            run.groupby(["against", "dtype", "impl", "train_step"], sort=True)[LOSS_FIELDS]
            .first()  # every record of one run and step carries the same two numbers
            .reset_index()
        )
        out.append((key, frame))
    return out


def _impl_label(impl: str, against: str) -> str:
    who = "reference" if impl in ("", "reference") else impl
    return f"{who} ({against}'s convention)"


def loss_figure(title: str, frame: pd.DataFrame):
    """One network and optimiser's loss curves as a matplotlib Figure, and its size in CSS
    pixels: a column per dtype; on top the loss per step of each framework's own loop
    (solid) and of the run it is checked against (dashed, same colour), below their
    relative difference |framework - impl| / |impl| (log scale; a zero is not drawn)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    dtypes = sorted(set(frame["dtype"]))
    width, height = 4.6 * len(dtypes), 5.2
    fig = Figure(figsize=(width, height), dpi=LOSS_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(dtypes), squeeze=False, sharex="col")
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")
    for col, dtype in enumerate(dtypes):
        top, bottom = axes[0][col], axes[1][col]
        part = frame[frame["dtype"] == dtype]
        for i, ((against, impl), run) in enumerate(part.groupby(["against", "impl"], sort=True)):
            colour = colours[i % len(colours)]
            steps = run["train_step"].astype(float).to_numpy()
            theirs = run["against_loss"].to_numpy(dtype=float)
            ours = run["impl_loss"].to_numpy(dtype=float)
            top.plot(steps, theirs, "-o", color=colour, ms=3, label=plot_label(against))
            top.plot(
                steps, ours, "--x", color=colour, ms=4, label=plot_label(_impl_label(impl, against))
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(theirs - ours) / np.abs(ours)
            rel[~(rel > 0)] = np.nan  # a zero (or a missing loss) has no place on a log axis
            bottom.plot(steps, rel, "-o", color=colour, ms=3, label=plot_label(against))
        losses = part[LOSS_FIELDS].to_numpy(dtype=float)
        positive = losses[np.isfinite(losses) & (losses > 0)]
        if positive.size and positive.max() > 100 * positive.min():
            top.set_yscale("log")  # an exploding loss: its early steps stay readable
        top.set_title(plot_label(dtype), fontsize=8)
        top.set_ylabel("loss E (before the step's update)", fontsize=7)
        top.legend(fontsize=6)
        if any(np.isfinite(line.get_ydata()).any() for line in bottom.lines):
            bottom.set_yscale("log")
        else:
            bottom.text(
                0.5, 0.5, "equal at every step", ha="center", transform=bottom.transAxes, fontsize=7
            )
        bottom.set_ylabel("|framework - impl| / |impl| (0 not drawn)", fontsize=7)
        bottom.set_xlabel("training step", fontsize=7)
        for ax in (top, bottom):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(which="both", labelsize=6)
            ax.grid(alpha=0.3)
    fig.suptitle(plot_label(title), fontsize=8)
    fig.tight_layout()
    return fig, (round(width * CSS_PX_PER_INCH), round(height * CSS_PX_PER_INCH))


def _loss_png(title: str, frame: pd.DataFrame) -> tuple[bytes, tuple[int, int]]:
    fig, size = loss_figure(title, frame)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp
    return buf.getvalue(), size


def _span(losses: pd.Series) -> str:
    """A curve's first and last loss and how many steps it has ("none" without any)."""
    if not len(losses):
        return "none"
    return f"{losses.iloc[0]:.4g} to {losses.iloc[-1]:.4g} ({len(losses)} steps)"


def loss_html(df: pd.DataFrame, esc) -> str:
    """The loss curves, one <img> (PNG inline) per network and optimiser, its alt text and
    a line per curve naming each framework and its first and last loss; a note instead of
    the picture where the records carry no loss ("" without K-step records)."""
    parts = []
    for (model, optimiser), frame in loss_curves(df):
        title = f"{model} {optimiser}"
        parts.append(f"<h3>{esc(title)}: loss per step</h3>")
        if not frame[LOSS_FIELDS].notna().to_numpy().any():
            parts.append(
                '<p class="hint">No loss per step in these records (written before the '
                "against_loss and impl_loss fields): no curve.</p>"
            )
            continue
        png, (w, h) = _loss_png(title, frame)
        curves = []
        for (against, dtype, impl), run in frame.groupby(["against", "dtype", "impl"], sort=True):
            theirs = run["against_loss"].dropna()
            ours = run["impl_loss"].dropna()
            curves.append(
                f"{against} {dtype}: {_span(theirs)}; {_impl_label(impl, against)}: {_span(ours)}"
            )
        alt = f"loss per step, {title}: " + ", ".join(
            f"{a} {d}" for a, d in frame[["against", "dtype"]].drop_duplicates().itertuples(index=False)
        )
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<img class="losscurve" width="{w}" height="{h}" alt="{esc(alt)}" '
            f'src="data:image/png;base64,{data}">'
        )
        parts.append("<ul>" + "".join(f"<li>{esc(c)}</li>" for c in curves) + "</ul>")
    return "\n".join(parts)


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
    parts.append(loss_html(df, esc))
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
