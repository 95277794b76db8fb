"""`python -m reports approve RUN_DIR BASELINE_DIR` (reports/approve.py) and `./parity`'s
pass-through: approving, then gating, changes nothing; what changes is printed; a partial,
interrupted or other-experiment run and a folder the suite did not write are refused with
nothing written; a failed copy leaves the previous baseline as it was."""

import errno
import re
import subprocess
from pathlib import Path

import pytest

import reports.approve
import reports.writer
from reports import write_report
from reports.cli import main
from reports.writer import MARKER

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = dict(
    seed=0,
    n_images=200,
    init_scheme="informative",
    reduction="sum",
    data_sha256="abc",
    impl="reference",
    lr=0.0625,
)
COMPLETE = {"status": "complete", "detail": "144 of 144 tests ran"}
ENV = {"numpy": "2.4.6", "torch": "2.13.0"}


@pytest.fixture(autouse=True)
def _no_ci_summary(monkeypatch):
    # NOTE: in CI, write_report would append these test reports to the real job summary.
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def rec(check, budget, status="pass", tensor="Z1"):
    return {
        "check": check,
        "tensor": tensor,
        "mode": "stage",
        "impl": "reference",
        "against": "torch",
        "dtype": "float32",
        "budget_used": budget,
        "passed": status == "pass",
        "status": status,
    }


BASE = [rec("t[a]", 0.5), rec("t[b]", 0.01), rec("t[c]", 0.2), rec("t[d]", 0.3)]


def report(path, records, completeness=COMPLETE, env=ENV, extra=None, **experiment):
    meta = {**EXPERIMENT, **experiment, "environment": env}
    if completeness is not None:
        meta["completeness"] = completeness
    write_report(records, path, meta, extra_files=extra, heat_map=False)
    return path


def cli(capsys, *args) -> tuple[int, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_approve_then_gate_changes_nothing(capsys, tmp_path):
    run = report(tmp_path / "run", BASE, extra={"regression.md": "# Regression gate\n"})
    code, text = cli(capsys, "approve", run, tmp_path / "baselines" / "new")
    assert code == 0, text
    assert "holds no baseline yet: the run's 4 comparisons become it" in text
    base = tmp_path / "baselines" / "new"
    got = files(base)
    # The run's report, marked as the suite's; its verdict against an older baseline is not.
    assert set(got) == {MARKER, "comparisons.csv", "summary.md", "summary.html", "run.json"}
    assert got["comparisons.csv"] == (run / "comparisons.csv").read_bytes()
    assert got["run.json"] == (run / "run.json").read_bytes()
    code, text = cli(capsys, "diff", base, run)  # the gate by hand
    assert (code, text.strip()) == (
        0,
        "No changes: every check kept its status and its budget within the factor.",
    )
    code, text = cli(capsys, "approve", run, base)  # again: nothing moves
    assert code == 0, text
    for line in ("checks added: 0", "checks removed: 0", "status changed: 0", "budgets moved: 0 of 4"):
        assert line in text, text
    assert "the gate against the previous baseline says: No changes" in text


def test_approve_prints_what_changes(capsys, tmp_path):
    base = report(tmp_path / "base", BASE)
    now = [rec("t[a]", 1.5, "fail"), rec("t[b]", 0.5), rec("t[c]", 0.2), rec("t[e]", 0.1)]
    run = report(tmp_path / "run", now, env={**ENV, "torch": "2.14.1"})
    code, text = cli(capsys, "approve", run, base)
    assert code == 0, text
    lines = text.splitlines()
    assert "environment changed: torch 2.13.0 -> 2.14.1" in lines
    assert lines[lines.index("checks added: 1") + 1].strip().startswith("t[e] (Z1, stage, torch")
    assert lines[lines.index("checks removed: 1") + 1].strip().startswith("t[d] (Z1, stage")
    assert lines[lines.index("status changed: 1") + 1].endswith(": pass -> fail")
    moved = lines[lines.index("budgets moved: 1 of 3 checks") + 1]
    assert moved.strip().startswith("t[b]") and moved.endswith("0.01 -> 0.5 (x50)"), moved
    assert "the gate against the previous baseline says: REGRESSION: 1 new failure, 1 vanished, " in text
    assert (base / "comparisons.csv").read_bytes() == (run / "comparisons.csv").read_bytes()


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("partial", "is a partial run (frameworks torch only): a baseline must hold every check"),
        ("interrupted", "is an interrupted run (stopped early: 3 of 9 tests ran)"),
        ("no-completeness", "does not record that it ran completely"),
        ("empty-run", "holds no comparisons: it cannot be a baseline"),
        ("other-experiment", "is a different experiment from the baseline"),
        ("users-folder", "holds files this suite did not write"),
        ("a-file", "is a file, not a report directory"),
        ("same-folder", "are or contain one another"),
        ("baseline-inside-run", "are or contain one another"),
    ],
)
def test_refused_and_nothing_written(capsys, tmp_path, case, says):
    base = report(tmp_path / "base", BASE)
    run_args = {}
    if case in ("partial", "interrupted", "no-completeness"):
        run_args["completeness"] = {
            "partial": {"status": "partial", "detail": "frameworks torch only"},
            "interrupted": {"status": "interrupted", "detail": "stopped early: 3 of 9 tests ran"},
            "no-completeness": None,
        }[case]
    if case == "other-experiment":
        run_args["seed"] = 1
    run = report(tmp_path / "run", [] if case == "empty-run" else BASE, **run_args)
    if case == "users-folder":
        base = tmp_path / "mine"
        base.mkdir()
        (base / "notes.txt").write_text("mine")
    elif case == "a-file":
        base = tmp_path / "a_file"
        base.write_text("x")
    elif case == "same-folder":
        base = run
    elif case == "baseline-inside-run":
        base = run / "nested"
    before = files(base) if base.is_dir() else base.read_bytes() if base.exists() else None
    code, text = cli(capsys, "approve", run, base)
    assert code == 2, text
    assert says in text, text
    assert "seed: baseline 0, this run 1" in text if case == "other-experiment" else True
    after = files(base) if base.is_dir() else base.read_bytes() if base.exists() else None
    assert after == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_dry_run_writes_nothing(capsys, tmp_path):
    base = report(tmp_path / "base", BASE)
    run = report(tmp_path / "run", [*BASE[:3], rec("t[d]", 0.9)])
    before = files(base)
    code, text = cli(capsys, "approve", run, base, "--dry-run")
    assert code == 0, text
    assert "budgets moved: 1 of 4 checks" in text and text.rstrip().endswith("is unchanged")
    assert files(base) == before


