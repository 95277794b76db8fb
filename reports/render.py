"""Markdown and HTML renderings of a records frame (after fill_outliers).

summary.html is one self-contained page (no external resources; a Content-Security-Policy
that allows only its own style, its own script and data: images says so to the browser):
the headline, the heat map, the sortable parity summary, the detection checks, the run's
facts and the extra files (audit.md as HTML tables). Every string from a record or the meta
is HTML-escaped; Markdown extra files go through markdown-it-py with raw HTML, links and
images off.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import re

import numpy as np
import pandas as pd

from reports import trajectory
from reports.escape import markdown_cell, markdown_text, plot_label
from reports.fields import STATUSES, number_text
from reports.tables import (
    by_severity,
    compared_count,
    detection_frame,
    headline_parts,
    summary_frame,
    tensor_order,
)

MAX_MD_ROWS = 60  # a GitHub job summary is for reading, not scrolling
TABLE_UUID = "parity-summary"  # fixed, so the HTML is identical from run to run
DETECTION_TABLE_ID = "parity-detection"
MNIST_CREDIT = (
    "MNIST data: Yann LeCun, Corinna Cortes and Christopher J.C. Burges, licensed CC BY-SA 3.0."
)
SYNTHETIC_DETAIL = (
    "the images are deterministic digit-like pictures ({source}), not MNIST: the numbers "
    "are not the article's. Point PARITY_MNIST (or --parity-data=PATH) at an MNIST .npz or "
    "IDX folder for a real run."
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
    """Records per status, then the comparisons as the verdict counts them (an absent record,
    a tensor not provided, is no comparison)."""
    counts = df["status"].value_counts()
    shown = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES)
    n = compared_count(df)
    return f"{shown} ({n} comparison{'' if n == 1 else 's'})"


def _joined(df: pd.DataFrame, col: str) -> str:
    return ", ".join(sorted({str(v) for v in df[col]} - {""})) if col in df else ""


def _meta_items(df: pd.DataFrame, meta: dict, full: bool = False) -> list[tuple[str, str]]:
    items = [
        ("versions", _versions(meta.get("versions", ""))),
        ("seed", str(meta.get("seed", _joined(df, "seed")))),
        ("data source", _data_source(df, meta)),
        ("init scheme", str(meta.get("init_scheme", _joined(df, "init_scheme")))),
        (
            "frameworks",
            ", ".join(meta["frameworks"]) if "frameworks" in meta else _joined(df, "against"),
        ),
        ("dtypes", ", ".join(meta["dtypes"]) if "dtypes" in meta else _joined(df, "dtype")),
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


def _data_source(df: pd.DataFrame, meta: dict) -> str:
    """The run's data source: the meta's, else the records'."""
    return str(meta.get("data_source", _joined(df, "data_source")))


def _is_synthetic(source: str) -> bool:
    return str(source).strip().lower().startswith("synthetic")


def _credit(meta: dict) -> str:
    """The MNIST credit, for a run on MNIST only: the data source's description (before its
    parenthesised note, which may say "no MNIST found") names MNIST and it is not synthetic."""
    source = str(meta.get("data_source", "")).strip().lower()
    described = source.split(" (", 1)[0]
    return MNIST_CREDIT if "mnist" in described and not _is_synthetic(source) else ""


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


def synthetic_banner(df: pd.DataFrame, meta: dict) -> tuple[str, str] | None:
    """("SYNTHETIC DATA", detail) when the run's data source (meta["data_source"], else the
    records') is synthetic, else None."""
    source = _data_source(df, meta)
    if not _is_synthetic(source):
        return None
    return "SYNTHETIC DATA", SYNTHETIC_DETAIL.format(source=source.split(" (", 1)[0])


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
    """Title, completeness banner, headline, synthetic-data banner, run facts and the summary
    table (at most MAX_MD_ROWS rows), for CI.

    Every string from a record or the meta is escaped (markdown_cell, markdown_text): no
    raw HTML, no broken table rows.
    """
    # Detection rows (variants, mutants) have their own table and measure, as in the HTML.
    summary = summary_frame(df[df["mode"] != "detection"])
    detections = detection_frame(df)
    lines = ["# Parity report", ""]
    banner = completeness_banner(meta)
    if banner:
        lines += [f"**{markdown_cell(banner[0])}**: {markdown_cell(banner[1])}", ""]
    lines += [*headline_markdown(df, meta), ""]
    synthetic = synthetic_banner(df, meta)
    if synthetic:
        lines += [f"**{markdown_cell(synthetic[0])}**: {markdown_text(synthetic[1])}", ""]
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
    lines += trajectory.markdown_lines(df, markdown_cell)  # K-step runs only
    if not detections.empty:
        lines += ["", "## Detections (variants and mutants; margin > 1: caught)", ""]
        shown = display_frame(detections.head(MAX_MD_ROWS)).map(markdown_cell)
        lines.append(shown.to_markdown(index=False, disable_numparse=True))
    if _credit(meta):
        lines += ["", _credit(meta)]
    return "\n".join(lines) + "\n"


