"""write_report / load_report: determinism, atomicity, contents, clear errors."""

import base64
import concurrent.futures
import csv
import errno
import math
import os
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reports.writer
from parity_tests.metrics import compare_arrays
from reports import RECORD_FIELDS, load_report, records_frame, write_report
from reports.fields import NUMERIC_FIELDS, OPTIONAL_FIELDS
from reports.render import budget_grid
from reports.writer import (
    MARKER,
    STANDARD_FILES,
    ReportWriteError,
    StepSummaryError,
    check_report_dir,
    suite_files,
)

META = {"seed": 7, "versions": {"numpy": "2.4.6"}, "data_source": "MNIST (first 200)"}


@pytest.fixture(autouse=True)
def _no_ci_summary(monkeypatch):
    # NOTE: in CI, write_report would append these test reports to the real job summary.
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def make_records(shuffle_seed=None):
    rng = np.random.default_rng(0)
    records = []
    for fw in ("torch", "tensorflow"):
        for tensor in ("Z1", "A1", "dE_df"):
            e = rng.random((2, 3)).astype(np.float32)
            a = e + np.float32(rng.random() * 4e-7)
            m = compare_arrays(a, e, np.float32(3e-7), truth=e.astype(np.float64), against=fw)
            records.append(
                dict(
                    check=f"t[{tensor}-{fw}]",
                    tensor=tensor,
                    against=fw,
                    mode="stage",
                    dtype="float32",
                    impl="reference",
                    seed=7,
                    **m,
                )
            )
    if shuffle_seed is not None:
        records = [records[i] for i in np.random.default_rng(shuffle_seed).permutation(len(records))]
    return records


def snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_same_records_give_byte_identical_files(tmp_path):
    write_report(make_records(), tmp_path / "a", META)
    write_report(make_records(shuffle_seed=1), tmp_path / "b", META)
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert set(a) == {"comparisons.csv", "summary.md", "summary.html", "run.json", MARKER}
    assert a == b
    assert b"\r" not in a["comparisons.csv"]


def test_html_embeds_the_heat_map_and_credits_mnist(tmp_path):
    paths = write_report(make_records(), tmp_path / "r", META, {"audit.md": "E16 | ok | <derived>"})
    html = paths["summary.html"].read_text()
    png = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert png and base64.b64decode(png.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    assert "Yann LeCun" in html and "Yann LeCun" in paths["summary.md"].read_text()
    quick = write_report(make_records(), tmp_path / "q", META, heat_map=False)["summary.html"]
    assert "data:image/png" not in quick.read_text() and "Summary (worst first)" in quick.read_text()
    assert "<h2>audit.md</h2>" in html and "&lt;derived&gt;" in html
    assert paths["audit.md"].read_text() == "E16 | ok | <derived>"


def test_no_credit_without_mnist(tmp_path):
    paths = write_report(
        make_records(), tmp_path / "r", META | {"data_source": "synthetic"}, heat_map=False
    )
    assert "LeCun" not in paths["summary.html"].read_text()


def test_markdown_is_capped(tmp_path):
    records = [
        {"check": f"t[{i}]", "tensor": f"T{i:03d}", "status": "pass", "passed": True} for i in range(70)
    ]
    md = write_report(records, tmp_path / "r", META, heat_map=False)["summary.md"].read_text()
    assert "10 more rows left out" in md and "T069" not in md


@pytest.mark.parametrize(
    ("owner", "name", "fail_on_call"),
    [
        (reports.writer, "_write", 3),  # the marker and a file of the new report are written
        (reports.writer, "summary_html", 1),
        (reports.writer.os, "rename", 2),  # the old report is already moved aside
    ],
    ids=["write-file", "render", "swap"],
)
def test_failure_mid_write_keeps_previous_report(tmp_path, monkeypatch, owner, name, fail_on_call):
    out = tmp_path / "latest"
    write_report(make_records(), out, META, heat_map=False)
    before = snapshot(out)
    original, calls = getattr(owner, name), []

    def boom(*args, **kwargs):
        calls.append(args)
        if len(calls) == fail_on_call:
            raise OSError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, boom)
    with pytest.raises(OSError, match="disk full"):
        write_report(make_records()[:2], out, META | {"seed": 8}, heat_map=False)
    monkeypatch.undo()
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]


