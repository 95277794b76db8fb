"""The heat map at a glance (issue 24, 5): one section per network, each map at most one
screen tall with its column labels on top, the page's width, and a colour bar that shows no
red when every comparison passed. Read from the HTML and the matplotlib figure, no browser
(benchmarks/screenshots.py takes the screenshots a person looks at)."""

import pandas as pd
import pytest
from test_reports_html import Page, rec

from reports import records_frame
from reports.render import (
    ARTICLE_SECTION,
    HEATMAP_DPI,
    LAYER_SECTION,
    MAX_MAP_ROWS,
    STYLE,
    _scale_top,
    budget_grid,
    heat_map_html,
    heat_map_sections,
    heatmap_figure,
)
from reports.tables import fill_outliers

ARTICLE = [rec(tensor=t, check=f"t[{t}]", budget_used=0.1) for t in ("Z1", "A1", "dE_dW")]
INPUTS = [rec(tensor="X", mode="inputs", against="pristine", budget_used=0.0)]
LENET = [rec(tensor=f"dense{k}.Z", model="lenet", check=f"m[{k}]", budget_used=0.2) for k in range(60)]
LAYERS = [rec(tensor="conv2d.dF", mode="hand", against="hand", budget_used=0.3)]


def frame(records):
    return fill_outliers(records_frame(records))


def test_one_section_per_network_in_order():
    df = frame(LAYERS + LENET + ARTICLE + INPUTS)
    names = [name for name, _ in heat_map_sections(df)]
    assert names == [ARTICLE_SECTION, "network lenet", LAYER_SECTION]
    parts = dict(heat_map_sections(df))
    assert set(parts[ARTICLE_SECTION]["tensor"]) == {"Z1", "A1", "dE_dW", "X"}  # inputs too
    assert set(parts[LAYER_SECTION]["tensor"]) == {"conv2d.dF"}
    page = Page(heat_map_html(df))
    sections = [e for e in page.all("section") if e["attrs"].get("class") == "heatmap"]
    assert [s["text"].split(" (")[0] for s in sections] == names
    assert [e["text"] for e in page.all("h3")][1] == "network lenet (60 tensors)"


def test_a_long_section_is_split_so_each_map_fits_one_screen():
    page = Page(heat_map_html(frame(LENET)))
    imgs = page.all("img")
    assert len(imgs) == 3  # 60 rows: 20 + 20 + 20, not 26 + 26 + 8
    for img in imgs:
        w, h = int(img["attrs"]["width"]), int(img["attrs"]["height"])
        assert h * 1248 / w <= 900  # shown 1248 px wide (a 1280-pixel window): one screen
    assert "part 1 of 3" in imgs[0]["attrs"]["alt"]
    assert MAX_MAP_ROWS <= 30


def test_a_map_widened_to_the_page_is_still_at_most_one_screen_tall():
    # At 1920 px a 1248-px map drawn at the page's width would grow past 1080 px: the page's
    # style caps its height at the window's and keeps its proportions.
    rule = next(r for r in STYLE.split("}") if r.strip().startswith("img.heatmap{"))
    for declaration in ("width:100%", "max-height:calc(100vh", "object-fit:contain"):
        assert declaration in rule.replace("\n", "")


def test_column_labels_are_on_top():
    budget, status = budget_grid(frame(ARTICLE))
    fig, (w, _) = heatmap_figure(budget, status, 1.0)
    ax = fig.axes[0]
    assert ax.xaxis.get_ticks_position() == "top" and ax.xaxis.get_label_position() == "top"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["torch\nfloat32\nstage"]
    assert w == round(fig.get_figwidth() * 96) and fig.dpi == HEATMAP_DPI


@pytest.mark.parametrize(
    "budgets, top", [((0.1, 0.9), 1.0), ((0.1, 1.0), 1.0), ((0.5, 37.0), 37.0), ((2.0,), 10.0)]
)
def test_colour_bar_stops_at_1_when_everything_passed(budgets, top):
    df = frame([rec(tensor=f"T{i}", budget_used=b) for i, b in enumerate(budgets)])
    assert _scale_top(df) == top
    budget, status = budget_grid(df)
    fig, _ = heatmap_figure(budget, status, top)
    bar = fig.axes[1]
    colours = [tuple(c) for c in fig.axes[0].collections[0].cmap(pd.Series([0.0, 1.0]))]
    lo, hi = bar.get_ylim()
    if top == 1.0:  # greens only, top = 1: no red anywhere on the bar
        assert (lo, hi) == (0.0, 1.0)
        assert all(g >= r for r, g, _, _ in colours)
        assert "all <= 1" in bar.get_ylabel()
    else:  # red above 1
        r, g, _, _ = colours[1]
        assert r > g