# --- the heat map -----------------------------------------------------------------------------


def budget_grid(df: pd.DataFrame, order=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Max budget used and worst status per tensor (rows) x against/dtype/mode (columns).

    When the frame holds more than one impl, a non-reference impl gets rows of its own
    ("A1 (D1)"); a run of one implementation (`--parity-impl mutant:...`) keeps plain tensor
    names. Rows follow `order` (tensor names, e.g. the forward/backward order the run's meta
    carries), then first-seen order."""
    variant = ~df["impl"].isin(["", "reference"]) & (df["impl"].nunique() > 1)
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


# The colour scale, the same in every report: budget 0..1 linearly over the lower half (pale
# to deep green: the pass closest to its allowance is the darkest), 1..BAR_TOP on a log scale
# over the upper half (strong to deep red). No comparison: hatched, no colour.
PASS_GREENS = (0.04, 0.9)  # of matplotlib's "Greens"
FAIL_REDS = (0.5, 1.0)  # of "Reds"
BAR_TOP = 1e16  # larger budgets (and inf) get the darkest red
HEATMAP_DPI = 150  # drawn at 150 dpi, shown at 96 CSS px per inch: sharp when scaled
CSS_PX_PER_INCH = 96


def _budget_norm(vmax: float):
    from matplotlib.colors import FuncNorm

    decades = math.log10(vmax)

    def forward(x):
        x = np.asarray(x, dtype=float)
        with np.errstate(invalid="ignore"):
            return np.where(x <= 1, x, 1 + np.log10(np.maximum(x, 1)) / decades)

    def inverse(y):
        y = np.asarray(y, dtype=float)
        with np.errstate(invalid="ignore"):
            return np.where(y <= 1, y, 10 ** ((np.maximum(y, 1) - 1) * decades))

    return FuncNorm((forward, inverse), vmin=0.0, vmax=vmax)


def _budget_cmap(reds: bool = True):
    """Greens for 0..1 (a pass) and, with reds, reds above (a failure)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    parts = [colormaps["Greens"](np.linspace(*PASS_GREENS, 128))]
    if reds:
        parts.append(colormaps["Reds"](np.linspace(*FAIL_REDS, 128)))
    return ListedColormap(np.vstack(parts)).with_extremes(bad=(1, 1, 1, 0))


def _bar_ticks(vmax: float) -> list[float]:
    decades = math.floor(math.log10(vmax))
    step = max(1, math.ceil(decades / 4))
    return [0, 0.25, 0.5, 0.75, 1, *(10.0**k for k in range(step, decades + 1, step))]


def _column_label(col: str) -> str:
    """A heat-map column label (against, dtype, mode on lines of their own), a long word
    split at its middle underscore ("finite_" / "difference"), so that narrow columns keep
    their labels apart."""
    lines = []
    for word in col.split("\n"):
        cuts = [i for i, c in enumerate(word) if c == "_"]
        if len(word) > 12 and cuts:
            cut = min(cuts, key=lambda i: abs(i - len(word) / 2)) + 1
            lines += [word[:cut], word[cut:]]
        else:
            lines.append(word)
    return plot_label("\n".join(lines))


LAYER_SECTION = "layer checks"
ARTICLE_SECTION = "the article's network"
HEATMAP_WIDTH = 13.0  # inches: 1248 CSS px, the width of a 1280-pixel page's content
MAX_MAP_ROWS = 26  # a map's rows at most: 0.24 in each + labels, about 700 CSS px tall
ROW_H = 0.24


def heat_map_sections(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The records split into the heat map's sections, in this order: the article's network
    (model "", plain tensor names: its stages, end to end, hand, inputs), each --parity-model
    network (model set; in first-seen order), and the layer checks (model "", tensor names
    "layer.field" from test_layers.py). Detection records are left out (their own table)."""
    plain = df[df["mode"] != "detection"]
    model = plain["model"].astype(str) if "model" in plain else pd.Series("", plain.index)
    layer = (model == "") & plain["tensor"].astype(str).str.contains(".", regex=False)
    sections = [(ARTICLE_SECTION, plain[(model == "") & ~layer])]
    sections += [(f"network {m}", plain[model == m]) for m in pd.unique(model) if m]
    sections.append((LAYER_SECTION, plain[layer]))
    return [(name, part) for name, part in sections if not part.empty]


def _scale_top(df: pd.DataFrame) -> float:
    """The colour bar's top for the whole page: 1 when every budget is at most 1 (the bar
    shows only the greens of a pass), else the largest finite budget (at least 10, at most
    BAR_TOP)."""
    values = pd.to_numeric(df["budget_used"], errors="coerce").to_numpy(dtype=float)
    known = values[~np.isnan(values)]
    if not known.size or known.max() <= 1:
        return 1.0
    finite = known[np.isfinite(known)]
    return float(np.clip(finite.max() if finite.size else 10.0, 10.0, BAR_TOP))


def heatmap_figure(budget: pd.DataFrame, status: pd.DataFrame, vmax: float, note: str = ""):
    """One heat map (rows of budget_grid) as a matplotlib Figure (axes: the map, then the
    colour bar) and its size in CSS pixels (width, height): HEATMAP_WIDTH wide (the page
    scales it to its width), column labels on top. vmax: the colour bar's top (_scale_top);
    at most 1, the bar runs 0..1 in greens only."""
    # Figure + Agg canvas directly: no pyplot, no global backend switch for the caller.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    values = budget.to_numpy(dtype=float)
    all_pass = vmax <= 1
    if all_pass:  # nothing above 1: no red on the bar, greens only
        norm, cmap = Normalize(0.0, 1.0), _budget_cmap(reds=False)
    else:
        norm, cmap = _budget_norm(vmax), _budget_cmap()

    n_rows, n_cols = budget.shape
    # Margins in inches from the label lengths: tight_layout measured every tick label twice
    # and was half the cost of a report.
    left = 0.25 + 0.062 * max((len(str(r)) for r in budget.index), default=4)
    labels = [_column_label(c) for c in budget.columns]
    top = 0.15 + 0.125 * max((x.count("\n") + 1 for x in labels), default=3)
    bottom, right = 0.1, 1.05
    # The page's width: columns share what the row labels and the bar leave (at most 2
    # inch each; at least 0.6, room for "0.000845" in 7 points: a very wide grid is wider).
    col_w = min(2.0, max(0.6, (HEATMAP_WIDTH - left - right) / max(n_cols, 1)))
    w, h = col_w * n_cols, ROW_H * max(n_rows, 3)
    width, height = max(left + w + right, HEATMAP_WIDTH), top + h + bottom
    fig = Figure(figsize=(width, height), dpi=HEATMAP_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / width, bottom / height, w / width, h / height))
    cax = fig.add_axes(((left + w + 0.15) / width, bottom / height, 0.13 / width, h / height))
    shown = np.ma.masked_invalid(np.clip(values, 0, vmax))
    # No comparison: the hatching behind the (transparent) masked cells.
    ax.add_patch(
        Rectangle((-0.5, -0.5), n_cols, n_rows, fill=False, hatch="////", ec="#c8c8c8", lw=0, zorder=-1)
    )
    # One quad per cell (masked cells: the colour map's transparent "bad"): imshow would
    # resample the grid to the PNG's pixels and colour every pixel (a third of a report).
    edges_x, edges_y = np.arange(n_cols + 1) - 0.5, np.arange(n_rows + 1) - 0.5
    ax.pcolormesh(edges_x, edges_y, shown, cmap=cmap, norm=norm)
    rgba = cmap(norm(shown))
    # White lines between the cells (lines, not minor-tick grids: a tenth of the cost).
    ax.hlines(np.arange(0.5, n_rows - 1), -0.5, n_cols - 0.5, colors="white", lw=1.5)
    ax.vlines(np.arange(0.5, n_cols - 1), -0.5, n_rows - 0.5, colors="white", lw=1.5)
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    known = values[~np.isnan(values)]
    worst = known.max() if known.size else math.nan  # inf counts (an exact rule's failure)
    for (i, j), st in np.ndenumerate(status.to_numpy(dtype=object)):
        if pd.isna(st):
            continue  # no comparison in this cell
        text = _g(values[i, j])
        if st in ("vacuous", "error", "absent"):
            text = f"{text} {st}".strip()
        # inf is drawn as the darkest red; a masked cell's text sits on white
        r, g, b, _ = (1, 1, 1, 1) if shown[i, j] is np.ma.masked else rgba[i, j]
        colour = "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5 else "black"
        bold = values[i, j] == worst  # the largest budget: the cell to look at first
        ax.text(
            j, i, text, ha="center", va="center", fontsize=7, color=colour,
            fontweight="bold" if bold else "normal",
        )  # fmt: skip
        if st != "pass":
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.2, ec="black"))
    # Column labels on top, where the eye starts (and in sight however long the map).
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xticks(range(n_cols), labels, fontsize=7)
    ax.set_yticks(range(n_rows), [plot_label(r) for r in budget.index], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.minorticks_off()
    ticks = [0, 0.25, 0.5, 0.75, 1] if all_pass else _bar_ticks(vmax)
    bar.set_ticks(ticks, labels=[_g(float(t)) for t in ticks])
    bar.ax.tick_params(labelsize=7)
    if not all_pass:
        bar.ax.axhline(1.0, color="black", lw=2.5)
    label = "budget used (all <= 1: pass)" if all_pass else "linear to 1 (pass), log above (fail)"
    bar.set_label(plot_label(label + note), fontsize=7)
    return fig, (round(width * CSS_PX_PER_INCH), round(height * CSS_PX_PER_INCH))


def _heatmap_png(budget, status, vmax: float, note: str = "") -> tuple[bytes, tuple[int, int]]:
    """heatmap_figure as PNG bytes, and its size in CSS pixels."""
    fig, size = heatmap_figure(budget, status, vmax, note)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp
    return buf.getvalue(), size


def _chunks(n: int, most: int) -> list[range]:
    """0..n in as few even pieces as keep each at most `most` long."""
    pieces = max(1, math.ceil(n / most))
    cuts = [round(k * n / pieces) for k in range(pieces + 1)]
    return [range(a, b) for a, b in zip(cuts, cuts[1:])]


# --- HTML tables ------------------------------------------------------------------------------

# Column kinds: "text" (one line, sorted as text, numbers in it naturally), "num" (one
# line, right-aligned, sorted by value), "long" (prose that wraps: explanations, notes),
# "id" (a test id or path: wraps only after "::" and "/"), "pair" (the two values at
# the worst element, one above the other so their digits line up; sorted by the first).
AT_WORST = "impl_at_worst / against_at_worst"
PARITY_KINDS = {
    "checks": "num",
    "status": "num",  # sorted by severity
    "budget_used": "num",
    "max_abs_err": "num",
    "max_rel_err": "num",
    "max_ulp": "num",
    "impl_bits": "num",
    "against_bits": "num",
    AT_WORST: "pair",
    "worst_check": "check",
}
# The parity table's columns, the ones to read first on the left (in sight without scrolling
# on a 1280-pixel page): which tensor, which test, how much of the allowance, where and the
# two values there; then the rest of summary_frame's, in its order.
PARITY_FIRST = ["tensor", "worst_check", "status", "budget_used", "worst_index", AT_WORST]
DETECTION_KINDS = {
    "status": "num",
    "margin": "num",
    "disagreeing": "long",
    "note": "long",
    "explanation": "long",
    "check": "id",
}
HEADER_TITLES = {
    "against": "the other side: a framework, or pristine / hand / finite_difference",
    "impl": "the implementation under test",
    "status": "the group's worst status (sorts by severity)",
    "checks": "comparisons in this row",
    "budget_used": "largest element error / tolerance; <= 1 passes (the bar: how much of "
    "the allowance is used)",
    "max_abs_err": "largest |against - impl|",
    "max_rel_err": "largest |against - impl| / |impl|",
    "max_ulp": "largest distance in units in the last place",
    "impl_bits": "effective precision of the implementation under test: the bits its result "
    "carries, from its typical (90th-percentile) error against the float64 truth (24: "
    "float32 correctly rounded; a long float32 sum ~20; float16 operands ~13); fewest of "
    "the row; blank without a float64 truth (float64 checks)",
    "against_bits": "the same for the other side",
    "worst_index": "the element with the largest budget, index in the article layout",
    AT_WORST: "the two values there: above, the implementation under test's "
    "(impl_at_worst), below, the other side's (against_at_worst), with digits enough to "
    "tell them apart",
    "outlier": "which of impl / torch / tensorflow is more than 2x farther from the truth "
    "(float64; extended precision for float64 rows) than the others (none: nobody)",
    "worst_check": "the test to re-run",
    "first_diverging": "the first tensor, in forward/backward order, that disagrees",
    "margin": "error / tolerance at the first diverging tensor (> 1: caught; inf: an exact "
    "rule, any difference counts; shape, dtype: a mismatch)",
    "disagreeing": "every tensor that disagrees, with its error / tolerance",
    "suspect": "the explainer's short name for the difference",
    "note": "where it was caught and where it was expected",
    "explanation": "the explainer's guess",
    "check": "the test to re-run",
}


def _float(x) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _sort_number(value: float) -> str:
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _pair_texts(impl, against) -> tuple[str, str]:
    """The two values at the worst element, with just enough significant digits (3 to 17)
    to tell them apart, and one more; identical values with 9."""
    a, b = _float(impl), _float(against)
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return number_text(impl), number_text(against)
    if a == b:
        return format(a, ".9g"), format(b, ".9g")
    for digits in range(3, 18):
        if format(a, f".{digits}g") != format(b, f".{digits}g"):
            break
    spec = f"#.{min(digits + 1, 17)}g"  # "#": trailing zeros kept, so the digits line up
    return format(a, spec), format(b, spec)


def _breakable(text: str) -> str:
    """A test id or path, escaped, that wraps after "::" and "/" only (not at its hyphens)."""
    pieces = text.replace("::", "::\0").replace("/", "/\0").split("\0")
    return "<wbr>".join(f"<span>{html.escape(x)}</span>" for x in pieces if x)


def _cell(field: str, value, kind: str) -> str:
    """One <td>: escaped text, a data-sort value for numbers and statuses, classes."""
    classes, sort = [kind] if kind != "text" else [], None
    if kind == "pair":
        texts, number = _pair_texts(*value), _float(value[0])
        sort = "" if number is None else _sort_number(number)
        body = "<br>".join(html.escape(t) for t in texts)
        return f'<td class="pair" data-sort="{html.escape(sort)}">{body}</td>'
    if kind == "check":  # the test's name and parameters, the whole id as its tooltip
        full = _g(value)
        short = full.rsplit("::", 1)[-1]
        body = "<wbr>".join(html.escape(x) for x in re.split(r"(?<=[\[\-,])", short))
        return (
            f'<td class="check" title="{html.escape(full)}" data-sort="{html.escape(full)}">{body}</td>'
        )
    shown = _g(value)
    if field == "status":
        sort = str(STATUSES.index(value)) if value in STATUSES else "0"
        classes.append(f"st-{value}" if value in STATUSES else "st-error")
    elif kind == "num":
        number = _float(value)
        sort = "" if number is None else _sort_number(number)
    if field == "budget_used":
        b = _float(value)
        if b is not None and b > 0:  # a bar of the allowance used, in tenths
            classes.append("over" if b > 1 else f"bar b{min(10, math.floor(b * 10))}")
    attrs = f' class="{" ".join(classes)}"' if classes else ""
    if sort is not None:
        attrs += f' data-sort="{html.escape(sort)}"'
    body = _breakable(shown) if kind == "id" else html.escape(shown)
    return f"<td{attrs}>{body}</td>"


def _header(field: str, kind: str) -> str:
    """A sortable header: the field name in words, the field and its meaning as the tooltip."""
    title = field + (f": {HEADER_TITLES[field]}" if field in HEADER_TITLES else "")
    attrs = f' class="sort {kind}" data-type="{"num" if kind in ("num", "pair") else "text"}"'
    attrs += f' scope="col" tabindex="0" aria-sort="none" title="{html.escape(title)}"'
    return f"<th{attrs}>{html.escape(field.replace('_', ' '))}</th>"


def _html_table(frame: pd.DataFrame, kinds: dict, table_id: str) -> str:
    """A sortable table of `frame` (every string escaped), in a box at most 85% of the
    window high that scrolls both ways (its scroll bars stay in sight), header row and first
    column held in place."""
    columns = list(frame.columns)
    head = "".join(_header(c, kinds.get(c, "text")) for c in columns)
    rows = []
    for _, r in frame.iterrows():
        status = r.get("status", "")
        cells = "".join(_cell(c, r[c], kinds.get(c, "text")) for c in columns)
        rows.append(f'<tr class="{html.escape(str(status))}">{cells}</tr>')
    return "\n".join(
        [
            '<div class="box tall">',
            f'<table id="{table_id}" class="sortable">',
            f"<thead><tr>{head}</tr></thead>",
            "<tbody>",
            *rows,
            "</tbody></table></div>",
        ]
    )


def _parity_table(summary: pd.DataFrame) -> str:
    """The parity summary (summary_frame(..., worst_element=True)) with the two values at
    the worst element in one column, one above the other."""
    pairs = list(zip(summary["impl_at_worst"], summary["against_at_worst"]))
    columns = [AT_WORST if c == "impl_at_worst" else c for c in summary.columns]
    columns = [c for c in columns if c != "against_at_worst"]
    columns = [c for c in PARITY_FIRST if c in columns] + [c for c in columns if c not in PARITY_FIRST]
    shown = summary.assign(**{AT_WORST: pairs})[columns]
    return _html_table(shown, PARITY_KINDS, TABLE_UUID)


def markdown_html(text: str) -> str:
    """A Markdown file (audit.md) as HTML: tables as real tables, in sideways-scrolling boxes;
    headings two levels down (under the page's h1 and the section's h2). markdown-it-py
    with raw HTML off (record strings are text: "<b>" stays "&lt;b&gt;") and links, images
    and link definitions off (the page loads nothing and links nowhere)."""
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # the reports extra not installed: still a readable, escaped page
        return f"<pre>{html.escape(text)}</pre>"
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.disable(["image", "link", "autolink", "reference"])
    md.add_render_rule("table_open", lambda *_: '<div class="box"><table class="audit">\n')
    md.add_render_rule("table_close", lambda *_: "</table></div>\n")
    tokens = md.parse(text)
    for t in tokens:
        if t.type in ("heading_open", "heading_close"):
            t.tag = f"h{min(6, int(t.tag[1:]) + 2)}"
    return md.renderer.render(tokens, md.options, {})


# --- the page ---------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:#1f2328;margin:0 auto;padding:1.2em 2em 3em;max-width:1880px}
@media (max-width:1400px){body{padding:1em 1em 3em}}
h1{font-size:1.7em;margin:0.3em 0 0.4em}
h2{font-size:1.3em;margin:1.8em 0 0.5em;padding-bottom:0.2em;border-bottom:1px solid #d8dee4}
h3{font-size:1.15em;margin:1.2em 0 0.4em}h4{font-size:1.05em;margin:1.2em 0 0.4em}
p,li{overflow-wrap:anywhere}
ul.headline{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;margin:0 0 0.8em;
padding:0.6em 1em 0.6em 2.2em;font-size:1.05em}
p.completeness,p.synthetic{padding:0.6em 1em;border-radius:6px;margin:0 0 0.8em}
p.completeness{background:#fff1e5;border:1px solid #fb8f44}
p.synthetic{background:#fff8c5;border:1px solid #d4a72c}
p.hint{color:#57606a;font-size:0.9em;margin:0.2em 0}
.box{max-width:100%;overflow-x:auto;border:1px solid #d0d7de;border-radius:6px;margin:0.4em 0 1em}
.box>table{min-width:100%}
table{border-collapse:collapse;font-size:12.5px}
th,td{padding:3px 6px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
thead th{background:#f6f8fa;border-bottom:1px solid #d0d7de;vertical-align:bottom}
th.num,td.num{text-align:right}
td.num{white-space:nowrap;font-variant-numeric:tabular-nums}
table.sortable td{white-space:nowrap}
table.sortable td.long{white-space:normal;min-width:12em;overflow-wrap:break-word}
table.sortable td.long:last-child{min-width:30em}
table.sortable td.id{white-space:normal}
table.sortable td.check{white-space:normal;min-width:14em;max-width:22em;overflow-wrap:anywhere}
td.pair{text-align:right;font-variant-numeric:tabular-nums}
td.id>span{white-space:nowrap}
.box.tall{max-height:85vh;overflow:auto}
table.sortable thead th{position:sticky;top:0;z-index:2}
table.sortable tr>:first-child{position:sticky;left:0;background:#fff;z-index:1}
table.sortable thead tr>:first-child{background:#f6f8fa;z-index:3}
table.sortable tr.fail>td:first-child,table.sortable tr.error>td:first-child{background:#ffebe9}
table.sortable tr.vacuous>td:first-child{background:#fff8c5}
table.sortable tr.absent>td:first-child{background:#eeeeee}
table.audit td{min-width:5em}
tr.fail>td,tr.error>td{background:#ffebe9}
tr.vacuous>td{background:#fff8c5}
tr.absent>td{background:#eeeeee}
td.st-fail,td.st-error{color:#a40e26;font-weight:bold}
td.st-vacuous,td.st-absent{font-weight:bold}
table td.over{background:#cb181d;color:#fff;font-weight:bold}
td.bar{background-repeat:no-repeat}
td.b0{background-image:linear-gradient(90deg,#a1d99b 3%,transparent 3%)}
td.b1{background-image:linear-gradient(90deg,#a1d99b 10%,transparent 10%)}
td.b2{background-image:linear-gradient(90deg,#a1d99b 20%,transparent 20%)}
td.b3{background-image:linear-gradient(90deg,#a1d99b 30%,transparent 30%)}
td.b4{background-image:linear-gradient(90deg,#74c476 40%,transparent 40%)}
td.b5{background-image:linear-gradient(90deg,#74c476 50%,transparent 50%)}
td.b6{background-image:linear-gradient(90deg,#41ab5d 60%,transparent 60%)}
td.b7{background-image:linear-gradient(90deg,#41ab5d 70%,transparent 70%)}
td.b8{background-image:linear-gradient(90deg,#238b45 80%,transparent 80%);color:#fff}
td.b9{background-image:linear-gradient(90deg,#238b45 90%,transparent 90%);color:#fff}
td.b10{background-image:linear-gradient(90deg,#006d2c 100%,transparent 100%);color:#fff}
th.sort{cursor:pointer;user-select:none}
th.sort:hover,th.sort:focus{background:#eaeef2}
th.sort::after{content:"\\2195";color:#8c959f;padding-left:0.2em;font-size:0.85em}
th[aria-sort=ascending]::after{content:"\\25B2";color:#1f2328}
th[aria-sort=descending]::after{content:"\\25BC";color:#1f2328}
table.meta th{text-align:right;white-space:nowrap;background:#f6f8fa}
table.meta td{overflow-wrap:anywhere}
img.heatmap{display:block;width:100%;max-width:100%;height:auto;margin:0 0 0.6em;
max-height:calc(100vh - 3em);object-fit:contain;object-position:left top}
img.losscurve{display:block;max-width:100%;height:auto;margin:0 0 0.3em}
section.heatmap h3 span.count{color:#57606a;font-weight:normal;font-size:0.85em}
p.credit{color:#57606a;font-size:0.9em;margin-top:2em}
pre{background:#f6f8fa;padding:1em;overflow-x:auto}
code{background:#f6f8fa;padding:0 0.2em;border-radius:3px}
"""

# Click (or Enter on) a header: sort by that column, again: the other way. Numbers by value
# (data-sort), blanks last either way; text naturally (D2 before D10); stable.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  heads.forEach(function (th, col) {
    function key(row) {
      var cell = row.cells[col];
      var text = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort")
        : cell.textContent.trim();
      if (text === "") return null;
      if (th.getAttribute("data-type") !== "num") return text;
      var x = Number(text);
      return isNaN(x) ? null : x;
    }
    function sort() {
      var up = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows).map(function (r) {
        return [key(r), r];
      });
      rows.sort(function (a, b) {
        if (a[0] === null || b[0] === null) return (a[0] === null) - (b[0] === null);
        var d = typeof a[0] === "number" ? (a[0] > b[0]) - (a[0] < b[0])
          : a[0].localeCompare(b[0], undefined, {numeric: true});
        return up ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r[1]); });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
    });
  });
});
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The page may run only its own script and style and show only data: images.
CSP = (
    f"default-src 'none'; img-src data:; style-src {_csp_hash(STYLE)}; "
    f"script-src {_csp_hash(SCRIPT)}; base-uri 'none'; form-action 'none'"
)