def test_overwrite_replaces_and_leaves_no_temp(tmp_path, monkeypatch):
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "nested" / "latest"
    write_report(make_records(), out, META, heat_map=False)
    paths = write_report(make_records()[:1], out, META, heat_map=False)
    assert [p.name for p in out.parent.iterdir()] == ["latest"]
    assert len(paths["comparisons.csv"].read_text().splitlines()) == 2
    assert summary.read_text().startswith("earlier step\n# Parity report")


def test_load_round_trip(tmp_path):
    write_report(make_records(), tmp_path / "r", META, heat_map=False)
    df, meta = load_report(tmp_path / "r")
    assert meta == {
        "data_source": "MNIST (first 200)",
        "seed": 7,
        "versions": {"numpy": "2.4.6"},
    }
    assert len(df) == 6 and df["passed"].dtype == bool
    assert sorted(df["budget_used"]) == sorted(r["budget_used"] for r in make_records())  # exact


@pytest.mark.parametrize(
    ("setup", "names"),
    [
        (lambda d: None, "no such directory"),
        (lambda d: d.mkdir(), "comparisons.csv: missing"),
        (
            lambda d: (d.mkdir(), (d / "comparisons.csv").write_text("")),
            "comparisons.csv: empty",
        ),
        (
            lambda d: (d.mkdir(), (d / "comparisons.csv").write_text("a,b\n1,2\n")),
            "missing column",
        ),
        (
            lambda d: (
                d.mkdir(),
                (d / "comparisons.csv").write_bytes(b"\xff\xfe\x00garbage"),
            ),
            "comparisons.csv",
        ),
    ],
    ids=["no-dir", "no-csv", "empty-csv", "wrong-columns", "binary"],
)
def test_load_errors_name_the_file(tmp_path, setup, names):
    setup(tmp_path / "r")
    with pytest.raises(ValueError, match=names):
        load_report(tmp_path / "r")


@pytest.mark.parametrize(
    ("file", "edit", "names"),
    [
        (
            "comparisons.csv",
            lambda t: t.replace(",pass,", ",pass,\n", 1),
            "comparisons.csv",
        ),
        (
            "comparisons.csv",
            lambda t: t.replace(
                '\nt[A1-tensorflow],,,A1,,stage,reference,tensorflow,float32,,"(2, 3)",6,',
                '\nt[A1-tensorflow],,,A1,,stage,reference,tensorflow,float32,,"(2, 3)",six,',
            ),
            "column n",
        ),
        ("run.json", lambda t: t[:-3], "run.json"),
    ],
    ids=["torn-row", "non-number", "bad-json"],
)
def test_load_rejects_corrupt_files(tmp_path, file, edit, names):
    write_report(make_records(), tmp_path / "r", META, heat_map=False)
    path = tmp_path / "r" / file
    edited = edit(path.read_text())
    assert edited != path.read_text()
    path.write_text(edited)
    with pytest.raises(ValueError, match=names):
        load_report(tmp_path / "r")


def test_heat_map_grid():
    def rec(check, tensor, against, budget, status="pass", impl="reference"):
        return {"check": check, "tensor": tensor, "against": against, "budget_used": budget,
                "status": status, "impl": impl, "mode": "stage", "dtype": "float32"}  # fmt: skip

    records = [
        rec("t[1]", "Z1", "torch", 0.5),
        rec("t[2]", "A1", "tensorflow", 3.0, "fail"),
        rec("t[3]", "Z1", "torch", 0.75),
        rec("t[4]", "A1", "torch", 0.0, "vacuous", impl="D1"),
    ]
    budget, status = budget_grid(records_frame(records))
    assert list(budget.index) == ["Z1", "A1", "A1 (D1)"]
    assert list(budget.columns) == [
        "tensorflow\nfloat32\nstage",
        "torch\nfloat32\nstage",
    ]
    assert budget.loc["Z1", "torch\nfloat32\nstage"] == 0.75
    assert status.loc["A1", "tensorflow\nfloat32\nstage"] == "fail"
    assert status.loc["A1 (D1)", "torch\nfloat32\nstage"] == "vacuous"
    assert pd.isna(budget.loc["Z1", "tensorflow\nfloat32\nstage"])
    ordered, _ = budget_grid(records_frame(records), order=("A1", "Z1"))
    assert list(ordered.index) == ["A1", "A1 (D1)", "Z1"]


