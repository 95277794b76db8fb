"""The notebook API (parity_tests/api.py): `check` and `check_layers` without pytest's
machinery give the pytest checks' verdicts, copies and timeouts included."""

from __future__ import annotations

import os
import posix
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from parity_tests import (
    ParityFailure,
    api,
    check,
    check_layers,
    check_optimiser,
    compare,
    metrics,
    own_layer_checks,
)
from parity_tests.api import ISOLATIONS
from parity_tests.stages import END_TO_END, STAGES
from reference import fast

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_images=20)  # the checks are the same; fewer images keep the tests quick
FAST = dict(SMALL, frameworks=("torch",), dtypes=("float64",))


def _reference_step(params, X, y, lr, reduction):
    return fast.train_step(params, X, y, lr=lr, reduction=reduction)


def test_import_is_lazy():
    # The plugin imports parity_tests: that must not load the API, torch or TensorFlow.
    code = (
        "import sys, parity_tests, parity_tests.plugin; "
        "print(sorted(m for m in ('parity_tests.api', 'torch', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"


def test_reference_passes_every_check():
    result = check(_reference_step, **SMALL)
    assert result.passed, result.headline
    assert result.headline.startswith("verdict: every comparison passed")
    df = result.records
    # Every check test_parity.py makes: stage and end to end per tensor, framework, dtype,
    # and the five inputs per dtype.
    per_pair = len(STAGES) + len(END_TO_END)
    assert len(df) == per_pair * 2 * 2 + 5 * 2
    assert set(df["against"]) == {"torch", "tensorflow", "pristine"}
    assert set(df["dtype"]) == {"float32", "float64"}
    assert df["check"].str.startswith("parity_tests/test_parity.py::test_").all()
    assert result.raise_for_failures() is result
    page = result._repr_html_()
    assert "every comparison passed" in page and "<img" in page and "passed" in repr(result)


def test_layout_and_module_object():
    sys.path.insert(0, str(ROOT / "examples" / "byo_impl"))
    try:
        import batch_first_cnn
    finally:
        sys.path.remove(str(ROOT / "examples" / "byo_impl"))
    # The module: its LAYOUT is read; the function: the layout is given.
    assert check(batch_first_cnn, **FAST).passed
    result = check(batch_first_cnn.train_step, layout="nchw", **FAST)
    assert result.passed, result.headline
    assert check(batch_first_cnn.train_step, **FAST).passed is False  # article layout: wrong shapes


def _sign_flipped(params, X, y, lr, reduction):
    out = dict(_reference_step(params, X, y, lr, reduction))
    out["W_new"] = params["W"] + lr * out["dE_dW"]  # gradient ascent on W
    return out


def test_broken_step_fails_and_names_the_tensor():
    result = check(_sign_flipped, **SMALL)
    assert not result.passed
    assert "first diverging tensor W_new" in result.headline
    failing = set(result.failures["tensor"])
    assert failing == {"W_new"}
    assert (result.failures["suspect"] == "update_sign").all()
    with pytest.raises(ParityFailure) as raised:
        result.raise_for_failures()
    assert str(raised.value) == result.headline
    page = result._repr_html_()
    assert "FAILED" in page and "W_new" in page and "gradient ascent" in page and "<img" in page


def test_in_place_write_is_caught():
    def step(params, X, y, lr, reduction):
        out = _reference_step(params, X, y, lr, reduction)
        X *= 0.5  # the copy handed over; the frameworks still get the suite's originals
        return out

    result = check(step, **FAST)
    failing = result.failures
    assert list(failing["tensor"]) == ["X"] and list(failing["mode"]) == ["inputs"]
    assert "train_step modified its input X in place" in failing["note"].iloc[0]
    # The comparisons themselves ran on untouched inputs.
    assert result.records[result.records["mode"] != "inputs"]["status"].eq("pass").all()


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_hang_times_out(isolation):
    release, calls = threading.Event(), []

    def step(params, X, y, lr, reduction):
        calls.append(X.dtype)  # inline only: a forked child's list is its own
        release.wait(30)
        return {}

    try:
        dtypes = ("float64", "float32")
        result = check(step, timeout=0.3, isolation=isolation, **dict(FAST, dtypes=dtypes))
    finally:
        release.set()  # inline, the thread cannot be killed: let it end
    assert not result.passed
    errors = result.records[result.records["status"] == "error"]
    assert len(errors) == len(result.records)
    assert errors["error"].str.contains("within 0.3 s").all()
    hung = errors[errors["dtype"] == "float64"]["error"]
    assert hung.str.contains("did not return within 0.3 s").all()
    # The float32 step is not started after the hang (inline: beside the running thread).
    assert errors[errors["dtype"] == "float32"]["error"].str.contains("is not called again").all()
    if isolation == "inline":
        assert len(calls) == 1 and hung.str.contains("background thread").all()
    else:
        assert calls == [] and hung.str.contains("its process was killed").all()


def test_exception_in_user_code_is_an_error_record():
    def step(params, X, y, lr, reduction):
        raise ValueError("shapes do not align")

    result = check(step, **FAST)
    assert not result.passed
    assert (
        result.records["error"].str.contains("train_step raised ValueError: shapes do not align").all()
    )


def test_a_name_as_parity_impl_takes_it():
    result = check("mutant:sign_dE_dO", **FAST)
    assert not result.passed and "dE_dO" in result.headline


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: check(42), TypeError),
        (lambda: check(_reference_step, layout="nwhc"), ValueError),
        (lambda: check(_reference_step, dtypes=("float16",)), ValueError),
        (lambda: check(_reference_step, frameworks=("jax",)), ValueError),
        (lambda: check_layers({"convolution": (len, len)}), ValueError),
        (lambda: check_layers({"relu": (len,)}), TypeError),
        (lambda: check_layers({}), ValueError),
        (lambda: check_optimiser(len, "adagrad"), ValueError),
        (lambda: check_optimiser(42, "adam"), TypeError),
        (lambda: check_optimiser(len, "adam", max_examples=0), ValueError),
        (lambda: check(_reference_step, isolation="thread"), ValueError),
        (lambda: check_layers({"relu": (len, len)}, isolation=None), ValueError),
        (lambda: check_optimiser(len, "adam", isolation="fork"), ValueError),
    ],
    ids=[
        "not-callable",
        "layout",
        "dtype",
        "framework",
        "kind",
        "arity",
        "empty",
        "optim-rule",
        "optim-not-callable",
        "optim-examples",
        "isolation",
        "layers-isolation",
        "optim-isolation",
    ],  # fmt: skip
)
def test_usage_errors(call, error):
    with pytest.raises(error):
        call()