def heat_map_html(df: pd.DataFrame, order=()) -> str:
    """The heat maps, one section per network (heat_map_sections: an <h3> each), each as
    <img>s with the PNG inline, a section longer than MAX_MAP_ROWS rows split into even
    pieces so that each fits one screen (summary.html's, and a notebook's
    parity_tests.api.Result). One colour scale for the page (_scale_top)."""
    vmax = _scale_top(df[df["mode"] != "detection"])
    impls = sorted(set(df.loc[df["mode"] != "detection", "impl"]) - {""})
    note = f"; impl {impls[0]}" if len(impls) == 1 and impls[0] != "reference" else ""
    parts = [
        '<p class="hint">Largest budget used (error / tolerance) per tensor (rows) and '
        "framework x dtype x mode (columns). Bold: the largest; outlined: not a pass; "
        "hatched: no comparison."
        + (" Every budget is at most 1: the scale stops at 1." if vmax <= 1 else "")
        + "</p>"
    ]
    for name, part in heat_map_sections(df):
        budget, status = budget_grid(part, order)
        pieces = _chunks(len(budget), MAX_MAP_ROWS)
        parts.append(
            f'<section class="heatmap"><h3>{html.escape(name)} '
            f'<span class="count">({len(budget)} tensors)</span></h3>'
        )
        for k, rows in enumerate(pieces):
            png, (w, h) = _heatmap_png(budget.iloc[rows], status.iloc[rows], vmax, plot_label(note))
            data = base64.b64encode(png).decode("ascii")
            alt = f"heat map of the largest budget used: {name}"
            if len(pieces) > 1:
                alt += f", part {k + 1} of {len(pieces)}"
            parts.append(
                f'<img class="heatmap" width="{w}" height="{h}" alt="{html.escape(alt)}" '
                f'src="data:image/png;base64,{data}">'
            )
        parts.append("</section>")
    return "\n".join(parts)