# --- report folders: never replace or delete what this suite did not write ---------------


def tree(root):
    """Every file (bytes) and folder under root, by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def _user_folder(d):
    d.mkdir()
    (d / "thesis.tex").write_text("months of work")


def _package(d):
    d.mkdir()
    (d / "__init__.py").write_text('"""A package that happens to be called reports."""\n')
    (d / "writer.py").write_text("x = 1\n")


def _git_checkout(d):
    (d / ".git").mkdir(parents=True)
    (d / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (d / "README.md").write_text("# a project\n")


def _users_own_report_files(d):
    d.mkdir()
    (d / "comparisons.csv").write_text("my,own\n1,2\n")
    (d / "summary.md").write_text("# my summary\n")


def _report_from_before_the_marker(d):
    write_report(make_records()[:1], d, META, heat_map=False)
    (d / MARKER).unlink()
    (d / "audit.md").write_text("# Derivation audit\n")


def _unmarked_report_plus_user_file(d):
    d.mkdir()
    (d / "comparisons.csv").write_text("check\n")
    (d / "notes.txt").write_text("mine")


@pytest.mark.parametrize(
    ("name", "setup", "says"),
    [
        ("target", _user_folder, "refusing to replace .*target: it holds files this suite did not"),
        ("reports", _package, r"refusing to replace .*reports: .*no \.parity-report marker"),
        ("checkout", _git_checkout, "refusing to replace .*checkout"),
        ("latest", _unmarked_report_plus_user_file, "refusing to replace .*latest"),
        ("target", lambda d: d.write_text("a file"), "target is a file"),
        ("latest", _users_own_report_files, "holds comparisons.csv, summary.md, which this"),
        ("latest", _report_from_before_the_marker, r"no \.parity-report marker: .*before the"),
    ],
    ids=["user-folder", "reports-package", "git-checkout", "report-files-plus-user-file", "file",
         "users-own-comparisons-csv-and-summary-md", "report-from-before-the-marker"],
)  # fmt: skip
def test_refuses_a_folder_it_did_not_write_and_leaves_it_untouched(tmp_path, name, setup, says):
    target = tmp_path / name
    setup(target)
    before = tree(tmp_path)
    with pytest.raises(ValueError, match=says):
        write_report(make_records(), target, META, heat_map=False)
    assert tree(tmp_path) == before


def _previous_report(d):
    write_report(make_records()[:1], d, META, heat_map=False)


@pytest.mark.parametrize(
    "setup",
    [lambda d: None, lambda d: d.mkdir(), _previous_report],
    ids=["missing", "empty-folder", "previous-report"],
)
def test_writes_into_a_new_empty_or_own_folder(tmp_path, setup):
    out = tmp_path / "latest"
    setup(out)
    assert check_report_dir(out) == out
    write_report(make_records(), out, META, heat_map=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([*reports.writer.REPORT_FILES, MARKER])
    assert "article-cnn-parity" in (out / MARKER).read_text()
    assert len(load_report(out)[0]) == 6


def _marked(d):
    d.mkdir()
    (d / MARKER).write_text("ours\n")
    (d / "comparisons.csv").write_text("half")


def _mine(d):
    d.mkdir()
    (d / "thesis.tex").write_text("months of work")


@pytest.mark.parametrize(
    ("name", "setup", "removed"),
    [
        (".latest.tmp-k3j9x", _marked, True),
        (".latest.tmp-k3j9x-old", _marked, True),
        (".latest.tmp-empty", lambda d: d.mkdir(), True),
        (".latest.tmp-foo", _mine, False),
        (".latest.tmp-file", lambda d: d.write_text("mine"), False),
        (".other.tmp-k3j9x", _marked, False),
    ],
    ids=["marked-temp", "marked-old", "empty-temp", "unmarked-lookalike", "file-lookalike",
         "another-report's-temp"],
)  # fmt: skip
def test_leftover_temporaries_removed_only_when_marked(tmp_path, name, setup, removed):
    setup(tmp_path / name)
    kept = tree(tmp_path)
    write_report(make_records(), tmp_path / "latest", META, heat_map=False)
    assert (tmp_path / name).exists() is not removed
    if not removed:
        assert {k: v for k, v in tree(tmp_path).items() if k.startswith(name)} == kept


@pytest.mark.parametrize("killed_at_write", [2, 4], ids=["after-the-marker", "mid-report"])
def test_a_killed_run_leaves_a_leftover_the_next_run_removes(tmp_path, monkeypatch, killed_at_write):
    original, calls = reports.writer._write, []

    def killed(path, text):
        calls.append(path.name)
        if len(calls) == killed_at_write:
            raise KeyboardInterrupt
        original(path, text)

    monkeypatch.setattr(reports.writer, "_write", killed)
    monkeypatch.setattr(reports.writer, "_remove_ours", lambda d: False)  # no clean-up
    with pytest.raises(KeyboardInterrupt):
        write_report(make_records(), tmp_path / "latest", META, heat_map=False)
    monkeypatch.undo()
    assert calls[0] == MARKER
    (leftover,) = tmp_path.iterdir()
    assert leftover.name.startswith(".latest.tmp-") and (leftover / MARKER).is_file()
    write_report(make_records(), tmp_path / "latest", META, heat_map=False)
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]


@pytest.mark.parametrize("how", ["os.access", "chmod"])
def test_unwritable_parent_refused(tmp_path, monkeypatch, how):
    parent = tmp_path / "ro"
    parent.mkdir()
    if how == "os.access":
        real = os.access
        monkeypatch.setattr(
            reports.writer.os, "access", lambda p, mode: Path(p) != parent and real(p, mode)
        )
    elif os.geteuid() == 0:
        pytest.skip("root may write anywhere: os.access is always true")
    else:
        parent.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=r"cannot write the report .*latest: .*ro is not writable"):
            write_report(make_records(), parent / "new" / "latest", META, heat_map=False)
    finally:
        parent.chmod(0o755)
    assert list(parent.iterdir()) == []


# --- strict reading ------------------------------------------------------------------------


def strict_records():
    """Rows 2..6 of comparisons.csv: a pass, a fail, a detection margin, zeros expected, a
    name not provided."""
    return [
        {"check": "t[a]", "tensor": "Z1", "status": "pass", "passed": True, "budget_used": 0.5},
        {"check": "t[b]", "tensor": "Z1", "status": "fail", "passed": False, "budget_used": math.inf},
        # detection.detection_record: tolerance / error at the first diverging tensor, 0 for
        # an error; stored as is, so > 1 and inf are legitimate there.
        {"check": "t[c]", "tensor": "Z1", "status": "pass", "passed": True, "budget_used": 5.0,
         "mode": "detection", "impl": "mutant:sign_dE_dO"},
        # compare_arrays(expect_zero=True): both sides within tolerance of zero, error <= 2 tol
        {"check": "t[d]", "tensor": "Z1", "status": "pass", "passed": True, "budget_used": 1.8,
         "vacuous": True},
        # test_contract: a name the implementation did not return; no numbers
        {"check": "t[e]", "tensor": "dE_dZ1", "status": "absent", "passed": False,
         "mode": "contract", "error": "train_step returned no dE_dZ1"},
    ]  # fmt: skip


def edit_csv(path, line=None, header=None, **cells):
    """Rewrite comparisons.csv with `cells` changed on CSV line `line` (2 = first data row)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if header:
        rows[0] = [header.get(c, c) for c in rows[0]]
    for col, value in cells.items():
        rows[line - 1][rows[0].index(col)] = value
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (dict(header={"quantity": "tensor"}), "line 1, column tensor: named twice"),
        (dict(line=2, status="PASSED"), "line 2, column status: 'PASSED' is not one of"),
        (dict(line=3, passed="yes"), "line 3, column passed: 'yes' is neither True nor False"),
        (dict(line=2, passed="False"), "line 2, column passed: False contradicts status 'pass'"),
        (dict(line=3, passed="True"), "line 3, column passed: True contradicts status 'fail'"),
        (dict(line=3, budget_used="-0.5"), "line 3, column budget_used: -0.5 is negative"),
        (dict(line=4, budget_used="-1.0"), "line 4, column budget_used: -1.0 is negative"),
        (dict(line=2, budget_used="inf"), "line 2, column budget_used: inf is over 1 in a pass row"),
        (dict(line=2, budget_used="1.5"), "line 2, column budget_used: 1.5 is over 1 in a pass row"),
        (dict(line=5, budget_used="2.5"), "line 5, column budget_used: 2.5 is over 2 in a pass row"),
        (dict(line=3, mismatch_kind="size"),
         "line 3, column mismatch_kind: 'size' is not one of shape, dtype, value, precision, "
         "error or empty"),
        (dict(line=6, passed="True"), "line 6, column passed: True contradicts status 'absent'"),
        (dict(header={"impl_at_worst": "expected_at_worst", "tol_at_worst": "impl_at_worst"}),
         "line 1, column expected_at_worst: an old name of impl_at_worst"),
    ],
    ids=["duplicate-column", "unknown-status", "passed-not-bool", "pass-not-passed",
         "fail-but-passed", "negative-budget", "negative-detection-margin", "pass-budget-inf",
         "pass-budget-over-1", "zeros-expected-over-2", "unknown-mismatch-kind",
         "absent-but-passed", "old-and-new-name"],
)  # fmt: skip
def test_load_refuses_values_no_writer_produces(tmp_path, edit, says):
    write_report(strict_records(), tmp_path / "r", META, heat_map=False)
    edit_csv(tmp_path / "r" / "comparisons.csv", **edit)
    with pytest.raises(ValueError, match=re.escape(f"comparisons.csv: {says}")):
        load_report(tmp_path / "r")