def _example(folder: str, name: str):
    """examples/<folder>/<name>.py, imported as a module object (what a notebook holds)."""
    import importlib.util

    path = ROOT / "examples" / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"parity_api_{folder}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _example_layers(name: str):
    return _example("cs231n_layers", name)


def test_check_layers_example_passes():
    L = _example_layers("layers")
    result = check_layers(
        {"relu": (L.relu_forward, L.relu_backward), "softmax_ce": L.softmax_loss},
        frameworks=("torch",),
    )
    assert result.passed, result.headline
    assert set(result.records["against"]) == {"reference", "torch"}
    assert set(result.records["mode"]) == {"layer"}
    assert result.messages == ()


def test_check_layers_broken_conv_fails_with_its_sweep():
    B = _example_layers("broken")
    result = check_layers({"conv": (B.conv_forward, B.conv_backward)}, frameworks=(), dtypes="float64")
    assert not result.passed
    assert "conv.dX" in result.headline
    assert "fails for stride >= 2" in result.messages[0]
    with pytest.raises(ParityFailure, match="fails for stride >= 2"):
        result.raise_for_failures()


def test_check_layers_copies_and_timeout():
    def relu_in_place(x):
        x[x < 0] = 0  # writes into its argument
        return x.copy(), x.copy()

    def relu_backward(dout, cache):
        return dout * (cache > 0)

    result = check_layers({"relu": (relu_in_place, relu_backward)}, frameworks=(), dtypes="float64")
    assert "changed its argument x in place" in result.messages[0]

    release = threading.Event()

    def relu_hangs(x):
        release.wait(30)
        return np.maximum(x, 0), x

    try:
        result = check_layers({"relu": (relu_hangs, relu_backward)}, frameworks=(), timeout=0.3)
    finally:
        release.set()
    assert not result.passed
    assert "did not return within 0.3 s" in result.messages[0]


