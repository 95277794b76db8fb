"""Markdown and HTML renderings of a records frame (after fill_outliers)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

from reports.escape import markdown_cell, markdown_text, plot_label
from reports.fields import STATUSES, number_text
from reports.tables import by_severity, headline_parts, summary_frame, tensor_order

MAX_MD_ROWS = 60  # a GitHub job summary is for reading, not scrolling
TABLE_UUID = "parity-summary"  # fixed, so the HTML is identical from run to run
MNIST_CREDIT = (
    "MNIST data: Yann LeCun, Corinna Cortes and Christopher J.C. Burges, licensed CC BY-SA 3.0."
)


def _g(x) -> str:
    """A table cell: numbers through number_text, missing values blank, the rest as text."""
    if x is None or x is pd.NA or isinstance(x, (float, np.floating)):
        return number_text(x)
    return str(x)


def _versions(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {v[k]}" for k in sorted(v))
    return str(v)


def status_counts(df: pd.DataFrame) -> str:
    counts = df["status"].value_counts()
    return ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES) + f" ({len(df)} comparisons)"


def _meta_items(df: pd.DataFrame, meta: dict, full: bool = False) -> list[tuple[str, str]]:
    def joined(col):
        return ", ".join(sorted({str(v) for v in df[col]} - {""}))

    items = [
        ("versions", _versions(meta.get("versions", ""))),
        ("seed", str(meta.get("seed", joined("seed")))),
        ("data source", str(meta.get("data_source", joined("data_source")))),
        ("init scheme", str(meta.get("init_scheme", joined("init_scheme")))),
        (
            "frameworks",
            ", ".join(meta["frameworks"]) if "frameworks" in meta else joined("against"),
        ),
        ("dtypes", ", ".join(meta["dtypes"]) if "dtypes" in meta else joined("dtype")),
    ]
    if full:
        shown = {
            "versions",
            "seed",
            "data_source",
            "init_scheme",
            "frameworks",
            "dtypes",
            "tensor_order",  # only orders the heat map's rows
        }
        items += [(k, _versions(meta[k])) for k in sorted(meta) if k not in shown]
    return items


def _credit(meta: dict) -> str:
    return MNIST_CREDIT if "mnist" in str(meta.get("data_source", "")).lower() else ""


def display_frame(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.astype(object).map(_g)


def completeness_banner(meta: dict) -> tuple[str, str] | None:
    """("PARTIAL RUN", detail) for a run whose meta says it is not complete, else None.

    meta["completeness"] is {"status": "complete" | "partial" | "interrupted", "detail": str}.
    """
    c = meta.get("completeness")
    if not isinstance(c, dict):
        return None
    status = str(c.get("status", "") or "unknown")
    if status == "complete":
        return None
    return f"{status.upper()} RUN", str(c.get("detail", ""))


def headline_markdown(df: pd.DataFrame, meta: dict) -> list[str]:
    """The headline (reports.tables.headline_parts) as Markdown list items, every record
    string escaped (markdown_text)."""
    parts = headline_parts(df, tensor_order(meta))
    return [f"- **{label}**: {markdown_text(text)}" for label, text in parts]


def headline_html(df: pd.DataFrame, meta: dict) -> str:
    """The headline as an HTML list, every record string escaped."""
    esc = html.escape
    items = "".join(
        f"<li><strong>{esc(label)}</strong>: {esc(text)}</li>"
        for label, text in headline_parts(df, tensor_order(meta))
    )
    return f'<ul class="headline">{items}</ul>'


def summary_markdown(df: pd.DataFrame, meta: dict) -> str:
    """Title, completeness banner, headline, run facts and the summary table (at most
    MAX_MD_ROWS rows), for CI.

    Every string from a record or the meta is escaped (markdown_cell, markdown_text): no
    raw HTML, no broken table rows.
    """
    summary = summary_frame(df)
    lines = ["# Parity report", ""]
    banner = completeness_banner(meta)
    if banner:
        lines += [f"**{markdown_cell(banner[0])}**: {markdown_cell(banner[1])}", ""]
    lines += [*headline_markdown(df, meta), ""]
    lines += [f"**{status_counts(df)}**", ""]
    lines += [f"- {k}: {markdown_cell(v)}" for k, v in _meta_items(df, meta) if v]
    lines += ["", "## Summary (worst first)", ""]
    if summary.empty:
        lines.append("No comparisons were recorded.")
    else:
        shown = display_frame(summary.head(MAX_MD_ROWS)).map(markdown_cell)
        lines.append(shown.to_markdown(index=False, disable_numparse=True))
        if len(summary) > MAX_MD_ROWS:
            lines += [
                "",
                (
                    f"_{len(summary) - MAX_MD_ROWS} more rows left out; "
                    "every comparison is in comparisons.csv._"
                ),
            ]
    if _credit(meta):
        lines += ["", _credit(meta)]
    return "\n".join(lines) + "\n"


def budget_grid(df: pd.DataFrame, order=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Max budget used and worst status per tensor (rows) x against/dtype/mode (columns);
    a non-reference impl gets rows of its own. Rows follow `order` (tensor names, e.g. the
    forward/backward order the run's meta carries), then first-seen order."""
    variant = ~df["impl"].isin(["", "reference"])
    row = df["tensor"].where(~variant, df["tensor"] + " (" + df["impl"] + ")")
    col = df["against"] + "\n" + df["dtype"] + "\n" + df["mode"]
    cells = (
        by_severity(df.assign(_row=row, _col=col))  # worst first: "first" is the worst status
        .groupby(["_row", "_col"], sort=False)
        .agg(budget=("budget_used", "max"), status=("status", "first"))
    )
    rank = {t: i for i, t in enumerate(order)}
    seen = list(pd.unique(row))
    tensor_of = dict(zip(row, df["tensor"]))
    rows = sorted(seen, key=lambda r: (rank.get(tensor_of[r], len(rank)), seen.index(r)))
    cols = sorted(pd.unique(col))
    return (
        cells["budget"].unstack().reindex(index=rows, columns=cols),
        cells["status"].unstack().reindex(index=rows, columns=cols),
    )


