"""`python -m reports merge`: one report from runs of other framework versions and from
shards; identical records kept once, a disagreeing duplicate refused naming both runs."""

import csv
import errno
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import reports.writer
from reports import experiment_mismatches, load_report, merge_reports, write_report
from reports.cli import main
from reports.merge import as_records

ROOT = Path(__file__).resolve().parents[2]
V1 = "numpy=2.4.6 python=3.11.7 torch=2.13.0+cpu TF_ENABLE_ONEDNN_OPTS=0"
V2 = "numpy=2.4.6 python=3.11.7 torch=2.14.1+cpu TF_ENABLE_ONEDNN_OPTS=0"
DATA = "synthetic (sha256 of the first 200 images: 0123abcd)"


@pytest.fixture(autouse=True)
def _no_ci_summary(monkeypatch):
    # NOTE: in CI, write_report would append these test reports to the real job summary.
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def rec(tensor, budget, *, versions=V1, dtype="float32", **fields):
    passed = budget <= 1
    return {
        "check": f"parity_tests/test_parity.py::test_forward[{tensor}-stage-torch-{dtype}]",
        "equation": "E1",
        "tensor": tensor,
        "mode": "stage",
        "impl": "reference",
        "against": "torch",
        "dtype": dtype,
        "budget_used": budget,
        "max_abs_err": budget * 1e-7,
        "passed": passed,
        "status": "pass" if passed else "fail",
        "seed": 0,
        "data_source": DATA,
        "init_scheme": "informative",
        "reduction": "sum",
        "versions": versions,
    } | fields


def meta(versions=V1, status="complete", **facts):
    torch = re.search(r"torch=(\S+)", versions).group(1)
    return {
        "seed": 0,
        "n_images": 200,
        "init_scheme": "informative",
        "reduction": "sum",
        "data_sha256": "0123abcd",
        "impl": "reference",
        "lr": 0.0625,
        "data_source": DATA,
        "versions": versions,
        "environment": {"numpy": "2.4.6", "torch": torch, "TF_ENABLE_ONEDNN_OPTS": "0"},
        "frameworks": ["torch"],
        "dtypes": ["float64", "float32"],
        "tensor_order": ["Z1", "A1", "O"],
        "completeness": {"status": status, "detail": f"{status} run"},
    } | facts


RECORDS = [rec("Z1", 0.1), rec("A1", 0.25), rec("O", 0.5), rec("Z1", 0.05, dtype="float64")]


def report(path, records, run_meta=None, audit="# Derivation audit\n\nthe audit\n"):
    extra = {"audit.md": audit} if audit is not None else None
    write_report(records, path, run_meta or meta(), extra_files=extra, heat_map=False)
    return path


def merge(tmp_path, *dirs, name="merged", **kw):
    kw.setdefault("heat_map", False)
    merge_reports(list(dirs), tmp_path / name, **kw)
    return load_report(tmp_path / name)


def test_identical_records_are_kept_once_and_the_merge_reads_back(tmp_path, capsys):
    a = report(tmp_path / "a", RECORDS)
    b = report(tmp_path / "b", RECORDS[::-1])
    df, m = merge(tmp_path, a, b)
    assert len(df) == len(RECORDS)
    assert [r["duplicates_dropped"] for r in m["runs"]] == [0, len(RECORDS)]
    assert m["completeness"]["status"] == "complete"
    assert (tmp_path / "merged" / "audit.md").read_text() == (a / "audit.md").read_text()
    assert main(["show", str(tmp_path / "merged")]) == 0
    assert "verdict: every comparison passed (4 comparisons)" in capsys.readouterr().out


def test_a_disagreeing_duplicate_is_refused_naming_both_runs(tmp_path, capsys):
    a = report(tmp_path / "a", RECORDS)
    b = report(tmp_path / "b", [*RECORDS[:2], rec("O", 0.75), RECORDS[3]])
    with pytest.raises(ValueError) as err:
        merge(tmp_path, a, b)
    text = str(err.value)
    assert f"run 1 ({a})" in text and f"run 2 ({b})" in text, text
    assert "test_forward[O-stage-torch-float32]" in text and "budget_used 0.5 vs 0.75" in text
    assert not (tmp_path / "merged").exists()
    # The CLI: exit 2, the same message, nothing written.
    assert main(["merge", str(a), str(b), "-o", str(tmp_path / "cli")]) == 2
    assert "disagrees between run 1" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_other_framework_versions_stay_apart(tmp_path):
    a = report(tmp_path / "a", RECORDS)
    b = report(tmp_path / "b", [rec("Z1", 0.3, versions=V2)], meta(V2))
    df, m = merge(tmp_path, a, b)
    assert len(df) == len(RECORDS) + 1
    z1 = df[(df["tensor"] == "Z1") & (df["dtype"] == "float32")]
    assert dict(zip(z1["versions"], z1["budget_used"])) == {V1: 0.1, V2: 0.3}
    assert m["versions"] == f"{V1} | {V2}"
    assert m["environment"]["torch"] == "2.13.0+cpu | 2.14.1+cpu"
    assert [r["versions"] for r in m["runs"]] == [V1, V2]
    # The same experiment: a baseline of it still gates the merge.
    assert experiment_mismatches(meta(), m) == []
    # runs.md (also in summary.html): one column per configuration, named by what differs.
    runs = (tmp_path / "merged" / "runs.md").read_text()
    assert "| tensor | against | torch 2.13.0+cpu | torch 2.14.1+cpu |" in runs
    assert "| Z1 | torch | 0.1 | 0.3 |" in runs and "| A1 | torch | 0.25 |  |" in runs
    assert "Runs merged into this report" in (tmp_path / "merged" / "summary.html").read_text()


