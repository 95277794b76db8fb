"""Bring your own implementation: examples/byo_impl/batch_first_cnn.py, written independently
of reference/ (class-based, batch-first, its own im2col and einsums, in torch's NCHW layout),
passes the suite's checks through the Harness, and `--parity-impl batch_first_cnn` works from
the command line with the module outside the project package (on PYTHONPATH only). Partial
implementations (examples/byo_impl/forward_only_nchw.py, a missing gradient) are checked on
what they return; the contract names unknown names, shapes and dtypes up front."""

import dataclasses
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parity_tests.detection import QuietRecorder
from parity_tests.harness import Harness, stage_check_fields
from parity_tests.impl_call import Absent
from parity_tests.metrics import compare_arrays, format_mismatch
from parity_tests.stages import BY_TENSOR, END_TO_END, STAGES
from reference import model
from reference.data import ARTICLE_IMAGES
from reference.tensors import ORDER
from reports import load_report

ROOT = Path(__file__).resolve().parents[1]
BYO_DIR = ROOT / "examples" / "byo_impl"
NAME = "batch_first_cnn"


def _load(name=NAME):
    # As `PYTHONPATH=examples/byo_impl` would import it, without touching sys.path.
    spec = importlib.util.spec_from_file_location(name, BYO_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SharedRunsHarness(Harness):
    """A Harness on the example that reuses the session harness's framework, reference and
    float64 runs (they depend on the weights and data only, not on the implementation)."""

    def __init__(self, shared: Harness, impl):
        super().__init__(dataclasses.replace(shared.config, impl=NAME), shared.data, impl)
        self.shared = shared

    def end_to_end(self, framework, dtype):
        return self.shared.end_to_end(framework, dtype)

    def reference(self, dtype):
        return self.shared.reference(dtype)

    def truth(self, dtype):
        return self.shared.truth(dtype)


@pytest.fixture(scope="module")
def byo_harness(harness, article_batch):
    # The example at the article's 200 images, whatever --parity-n-images says: at one image
    # the end-to-end rule is too thin for code that sums in another order than the
    # reference (docs/guarantees.md, "Known limit").
    shared = harness
    if harness.data is not article_batch:
        config = dataclasses.replace(harness.config, n_images=ARTICLE_IMAGES)
        shared = Harness(config, article_batch, model)
    return SharedRunsHarness(shared, _load())


@pytest.mark.parametrize("mode", ["stage", "end_to_end"])
def test_byo_passes_the_suite(parity, byo_harness, mode, framework, dtype):
    # NOTE: measured and failed like every check, but not recorded: the report is about the
    # implementation the session runs (--parity-impl), not about this example.
    quiet = QuietRecorder(parity.node, dataclasses.replace(parity.context, impl=NAME))
    bad = []
    for stage in STAGES if mode == "stage" else END_TO_END:
        rec = quiet.check(**stage_check_fields(byo_harness, stage, framework, dtype, mode), fail=False)
        if not rec.get("passed"):
            bad.append(format_mismatch(rec, parity.reproduce()) if rec else stage.tensor)
    assert not bad, "\n\n".join(bad)


def _run_example(pytestconfig, tmp_path, module: str, *options):
    """`pytest parity_tests/test_parity.py --parity-impl MODULE` in a subprocess, with the
    example on PYTHONPATH only (outside the project's packages), torch only; its report."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(BYO_DIR), os.environ.get("PYTHONPATH", "")) if p),
    )
    data = pytestconfig.getoption("--parity-data")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "parity_tests/test_parity.py",
        "-q",
        "-p",
        "no:cacheprovider",
        "--parity-impl",
        module,
        "--parity-frameworks",
        "torch",
        "--parity-report-dir",
        str(tmp_path / "report"),
        *options,
        *(["--parity-data", data] if data else []),
    ]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{' '.join(cmd)}\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
    return load_report(tmp_path / "report")


@pytest.mark.slow  # a whole pytest session in a subprocess (~8 s, mostly start-up)
def test_byo_runs_from_the_command_line(pytestconfig, tmp_path):
    # The interface is under test here, not the numbers: 20 images, float64.
    df, meta = _run_example(
        pytestconfig, tmp_path, NAME, "--parity-dtypes", "float64", "--parity-n-images", "20"
    )
    assert meta["impl"] == NAME and set(df["impl"]) == {NAME}
    assert df["passed"].all() and len(df) >= 2 * len(END_TO_END)


# --- partial implementations, layouts, the contract ---------------------------------------


class Without:
    """The readable reference, minus some names (a partial implementation)."""

    def __init__(self, *missing):
        self.missing = missing

    def train_step(self, params, X, y, lr, reduction):
        out = model.train_step(params, X, y, lr=lr, reduction=reduction)
        return {k: v for k, v in out.items() if k not in self.missing}


class Float64Only:
    """Code that computes in float64 whatever it is given."""

    def train_step(self, params, X, y, lr, reduction):
        p64 = {k: v.astype("float64") for k, v in params.items()}
        return model.train_step(p64, X.astype("float64"), y.astype("float64"), lr, reduction)


def _passes(harness, stage, dtype, mode="stage"):
    make = harness.stage_check if mode == "stage" else harness.end_to_end_check
    c = make(stage, "torch", dtype)
    return compare_arrays(
        c.actual, c.expected, c.tolerance.array, truth=c.truth, roundings=c.tolerance.roundings
    )


def test_forward_only_nchw_example_reports_the_rest_absent(run_config, article_data):
    harness = Harness(run_config, article_data, _load("forward_only_nchw"))
    absent = [name for name, kind, _ in harness.contract("float64") if kind == "absent"]
    assert absent == [n for n in ORDER if n not in ("Z1", "A1", "Z2", "O", "E")]
    assert all(_passes(harness, BY_TENSOR[n], "float64")["passed"] for n in ("Z1", "A1", "O"))
    with pytest.raises(Absent, match="dE_dW"):
        harness.stage_check(BY_TENSOR["dE_dW"], "torch", "float64")


def test_one_missing_gradient_leaves_the_other_updates_checked(run_config, article_data):
    harness = Harness(run_config, article_data, Without("dE_dW"))
    assert _passes(harness, BY_TENSOR["f_new"], "float64")["passed"]
    assert _passes(harness, BY_TENSOR["b_new"], "float64")["passed"]
    assert _passes(harness, BY_TENSOR["W_new"], "float64", "end_to_end")["passed"]
    with pytest.raises(Absent, match="dE_dW"):
        harness.stage_check(BY_TENSOR["W_new"], "torch", "float64")


def test_float64_only_code_gives_dtype_records_not_framework_crashes(run_config, article_data):
    harness = Harness(run_config, article_data, Float64Only())
    kinds = {kind for _, kind, _ in harness.contract("float32")}
    assert kinds == {"dtype"}
    for stage in STAGES:  # the frameworks get float32 inputs: no crash, a dtype record
        record = _passes(harness, stage, "float32")
        assert record["mismatch_kind"] == "dtype", (stage.tensor, record)


def test_contract_names_unknown_names_and_shapes_in_the_declared_layout(run_config, article_data):
    class Sloppy:
        LAYOUT = "nchw"

        def train_step(self, params, X, y, lr, reduction):
            out = _load().train_step(params, X, y, lr, reduction)
            return {**out, "dE_dw": out.pop("dE_dW"), "Z1": out["Z1"][:, :, :-1]}

    found = {
        (n, kind): msg
        for n, kind, msg in Harness(run_config, article_data, Sloppy()).contract("float64")
    }
    assert "closest article name: dE_dW" in found[("dE_dw", "unknown")]
    n = article_data.X.shape[2]
    assert f"expected ({n}, 3, 24, 24) (nchw layout)" in found[("Z1", "shape")]


@pytest.mark.slow  # a pytest session in a subprocess (~8 s)
def test_forward_only_run_exits_0_with_the_rest_absent(pytestconfig, tmp_path):
    df, _ = _run_example(pytestconfig, tmp_path, "forward_only_nchw")
    assert set(df.loc[df["status"] == "absent", "tensor"]) == set(ORDER) - {"Z1", "A1", "Z2", "O", "E"}
    assert (df.loc[df["status"] != "absent", "status"] == "pass").all()


# --- paths, ./parity check and reproduce lines that work in a clean shell -------------------

OFF_BY_ONE_PERCENT = """
from reference import model

def train_step(params, X, y, lr, reduction):
    out = model.train_step(params, X, y, lr=lr, reduction=reduction)
    out["Z1"] = out["Z1"] * 1.01
    return out
"""


def _clean_env() -> dict:
    """What a fresh shell has: PATH, and where MNIST is (synthetic digits when unset)."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "PARITY_MNIST": os.environ.get("PARITY_MNIST", "synthetic"),
    }