def _example_optim(name: str):
    return _example("optim", name)


@pytest.mark.parametrize("rule", ["sgd", "sgd_momentum", "rmsprop", "adam"])
def test_check_optimiser_example_passes(rule):
    result = check_optimiser(getattr(_example_optim("optim"), rule), rule, max_examples=30)
    assert result.passed, result.headline
    assert {f"{rule}.p_new"} <= set(result.records["tensor"])


def test_check_optimiser_broken_adam_is_found_and_named():
    result = check_optimiser(_example_optim("optim_broken").adam, "adam", max_examples=200)
    assert not result.passed
    assert "adam_eps_inside_sqrt" in "\n".join(result.messages), result.messages
    with pytest.raises(ParityFailure, match="adam_eps_inside_sqrt"):
        result.raise_for_failures()


# --- isolation: function objects run in a forked child by default ----------------------------


def test_isolation_error_names_the_argument():
    with pytest.raises(
        ValueError, match=r"isolation must be one of \['process', 'inline'\], got 'thread'"
    ):
        check(_reference_step, isolation="thread")


def test_examples_give_the_same_records_in_a_child_as_inline():
    """What runs where changes no verdict: the records of honest code are the same, field
    for field, as inline (the baseline)."""

    def same(result, baseline, name):
        pd.testing.assert_frame_equal(result.records, baseline.records, obj=name)
        # The reproduce lines name the isolation when it is not the default.
        inline = tuple(m.replace(", isolation='inline'", "") for m in baseline.messages)
        assert result.messages == inline, name

    def not_a_mapping(params, X, y, lr, reduction):
        return [1.0]

    L, B = _example_layers("layers"), _example_layers("broken")
    runs = {
        "reference": lambda i: check(_reference_step, isolation=i, **FAST),
        "sign-flipped": lambda i: check(_sign_flipped, isolation=i, **FAST),
        "not-a-mapping": lambda i: check(not_a_mapping, isolation=i, **FAST),
        "relu": lambda i: check_layers(
            {"relu": (L.relu_forward, L.relu_backward)}, frameworks=(), isolation=i
        ),
        "broken-conv": lambda i: check_layers(
            {"conv": (B.conv_forward, B.conv_backward)}, frameworks=(), dtypes="float64", isolation=i
        ),
        "broken-adam": lambda i: check_optimiser(
            _example_optim("optim_broken").adam, "adam", max_examples=50, isolation=i
        ),
    }
    for name, run in runs.items():
        same(run("process"), run("inline"), name)
    assert "train_step must return a mapping" in result_error(runs["not-a-mapping"]("process"))


def result_error(result) -> str:
    return "\n".join(result.records["error"])


def _exits(params, X, y, lr, reduction):
    os._exit(0)


def _killed(params, X, y, lr, reduction):
    os.kill(os.getpid(), signal.SIGKILL)


def _forges(params, X, y, lr, reduction):
    """The sign-flipped step, and a patch of the suite's comparison that makes every
    check compare the suite's side with itself."""
    import dataclasses

    real = compare.compare_check
    compare.compare_check = lambda c, **k: real(dataclasses.replace(c, expected=c.actual), **k)
    return _sign_flipped(params, X, y, lr, reduction)