def _header_only(path):
    path.write_text(path.read_text().splitlines()[0] + "\n")


def _without_optional_fields(path):
    # A report written before these fields existed.
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.drop(columns=list(OPTIONAL_FIELDS)).to_csv(path, index=False, lineterminator="\n")


@pytest.mark.parametrize(
    ("edit", "rows"),
    [
        (lambda p: None, 5),
        (lambda p: edit_csv(p, line=4, budget_used="inf"), 5),
        (lambda p: edit_csv(p, line=4, budget_used="0.0"), 5),
        (lambda p: p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes()), 5),
        (_header_only, 0),
        (_without_optional_fields, 5),
    ],
    ids=["as-written", "detection-margin-inf", "detection-margin-0", "utf-8-bom", "header-only",
         "before-the-optional-fields"],
)  # fmt: skip
def test_load_accepts_what_the_writers_produce(tmp_path, edit, rows):
    write_report(strict_records(), tmp_path / "r", META, heat_map=False)
    edit(tmp_path / "r" / "comparisons.csv")
    df, _ = load_report(tmp_path / "r")
    assert len(df) == rows and list(df.columns) == RECORD_FIELDS
    text = [c for c in OPTIONAL_FIELDS if c not in NUMERIC_FIELDS]
    numbers = [c for c in OPTIONAL_FIELDS if c in NUMERIC_FIELDS]
    assert (df[text] == "").all().all() and df[numbers].isna().all().all()


