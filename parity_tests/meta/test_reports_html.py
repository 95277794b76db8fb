"""summary.html read back with the standard library's html.parser (no browser): its parts
are there and in order, its tables sort, audit.md is real tables, it loads nothing from
outside, and hostile record strings stay text."""

import base64
import hashlib
import re
from html.parser import HTMLParser

import pytest

from reports import records_frame, summary_html
from reports.audit import audit_markdown
from reports.render import SCRIPT, STYLE
from reports.tables import fill_outliers

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
# Every element summary.html is made of; a record string turned into markup would add one.
ELEMENTS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "strong",
    "em", "code", "ul", "li", "div", "table", "thead", "tbody", "tr", "th", "td", "img",
    "span", "wbr", "br", "script", "pre", "section",
}  # fmt: skip


def rec(**fields):
    base = {"check": "parity_tests/test_parity.py::test_forward[Z1-stage-torch-float32]",
            "tensor": "Z1", "equation": "E1", "mode": "stage", "impl": "reference",
            "against": "torch", "dtype": "float32", "status": "pass", "passed": True,
            "budget_used": 0.5, "worst_index": "(0, 1, 2)", "impl_at_worst": 0.74412304,
            "against_at_worst": 0.74412322, "data_source": "mnist:/d.npz (x)"}  # fmt: skip
    return base | fields


RECORDS = [
    rec(),
    rec(check="t[A1]", tensor="A1", equation="E3", budget_used=0.9, against="tensorflow"),
    rec(check="t[dE_dO]", tensor="dE_dO", equation="E8", status="fail", passed=False,
        budget_used=4.5e15, impl_at_worst=-0.5814, against_at_worst=0.5814),
    rec(check=f"t[{HOSTILE}]", tensor=f"T{HOSTILE}", impl=f"x{HOSTILE}", status="fail",
        passed=False, budget_used=2.0, explanation=HOSTILE, note=HOSTILE),
    rec(check="t[f_new]", tensor="f_new", status="absent", passed=False, mode="contract",
        against="", budget_used=None, impl_at_worst=None, against_at_worst=None),
    rec(check="v[D1]", impl="published:D1", mode="detection", tensor="Z2", budget_used=1e-3,
        first_diverging="Z2", disagreeing="Z2, dE_db", disagreeing_budgets="1e+03, shape",
        note="caught at Z2, the tensor it changes", explanation=f"affine {HOSTILE}"),
    rec(check="m[sign]", impl="mutant:sign_dE_dO", mode="detection", tensor="dE_dO",
        status="fail", passed=False, budget_used=float("nan"), first_diverging="",
        note="not detected: expected at dE_dO", error="not detected"),
]  # fmt: skip
META = {
    "seed": 0,
    "data_source": f"mnist:/d.npz ({HOSTILE})",
    "tensor_order": ["Z1", "A1", "dE_dO", "f_new"],
    "impl": "reference",
    "command": f"pytest -k '{HOSTILE}'",
}


def audit(records) -> str:
    return audit_markdown(
        records,
        equations=[{"id": "E1", "statement": "Z1 = X * f", "verdict": "holds", "note": HOSTILE}],
        variants=[{"id": "D1", "title": f"a departure {HOSTILE}", "equation": "E5", "first": "Z2"}],
        mutants=[{"id": "sign_dE_dO", "title": "sign", "equation": "E8", "first": "dE_dO"}],
        order=["Z1", "Z2", "dE_dO"],
        meta={"impl": "reference", "data_source": HOSTILE},
    )