def test_disk_full_is_one_error_line_exit_2_and_the_previous_baseline_stays(
    capsys, tmp_path, monkeypatch
):
    base = report(tmp_path / "base", BASE)
    run = report(tmp_path / "run", [*BASE[:3], rec("t[d]", 0.9)])
    before = files(base)
    original, calls = reports.writer._write, []

    def disk_fills_up(path, data):
        calls.append(path)
        if len(calls) == 3:  # the marker and one file are written
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, data)

    monkeypatch.setattr(reports.writer, "_write", disk_fills_up)  # undone after the test
    capsys.readouterr()
    assert main(["approve", str(run), str(base)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.match(r"python -m reports: error: cannot write the report .*base: No space left", err)
    assert files(base) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "run"]  # no leftovers


def test_parity_script_help_and_usage():
    # Only the paths that never touch the virtual environment (no install in a test).
    done = subprocess.run([str(ROOT / "parity"), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for word in ("report", "test", "show DIR", "diff BASELINE CURRENT", "approve RUN_DIR BASELINE"):
        assert word in done.stdout
    bad = subprocess.run([str(ROOT / "parity"), "nonsense"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage: ./parity COMMAND" in bad.stderr


def test_approve_keeps_a_readme_in_the_baseline_folder(capsys, tmp_path):
    base = report(tmp_path / "base", BASE)
    (base / "README.md").write_text("# Our baseline: approved after the torch upgrade\n")
    run = report(tmp_path / "run", [*BASE[:3], rec("t[d]", 0.9)])
    code, text = cli(capsys, "approve", run, base)
    assert code == 0, text
    assert (base / "README.md").read_text().startswith("# Our baseline")
    assert files(base)["comparisons.csv"] == files(run)["comparisons.csv"]


def test_approve_copies_only_the_runs_own_report_files(capsys, tmp_path):
    run = report(tmp_path / "run", BASE)
    (run / "NOTES.md").write_text("what I was trying\n")
    (run / "plots").mkdir()
    code, text = cli(capsys, "approve", run, tmp_path / "base")
    assert code == 0, text
    assert sorted(files(tmp_path / "base")) == sorted(
        [MARKER, "comparisons.csv", "summary.md", "summary.html", "run.json"]
    )


def test_approve_refuses_a_symlinked_report_file_in_the_run(capsys, tmp_path):
    run = report(tmp_path / "run", BASE, extra={"audit.md": "# a\n"})
    (run / "audit.md").unlink()
    (run / "audit.md").symlink_to("/etc/passwd")
    code, text = cli(capsys, "approve", run, tmp_path / "base")
    assert code == 2 and "audit.md is a symlink" in text
    assert not (tmp_path / "base").exists()


def test_approve_refuses_an_unmarked_folder_with_report_names(capsys, tmp_path):
    mine = tmp_path / "base"
    mine.mkdir()
    (mine / "comparisons.csv").write_text("my,own\n1,2\n")
    (mine / "summary.md").write_text("# mine\n")
    before = files(mine)
    code, text = cli(capsys, "approve", report(tmp_path / "run", BASE), mine)
    assert code == 2 and "which this suite did not mark as its own" in text
    assert files(mine) == before