OLD_NAMES = {"against_at_worst": "actual_at_worst", "impl_at_worst": "expected_at_worst",
             "against_err_vs_truth": "actual_err_vs_truth",
             "impl_err_vs_truth": "expected_err_vs_truth"}  # fmt: skip


def test_load_reads_a_report_with_the_old_field_names(tmp_path):
    # Before the fields said whose is whose: actual_* (the framework), expected_* (the
    # implementation under test), closer_to_truth "actual" / "expected".
    write_report(make_records(), tmp_path / "new", META, heat_map=False)
    write_report(make_records(), tmp_path / "old", META, heat_map=False)
    path = tmp_path / "old" / "comparisons.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert set(df["closer_to_truth"]) == {"impl"}  # the truth is the implementation's output
    df["closer_to_truth"] = ["actual", "expected", "tie"] * 2
    df.rename(columns=OLD_NAMES).to_csv(path, index=False, lineterminator="\n")
    assert "expected_at_worst" in path.read_text() and "against_at_worst" not in path.read_text()
    new, _ = load_report(tmp_path / "new")
    old, _ = load_report(tmp_path / "old")
    assert list(old.columns) == RECORD_FIELDS
    fw = list(old["against"])  # "actual" was the framework: each row's own
    assert list(old["closer_to_truth"]) == [fw[0], "impl", "tie", fw[3], "impl", "tie"]
    assert {fw[0], fw[3]} == {"torch", "tensorflow"}
    pd.testing.assert_frame_equal(
        old.drop(columns="closer_to_truth"), new.drop(columns="closer_to_truth")
    )