def test_runs_apart_only_in_facts_the_records_lack_are_refused(tmp_path):
    a = report(tmp_path / "a", RECORDS)
    b = report(tmp_path / "b", RECORDS, meta(lr=0.1))
    with pytest.raises(ValueError, match=r"differ in lr 0\.0625 vs 0\.1"):
        merge(tmp_path, a, b)


def test_other_experiments_merge_but_are_no_baseline_match(tmp_path):
    a = report(tmp_path / "a", RECORDS)
    b = report(tmp_path / "b", [rec("Z1", 0.2, seed=1)], meta(seed=1))
    df, m = merge(tmp_path, a, b)
    assert len(df) == len(RECORDS) + 1 and m["seed"] == [0, 1]
    assert experiment_mismatches(meta(), m) == ["seed: baseline 0, this run [0, 1]"]


@pytest.mark.parametrize(
    ("statuses", "merged"),
    [
        (["partial", "partial"], "partial"),  # shards: whether they cover everything is unknown
        (["complete", "partial"], "complete"),
        (["complete", "interrupted"], "interrupted"),
    ],
)
def test_completeness(tmp_path, statuses, merged):
    dirs = [report(tmp_path / f"r{i}", [RECORDS[i]], meta(status=s)) for i, s in enumerate(statuses)]
    _, m = merge(tmp_path, *dirs)
    assert m["completeness"]["status"] == merged


def test_never_over_a_user_folder_nor_over_a_run(tmp_path):
    a = report(tmp_path / "a", RECORDS)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to replace"):
        merge_reports([a], mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="would replace the run"):
        merge_reports([a], a)
    with pytest.raises(ValueError, match="given twice"):
        merge_reports([a, a], tmp_path / "out")


def test_order_of_the_runs_does_not_change_the_records(tmp_path):
    a = report(tmp_path / "a", RECORDS)
    b = report(tmp_path / "b", [rec(t, 0.2, versions=V2) for t in ("Z1", "A1")], meta(V2))
    merge(tmp_path, a, b, name="ab")
    merge(tmp_path, b, a, name="ba")
    csv = "comparisons.csv"
    assert (tmp_path / "ab" / csv).read_bytes() == (tmp_path / "ba" / csv).read_bytes()


def test_audit_from_the_runs_or_rebuilt_per_configuration(tmp_path):
    a = report(tmp_path / "a", RECORDS, audit="# Derivation audit\n\n## E1\nholds in a\n")
    b = report(
        tmp_path / "b", [rec("Z1", 0.3, versions=V2)], meta(V2), audit="# Derivation audit\n\nb\n"
    )
    merge(tmp_path, a, b)
    text = (tmp_path / "merged" / "audit.md").read_text()
    assert f"## run 1 ({a})\n\n### E1\nholds in a" in text and f"## run 2 ({b})\n\nb" in text

    calls = []

    def hook(records, run_meta):
        calls.append((len(records), run_meta["versions"]))
        return {"audit.md": f"# Derivation audit\n\n{len(records)} records\n"}

    merge(tmp_path, a, b, name="hooked", audit_hook=hook)
    assert calls == [(len(RECORDS), V1), (1, V2)]
    text = (tmp_path / "hooked" / "audit.md").read_text()
    assert text.startswith("# Derivation audit (merged: 2 configurations)")
    assert "## torch 2.13.0+cpu\n\n4 records" in text and "## torch 2.14.1+cpu\n\n1 records" in text


# --- real report folders -----------------------------------------------------------------

# One framework, the forward stage checks: a real run in a few seconds.
ARGS = ["parity_tests/test_parity.py", "--parity-frameworks=torch", "-q", "-p", "no:cacheprovider"]


