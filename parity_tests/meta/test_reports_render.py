"""summary.md, summary.html and audit.md: strings from records and the meta cannot be turned
against the reader (no raw HTML, no broken Markdown tables); the completeness banner."""

import html
import re

import pytest

from reports import records_frame, summary_html, summary_markdown
from reports.audit import audit_markdown
from reports.escape import markdown_cell
from reports.render import MNIST_CREDIT, SCRIPT, _credit
from reports.tables import detection_frame, fill_outliers, summary_frame


def rec(**fields):
    base = {"check": "t[a]", "tensor": "Z1", "equation": "E1", "mode": "stage", "impl": "reference",
            "against": "torch", "dtype": "float32", "status": "pass", "passed": True,
            "budget_used": 0.5}  # fmt: skip
    return base | fields


def frame(records):
    return fill_outliers(records_frame(records))


def page_html(records, meta=None, **kw) -> str:
    """summary.html without its own sorting script (the one <script> it may hold)."""
    page = summary_html(frame(records), meta or {}, **kw)
    assert page.count("<script>") == 1
    return page.replace(f"<script>{SCRIPT}</script>", "")


def cells(line: str) -> list[str]:
    """The cells of one Markdown table row, split at unescaped pipes."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


HOSTILE = [
    ("impl", "x<svg onload=alert(1)>"),
    ("tensor", "<b>bold</b>"),
    ("check", "t[a|b]<script>alert(1)</script>"),
    ("against", "torch & <i>friends</i>"),
    ("equation", "E1\n| injected | row |"),
]
IDS = ["impl-svg", "tensor-b", "check-pipe-script", "against-ampersand", "equation-newline"]


@pytest.mark.parametrize(("field", "value"), HOSTILE, ids=IDS)
def test_summary_html_escapes_record_strings(field, value):
    page = page_html([rec(**{field: value})], heat_map=False)
    assert "<script" not in page and "<svg" not in page and "<b>" not in page and "<i>" not in page
    # in the summary table (a newline is harmless in HTML; a test id may wrap after "/")
    assert html.escape(value) in re.sub(r"<wbr>|</?span>", "", page)


@pytest.mark.parametrize(("field", "value"), HOSTILE, ids=IDS)
def test_summary_markdown_escapes_record_strings(field, value):
    md = summary_markdown(frame([rec(**{field: value})]), {})
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 3  # header, rule, one row: no injected row
    assert len(cells(table[2])) == len(cells(table[0]))
    assert "<" not in md.split("## Summary")[1] and markdown_cell(value) in table[2]


@pytest.mark.parametrize(
    "meta",
    [{"data_source": "<img src=x onerror=alert(1)>"}, {"versions": {"torch": "2.13<x>"}},
     {"seed": "0 <b>"}],
    ids=["data-source", "versions", "seed"],
)  # fmt: skip
def test_meta_strings_are_escaped(meta):
    page = summary_html(frame([rec()]), meta, heat_map=False)
    md = summary_markdown(frame([rec()]), meta)
    for text in (page, md):
        assert "<img" not in text and "<x>" not in text and "<b>" not in text


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("a|b", "a\\|b"),
        ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
        ("R&D", "R&amp;D"),
        ("one\ntwo\r\nthree\rfour", "one two three four"),
        (" padded ", "padded"),
    ],
    ids=["pipe", "tag", "ampersand", "newlines", "strip"],
)
def test_markdown_cell(value, cell):
    assert markdown_cell(value) == cell


@pytest.mark.parametrize(
    "value",
    [
        "parity_tests/test_parity.py::test_forward[A1-stage-tensorflow-float32]",
        "E8*E9",
        "(2, 3, 1)",
        "1.79e-07",
        "mnist:/data/mnist.npz (from PARITY_MNIST; sha256 of the first 200 images: c53778cb)",
        "explainer: torch's dE_df is 200 x ours (N = 200): mean vs sum over the batch?",
    ],
    ids=["check", "equation", "index", "number", "data-source", "explainer"],
)
def test_normal_values_pass_unchanged(value):
    # Existing reports stay byte-identical: normal values hold none of & < > | or newlines.
    assert markdown_cell(value) == value


def test_audit_tables_escape_record_strings():
    detection = dict(first_diverging="Z1", disagreeing="Z1, <i>|", disagreeing_budgets="3.2e+12, <b>|",
                     explanation="x<script>|y", note="<u>")  # fmt: skip
    records = [
        rec(against="hand<b>|x", mode="hand<b>|x"),
        rec(impl="published:D1", mode="detection", budget_used=0.1, **detection),
    ]
    text = audit_markdown(
        records,
        equations=[{"id": "E1", "statement": "Z1 = f * X", "verdict": "holds"}],
        variants=[{"id": "D1", "title": "a departure", "equation": "E1", "first": "Z1"}],
        mutants=[],
        order=["Z1"],
        meta={"impl": "reference", "data_source": "<img src=x>"},
    )
    assert "<b>" not in text and "<script>" not in text and "<img" not in text and "<i>" not in text
    lines = text.splitlines()
    for head in ("| eq |", "| D |"):
        i = next(i for i, line in enumerate(lines) if line.startswith(head))
        assert len(cells(lines[i + 2])) == len(cells(lines[i])), lines[i + 2]
    assert "x&lt;script&gt;\\|y" in text


@pytest.mark.parametrize(
    ("completeness", "md_line", "html_line"),
    [
        (
            {"status": "partial", "detail": "selected with -k 'Z1'"},
            "**PARTIAL RUN**: selected with -k 'Z1'",
            '<p class="completeness"><strong>PARTIAL RUN</strong>: selected with -k &#x27;Z1&#x27;</p>',
        ),
        (
            {"status": "interrupted", "detail": "<KeyboardInterrupt>: 3 of 9 tests ran"},
            "**INTERRUPTED RUN**: &lt;KeyboardInterrupt&gt;: 3 of 9 tests ran",
            '<p class="completeness"><strong>INTERRUPTED RUN</strong>: '
            "&lt;KeyboardInterrupt&gt;: 3 of 9 tests ran</p>",
        ),
        ({"status": "complete", "detail": "9 tests"}, None, None),
        (None, None, None),
    ],
    ids=["partial", "interrupted-escaped", "complete", "not-recorded"],
)
def test_completeness_banner_right_after_the_title(completeness, md_line, html_line):
    meta = {} if completeness is None else {"completeness": completeness}
    md = summary_markdown(frame([rec()]), meta)
    page = summary_html(frame([rec()]), meta, heat_map=False)
    after_title = md.splitlines()[2]
    after_h1 = page.split("<h1>Parity report</h1>\n")[1].splitlines()[0]
    verdict_md = "- **verdict**: every comparison passed (1 comparison)"
    verdict_html = '<ul class="headline"><li><strong>verdict</strong>: every comparison passed'
    if md_line is None:
        assert after_title == verdict_md and after_h1.startswith(verdict_html)
    else:
        assert after_title == md_line and after_h1 == html_line
        # the headline right under the banner
        assert md.splitlines()[4] == verdict_md
        assert page.split(html_line + "\n")[1].startswith(verdict_html)
    assert md == summary_markdown(frame([rec()]), meta)  # identical for identical inputs


FAILING = [
    rec(check="t[ok]"),
    rec(check="t[b]", tensor="dE_dZ2", equation="E8*E9", status="fail", passed=False,
        budget_used=4.0, explanation="torch's dE_dZ2 is 2 x ours [factor; fit residual 0.0e+00]"),
    rec(check="t[c]", tensor="A1", status="error", passed=False, budget_used=None, error="boom"),
    rec(check="t[d]", tensor="f_new", status="absent", passed=False, mode="contract", against="",
        budget_used=None),
]  # fmt: skip
ORDER = {"tensor_order": ["Z1", "A1", "dE_dZ2", "f_new"]}


def test_summaries_start_with_the_headline():
    md = summary_markdown(frame(FAILING), ORDER)
    assert md.splitlines()[2:7] == [
        "- **verdict**: first diverging tensor dE\\_dZ2 (E8\\*E9, stage, impl reference vs "
        "torch, float32): budget used 4 (error / tolerance); explainer: torch's dE\\_dZ2 is 2 "
        "x ours \\[factor; fit residual 0.0e+00\\]",
        "- **errors**: A1 could not be compared (1 comparison; first: boom)",
        "- **not provided**: f\\_new",
        "",
        "**1 error, 1 fail, 0 vacuous, 1 absent, 1 pass (3 comparisons)**",
    ]
    page = summary_html(frame(FAILING), ORDER, heat_map=False)
    head = page.split("<h1>Parity report</h1>\n")[1].splitlines()[0]
    assert head == (
        '<ul class="headline"><li><strong>verdict</strong>: first diverging tensor dE_dZ2 '
        "(E8*E9, stage, impl reference vs torch, float32): budget used 4 (error / tolerance); "
        "explainer: torch&#x27;s dE_dZ2 is 2 x ours [factor; fit residual 0.0e+00]</li>"
        "<li><strong>errors</strong>: A1 could not be compared (1 comparison; first: boom)</li>"
        "<li><strong>not provided</strong>: f_new</li></ul>"
    )


@pytest.mark.parametrize(("field", "value"), HOSTILE, ids=IDS)
def test_headline_escapes_record_strings(field, value):
    bad = rec(status="fail", passed=False, budget_used=2.0, explanation="x<script>*y*|`z`")
    md = summary_markdown(frame([bad | {field: value}]), {})
    page = summary_html(frame([bad | {field: value}]), {}, heat_map=False)
    verdict = md.splitlines()[2]
    assert verdict.startswith("- **verdict**: ") and "<" not in verdict and "\n" not in verdict
    assert "x&lt;script&gt;\\*y\\*\\|\\`z\\`" in verdict
    head = page.split("<h1>Parity report</h1>\n")[1].splitlines()[0]
    assert "<script>" not in head and "<svg" not in head and "<b>" not in head and "<i>" not in head
    if field != "check":  # the headline names no test
        assert html.escape(value.split("\n")[0]) in head


def test_absent_rows_are_styled_and_drawn():
    page = summary_html(frame(FAILING), ORDER, heat_map=True)
    assert '<tr class="absent">' in page and 'src="data:image/png;base64,' in page


@pytest.mark.parametrize(
    "fields",
    [{"tensor": "$\\frac{$"}, {"impl": "D$1$"}, {"against": "$x^$", "mode": "$$"}],
    ids=["tensor-bad-mathtext", "impl-dollars", "column-label"],
)
def test_heat_map_draws_labels_literally(tmp_path, fields):
    # matplotlib parses "$...$" as mathtext: "$\\frac{$" made write_report raise.
    page = summary_html(frame([rec(**fields)]), {}, heat_map=True)
    assert 'src="data:image/png;base64,' in page


SYNTHETIC = (
    "synthetic:seed=0 (no MNIST found: keras cache ~/.keras/datasets/mnist.npz missing; "
    "sha256 of the first 200 images: 0123)"
)
MNIST = "mnist:/data/mnist.npz (from PARITY_MNIST; sha256 of the first 200 images: c53778cb)"


@pytest.mark.parametrize(
    ("source", "credit"),
    [(MNIST, True), ("MNIST (first 200)", True), (SYNTHETIC, False), ("synthetic", False),
     ("digits.npz (my own, not MNIST)", False), ("", False)],
    ids=["mnist", "mnist-words", "synthetic-says-no-mnist", "synthetic", "other", "none"],
)  # fmt: skip
def test_mnist_credit_only_for_mnist(source, credit):
    meta = {"data_source": source}
    assert (_credit(meta) == MNIST_CREDIT) is credit
    for text in (summary_markdown(frame([rec()]), meta), page_html([rec()], meta, heat_map=False)):
        assert ("Yann LeCun" in text) is credit


def test_synthetic_banner_right_after_the_headline():
    meta = {"data_source": SYNTHETIC, "completeness": {"status": "partial", "detail": "-k Z1"}}
    md = summary_markdown(frame([rec()]), meta).splitlines()
    assert md[2] == "**PARTIAL RUN**: -k Z1" and md[4].startswith("- **verdict**: ")
    assert md[6].startswith("**SYNTHETIC DATA**: the images are deterministic digit-like")
    assert "(synthetic:seed=0), not MNIST" in md[6]
    page = page_html([rec()], meta, heat_map=False)
    after = page.split("<h1>Parity report</h1>\n")[1].splitlines()
    assert after[0].startswith('<p class="completeness">')
    assert after[1].startswith('<ul class="headline"><li><strong>verdict</strong>')
    assert after[2].startswith('<p class="synthetic"><strong>SYNTHETIC DATA</strong>: ')
    for m in ({"data_source": MNIST}, {}):
        assert "SYNTHETIC" not in summary_markdown(frame([rec()]), m)
        assert "SYNTHETIC" not in page_html([rec()], m, heat_map=False)


def test_synthetic_banner_from_the_records_when_the_meta_has_no_source():
    page = page_html([rec(data_source=SYNTHETIC)], {}, heat_map=False)
    assert '<p class="synthetic">' in page and "Yann LeCun" not in page


DETECTION = rec(check="v[D1]", impl="published:D1", mode="detection", tensor="Z2", budget_used=1e-3,
                first_diverging="Z2", disagreeing="Z2, dE_db", disagreeing_budgets="1e+03, shape",
                note="caught at Z2, the tensor it changes", explanation="affine")  # fmt: skip


def test_summary_frame_worst_element_and_detection_frame():
    records = [rec(worst_index="(1, 2)", impl_at_worst=0.5, against_at_worst=0.25),
               rec(check="t[b]", budget_used=0.75, worst_index="(3, 4)", impl_at_worst=1.0,
                   against_at_worst=2.0), DETECTION]  # fmt: skip
    df = frame(records)
    plain = summary_frame(df[df["mode"] != "detection"], worst_element=True)
    assert list(plain.columns[12:15]) == ["worst_index", "impl_at_worst", "against_at_worst"]
    assert plain.iloc[0][["worst_index", "impl_at_worst", "against_at_worst"]].tolist() == [
        "(3, 4)", 1.0, 2.0,
    ]  # fmt: skip
    assert "worst_index" not in summary_frame(df).columns  # summary.md and `show` unchanged
    det = detection_frame(df)
    assert det[["impl", "first_diverging", "margin", "disagreeing"]].values.tolist() == [
        ["published:D1", "Z2", "1e+03", "Z2 (1e+03), dE_db (shape)"]
    ]
    page = page_html(records, heat_map=False)
    summary, detections = page.split('id="parity-summary"')[1].split('id="parity-detection"')
    assert "published:D1" not in summary and "published:D1" in detections
    assert ">1e+03</td>" in detections  # the margin: error / tolerance, not 1e-3


def test_summary_markdown_keeps_detections_in_their_own_table():
    det = dict(
        check="v[D3]",
        tensor="dE_df",
        against="torch",
        mode="detection",
        dtype="float64",
        impl="published:D3",
        status="pass",
        passed=True,
        budget_used=1e-10,
        first_diverging="dE_df",
        disagreeing="dE_df",
        disagreeing_budgets="5e+10",
    )
    par = dict(
        check="t[Z1]",
        tensor="Z1",
        against="torch",
        mode="stage",
        dtype="float64",
        impl="reference",
        status="pass",
        passed=True,
        budget_used=0.5,
    )
    text = summary_markdown(records_frame([det, par]), {})
    summary, detections = text.split("## Detections")
    assert "published:D3" not in summary.split("## Summary")[1]
    assert "published:D3" in detections and "5e+10" in detections