# --- comparisons.csv: no cell a spreadsheet would run -------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "written"),
    [
        ("note", '=HYPERLINK("http://evil.example","click")', """'=HYPERLINK(""http://evil.example"""),
        ("tensor", "+1+2", "'+1+2"),
        ("error", "-2+3", "'-2+3"),
        ("impl", "@SUM(A1)", "'@SUM(A1)"),
        ("quantity", "\t=1", "'\t=1"),
        ("data_source", "\r=1", "'\r=1"),
        ("note", "'=already quoted", "''=already quoted"),
        ("note", "'just a quote", ",'just a quote"),
        ("note", "a = b - c", ",a = b - c"),
        ("note", "a\rb", ',"a\rb"'),  # quoted, or csv reads a torn row
    ],
    ids=["equals", "plus", "minus", "at", "tab", "carriage-return", "quote-then-equals",
         "quote-then-text", "inner-operators", "inner-carriage-return"],
)  # fmt: skip
def test_csv_cells_cannot_run_as_formulas_and_read_back_exactly(tmp_path, field, value, written):
    rec = {"check": "t[x]", "tensor": "Z1", "status": "fail", "passed": False, "budget_used": -0.0}
    write_report([rec | {field: value}], tmp_path / "r", META, heat_map=False)
    text = (tmp_path / "r" / "comparisons.csv").read_bytes().decode("utf-8")
    assert written in text
    df, _ = load_report(tmp_path / "r")
    assert df[field].iat[0] == value


def test_numbers_are_not_quoted(tmp_path):
    rec = {"check": "t[x]", "status": "fail", "passed": False, "max_abs_err": -1.5, "seed": -1}
    write_report([rec], tmp_path / "r", META, heat_map=False)
    row = (tmp_path / "r" / "comparisons.csv").read_text().splitlines()[1]
    assert ",-1.5," in row and "'" not in row


# --- a report folder is shared: the user's files in it are kept (issue 21, point 4) ---------


def _write_twice_with(d, setup):
    """A report, the user's additions (setup), then the next report."""
    write_report(make_records(), d, META, extra_files={"audit.md": "# a\n"}, heat_map=False)
    setup(d)
    kept = {k: v for k, v in tree(d).items() if k.split("/")[0] not in {MARKER, *STANDARD_FILES}}
    write_report(make_records()[:2], d, META | {"seed": 8}, heat_map=False)
    return kept


def _notes(d):
    (d / "NOTES.md").write_text("what I found\n")


def _plots(d):
    (d / "plots").mkdir()
    (d / "plots" / "budget.png").write_bytes(b"\x89PNG...")


@pytest.mark.parametrize("setup", [_notes, _plots], ids=["users-NOTES.md", "users-plots-folder"])
def test_the_next_report_keeps_the_users_files_in_the_folder(tmp_path, setup):
    out = tmp_path / "latest"
    kept = _write_twice_with(out, setup)
    assert kept and {k: v for k, v in tree(out).items() if k in kept} == kept
    # the suite's files are the new report's, the audit.md of the first one is gone
    assert suite_files(out) == set(reports.writer.REPORT_FILES)
    assert not (out / "audit.md").exists() and len(load_report(out)[0]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]


def test_the_marker_lists_the_files_the_suite_wrote(tmp_path):
    write_report(make_records(), tmp_path / "r", META, extra_files={"runs.md": "x"}, heat_map=False)
    text = (tmp_path / "r" / MARKER).read_text()
    assert "article-cnn-parity" in text
    assert suite_files(tmp_path / "r") == {*reports.writer.REPORT_FILES, "runs.md"}


def _old_marker_and_notes(d):
    d.mkdir()
    (d / MARKER).write_text(reports.writer.MARKER_TEXT)  # as written before the file list
    for name in ("comparisons.csv", "summary.md", "regression.md"):
        (d / name).write_text("old report\n")
    (d / "NOTES.md").write_text("mine\n")


