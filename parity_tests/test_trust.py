"""What the suite guarantees under abuse (docs/guarantees.md).

Hostile implementations (modules written to tmp_path) and careless options, each against
the promise it would break: nothing that is not ours is deleted, the implementation cannot
change what the frameworks see, a baseline is never the run it gates, an incomplete run never
looks complete, every failure is a record, bad options fail at start-up, user code cannot
hang or end the session, and reproduce lines cannot be turned into commands.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from parity_tests import completeness, settings
from parity_tests.compare import ParityRecorder, RunContext
from parity_tests.harness import Harness
from parity_tests.impl_call import ChildProcessImpl, ImplementationError
from parity_tests.metrics import compare_arrays, compare_check
from parity_tests.stages import BY_TENSOR, STAGES
from reference import model
from reports import load_report, write_report

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def write_module(tmp_path, monkeypatch, name: str, body: str) -> str:
    """A user's implementation module on sys.path (the child process inherits sys.path)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


class FakeConfig:
    """Just enough of pytest's Config for settings.validate_options: real defaults, overrides."""

    def __init__(self, pytestconfig, **overrides):
        self._real, self._overrides = pytestconfig, overrides
        self.option = types.SimpleNamespace(keyword="", markexpr="not slow", deselect=None)

    def getoption(self, name):
        key = name.lstrip("-").replace("-", "_")
        return self._overrides[key] if key in self._overrides else self._real.getoption(name)


def validate(pytestconfig, tmp_path, **overrides):
    overrides.setdefault("parity_report_dir", str(tmp_path / "report"))
    overrides.setdefault("parity_no_report", False)
    overrides.setdefault("parity_baseline", None)
    overrides.setdefault("parity_data", pytestconfig.getoption("--parity-data") or "synthetic")
    return settings.validate_options(FakeConfig(pytestconfig, **overrides))


