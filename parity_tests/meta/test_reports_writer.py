"""write_report / load_report: determinism, atomicity, contents, clear errors."""

import base64
import re

import numpy as np
import pandas as pd
import pytest

import reports.writer
from reports import compare_arrays, load_report, records_frame, write_report
from reports.render import budget_grid

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
            m = compare_arrays(a, e, np.float32(3e-7), truth=e.astype(np.float64))
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
    assert set(a) == {"comparisons.csv", "summary.md", "summary.html", "run.json"}
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
    paths = write_report(make_records(), tmp_path / "r", META | {"data_source": "synthetic"},
                         heat_map=False)
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
        (reports.writer, "_write", 3),  # two files of the new report are written
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