def test_an_old_marker_without_a_list_owns_only_the_standard_report_names(tmp_path):
    out = tmp_path / "latest"
    _old_marker_and_notes(out)
    write_report(make_records(), out, META, heat_map=False)
    assert (out / "NOTES.md").read_text() == "mine\n"
    assert not (out / "regression.md").exists()  # a standard name: the old report's, replaced
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*reports.writer.REPORT_FILES, MARKER, "NOTES.md"]
    )


def test_a_users_file_with_a_name_the_report_needs_is_refused_not_replaced(tmp_path):
    out = tmp_path / "latest"
    write_report(make_records(), out, META, heat_map=False)
    (out / "audit.md").write_text("my own audit\n")  # not listed in the marker
    before = tree(tmp_path)
    with pytest.raises(ValueError, match=r"refusing to replace audit\.md in .*latest: \.parity"):
        write_report(make_records(), out, META, extra_files={"audit.md": "# a\n"}, heat_map=False)
    assert tree(tmp_path) == before


# --- a symlinked report folder is written through to its target ----------------------------


def test_a_symlinked_report_folder_is_written_through_to_its_target(tmp_path):
    real = tmp_path / "store" / "run-7"
    write_report(make_records(), real, META, heat_map=False)
    (tmp_path / "reports").mkdir()
    link = tmp_path / "reports" / "latest"
    link.symlink_to(real)
    paths = write_report(make_records()[:2], link, META | {"seed": 8}, heat_map=False)
    assert link.is_symlink() and Path(os.readlink(link)) == real
    assert len(load_report(real)[0]) == 2 and paths["run.json"] == link / "run.json"
    # no stray `.latest.tmp-...-old` link nor a temporary beside either
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["latest"]
    assert [p.name for p in real.parent.iterdir()] == ["run-7"]


# --- concurrent writers into one folder ------------------------------------------------------


def test_concurrent_writers_each_leave_a_complete_report(tmp_path):
    out, n = tmp_path / "latest", 20
    records = [make_records()[: i % 5 + 1] for i in range(n)]
    for _ in range(3):  # a race lost once in a while: three rounds of twenty writers
        start = threading.Barrier(n)

        def one(i):
            start.wait()
            return write_report(records[i], out, META | {"seed": i}, heat_map=False)

        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            done = [pool.submit(one, i) for i in range(n)]
            errors = [f.exception() for f in done if f.exception() is not None]
        assert errors == []
        df, meta = load_report(out)
        assert len(df) == meta["seed"] % 5 + 1  # one writer's report, whole
        assert suite_files(out) == set(reports.writer.REPORT_FILES)
        assert sorted(p.name for p in out.iterdir()) == sorted([*reports.writer.REPORT_FILES, MARKER])
        assert [p.name for p in tmp_path.iterdir()] == ["latest"]


# --- disk full, an unwritable job summary ----------------------------------------------------


def test_disk_full_is_a_report_write_error_naming_the_folder(tmp_path, monkeypatch):
    out = tmp_path / "latest"
    write_report(make_records(), out, META, heat_map=False)
    before = tree(tmp_path)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reports.writer, "_write", full)
    with pytest.raises(ReportWriteError, match=r"cannot write the report .*latest: No space left"):
        write_report(make_records(), out, META, heat_map=False)
    assert tree(tmp_path) == before


def test_an_unwritable_job_summary_is_one_error_after_the_report_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))  # a folder: cannot be appended to
    with pytest.raises(StepSummaryError, match=r"report .*latest was written, but the job summary"):
        write_report(make_records(), tmp_path / "latest", META, heat_map=False)
    assert len(load_report(tmp_path / "latest")[0]) == 6


@pytest.mark.parametrize("name", ["comparisons.csv", "run.json"])
def test_load_never_follows_a_symlinked_report_file(tmp_path, name):
    out = tmp_path / "r"
    write_report(make_records(), out, META, heat_map=False)
    (tmp_path / "elsewhere").write_bytes((out / name).read_bytes())
    (out / name).unlink()
    (out / name).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=rf"{name} is a symlink"):
        load_report(out)