@pytest.mark.parametrize("given", ["relative", "absolute"])
def test_parity_impl_takes_a_py_path_relative_to_the_invocation_folder(
    tmp_path, monkeypatch, given, run_config, article_data
):
    from parity_tests.impl_call import ChildProcessImpl, run_train_step
    from parity_tests.impls import resolve_impl
    from parity_tests.settings import reproduce_impl

    monkeypatch.chdir(ROOT / "examples")
    path = (
        "byo_impl/forward_only_nchw.py" if given == "relative" else str(BYO_DIR / "forward_only_nchw.py")
    )
    impl = resolve_impl(path)
    assert isinstance(impl, ChildProcessImpl) and impl.name == str(BYO_DIR / "forward_only_nchw.py")
    impl.probe()
    harness = Harness(run_config, article_data, model)
    out = run_train_step(impl, harness.params("float64"), *harness.inputs("float64"), 0.1, "sum")
    assert set(out.outputs) == {"Z1", "A1", "Z2", "O", "E"}
    # As the project folder names it, wherever pytest ran.
    assert reproduce_impl(path) == ["--parity-impl", "examples/byo_impl/forward_only_nchw.py"]


def test_a_module_only_pythonpath_finds_is_reproduced_by_its_file_or_its_folder(tmp_path, monkeypatch):
    from parity_tests.settings import reproduce_impl

    (tmp_path / "my_cnn.py").write_text("def train_step(*a, **k): ...\n")
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "cnn.py").write_text("from . import helpers\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert reproduce_impl("my_cnn") == ["--parity-impl", str(tmp_path / "my_cnn.py")]
    assert reproduce_impl("mypkg.cnn") == ["-o", f"pythonpath={tmp_path}", "--parity-impl", "mypkg.cnn"]
    # What a clean shell in the project folder imports stays a name.
    assert reproduce_impl("reference.model") == ["--parity-impl", "reference.model"]
    assert reproduce_impl("published:D3") == ["--parity-impl", "published:D3"]
    assert reproduce_impl("reference") == []


def test_a_byo_failures_reproduce_line_reruns_it_in_a_clean_shell(tmp_path):
    (tmp_path / "off_by_one_percent.py").write_text(OFF_BY_ONE_PERCENT, encoding="utf-8")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p),
    )
    args = ["--parity-frameworks", "torch", "--parity-dtypes", "float64", "--parity-no-report"]
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "parity_tests/test_parity.py"]
    first = subprocess.run(
        [*cmd, "--parity-impl", "off_by_one_percent", "-k", "test_forward and Z1", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 1, first.stdout[-3000:]
    lines = [ln.split("reproduce: ", 1)[1] for ln in first.stdout.splitlines() if "reproduce: " in ln]
    assert lines, first.stdout[-3000:]
    pasted = lines[0]
    again = subprocess.run(
        ["bash", "-c", f"{pasted} -p no:cacheprovider --parity-no-report"],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = again.stdout
    assert again.returncode == 1 and "1 failed" in out, (
        f"{pasted}\n{out[-3000:]}\n{again.stderr[-2000:]}"
    )
    assert "No module named" not in out and f"reproduce: {pasted}" in out, out[-3000:]
    assert "`Z1`" in out.split("reproduce: ")[0]


def test_parity_check_runs_the_articles_checks_on_a_path_from_the_callers_folder(tmp_path):
    venv = Path(sys.prefix)
    stamp = venv / ".requirements.sha256"
    want = hashlib.sha256(
        (ROOT / "requirements.txt").read_bytes() + (ROOT / "requirements-base.txt").read_bytes()
    ).hexdigest()
    if not stamp.is_file() or stamp.read_text().strip() != want:
        pytest.skip("this interpreter is not a ./parity virtual environment (no install in a test)")
    run = subprocess.run(
        [str(ROOT / "parity"), "check", "byo_impl/forward_only_nchw.py", "--parity-frameworks", "torch"]
        + ["--parity-dtypes", "float64", "--parity-report-dir", str(tmp_path / "report")],
        cwd=ROOT / "examples",
        env={**_clean_env(), "PARITY_VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    df, meta = load_report(tmp_path / "report")
    assert meta["impl"] == str(BYO_DIR / "forward_only_nchw.py")
    checked = set(df.loc[df["status"] != "absent", "tensor"]) - {"X", "y", "f", "W", "b"}  # inputs
    assert checked == {"Z1", "A1", "Z2", "O", "E"} and (df["status"] != "fail").all()