def _pytest(out: Path, keyword: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PARITY_NO_DOWNLOAD": "1"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    cmd = [sys.executable, "-m", "pytest", *ARGS, "-k", keyword, f"--parity-report-dir={out}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _other_version(run: Path, out: Path) -> Path:
    """`run` as if made under another torch: versions and environment rewritten, budgets
    moved (the numbers need not be real, only distinguishable)."""
    df, m = load_report(run)
    now = m["environment"]["torch"]
    other = "2.12.0+cpu" if now.startswith("2.14") else "2.14.1+cpu"
    df["versions"] = df["versions"].str.replace(f"torch={now}", f"torch={other}", regex=False)
    df["budget_used"] = df["budget_used"].where(df["budget_used"] * 1.1 > 1, df["budget_used"] * 1.1)
    m = m | {
        "versions": m["versions"].replace(f"torch={now}", f"torch={other}"),
        "environment": m["environment"] | {"torch": other},
    }
    write_report(as_records(df), out, m, extra_files={"audit.md": (run / "audit.md").read_text()})
    return out


@pytest.mark.slow  # three pytest subprocesses (run at once): ~25 s on 2 cores
def test_real_runs_two_versions_and_a_shard_split(tmp_path):
    whole, half1, half2 = tmp_path / "whole", tmp_path / "float32", tmp_path / "float64"
    jobs = [
        (whole, "test_forward"),
        (half1, "test_forward and float32"),
        (half2, "test_forward and float64"),
    ]
    with ThreadPoolExecutor(3) as pool:
        done = list(pool.map(lambda job: _pytest(*job), jobs))
    for (out, _), run in zip(jobs, done):
        assert run.returncode == 0 and (out / "comparisons.csv").is_file(), run.stdout[-3000:]
    other = _other_version(whole, tmp_path / "other")
    n = len(load_report(whole)[0])
    assert n == len(load_report(half1)[0]) + len(load_report(half2)[0]) > 0

    # The shards of one run merge into exactly that run's records and audit.
    from parity_tests.audit_hook import audit_files

    merge(tmp_path, half2, half1, name="shards", audit_hook=audit_files, heat_map=True)
    for name in ("comparisons.csv", "audit.md"):
        assert (tmp_path / "shards" / name).read_bytes() == (whole / name).read_bytes(), name

    # Three folders: the other version and the two shards; then the whole run as well (its
    # records are the shards' again: kept once).
    df, m = merge(tmp_path, other, half1, half2, name="three", heat_map=True)
    assert len(df) == 2 * n and df["versions"].nunique() == 2
    again, m2 = merge(tmp_path, other, half1, half2, whole, name="four", heat_map=True)
    assert len(again) == 2 * n and m2["runs"][3]["duplicates_dropped"] == n
    assert (
        "Largest budget used by tensor and configuration" in (tmp_path / "three" / "runs.md").read_text()
    )
    shown = subprocess.run(
        [sys.executable, "-m", "reports", "show", str(tmp_path / "three")],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0 and shown.stdout.startswith("verdict: every comparison"), (
        shown.stdout + shown.stderr
    )
    assert json.loads((tmp_path / "three" / "run.json").read_text())["versions"].count("|") == 1

    # A shard whose record disagrees with the whole run's: refused, naming both.
    table = half1 / "comparisons.csv"
    with open(table, newline="") as fh:
        rows = list(csv.reader(fh))
    col = rows[0].index("max_abs_err")
    rows[1][col] = repr(float(rows[1][col]) * 2)
    with open(table, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    with pytest.raises(ValueError, match="disagrees between run 1") as err:
        merge(tmp_path, whole, half1, name="refused")
    assert str(whole) in str(err.value) and str(half1) in str(err.value)
    assert "max_abs_err" in str(err.value)


def test_a_symlinked_audit_md_is_refused_never_copied(tmp_path, capsys):
    a = report(tmp_path / "a", RECORDS)
    (a / "audit.md").unlink()
    (a / "audit.md").symlink_to("/etc/passwd")
    assert main(["merge", str(a), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "audit.md is a symlink" in err and "root:" not in err
    assert not (tmp_path / "out").exists()


def test_merge_copies_only_the_runs_report_files(tmp_path):
    a = report(tmp_path / "a", RECORDS)
    (a / "NOTES.md").write_text("private notes\n")
    merge(tmp_path, a)
    assert not (tmp_path / "merged" / "NOTES.md").exists()


def test_output_inside_a_run_is_refused(tmp_path):
    a = report(tmp_path / "a", RECORDS)
    before = sorted(p.name for p in a.iterdir())
    with pytest.raises(ValueError, match="would replace the run .* or lie inside it"):
        merge_reports([a], a / "merged")
    assert sorted(p.name for p in a.iterdir()) == before


def test_disk_full_is_one_error_line_and_exit_2(tmp_path, capsys, monkeypatch):
    a = report(tmp_path / "a", RECORDS)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reports.writer, "_write", full)
    assert main(["merge", str(a), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.match(r"python -m reports: error: cannot write the report .*out: No space left", err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