def summary_html(
    df: pd.DataFrame,
    meta: dict,
    extra_sections: dict[str, str] | None = None,
    heat_map: bool = True,
) -> str:
    """A self-contained HTML page: completeness banner, headline, synthetic-data banner,
    status counts, heat map, sortable summary (parity rows, with the worst element),
    detection checks, run facts, extras (Markdown ones, audit.md, as HTML).

    Every string from a record or the meta is HTML-escaped.
    """
    esc = html.escape
    detection = df["mode"] == "detection"
    summary = summary_frame(df[~detection], worst_element=True)
    detections = detection_frame(df)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Parity report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Parity report</h1>",
    ]
    banner = completeness_banner(meta)
    if banner:
        parts.append(f'<p class="completeness"><strong>{esc(banner[0])}</strong>: {esc(banner[1])}</p>')
    parts.append(headline_html(df, meta))
    synthetic = synthetic_banner(df, meta)
    if synthetic:
        parts.append(
            f'<p class="synthetic"><strong>{esc(synthetic[0])}</strong>: {esc(synthetic[1])}</p>'
        )
    parts.append(f"<p><strong>{esc(status_counts(df))}</strong></p>")
    if summary.empty and detections.empty:
        parts.append("<p>No comparisons were recorded.</p>")
    if not summary.empty:
        if heat_map:
            parts += [
                '<h2 id="heatmap">Budget used by tensor and comparison</h2>',
                heat_map_html(df, tensor_order(meta)),
            ]
        parts += [
            '<h2 id="summary">Summary (worst first)</h2>',
            '<p class="hint">One row per tensor x against x dtype x mode x impl. Click a '
            "column header to sort by it, again to reverse; hover a header for its meaning.</p>",
            _parity_table(summary),
        ]
    section = trajectory.html_section(df, esc)  # K-step runs only
    if section:
        parts.append(section)
    if not detections.empty:
        parts += [
            "<h2>Detection checks (published-code variants and mutants)</h2>",
            '<p class="hint">One row per variant or mutant run against a framework. pass: '
            "caught at the tensor it changes. margin: error / tolerance at the first diverging "
            "tensor (&gt; 1: caught).</p>",
            _html_table(detections, DETECTION_KINDS, DETECTION_TABLE_ID),
        ]
    parts += [
        "<h2>Run</h2>",
        '<div class="box"><table class="meta">',
        *(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _meta_items(df, meta, True)),
        "</table></div>",
    ]
    for title, text in (extra_sections or {}).items():
        body = markdown_html(text) if title.endswith(".md") else f"<pre>{esc(text)}</pre>"
        parts += [f"<h2>{esc(title)}</h2>", body]
    if _credit(meta):
        parts.append(f'<p class="credit">{esc(_credit(meta))}</p>')
    parts += [f"<script>{SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"