def run_pytest(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def small_report(path: Path) -> None:
    e = np.zeros(3)
    rec = dict(
        check="t[Z1]",
        tensor="Z1",
        against="torch",
        mode="stage",
        dtype="float64",
        impl="reference",
        seed=0,
        **compare_arrays(e + 1, e + 1, 0.0),
    )
    write_report([rec], path, {"seed": 0}, heat_map=False)


# --------------------------------------------------------------------------- 1. deletion


@pytest.mark.parametrize("holds", ["user_files", "git_checkout", "reports_package", "a_file"])
def test_report_dir_that_is_not_ours_is_refused_at_start(pytestconfig, tmp_path, holds):
    target = tmp_path / "target"
    if holds == "a_file":
        target.write_text("mine")
    else:
        target.mkdir()
        name = {"user_files": "thesis.tex", "git_checkout": ".git", "reports_package": "__init__.py"}
        (target / name[holds]).write_text("mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(pytest.UsageError, match="--parity-report-dir"):
        validate(pytestconfig, tmp_path, parity_report_dir=str(target))
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_the_reports_package_itself_is_refused(pytestconfig, tmp_path):
    with pytest.raises(pytest.UsageError, match="did not write"):
        validate(pytestconfig, tmp_path, parity_report_dir=str(ROOT / "reports"))
    assert (ROOT / "reports" / "writer.py").is_file()


def test_a_report_the_suite_wrote_is_replaced(pytestconfig, tmp_path):
    small_report(tmp_path / "report")
    validate(pytestconfig, tmp_path)  # no error


# --------------------------------------------------------------------------- 2. inputs


class Mutating:
    """The reference, after writing into one of its inputs the way careless code does."""

    def __init__(self, how: str):
        self.how = how

    def train_step(self, params, X, y, lr, reduction):
        if self.how == "bias_plus_one":
            params["b"] += 1
        elif self.how == "halve_X":
            X *= 0.5
        out = model.train_step(params, X, y, lr=lr, reduction=reduction)
        if self.how == "in_place_sgd":
            params["W"] -= lr * out["dE_dW"]
        return out


@pytest.mark.parametrize("how,name", [("bias_plus_one", "b"), ("halve_X", "X"), ("in_place_sgd", "W")])
def test_an_input_written_in_place_is_named(run_config, article_data, how, name):
    harness = Harness(run_config, article_data, Mutating(how))
    assert harness.modified_inputs("float64") == [name]
    check = harness.inputs_check(name, "float64")
    assert not compare_arrays(check.actual, check.expected, check.tolerance.array)["passed"]
    # The frameworks are still fed the suite's own inputs, bit for bit.
    pristine = Harness(run_config, article_data, model).pristine_inputs("float64")
    for key, value in harness.pristine_inputs("float64").items():
        assert value.tobytes() == pristine[key].tobytes() and not value.flags.writeable


def test_an_in_place_update_is_not_hidden_by_the_frameworks(run_config, article_data):
    # Before: the frameworks read the updated W and agreed; now W_new is checked against
    # an update of the original W and the inputs check names W.
    harness = Harness(run_config, article_data, Mutating("in_place_sgd"))
    c = harness.stage_check(BY_TENSOR["W_new"], "torch", "float64")
    assert compare_arrays(c.actual, c.expected, c.tolerance.array)["passed"]
    assert harness.modified_inputs("float64") == ["W"]


def test_a_child_process_implementation_that_mutates_is_named(
    tmp_path, monkeypatch, run_config, article_data
):
    name = write_module(
        tmp_path,
        monkeypatch,
        "mutates_x",
        """
        from reference import model
        def train_step(params, X, y, lr, reduction):
            X[0, 0, 0] = 7.0
            return model.train_step(params, X, y, lr=lr, reduction=reduction)
    """,
    )
    harness = Harness(run_config, article_data, ChildProcessImpl(name, timeout=60))
    assert harness.modified_inputs("float32") == ["X"]


# --------------------------------------------------------------------------- 3. baseline


@pytest.mark.parametrize("where", ["same", "inside"])
def test_report_dir_in_the_baseline_is_refused(pytestconfig, tmp_path, where):
    base = tmp_path / "baseline"
    small_report(base)
    out = base if where == "same" else base / "run"
    with pytest.raises(pytest.UsageError, match="overlaps the baseline"):
        validate(pytestconfig, tmp_path, parity_baseline=str(base), parity_report_dir=str(out))


def _baseline_with(tmp_path, pytestconfig, **facts) -> Path:
    s, state = validate(pytestconfig, tmp_path)
    meta = {**settings.experiment(s, state.data), **facts}
    base = tmp_path / "baseline"
    e = np.zeros(2)
    rec = dict(
        check="t",
        tensor="Z1",
        against="torch",
        mode="stage",
        dtype="float64",
        impl=s.impl,
        **compare_arrays(e, e, 0.0, expect_zero=True),
    )
    write_report([rec], base, meta, heat_map=False)
    return base


def test_a_baseline_of_another_experiment_is_refused_naming_every_fact(pytestconfig, tmp_path):
    base = _baseline_with(tmp_path, pytestconfig, seed=3, reduction="mean")
    with pytest.raises(pytest.UsageError) as err:
        validate(pytestconfig, tmp_path, parity_baseline=str(base))
    assert "seed" in str(err.value) and "reduction" in str(err.value)


def test_a_baseline_of_the_same_experiment_is_accepted(pytestconfig, tmp_path):
    base = _baseline_with(tmp_path, pytestconfig)
    _, state = validate(pytestconfig, tmp_path, parity_baseline=str(base))
    assert len(state.baseline_df) == 1


# --------------------------------------------------------------------------- 4. completeness


def _session(pytestconfig, tmp_path, *, ran, collected, keyword="", shouldstop=False, args=None, **opts):
    """args: the paths the command named, from the project folder (None: not known)."""
    s, state = validate(pytestconfig, tmp_path, **opts)
    state.ran = set(ran)
    config = FakeConfig(pytestconfig)
    config.option.keyword = keyword
    if args is not None:
        config.args, config.invocation_params = list(args), types.SimpleNamespace(dir=ROOT)
    config.stash = {settings.SETTINGS: s, settings.STATE: state}
    return types.SimpleNamespace(
        config=config, testscollected=collected, shouldstop=shouldstop, shouldfail=False
    )


def _parity_ids(n):
    return [f"parity_tests/test_parity.py::test_forward[{i}]" for i in range(n)]


def _model_ids(n):
    return [f"parity_tests/test_model.py::test_model_stage[{i}]" for i in range(n)]


@pytest.mark.parametrize(
    "case,expected",
    [
        ("everything", "complete"),
        ("dash_k", "partial"),
        ("one_framework", "partial"),
        ("no_parity_file", "partial"),
        ("ctrl_c", "interrupted"),
        ("dash_x", "interrupted"),
    ],
)
def test_completeness_is_recorded(pytestconfig, tmp_path, case, expected):
    s = validate(pytestconfig, tmp_path)[0]
    full, model = completeness.expected_parity_tests(s), completeness.expected_model_tests(s)
    every = _parity_ids(full) + _model_ids(model)
    kw = dict(ran=every, collected=len(every))
    exit_status = pytest.ExitCode.OK
    if case == "dash_k":
        kw.update(keyword="Z1")
    elif case == "one_framework":
        kw.update(parity_frameworks="torch")
    elif case == "no_parity_file":
        kw.update(ran=["parity_tests/test_reference.py::test_x"], collected=1)
    elif case == "ctrl_c":
        kw.update(ran=_parity_ids(47))
        exit_status = pytest.ExitCode.INTERRUPTED
    elif case == "dash_x":
        kw.update(ran=_parity_ids(3), shouldstop="stopping after 1 failures")
    result = completeness.completeness(_session(pytestconfig, tmp_path, **kw), exit_status)
    assert result["status"] == expected, result


def _own_ids(*kinds) -> list[str]:
    return [
        f"parity_tests/test_own_layers.py::test_own_layer[{k}-{d}]"
        for k in kinds
        for d in ("float64", "float32")
    ]


TESTPATHS = [
    "parity_tests/test_parity.py",
    "parity_tests/test_model.py",
    "parity_tests/test_reference.py",
]


@pytest.mark.parametrize(
    "args,ran,layers,expected",
    [
        (["parity_tests/test_parity.py"], "parity", (), "complete"),
        (["parity_tests/test_own_layers.py"], "own", ("maxpool",), "complete"),
        (["parity_tests/test_reference.py"], "other", (), "complete"),
        (["parity_tests/test_parity.py"], "parity-3", (), "partial"),
        (["parity_tests/test_parity.py::test_forward"], "parity-3", (), "partial"),
        (["parity_tests"], "parity", (), "partial"),
        (TESTPATHS, "parity", (), "partial"),
        (["parity_tests/test_parity.py"], "parity", ("conv",), "partial"),
    ],
    ids=[
        "byo-test_parity-only-complete",
        "own-layers-file-only-complete",
        "other-file-only-complete",
        "named-file-not-all-run-partial",
        "node-id-in-named-file-partial",
        "folder-holding-test_model-partial",
        "testpaths-without-test_model-partial",
        "parity-layer-never-called-partial",
    ],
)
def test_complete_is_relative_to_what_the_command_asked_for(
    pytestconfig, tmp_path, args, ran, layers, expected
):
    """The README's own bring-your-own and own-layers commands name one file each and run all
    of it: complete, not "PARTIAL: 0 of the 368 tests of lenet ran" (issue 24, point 6)."""
    opts = {"parity_layer": _own(*layers)} if layers else {}
    s = validate(pytestconfig, tmp_path, **opts)[0]
    ids = {
        "parity": _parity_ids(completeness.expected_parity_tests(s)),
        "parity-3": _parity_ids(3),
        "own": _own_ids(*layers),
        "other": ["parity_tests/test_reference.py::test_x"],
    }[ran]
    session = _session(pytestconfig, tmp_path, ran=ids, collected=len(ids), args=args, **opts)
    result = completeness.completeness(session, pytest.ExitCode.OK)
    assert result["status"] == expected, result
    if expected == "complete":
        assert result["detail"] == f"{len(ids)} of {len(ids)} tests ran"
    if layers == ("conv",):
        assert result["detail"] == (
            "--parity-layer conv was not checked: test_model.py did not run and "
            "test_own_layers.py did not run"
        )


def _own(*kinds) -> list[str]:
    """--parity-layer values for `kinds`, from the bundled CS231n example."""
    from parity_tests.own_layers import option_value
    from parity_tests.test_own_layers import EXAMPLE

    return [option_value(kind, EXAMPLE) for kind in kinds]


@pytest.mark.parametrize(
    "kinds,label",
    [
        (("avgpool",), "reference"),
        (("conv", "avgpool"), "own:conv"),
        (("conv", "maxpool"), "own:conv,maxpool"),
        (("tanh", "relu", "sigmoid"), "own:relu"),
    ],
    ids=[
        "lenet-avgpool-reference",
        "lenet-conv,avgpool-own:conv",
        "lenet-conv,maxpool",
        "lenet-tanh,relu,sigmoid-own:relu",
    ],
)
def test_model_records_credit_only_the_layer_kinds_the_network_has(pytestconfig, tmp_path, kinds, label):
    """lenet has no average pooling: an avgpool pair never runs in it, so test_model.py's
    records must not say own:avgpool (issue 21)."""
    s, _ = validate(pytestconfig, tmp_path, parity_layer=_own(*kinds))
    assert s.model == "lenet" and s.model_impl == label


@pytest.mark.parametrize(
    "own_ran,expected",
    [((), "partial"), (("avgpool-float64", "avgpool-float32"), "complete")],
    ids=["own-layers-not-run-partial", "own-layers-run-complete"],
)
def test_a_layer_kind_nothing_checked_makes_the_run_partial(pytestconfig, tmp_path, own_ran, expected):
    """--parity-layer avgpool with lenet: checked only if test_own_layers.py checked it alone."""
    s = validate(pytestconfig, tmp_path, parity_layer=_own("avgpool"))[0]
    own = [f"parity_tests/test_own_layers.py::test_own_layer[{i}]" for i in own_ran]
    every = _parity_ids(completeness.expected_parity_tests(s)) + _model_ids(
        completeness.expected_model_tests(s)
    )
    session = _session(
        pytestconfig, tmp_path, ran=every + own, collected=len(every + own), parity_layer=_own("avgpool")
    )
    result = completeness.completeness(session, pytest.ExitCode.OK)
    assert result["status"] == expected, result
    if expected == "partial":
        assert result["detail"] == (
            "--parity-layer avgpool was not checked: lenet has no avgpool layer and "
            "test_own_layers.py did not run"
        )


# --------------------------------------------------------------------------- 6. options


@pytest.mark.parametrize(
    "option,value,says",
    [
        ("parity_n_images", "0", "integer 1..60000"),
        ("parity_n_images", "many", "integer"),
        ("parity_seed", "-1", "integer"),
        ("parity_dtypes", "float32,float32", "at most once"),
        ("parity_frameworks", "torch,torch", "at most once"),
        ("parity_frameworks", "jax", "subset"),
        ("parity_impl", "no_such_module_here", "importable module"),
        ("parity_impl", "published:D99", "one of"),
        ("parity_impl", "x<svg onload=alert(1)>", "dotted module name"),
        ("parity_timeout", "0", "> 0"),
        ("parity_timeout", "nan", "finite"),
        ("parity_layer_timeout", "0", "> 0"),
        ("parity_layer_timeout", "inf", "finite"),
        ("parity_baseline_factor", "0", "> 1"),
        ("parity_baseline_factor", "-1", "> 1"),
        ("parity_baseline_factor", "nan", "finite"),
        ("parity_baseline_floor", "-1", ">= 0"),
        ("parity_baseline_floor", "inf", "finite"),
        ("parity_baseline_within", "1.5", r"in 0\.\.1"),
        ("parity_data", "/no/such/mnist.npz", "does not exist"),
        ("parity_model", "conv(4,30)-dense(10)-softmax_ce", r"layer 1 'conv\(4,30\)'.*28x28"),
        ("parity_model", "conv(4,3)-dense(9)-softmax_ce", "would get 9 features"),
        ("parity_model", "lenett", "closest: the preset 'lenet'"),
        ("parity_model", "conv(100000000,5)-relu-dense(10)-softmax_ce", r"needs at least .* GiB"),
        ("parity_model", "dense(1000000000)-dense(10)-softmax_ce", r"more than the .* available"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_bad_option_is_one_usage_error(pytestconfig, tmp_path, option, value, says):
    with pytest.raises(
        pytest.UsageError,
        match=f"(?s)--{option.replace('_', '-')}.*{says}" if option != "parity_data" else says,
    ):
        validate(pytestconfig, tmp_path, **{option: value})


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--parity-baseline-floor", "-1", "a finite number >= 0"),
        ("--parity-baseline-floor", "nan", "a finite number >= 0"),
        ("--parity-baseline-floor", "ten", "a finite number >= 0"),
        ("--parity-baseline-floor", "", "a finite number >= 0"),
        ("--parity-baseline-within", "1.5", "a finite number in 0..1"),
        ("--parity-baseline-within", "-0.1", "a finite number in 0..1"),
        ("--parity-baseline-within", "half", "a finite number in 0..1"),
    ],
    ids=["floor-negative", "floor-nan", "floor-not-a-number", "floor-empty", "within-over-1",
         "within-negative", "within-not-a-number"],
)  # fmt: skip
def test_bad_baseline_policy_is_one_usage_error(pytestconfig, tmp_path, option, value, expected):
    # --parity-baseline-floor mirrors `python -m reports diff --floor`, -within `--within`:
    # one message naming the option, what came and what was expected.
    key = option.lstrip("-").replace("-", "_")
    with pytest.raises(pytest.UsageError) as caught:
        validate(pytestconfig, tmp_path, **{key: value})
    assert str(caught.value) == f"{option} {value!r}: expected {expected}"


@pytest.mark.parametrize(
    ("overrides", "floor", "within"),
    [
        ({}, None, 0.5),  # the defaults: floor 1 / factor**2, half the allowance
        ({"parity_baseline_floor": "0.05", "parity_baseline_within": "0"}, 0.05, 0.0),
        ({"parity_baseline_floor": " 0 ", "parity_baseline_within": "1"}, 0.0, 1.0),
    ],
    ids=["defaults", "floor-0.05-within-0", "floor-0-within-1"],
)
def test_baseline_policy_options_set_the_settings(pytestconfig, tmp_path, overrides, floor, within):
    s, _ = validate(pytestconfig, tmp_path, **overrides)
    assert (s.baseline_floor, s.baseline_within) == (floor, within)


@pytest.mark.parametrize("state", ["missing", "empty_dir", "empty_csv", "header_only", "not_utf8"])
def test_bad_baseline_is_one_usage_error(pytestconfig, tmp_path, state):
    base = tmp_path / "baseline"
    if state != "missing":
        base.mkdir()
    csv = base / "comparisons.csv"
    if state == "empty_csv":
        csv.write_text("")
    elif state == "header_only":
        small_report(tmp_path / "model")
        csv.write_text((tmp_path / "model" / "comparisons.csv").read_text().splitlines()[0] + "\n")
    elif state == "not_utf8":
        csv.write_bytes(b"check,\xff\xfe\n")
    with pytest.raises(pytest.UsageError, match="--parity-baseline"):
        validate(pytestconfig, tmp_path, parity_baseline=str(base))


def test_a_fifo_as_data_is_refused_not_waited_on(pytestconfig, tmp_path):
    fifo = tmp_path / "mnist.npz"
    os.mkfifo(fifo)
    with pytest.raises(pytest.UsageError, match="FIFO"):
        validate(pytestconfig, tmp_path, parity_data=str(fifo))


@pytest.mark.parametrize(
    "args",
    [
        ["--parity-impl", "no_such_module_here"],
        ["--parity-n-images", "0"],
        ["--parity-report-dir", "reports"],
    ],
    ids=["impl", "n_images", "report_dir"],
)
def test_usage_errors_exit_4_before_any_test(args):
    run = run_pytest("parity_tests/test_parity.py", *args, env={"PARITY_MNIST": "synthetic"})
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-2000:]
    assert "passed" not in run.stdout and "failed" not in run.stdout
    assert len((run.stdout + run.stderr).strip().splitlines()) <= 5, run.stderr


SMALL_NET = (
    "conv(2,3)-relu-avgpool(2)-dense(10)-softmax_ce"  # not one of test_model_derivatives.NETWORKS
)


def _spy_options(monkeypatch) -> list:
    """Every parse of a spec string and every load of --parity-layer values, from now on."""
    from parity_tests import own_layers
    from reference import network, spec

    calls = []

    def spy(name, real):
        def called(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        return called

    monkeypatch.setattr(spec, "parse_spec", spy("parse_spec", spec.parse_spec))
    monkeypatch.setattr(network, "parse_spec", spy("parse_spec", network.parse_spec))
    monkeypatch.setattr(own_layers, "load", spy("load", own_layers.load))
    return calls


def test_the_model_is_parsed_and_the_layers_loaded_once_at_validation(
    pytestconfig, tmp_path, monkeypatch
):
    """Options resolved once (issue 20): validate_options parses --parity-model and loads the
    --parity-layer values; whatever reads them later takes the Settings' network and layers."""
    from parity_tests import audit_hook, own_layers, records, test_model, test_model_derivatives
    from parity_tests.test_own_layers import EXAMPLE, configured_layers

    calls = _spy_options(monkeypatch)
    layer = own_layers.option_value("avgpool", EXAMPLE)
    s, state = validate(pytestconfig, tmp_path, parity_model=SMALL_NET, parity_layer=[layer])
    assert calls == ["parse_spec", "load"]
    assert s.network.label == s.model == SMALL_NET and list(s.user_layers) == ["avgpool"]
    test_model_derivatives._fixed_networks()  # that module's own networks, built once
    calls.clear()

    config = FakeConfig(pytestconfig)
    config.stash = {settings.SETTINGS: s, settings.STATE: state}
    config.invocation_params = types.SimpleNamespace(args=())
    got = {}
    metafunc = types.SimpleNamespace(
        fixturenames=["tensor"],
        config=config,
        function=test_model.test_model_stage,
        parametrize=lambda name, values, ids: got.update({name: values}),
    )
    test_model.pytest_generate_tests(metafunc)
    assert got["tensor"] == s.network.order
    assert test_model_derivatives._networks(config)[-1] is s.network
    assert completeness.expected_model_tests(s) > 0
    assert records.run_meta(config)["tensor_order"][-len(s.network.order) :] == list(s.network.order)
    assert configured_layers(config) == dict(s.user_layers)
    assert s.model_impl == "own:avgpool"
    assert (
        "X2"
        in audit_hook.audit_files([], {"impl": "reference", "model": s.model}, s.network)["audit.md"]
    )
    assert calls == [], f"parsed or loaded again after validation: {calls}"


def test_the_session_fixtures_are_the_settings_network(parity_settings, model_network, model_harness):
    assert model_network is parity_settings.network
    assert model_harness.net is parity_settings.network


# --------------------------------------------------------------------------- 8. escaping


def test_reproduce_line_is_shell_quoted(pytestconfig, tmp_path):
    data = str(tmp_path / "x;echo PWNED")
    s, _ = validate(pytestconfig, tmp_path, parity_data="synthetic")
    s = s.__class__(**{**s.__dict__, "data": data})
    assert shlex.split(settings.reproduce_options(s))[-1] == data
    node = types.SimpleNamespace(nodeid="t.py::test[$(echo PWNED)]")
    recorder = ParityRecorder(node, RunContext(0, "", "", "", "", "", settings.reproduce_options(s)))
    words = shlex.split(recorder.reproduce())
    assert words[:4] == [sys.executable, "-m", "pytest", node.nodeid] and words[-1] == data


# --------------------------------------------------------------------------- 10. user code


HOSTILE = {
    "sleeps": "import time\ndef train_step(params, X, y, lr, reduction):\n    time.sleep(60)\n",
    "os_exit": "import os\ndef train_step(params, X, y, lr, reduction):\n    os._exit(0)\n",
    "sys_exit": "import sys\ndef train_step(params, X, y, lr, reduction):\n    sys.exit(3)\n",
    "ctrl_c": "def train_step(params, X, y, lr, reduction):\n    raise KeyboardInterrupt\n",
    "not_a_mapping": "def train_step(params, X, y, lr, reduction):\n    return [1, 2]\n",
}
SAYS = {
    "sleeps": "did not return within 2 s",
    "os_exit": "exit status 0",
    "sys_exit": "SystemExit",
    "ctrl_c": "KeyboardInterrupt",
    "not_a_mapping": "mapping",
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_user_code_cannot_hang_or_end_the_session(tmp_path, monkeypatch, run_config, article_data, kind):
    name = write_module(tmp_path, monkeypatch, f"hostile_{kind}", HOSTILE[kind])
    harness = Harness(run_config, article_data, ChildProcessImpl(name, timeout=2))
    with pytest.raises(ImplementationError, match=SAYS[kind]):
        harness.implementation("float64")
    with pytest.raises(ImplementationError, match=SAYS[kind]):  # remembered: not run again
        harness.stage_check(STAGES[1], "torch", "float64")


# --------------------------------------------------------------------------- 4, 5: sessions

HOSTILE_SHAPES = """
    import sys
    import numpy as np
    from reference import model
    def train_step(params, X, y, lr, reduction):
        if X.dtype == np.float32:
            sys.exit("float32 is not supported")
        out = model.train_step(params, X, y, lr=lr, reduction=reduction)
        out["dE_dW"] = out["dE_dW"].T   # wrong shape
        out["Z1"] = out["Z1"][:, :, :-1]
        return out
"""


@pytest.mark.slow  # one pytest session in a subprocess, torch only (~15 s)
def test_every_failed_test_has_a_non_pass_record(tmp_path, monkeypatch):
    write_module(tmp_path, monkeypatch, "hostile_shapes", HOSTILE_SHAPES)
    junit = tmp_path / "junit.xml"
    run = run_pytest(
        "parity_tests/test_parity.py",
        "--parity-impl",
        "hostile_shapes",
        "--parity-frameworks",
        "torch",
        "--parity-n-images",
        "8",
        "--parity-report-dir",
        str(tmp_path / "report"),
        f"--junitxml={junit}",
        env={"PYTHONPATH": str(tmp_path), "PARITY_MNIST": "synthetic"},
    )
    assert run.returncode == 1, run.stdout[-3000:]
    import xml.etree.ElementTree as ET

    failed = {
        f"{c.get('classname')}::{c.get('name')}"
        for c in ET.parse(junit).iter("testcase")
        if c.find("failure") is not None or c.find("error") is not None
    }
    df, meta = load_report(tmp_path / "report")
    bad = df[df["status"] != "pass"]
    covered = {c.replace("/", ".").replace(".py::", "::") for c in bad["check"]}
    assert failed and {f.split("[")[0] for f in failed} <= {c.split("[")[0] for c in covered}
    assert len(bad["check"].unique()) >= len(failed)
    assert meta["completeness"]["status"] == "partial"  # torch only


@pytest.mark.slow  # two pytest sessions in subprocesses (~20 s)
def test_partial_run_says_so_and_a_stopped_run_keeps_the_previous_report(tmp_path):
    out = tmp_path / "report"
    common = [
        "parity_tests/test_parity.py",
        "--parity-frameworks",
        "torch",
        "--parity-n-images",
        "8",
        "--parity-report-dir",
        str(out),
    ]
    env = {"PARITY_MNIST": "synthetic"}
    run = run_pytest(*common, "-k", "test_forward", env=env)
    assert run.returncode == 0, run.stdout[-2000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["completeness"]["status"] == "partial"
    assert "PARTIAL" in (out / "summary.md").read_text().split("\n\n")[1]
    assert "parity run PARTIAL" in run.stdout.strip().splitlines()[-2]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    run = run_pytest(*common, "-x", "--parity-impl", "mutant:sign_dE_dO", env=env)
    assert run.returncode == 1
    assert (
        "no report written" in run.stdout and {p.name: p.read_bytes() for p in out.iterdir()} == before
    )


SAFETY_NET = """
import numpy as np
from parity_tests.harness import Check
from parity_tests.tolerance import exact

def test_passes_a_comparison_then_fails(parity):
    a = np.ones(3)
    parity.check(tensor="Z1", equation="E1", step="conv", quantity="forward", mode="stage",
                 against="torch", dtype="float64", compute=lambda: Check(a, a, exact(a.shape), None))
    assert 1 == 2, "a plain assertion after the comparison"
"""


@pytest.mark.slow  # a pytest session in a subprocess (~9 s, the frameworks' import)
def test_a_test_failing_outside_its_comparisons_leaves_an_error_record(tmp_path):
    (tmp_path / "test_net.py").write_text(SAFETY_NET)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "test_net.py",
            "-p",
            "no:cacheprovider",
            "--parity-data",
            "synthetic",
            "--parity-report-dir",
            str(tmp_path / "r"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    df, _ = load_report(tmp_path / "r")
    assert sorted(df["status"]) == ["error", "pass"]
    assert "without a failing comparison" in df.loc[df["status"] == "error", "error"].iloc[0]


@pytest.mark.slow  # a collection in a subprocess (~5 s, torch's import)
def test_expected_parity_tests_is_what_test_parity_collects(pytestconfig, tmp_path):
    # completeness() calls a run complete only if this many test_parity.py tests ran.
    s, _ = validate(pytestconfig, tmp_path, parity_frameworks="torch", parity_dtypes="float64")
    run = run_pytest(
        "parity_tests/test_parity.py",
        "--collect-only",
        "-q",
        "--parity-frameworks",
        "torch",
        "--parity-dtypes",
        "float64",
        env={"PARITY_MNIST": "synthetic"},
    )
    collected = [line for line in run.stdout.splitlines() if "test_parity.py::" in line]
    assert len(collected) == completeness.expected_parity_tests(s), run.stdout[-2000:]


@pytest.mark.slow  # a pytest session in a subprocess (~9 s, the frameworks' import)
def test_last_failed_works_with_the_projects_configuration(tmp_path):
    # pyproject's addopts once held -p no:cacheprovider, which made --lf rerun everything.
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "parity_tests/meta/test_style.py",
        "--lf",
        "--parity-no-report",
        "--parity-frameworks",
        "torch",
        "-o",
        "cache_dir=" + str(tmp_path),
    ]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "run-last-failure" in run.stdout, run.stdout[-2000:]


# --------------------------------------------------------------------------- the report at session end


class Terminal:
    """What session_report.terminal_summary writes, as lines."""

    def __init__(self):
        self.lines = []

    def section(self, title, **kw):
        self.lines.append(f"== {title}")

    def write_line(self, line, **kw):
        self.lines.append(line)


def _finished_run(pytestconfig, tmp_path):
    """A finished run's config: one comparison recorded, every test ran."""
    s, state = validate(pytestconfig, tmp_path)
    config = FakeConfig(pytestconfig)
    config.stash = {settings.SETTINGS: s, settings.STATE: state}
    config.invocation_params = types.SimpleNamespace(args=())
    e = np.zeros(3)
    m = compare_arrays(e + 1, e + 1, 0.0)
    rec = dict(check="t[Z1]", tensor="Z1", against="torch", mode="stage", dtype="float64", **m)
    state.records = [dict(rec, impl="reference", seed=0)]
    state.completeness = {"status": "complete", "detail": "every test ran"}
    return s, state, config


def test_a_full_disk_at_session_end_keeps_the_verdict_and_says_no_report_was_written(
    pytestconfig, tmp_path, monkeypatch
):
    import reports.writer
    from parity_tests import session_report

    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    s, state, config = _finished_run(pytestconfig, tmp_path)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reports.writer, "_write", full)
    session_report.write_run_report(config)  # no traceback
    tr = Terminal()
    session_report.terminal_summary(tr, config)
    assert any(line.startswith("verdict: every comparison passed") for line in tr.lines), tr.lines
    last = tr.lines[-1]
    assert (
        last.startswith("parity run COMPLETE") and "no report written (the report could not be" in last
    )
    assert "No space left on device" in last and f"{s.report_dir} is untouched" in last
    assert not s.report_dir.exists() and list(tmp_path.iterdir()) == []


def test_an_unwritable_job_summary_is_one_line_and_the_report_is_written(
    pytestconfig, tmp_path, monkeypatch, capsys
):
    from parity_tests import session_report

    unwritable = tmp_path / "summary-is-a-folder"
    unwritable.mkdir()
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(unwritable))
    s, state, config = _finished_run(pytestconfig, tmp_path)
    session_report.write_run_report(config)
    assert state.report == s.report_dir and len(load_report(s.report_dir)[0]) == 1
    session_report.append_step_summary("# Regression gate\n")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not be appended to $GITHUB_STEP_SUMMARY" in err, err
    tr = Terminal()
    session_report.terminal_summary(tr, config)
    assert any("was written, but the job summary" in line for line in tr.lines), tr.lines
    assert tr.lines[-1].endswith(f"report: {s.report_dir}/summary.md")


def test_the_report_header_prints_no_escape_sequences_from_paths(pytestconfig, tmp_path):
    import dataclasses

    from parity_tests import plugin

    s, state = validate(pytestconfig, tmp_path)
    s = dataclasses.replace(s, layers=("conv2d=/tmp/\x1b[2J\x1b[Hclear:conv",))
    state.data = types.SimpleNamespace(source="MNIST /data/\x1b]0;owned\x07/train.npz (first 200)")
    config = types.SimpleNamespace(stash={settings.SETTINGS: s, settings.STATE: state})
    lines = plugin.pytest_report_header(config)
    data = next(line for line in lines if line.startswith("parity data:"))
    layers = next(line for line in lines if line.startswith("parity own layers"))
    assert not any(ch in line for line in lines for ch in "\x1b\x07"), lines
    assert data == "parity data: MNIST /data/\\x1b]0;owned\\x07/train.npz (first 200)"
    assert layers.endswith("conv2d=/tmp/\\x1b[2J\\x1b[Hclear:conv")


# --------------------------------------------------------------------------- zeros that are right

DEAD_RELU = "conv(1,1,bias=false)-relu-dense(10)-softmax_ce"  # seed 2: a negative filter


def test_a_dead_relu_of_a_legal_spec_is_not_red(run_config, article_data, parity_settings):
    """At seed 2 the one filter is negative: relu1 is dead, so relu1.A, flatten.A,
    dense2.dW, relu1.dZ and conv1.dF are exactly zero, as the float64 truth: declared zeros,
    not 40 'vacuous' failures of the correct reference."""
    import dataclasses

    from parity_tests.model_harness import ModelHarness
    from reference.network import Network

    config = dataclasses.replace(run_config, seed=2)
    harness = ModelHarness(Network(DEAD_RELU), config, article_data)
    assert not np.any(harness.reference("float64")["relu1.A"])  # the premise: relu1 is dead
    failures = [
        f for _, _, f in harness.budgets(parity_settings.frameworks, parity_settings.dtypes) if f
    ]
    assert not failures, "\n".join(failures[:5])


def test_zeros_where_the_truth_is_not_zero_still_fail(run_config, article_data, parity_settings):
    """A planted ReLU that returns zeros at seed 0 (a live ReLU): its own relu1.A fails, and
    so does every tensor it zeroes end to end (dense2.dW), the reference's float64 step
    being nonzero there; only the stage check of dense2.dW, right for its input of zeros,
    passes. (Two sides of zeros where the truth is not zero stay 'vacuous':
    meta/test_metrics.py test_zeros_are_declared_where_the_truth_is_zero[truth-nonzero].)"""
    from parity_tests.model_harness import ModelHarness
    from reference.network import Network, Ops

    impl = Network(DEAD_RELU, ops={"relu": Ops(np.zeros_like, lambda dA, Z, A: np.zeros_like(dA))})
    harness = ModelHarness(Network(DEAD_RELU), run_config, article_data, impl=impl)

    def status(mode, tensor, framework):
        make = harness.stage_check if mode == "stage" else harness.end_to_end_check
        c = make(tensor, framework, "float64")
        return compare_arrays(c.actual, c.expected, c.tolerance.array, truth_zero=c.truth_zero)["status"]

    for framework in parity_settings.frameworks:
        assert status("stage", "relu1.A", framework) == "fail"
        assert status("end_to_end", "relu1.A", framework) == "fail"
        assert status("end_to_end", "dense2.dW", framework) == "fail"
        assert status("stage", "dense2.dW", framework) == "pass"


CANCELLING = "conv(1,1,pad=1)-sigmoid-maxpool(2,stride=1)-dense(3)-batchnorm-relu-dense(1)-sigmoid-mse"


def test_a_sum_that_cancels_below_its_allowance_is_declared_not_vacuous(
    run_config, article_data, parity_settings
):
    """At 4 images, seed 0, conv1.db (a sum of 3,600 terms of dZ) cancels to 5.9e-5 while its
    float32 allowance is 9e-4: both sides, and the float64 truth, are within tolerance of
    zero. The correct reference was 4 'vacuous' failures; the float32 check now passes,
    declared, and the float64 check (allowance ~1e-12) is the one that tells it from zero:
    a conv1.db of zeros still fails there."""
    import dataclasses
    from types import SimpleNamespace

    from parity_tests.model_harness import ModelHarness
    from reference.network import Network

    config = dataclasses.replace(run_config, n_images=4, reduction="sum")
    data = SimpleNamespace(X=article_data.X[:, :, :4], labels=article_data.labels[:4])
    harness = ModelHarness(Network(CANCELLING), config, data)
    for framework in parity_settings.frameworks:
        for make in (harness.stage_check, harness.end_to_end_check):
            c = make("conv1.db", framework, "float32")
            assert np.all(np.abs(c.truth) <= c.tolerance.array)  # the premise: below resolution
            got = compare_check(c, against=framework)
            assert got["status"] == "pass", got["note"]
            assert "cannot be told from zero at this dtype (declared" in got["note"]
            c64 = make("conv1.db", framework, "float64")
            assert compare_check(c64, against=framework)["status"] == "pass"
            zeroed = compare_arrays(c64.actual, np.zeros_like(c64.expected), c64.tolerance.array)
            assert zeroed["status"] == "fail"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_zero_bias_left_untouched_passes_under_the_article_init(run_config, article_data, dtype):
    """--parity-init article starts b at 0: the untouched copy of b is zeros, as the pristine
    input: test_inputs_untouched[b-*] passes, where it was 'vacuous'."""
    import dataclasses

    config = dataclasses.replace(run_config, init_scheme="article")
    harness = Harness(config, article_data, model)
    c = harness.inputs_check("b", dtype)
    assert not np.any(c.expected)
    got = compare_arrays(c.actual, c.expected, c.tolerance.array, truth_zero=c.truth_zero)
    assert got["status"] == "pass", got["note"]
    moved = c.expected.copy()
    moved[0] = 1.0  # a b written in place still fails
    assert (
        compare_arrays(c.actual, moved, c.tolerance.array, truth_zero=c.truth_zero)["status"] == "fail"
    )


def test_a_run_on_synthetic_digits_says_so_on_its_verdict_and_last_line(tmp_path):
    """A synthetic run ended exactly like one on MNIST ("every comparison passed", "parity
    run COMPLETE"); both lines now say what the data were (issue 24, point 4)."""
    note = "on SYNTHETIC digits, not MNIST: set PARITY_MNIST"
    run = run_pytest(
        "parity_tests/test_parity.py",
        "-k",
        "test_forward and Z1",
        "--parity-frameworks",
        "torch",
        "--parity-dtypes",
        "float64",
        "--parity-n-images",
        "8",
        "--parity-report-dir",
        str(tmp_path / "report"),
        env={"PARITY_MNIST": "synthetic"},
    )
    assert run.returncode == 0, run.stdout[-3000:]
    lines = run.stdout.strip().splitlines()
    verdict = next(ln for ln in lines if ln.startswith("verdict: "))
    assert verdict == f"verdict: every comparison passed (1 comparison) {note}"
    assert lines[-2].startswith(f"parity run PARTIAL {note}: "), lines[-2]


# --------------------------------------------------------------------------- own layers that exit


@pytest.mark.slow  # a pytest session of the own-layer checks (~15 s)
@pytest.mark.parametrize("how", ["os._exit(0)", "sys.exit(0)"], ids=["os-exit", "sys-exit"])
def test_an_own_layer_that_exits_is_a_failing_record_not_a_green_exit(tmp_path, how):
    layers = tmp_path / "exits.py"
    layers.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            import numpy as np

            def relu_forward(x):
                {how}

            def relu_backward(dout, cache):
                return dout * (cache > 0)
            """
        )
    )
    run = run_pytest(
        "parity_tests/test_own_layers.py",
        f"--parity-layer=relu={layers}:relu_forward,{layers}:relu_backward",
        "--parity-no-report",
        env={"PARITY_MNIST": "synthetic"},
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-3000:]  # failed checks, not a silent 0
    assert f"relu_forward called {how.split('(')[0]}" in out, out[-3000:]