def _heatmap_png(df: pd.DataFrame, order=()) -> bytes:
    # Figure + Agg canvas directly: no pyplot, no global backend switch for the caller.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    # Detection records (variants, mutants) store tolerance/error, not error/tolerance.
    budget, status = budget_grid(df[df["mode"] != "detection"], order)
    values = budget.to_numpy(dtype=float)
    positive = values[np.isfinite(values) & (values > 0)]
    vmin = max(min(0.1, float(positive.min()) if positive.size else 0.1), 1e-6)
    vmax = min(max(10.0, float(positive.max()) if positive.size else 10.0), 1e6)
    norm = LogNorm(vmin, vmax)
    # Greens below 1 and reds above, split where 1 falls: the colour jumps at pass/fail.
    n_green = round(256 * np.log(1 / vmin) / np.log(vmax / vmin))
    greens = colormaps["Greens_r"](np.linspace(0.1, 0.75, n_green))
    reds = colormaps["Reds"](np.linspace(0.35, 0.95, 256 - n_green))
    cmap = ListedColormap(np.vstack([greens, reds])).with_extremes(bad="#dddddd")

    n_rows, n_cols = budget.shape
    # Margins in inches from the label lengths: tight_layout measured every tick label twice
    # and was half the cost of a report.
    left = 0.3 + 0.065 * max((len(str(r)) for r in budget.index), default=4)
    bottom, top, right = 0.6, 0.35, 0.9
    w, h = max(1.1 * n_cols, 4.2), max(0.42 * n_rows, 2.4)  # room for the title, bar label
    width, height = left + w + right, bottom + h + top
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / width, bottom / height, w / width, h / height))
    cax = fig.add_axes(((left + w + 0.15) / width, bottom / height, 0.15 / width, h / height))
    shown = np.clip(values, vmin, vmax)
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto")
    for (i, j), st in np.ndenumerate(status.to_numpy(dtype=object)):
        if pd.isna(st):
            continue  # no comparison in this cell
        text = _g(values[i, j])
        if st in ("vacuous", "error", "absent"):
            text = f"{text}\n{st}".strip()
        dark = np.isfinite(shown[i, j]) and not 0.2 < norm(shown[i, j]) < 0.8
        colour = "white" if dark else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
        if st != "pass":
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    ax.set_xticks(range(n_cols), [plot_label(c) for c in budget.columns], fontsize=7)
    ax.set_yticks(range(n_rows), [plot_label(r) for r in budget.index], fontsize=8)
    ax.set_title("max budget used (error / tolerance); outlined: not a pass", fontsize=9)
    bar = fig.colorbar(image, cax=cax)
    bar.minorticks_off()
    bar.ax.tick_params(labelsize=7)
    bar.ax.axhline(1.0, color="black", lw=2.5)
    bar.set_label("budget used (log); black line: 1 = pass/fail boundary", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp
    return buf.getvalue()


def _row_style(row: pd.Series) -> list[str]:
    colour = {"fail": "#fde0dc", "error": "#fde0dc", "vacuous": "#fff4ce", "absent": "#e8e8e8"}.get(
        row["status"], ""
    )
    return [f"background-color: {colour}" if colour else ""] * len(row)


def _budget_style(b) -> str:
    if pd.isna(b):
        return ""
    return "background-color: #c8e6c9" if b <= 1 else "background-color: #f4a8a0; font-weight: bold"


def summary_html(
    df: pd.DataFrame,
    meta: dict,
    extra_sections: dict[str, str] | None = None,
    heat_map: bool = True,
) -> str:
    """A self-contained HTML page: completeness banner, headline, status counts, run facts,
    heat map, styled summary, extras.

    Every string from a record or the meta is HTML-escaped.
    """
    summary = summary_frame(df)
    esc = html.escape
    banner = completeness_banner(meta)
    banner_html = (
        [f'<p class="completeness"><strong>{esc(banner[0])}</strong>: {esc(banner[1])}</p>']
        if banner
        else []
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Parity report</title>',
        (
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{padding:2px 6px;border:1px solid #ddd;font-size:90%}"
            "pre{background:#f6f8fa;padding:1em;overflow-x:auto}"
            "ul.headline{background:#f6f8fa;padding:0.6em 2em}</style></head><body>"
        ),
        "<h1>Parity report</h1>",
        *banner_html,
        headline_html(df, meta),
        f"<p><strong>{esc(status_counts(df))}</strong></p>",
        "<h2>Run</h2>",
        '<table class="meta">',
        *(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _meta_items(df, meta, True)),
        "</table>",
    ]
    if summary.empty:
        parts.append("<p>No comparisons were recorded.</p>")
    else:
        styler = (
            summary.style.apply(_row_style, axis=1)
            .map(_budget_style, subset=["budget_used"])
            .format(_g, na_rep="", escape="html")  # record strings are data, not markup
            .hide(axis="index")
        )
        if heat_map:
            png = base64.b64encode(_heatmap_png(df, tensor_order(meta))).decode("ascii")
            parts += [
                "<h2>Budget used by tensor and comparison</h2>",
                f'<img alt="heat map of the largest budget used" src="data:image/png;base64,{png}">',
            ]
        parts += [
            "<h2>Summary (worst first)</h2>",
            styler.to_html(table_uuid=TABLE_UUID),
        ]
    for title, text in (extra_sections or {}).items():
        parts += [f"<h2>{esc(title)}</h2>", f"<pre>{esc(text)}</pre>"]
    if _credit(meta):
        parts.append(f'<p class="credit">{esc(_credit(meta))}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