class Page(HTMLParser):
    """The elements (tag, attrs, text inside) of a page, in document order."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements, self.open = [], []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(element)
        if tag not in ("meta", "img", "wbr", "br"):  # void elements
            self.open.append(element)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for element in self.open:
            element["text"] += data

    def all(self, tag, **attrs):
        return [
            e
            for e in self.elements
            if e["tag"] == tag and all(e["attrs"].get(k) == v for k, v in attrs.items())
        ]

    def table(self, table_id):
        """Header texts and rows (lists of cell elements) of the table with this id."""
        start = self.elements.index(self.all("table", id=table_id)[0])
        end = next(
            (i for i in range(start + 1, len(self.elements)) if self.elements[i]["tag"] == "table"),
            len(self.elements),
        )
        inside = self.elements[start:end]
        heads = [e for e in inside if e["tag"] == "th"]
        rows, row = [], None
        for e in inside:
            if e["tag"] == "tr":
                row = []
                rows.append(row)
            elif e["tag"] == "td":
                row.append(e)
        return heads, [r for r in rows if r]


@pytest.fixture(scope="module")
def page():
    text = summary_html(fill_outliers(records_frame(RECORDS)), META, {"audit.md": audit(RECORDS)})
    return text, Page(text)


def test_headline_first_then_heat_map_then_tables(page):
    text, parsed = page
    body = parsed.elements[parsed.elements.index(parsed.all("h1")[0]) + 1 :]
    assert body[0]["tag"] == "ul" and body[0]["attrs"]["class"] == "headline"
    assert body[0]["text"].startswith("verdict: first diverging tensor dE_dO")
    headings = [e["text"] for e in parsed.all("h2")]
    assert headings == [
        "Budget used by tensor and comparison",
        "Summary (worst first)",
        "Detection checks (published-code variants and mutants)",
        "Run",
        "audit.md",
    ]
    assert "Yann LeCun" in text  # an MNIST run


def test_heat_map_is_an_inline_png_that_scales_to_the_page(page):
    text, parsed = page
    (img,) = parsed.all("img")
    src = img["attrs"]["src"]
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert img["attrs"]["class"] == "heatmap" and int(img["attrs"]["width"]) > 0
    # the page's width, at 1280 and at 1920 (issue 24, 5)
    assert "img.heatmap{display:block;width:100%;max-width:100%;height:auto" in STYLE
    assert ".box{max-width:100%;overflow-x:auto" in STYLE  # tables scroll in their own box


def test_summary_table_sorts_and_shows_the_worst_element(page):
    _, parsed = page
    (table,) = parsed.all("table", id="parity-summary")
    assert table["attrs"]["class"] == "sortable"
    heads, rows = parsed.table("parity-summary")
    for th in heads:
        assert "sort" in th["attrs"]["class"].split() and th["attrs"]["tabindex"] == "0"
        assert th["attrs"]["aria-sort"] == "none" and th["attrs"]["data-type"] in ("num", "text")
        assert th["attrs"]["title"]  # the field's meaning
    names = [th["attrs"]["title"].split(":")[0] for th in heads]
    # the columns to read first on the left, in sight at 1280 px (issue 24, 5)
    assert names[:6] == [
        "tensor", "worst_check", "status", "budget_used", "worst_index",
        "impl_at_worst / against_at_worst",
    ]  # fmt: skip
    assert names[6:9] == ["equation", "against", "dtype"]
    assert len(rows) == 5 and all(len(r) == len(heads) for r in rows)  # no detection rows
    by_tensor = {r[0]["text"]: r for r in rows}
    z1 = by_tensor["Z1"]
    assert z1[4]["text"] == "(0, 1, 2)" and z1[5]["text"] == "0.744123040.74412322"  # <br>
    assert by_tensor["dE_dO"][5]["text"] == "-0.58140.5814"
    check = z1[1]  # the test's name shown, its whole id the tooltip
    assert check["text"] == "test_forward[Z1-stage-torch-float32]"
    assert check["attrs"]["title"] == RECORDS[0]["check"]
    for row in rows:  # numbers sort by value: every numeric cell says it exactly
        for th, td in zip(heads, row):
            if th["attrs"]["data-type"] == "num":
                assert re.fullmatch(r"(-?Infinity|[-+0-9.e]*)", td["attrs"]["data-sort"])
    assert by_tensor["dE_dO"][3]["attrs"]["data-sort"] == repr(4.5e15)
    assert "over" in by_tensor["dE_dO"][3]["attrs"]["class"]  # a failing budget stands out
    assert [r[0]["text"] for r in rows][:2] == ["dE_dO", f"T{HOSTILE}"]  # worst first


def test_detection_rows_have_their_own_table_and_measure(page):
    _, parsed = page
    heads, rows = parsed.table("parity-detection")
    names = [th["attrs"]["title"].split(":")[0] for th in heads]
    assert "margin" in names and "budget_used" not in names
    assert [r[names.index("impl")]["text"] for r in rows] == ["mutant:sign_dE_dO", "published:D1"]
    d1 = rows[1]
    assert d1[names.index("margin")]["text"] == "1e+03"  # error / tolerance, not 1e-3
    assert d1[names.index("disagreeing")]["text"] == "Z2 (1e+03), dE_db (shape)"
    assert rows[0][names.index("status")]["text"] == "fail"


def test_audit_is_html_tables_not_a_pre_block(page):
    _, parsed = page
    audit_tables = [t for t in parsed.all("table") if t["attrs"].get("class") == "audit"]
    assert len(audit_tables) == 3  # equations, variants, mutants
    assert all("<" not in t["text"] or HOSTILE in t["text"] for t in audit_tables)
    assert not any("Derivation audit" in e["text"] for e in parsed.all("pre"))
    heat_maps = [e for e in parsed.all("section") if e["attrs"].get("class") == "heatmap"]
    h3 = [e["text"] for e in parsed.all("h3") if not any(e["text"] in s["text"] for s in heat_maps)]
    assert h3 == ["Derivation audit"]
    eq_table = audit_tables[0]["text"]
    assert "Z1 = X * f" in eq_table and HOSTILE in eq_table  # shown, as text


def test_hostile_strings_stay_text_and_nothing_loads_from_outside(page):
    text, parsed = page
    assert {e["tag"] for e in parsed.elements} <= ELEMENTS
    (script,) = parsed.all("script")
    assert script["attrs"] == {} and script["text"] == SCRIPT  # only the page's own
    (img,) = parsed.all("img")
    for e in parsed.elements:
        assert not any(k.startswith("on") for k in e["attrs"]), e
        for k in ("src", "href"):
            assert e is img or k not in e["attrs"], e
    # The strings are there, as text: in the summary, the detection table, the run, the audit.
    cells = [e["text"] for e in parsed.all("td")]
    assert f"T{HOSTILE}" in cells and f"x{HOSTILE}" in cells
    assert f"t[{HOSTILE}]" in cells  # a test id, though it may wrap after "/"
    assert f"affine {HOSTILE}" in cells and f"pytest -k '{HOSTILE}'" in cells
    assert HOSTILE not in text and "<img src=x" not in text


def test_the_content_security_policy_allows_exactly_its_own_style_and_script(page):
    text, parsed = page
    (csp,) = [m for m in parsed.all("meta") if m["attrs"].get("http-equiv")]
    policy = csp["attrs"]["content"]
    (style,) = parsed.all("style")
    assert style["text"] == STYLE

    def sha(s):
        return "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"

    assert "default-src 'none'" in policy and "img-src data:" in policy
    assert f"style-src {sha(STYLE)}" in policy and f"script-src {sha(SCRIPT)}" in policy


def test_synthetic_run_has_the_banner_and_no_credit():
    meta = META | {"data_source": "synthetic:seed=0 (no MNIST found: none; sha256: 00)"}
    text = summary_html(fill_outliers(records_frame(RECORDS[:1])), meta, heat_map=False)
    parsed = Page(text)
    after_h1 = parsed.elements[parsed.elements.index(parsed.all("h1")[0]) + 1 :]
    assert after_h1[0]["attrs"].get("class") == "headline"
    banner = next(e for e in after_h1 if e["tag"] == "p")
    assert banner["attrs"]["class"] == "synthetic"
    assert banner["text"].startswith("SYNTHETIC DATA: the images are deterministic")
    assert "LeCun" not in text


def test_same_records_same_page():
    frame = fill_outliers(records_frame(RECORDS))
    assert summary_html(frame, META) == summary_html(fill_outliers(records_frame(RECORDS)), META)