@pytest.mark.parametrize(
    "step, says",
    [
        (_exits, "train_step called os._exit(0)"),
        (_killed, "the process running train_step was killed by signal SIGKILL"),
    ],
    ids=["os-exit", "killed"],
)
def test_a_step_that_ends_its_process_is_an_error_record(step, says):
    result = check(step, **FAST)
    assert not result.passed
    assert len(result.records) and result.records["status"].eq("error").all()
    assert result.records["error"].str.contains(says, regex=False).all(), result_error(result)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_step_that_patches_the_suite_forges_a_pass_only_inline(isolation, monkeypatch):
    monkeypatch.setattr(compare, "compare_check", compare.compare_check)  # undone after
    result = check(_forges, isolation=isolation, **FAST)
    if isolation == "inline":
        assert result.passed  # what docs/guarantees.md says in-process code can do
        return
    assert not result.passed and set(result.failures["tensor"]) == {"W_new"}
    assert compare.compare_check is not _forges  # the suite's own, untouched


def _relu_backward(dout, cache):
    return dout * (cache > 0)


def _relu_exits(x):
    posix._exit(0)  # not os._exit, which the inline layer call guards against


def _relu_crashes(x):
    import ctypes

    return ctypes.string_at(0)  # reads address 0: SIGSEGV


def _relu_hangs(x):
    time.sleep(60)


def _relu_forges(x):
    """|x| for max(x, 0), and a patch that makes every layer comparison pass."""
    own_layer_checks.compare_arrays = lambda a, e, *r, **k: metrics.compare_arrays(a, a, *r, **k)
    return np.abs(x), x


@pytest.mark.parametrize(
    "forward, says",
    [
        (_relu_exits, "ended with exit status 0 before it returned"),
        (_relu_crashes, "was killed by signal SIGSEGV"),
        (_relu_hangs, "did not return within 0.5 s (timeout=); its process was killed"),
        (_relu_forges, "relu.A"),
    ],
    ids=["posix-exit", "segfault", "hangs", "forges"],
)
def test_check_layers_in_process_survives_and_is_not_forged(forward, says, monkeypatch):
    monkeypatch.setattr(own_layer_checks, "compare_arrays", own_layer_checks.compare_arrays)
    children, real = [], api._forked

    def forked(*args):
        children.append(real(*args))
        return children[-1]

    monkeypatch.setattr(api, "_forked", forked)
    result = check_layers(
        {"relu": (forward, _relu_backward)}, frameworks=(), dtypes="float64", timeout=0.5
    )
    assert not result.passed
    assert says in result.messages[0], result.messages[0]
    # The call's child is gone (killed and reaped), whatever its function did.
    assert len(children) == 1 and children[0].proc is None
    assert children[0].generation >= 1  # it was forked (again after each death)


def test_check_optimiser_in_process_survives_os_exit():
    def adam(w, dw, config):
        os._exit(3)

    result = check_optimiser(adam, "adam", max_examples=5)
    assert not result.passed
    assert "adam called os._exit(3)" in result_error(result) + "\n".join(result.messages)


INLINE_EXIT = """
import posix, sys
from parity_tests import check_layers

def relu_forward(x):
    posix._exit(0)

def relu_backward(dout, cache):
    return dout

result = check_layers({{"relu": (relu_forward, relu_backward)}}, frameworks=(), isolation={!r})
print("survived:", result.passed, result.messages[0].splitlines()[0])
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_layer_ending_its_process_ends_the_caller_only_inline(isolation):
    """Inline, _exit ends the caller (a notebook's kernel) at once with status 0 and no
    verdict; in process isolation the caller goes on with a failing Result."""
    code = INLINE_EXIT.format(isolation)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    if isolation == "inline":
        assert "survived" not in out.stdout
    else:
        assert out.stdout.startswith("survived: False own layer relu"), out.stdout + out.stderr
