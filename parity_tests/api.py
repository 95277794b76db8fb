"""The parity checks as a Python API, for notebooks and scripts: no pytest run needed.

    from parity_tests import check, check_layers, check_optimiser

    result = check(train_step, layout="nchw")           # a function object
    result                                              # in Jupyter: headline, heat map, verdicts
    result.records                                      # the records, a pandas DataFrame
    result.raise_for_failures()                         # raises ParityFailure with the headline

    check_layers({"conv": (conv_forward, conv_backward), "relu": (relu_forward, relu_backward)})

    check_optimiser(adam, "adam")                      # your optim.py rule (CS231n's form)

`check` builds the Harness and records through ParityRecorder exactly as
parity_tests/test_parity.py does: test_contract, then every stage-isolated and end-to-end
check of every article tensor against each framework in each dtype, then
test_inputs_untouched; the records carry the same check ids as a pytest run's, so they
compare with a report's. The data come from the same loader (PARITY_MNIST, the keras
cache, else SYNTHETIC digits, which the headline and the HTML say loudly).

User code: train_step gets copies of the inputs (parity_tests/impl_call.py); a write into
them is reported by the inputs checks. Function objects (train_step, the layers, the
optimiser's update) run, by default (isolation="process"), in a child forked from this
process for the call of check / check_layers / check_optimiser (user_process.FunctionProcess):
it has the functions and everything they use, and what they do there cannot reach this
process. A function that calls os._exit, crashes or hangs past the timeout (its child is
killed) is an error record, never a dead kernel; one that patches the suite's modules
patches the child's copy, which checks nothing. isolation="inline" calls them in this
process, in a thread with a timeout (faster; trusted code only): a hung call is reported
but goes on in the background (a thread cannot be killed), os._exit ends the kernel, and
a patch of the suite changes the verdict. A module name or a .py path instead of a
function runs in a child process, as `--parity-impl` does, and is killed at the timeout.

`check_layers` runs own_layer_checks' per-kind comparisons (the user's forward and backward
against the reference's layer and each framework's) over the kind's covering grid
(deterministic cases, no Hypothesis draws); a failing case gives the same message as the
pytest check, with the sweep of hyper-parameters that trigger it.
"""

from __future__ import annotations

import parity_tests.pins  # noqa: F401  (first: before NumPy, torch or TensorFlow load)

# isort: split

import functools
import html
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from parity_tests import user_process
from parity_tests.compare import ParityRecorder, RunContext
from parity_tests.harness import (
    Harness,
    RunConfig,
    contract_records,
    inputs_check_fields,
    stage_check_fields,
)
from parity_tests.impl_call import DEFAULT_TIMEOUT_S, INPUT_NAMES, ImplementationError, _as_arrays
from parity_tests.mirrors import FRAMEWORKS
from parity_tests.stages import END_TO_END, FORWARD, GRADIENT, STAGES, UPDATE
from reference.data import ARTICLE_IMAGES, load_article_data
from reference.layout import LAYOUTS
from reference.model import DTYPES
from reports.fields import normalise_record

TEST_PARITY = "parity_tests/test_parity.py"
TEST_OWN_LAYERS = "parity_tests/test_own_layers.py"
TEST_OWN_OPTIM = "parity_tests/test_own_optim.py"
DEFAULT_LAYER_TIMEOUT_S = 60.0
FAILED = ("error", "fail", "vacuous")
# Where function objects run: a child forked for the call (the default) or this process.
ISOLATIONS = ("process", "inline")
DEFAULT_ISOLATION = "process"
TIMEOUT_OPTION = "timeout="  # what a hang's message names as the setting to change


class ParityFailure(AssertionError):
    """Result.raise_for_failures: something failed; the message is the headline."""


# --------------------------------------------------------------------------- user code


class TimedCall:
    """fn called in a daemon thread, waited for `timeout` seconds: its value, or its
    exception raised again here; ImplementationError when it has not returned by then. A
    thread cannot be killed: the hung call goes on in the background, and every later call
    raises at once rather than start another."""

    def __init__(self, fn: Callable, timeout: float, what: str):
        self.fn, self.timeout, self.what = fn, float(timeout), what
        self.hung = False

    def __call__(self, *args, **kwargs):
        if self.hung:
            raise ImplementationError(
                f"{self.what} is not called again: an earlier call did not return within "
                f"{self.timeout:g} s (timeout=) and still runs in a background thread"
            )
        box: dict = {}

        def target():
            try:
                box["value"] = self.fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001  (SystemExit from user code included)
                box["error"] = exc

        thread = threading.Thread(target=target, name=f"parity: {self.what}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self.hung = True
            raise ImplementationError(
                f"{self.what} did not return within {self.timeout:g} s (timeout=); it still "
                "runs in a background thread, which Python cannot kill: restart the kernel to "
                "stop it"
            )
        if "error" in box:
            raise box["error"]
        return box["value"]


def _isolation(isolation) -> str:
    if not isinstance(isolation, str) or isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {list(ISOLATIONS)}, got {isolation!r}")
    return isolation


def _forked(functions: dict, label: str, timeout: float) -> user_process.FunctionProcess:
    """The process that serves `functions` for one API call (stopped at its end)."""
    return user_process.FunctionProcess(functions, label, timeout, TIMEOUT_OPTION)


def _label(fn) -> str:
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{module}:{name}" if module and module not in ("__main__", "builtins") else name


def _sent_step(fn: Callable) -> Callable:
    """train_step as the forked child calls it: lr and reduction by keyword, as inline, and
    what it returns read as arrays there (impl_call._as_arrays), so that a torch tensor or
    a list crosses as the array it stands for and a wrong return says what inline says."""

    def train_step(params, X, y, lr, reduction):
        return _as_arrays(fn(params, X, y, lr=lr, reduction=reduction))

    return train_step


class FunctionImpl:
    """A train_step function object as an implementation (the reference's model API):
    impl_call.call_in_process hands it copies in its LAYOUT; the call has a timeout, and
    runs in a forked child (isolation "process") or in a thread here ("inline")."""

    def __init__(self, fn: Callable, layout: str, timeout: float, name: str, isolation: str = "inline"):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
        self.fn, self.LAYOUT, self.timeout, self.__name__ = fn, layout, float(timeout), name
        self.isolation, self.process = _isolation(isolation), None
        if isolation == "process":
            self.process = _forked({"train_step": _sent_step(fn)}, name, timeout)
            self._call = user_process.RemoteFunction(
                self.process, "train_step", "train_step", error=ImplementationError
            )
        else:
            self._call = TimedCall(fn, timeout, "train_step")

    def __repr__(self) -> str:
        return (
            f"FunctionImpl({self.__name__!r}, layout={self.LAYOUT!r}, timeout={self.timeout:g}, "
            f"isolation={self.isolation!r})"
        )

    def train_step(self, params, X, y, lr, reduction):
        if self.process is None:
            return self._call(params, X, y, lr=lr, reduction=reduction)
        try:
            return self._call(params, X, y, lr, reduction)
        except user_process.RemoteRaised as exc:
            if (type(exc).__name__, type(exc).__module__) == (  # _as_arrays' in the child
                ImplementationError.__name__,
                ImplementationError.__module__,
            ):
                raise ImplementationError(str(exc)) from None
            raise

    def close(self) -> None:
        """Stop the forked child (if any)."""
        if self.process is not None:
            self.process.stop()


def as_impl(train_step, layout: str | None, timeout: float, name: str | None, isolation: str = "inline"):
    """(implementation, its label): a function object, an object with `train_step` (a
    module: its LAYOUT unless `layout` is given), or a name as --parity-impl takes it.
    `isolation` is where a function object runs (a name's module: in its child process)."""
    if isinstance(train_step, str):
        from parity_tests.impls import resolve_impl

        return resolve_impl(train_step, timeout), name or train_step
    if not callable(train_step) and callable(getattr(train_step, "train_step", None)):
        found = layout or getattr(train_step, "LAYOUT", "article")
        label = name or getattr(train_step, "__name__", type(train_step).__name__)
        return FunctionImpl(train_step.train_step, found, timeout, label, isolation), label
    if not callable(train_step):
        raise TypeError(
            "check(train_step): expected a function train_step(params, X, y, lr, reduction), "
            f"an object or module with one, or a --parity-impl name; got {type(train_step).__name__}"
        )
    label = name or _label(train_step)
    return FunctionImpl(train_step, layout or "article", timeout, label, isolation), label


# --------------------------------------------------------------------------- recording


@dataclass
class _Node:
    """What ParityRecorder reads of a pytest node: the check's id (and user_properties)."""

    nodeid: str
    user_properties: list = field(default_factory=list)


class ApiRecorder(ParityRecorder):
    """ParityRecorder without pytest: each record appended to `records`; `at(check_id)`
    names the check the next records belong to; `reproduce` gives the Python call."""

    def __init__(self, context: RunContext, call: str):
        super().__init__(_Node(""), context)
        self.records: list[dict] = []
        self.call = call

    def at(self, nodeid: str) -> ApiRecorder:
        self.node = _Node(nodeid)
        return self

    def reproduce(self) -> str:
        return self.call

    def add(self, record: dict) -> dict:
        record = normalise_record(record)
        self.records.append(record)
        return record


@functools.cache
def _data(n_images: int, source):
    """The loader's data and its warnings (said again by every call that uses them)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_article_data(n_images, source=source)
    return data, tuple(w.message for w in caught)


def _environment(frameworks) -> str:
    """The versions text a pytest run's records carry (settings.environment)."""
    from types import SimpleNamespace

    from parity_tests.settings import environment, versions_text

    return versions_text(environment(SimpleNamespace(frameworks=frameworks)))


def _pinned(frameworks) -> dict:
    """The thread counts of the frameworks not yet imported pinned as a pytest run pins
    them (pins.pin_framework_threads); one already imported (by a pytest run, or by the
    notebook) keeps its own settings, which TensorFlow allows no longer changing."""
    import sys

    from parity_tests.pins import pin_framework_threads

    errors: dict = {}
    pin_framework_threads([f for f in frameworks if f not in sys.modules], errors)
    return errors


def _choice(what: str, given, allowed) -> tuple:
    values = (given,) if isinstance(given, str) else tuple(given)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"{what} must be some of {list(allowed)}, got {list(values)}")
    return values


def _contract(rec: ApiRecorder, harness: Harness, dtype: str) -> None:
    """test_contract's records (a train_step that raised: its checks record the error)."""
    rec.at(f"{TEST_PARITY}::test_contract[{dtype}]")
    try:
        problems = harness.contract(dtype)
    except ImplementationError:
        return
    for fields in contract_records(problems, dtype):
        rec.record(**fields)


def _stage(rec, harness, stage, framework, dtype, mode, test) -> None:
    rec.at(f"{TEST_PARITY}::{test}[{stage.id}-{mode}-{framework}-{dtype}]")
    # fail=False: an absent tensor comes back as an unstored record (contract has it).
    rec.check(**stage_check_fields(harness, stage, framework, dtype, mode), fail=False)


def _inputs(rec, harness, name, dtype) -> None:
    rec.at(f"{TEST_PARITY}::test_inputs_untouched[{name}-{dtype}]")
    rec.check(**inputs_check_fields(harness, name, dtype), fail=False)


def check(
    train_step,
    layout: str | None = None,
    *,
    dtypes: Sequence[str] | str = DTYPES,
    frameworks: Sequence[str] | str = FRAMEWORKS,
    timeout: float = DEFAULT_TIMEOUT_S,
    data=None,
    n_images: int = ARTICLE_IMAGES,
    seed: int = 0,
    name: str | None = None,
    isolation: str = DEFAULT_ISOLATION,
) -> Result:
    """Every check of parity_tests/test_parity.py on `train_step`, without pytest.

    train_step: a function train_step(params, X, y, lr, reduction) -> {article name: array}
        (docs/byo.md), an object or module with one (its LAYOUT is read), or a name as
        --parity-impl takes it ("reference", "mutant:sign_dE_dO", "my_module", "my_cnn.py").
    layout: "article" (the default), "nchw" or "nhwc": the layout train_step works in.
    dtypes, frameworks: what to compare, both of each by default.
    timeout: seconds one train_step call may take (a hung call is reported; inline, it is
        not killed: see the module docstring).
    data: None (PARITY_MNIST, the keras cache, else synthetic digits, with a warning),
        "synthetic", or a path to an MNIST .npz / IDX folder; n_images, seed as the options.
    name: the implementation's name in the records (default: the function's).
    isolation: "process" (the default: a function object runs in a child forked for this
        call) or "inline" (in this process; trusted code only). See the module docstring.
    """
    dtypes = _choice("dtypes", dtypes, DTYPES)
    frameworks = _choice("frameworks", frameworks, FRAMEWORKS)
    impl, label = as_impl(train_step, layout, timeout, name, _isolation(isolation))
    try:
        return _check(impl, label, layout, dtypes, frameworks, data, n_images, seed)
    finally:
        if isinstance(impl, FunctionImpl):
            impl.close()


def _check(impl, label, layout, dtypes, frameworks, data, n_images, seed) -> Result:
    framework_errors = _pinned(frameworks)
    loaded, data_warnings = _data(int(n_images), data)
    for message in data_warnings:
        warnings.warn(message, stacklevel=3)
    config = RunConfig(seed=int(seed), n_images=int(n_images), impl=label)
    harness = Harness(config, loaded, impl)
    args = f"{label!r}, layout={getattr(impl, 'LAYOUT', layout or 'article')!r}"
    if getattr(impl, "isolation", DEFAULT_ISOLATION) != DEFAULT_ISOLATION:
        args += f", isolation={impl.isolation!r}"
    call = f"parity_tests.check({args}, dtypes={list(dtypes)}, frameworks={list(frameworks)})"
    context = RunContext(
        seed=config.seed,
        data_source=loaded.source,
        versions=_environment(frameworks),
        init_scheme=config.init_scheme,
        reduction=config.reduction,
        impl=label,
        reproduce_options="",
    )
    rec = ApiRecorder(context, call)
    for dtype in dtypes:
        _contract(rec, harness, dtype)
    if isinstance(impl, FunctionImpl):
        # Every step has run (the harness keeps them): a forked child that lived on would
        # share this process's pages while the comparisons write them (copy-on-write).
        impl.close()
    for framework in frameworks:
        for dtype in dtypes:
            for stages, test in (
                (FORWARD, "test_forward"),
                (GRADIENT, "test_gradient"),
                (UPDATE, "test_update"),
            ):
                for stage in stages:
                    _stage(rec, harness, stage, framework, dtype, "stage", test)
            for stage in END_TO_END:
                _stage(rec, harness, stage, framework, dtype, "end_to_end", "test_end_to_end")
    for name_ in INPUT_NAMES:
        for dtype in dtypes:
            _inputs(rec, harness, name_, dtype)
    meta = dict(
        impl=label,
        seed=config.seed,
        data_source=loaded.source,
        init_scheme=config.init_scheme,
        reduction=config.reduction,
        frameworks=list(frameworks),
        dtypes=list(dtypes),
        tensor_order=[s.tensor for s in STAGES],
        framework_errors=framework_errors,
        call=call,
    )
    return Result(rec.records, meta)


# --------------------------------------------------------------------------- own layers


def _user_layer(kind: str, functions, timeout: float, process):
    """The kind's UserLayer: its functions called in a thread here (`process` None) or
    entered in `process` (a FunctionProcess not yet started) under names of their own."""
    from parity_tests import own_layers

    if kind not in own_layers.KINDS:
        raise ValueError(f"check_layers: unknown kind {kind!r}; one of {', '.join(own_layers.KINDS)}")
    wanted = own_layers.SIGNATURES[kind]
    fewest = len(wanted) - own_layers.OPTIONAL.get(kind, 0)  # batchnorm_backward_alt: optional
    fns = (functions,) if callable(functions) else tuple(functions)
    if not fewest <= len(fns) <= len(wanted) or not all(callable(f) for f in fns):
        count = f"{fewest} or {len(wanted)}" if fewest < len(wanted) else f"{len(wanted)}"
        raise TypeError(
            f"check_layers: {kind} takes {count} function(s), {'; '.join(wanted)}; got {functions!r}"
        )

    if process is None:
        wrapped = tuple(
            own_layers.UserFunction(_label(f), TimedCall(f, timeout, _label(f))) for f in fns
        )
    else:
        wrapped = []
        for f, signature in zip(fns, wanted):
            name = f"{kind}_{len(process.functions)}"
            process.functions[name] = f
            remote = user_process.RemoteFunction(
                process, name, _label(f), own_layers._held(signature), own_layers.OwnLayerError
            )
            wrapped.append(own_layers.UserFunction(_label(f), remote))
        wrapped = tuple(wrapped)
    value = f"{kind}=" + ",".join(f.label for f in wrapped)
    return own_layers.UserLayer(kind, value, wrapped)


def check_layers(
    layers: Mapping,
    *,
    dtypes: Sequence[str] | str = DTYPES,
    frameworks: Sequence[str] | str = FRAMEWORKS,
    timeout: float = DEFAULT_LAYER_TIMEOUT_S,
    isolation: str = DEFAULT_ISOLATION,
) -> Result:
    """Your own CS231n-style layers against the reference's layer and each framework's,
    without pytest: {"conv": (conv_forward, conv_backward), "relu": (relu_forward,
    relu_backward), "softmax_ce": softmax_loss, ...} (kinds and signatures: docs/own_layers.md).

    Each kind, in each dtype, runs over its covering grid (own_layer_checks.covering_grid:
    deterministic hyper-parameters and values); the first failing case is reported with the
    sweep of hyper-parameters that trigger the mismatch (Result.messages). Each function
    gets copies of its arguments (a write into them is an error) and `timeout` seconds per
    call. isolation: "process" (the default: the functions run in a child forked for this
    call; a hung call's child is killed) or "inline" (in this process, a hung call is
    reported but not killed: see the module docstring).
    """
    dtypes = _choice("dtypes", dtypes, DTYPES)
    frameworks = _choice("frameworks", frameworks, FRAMEWORKS) if frameworks else ()
    if not layers:
        raise ValueError(
            "check_layers: give at least one kind, e.g. {'relu': (relu_forward, relu_backward)}"
        )
    process = None
    if _isolation(isolation) == "process":
        process = _forked({}, "check_layers", timeout)
    try:
        return _check_layers(layers, dtypes, frameworks, timeout, process)
    finally:
        if process is not None:
            process.stop()


def _check_layers(layers, dtypes, frameworks, timeout, process) -> Result:
    from parity_tests import own_layer_checks as olc
    from parity_tests import own_layers

    user = {kind: _user_layer(kind, fns, timeout, process) for kind, fns in layers.items()}
    framework_errors = _pinned(frameworks)
    mirrors = olc.load_mirrors(frameworks)
    context = RunContext(
        seed=0,
        data_source="own layers: covering grid",
        versions=_environment(frameworks),
        init_scheme="",
        reduction=olc.REDUCTION,
        impl="",
        reproduce_options="",
    )
    messages = []
    records: list = []
    # A batch norm given with its batchnorm_backward_alt: the forward with each backward.
    pairs = [(kind, pair) for kind, layer in user.items() for pair in own_layers.pairs(layer)]
    for kind, layer in pairs:
        for dtype in dtypes:
            inline = ", isolation='inline'" if process is None else ""
            call = (
                f"parity_tests.check_layers({{{kind!r}: ...}}, dtypes=[{dtype!r}], "
                f"frameworks={list(frameworks)}{inline})"
            )
            rec = ApiRecorder(RunContext(**{**context.__dict__, "impl": layer.label}), call)
            rec.at(f"{TEST_OWN_LAYERS}::test_own_layer[{kind}-{dtype}]")
            outcome = olc.grid_outcome(rec, layer, dtype, mirrors)
            records += rec.records
            if outcome.message:
                messages.append(outcome.message)
    meta = dict(
        impl=", ".join(layer.label for _, layer in pairs),
        data_source=context.data_source,
        frameworks=list(frameworks),
        dtypes=list(dtypes),
        framework_errors=framework_errors,
    )
    return Result(records, meta, tuple(messages))


def check_optimiser(
    update: Callable,
    rule: str,
    *,
    max_examples: int = 200,
    timeout: float = DEFAULT_LAYER_TIMEOUT_S,
    isolation: str = DEFAULT_ISOLATION,
) -> Result:
    """Your own CS231n optim.py rule, `next_w, config = update(w, dw, config)`, against the
    reference's rule in CS231n's form (parity_tests/own_optim.py, docs/optimisers.md), without
    pytest: `rule` one of sgd, sgd_momentum, rmsprop, adam.

    A Hypothesis search (own_optim.search: shapes, gradients of 1e-9..1, the hyper-parameters
    people use, 1..5 steps; float64) for a case where a step's new parameter or state departs
    from the reference fed the same w, dw and state, beyond the optimiser's stage rule. The
    records are that minimal case's checks at its first failing step, or, when no draw fails,
    a fixed case's at its last step; Result.messages holds the failing case and the
    catalogue's name for the mistake. Each call gets copies and `timeout` seconds.
    isolation: "process" (the default: `update` runs in a child forked for this call) or
    "inline" (in this process; see the module docstring).
    """
    from parity_tests import own_optim

    if rule not in own_optim.RULES:
        raise ValueError(f"rule must be one of {list(own_optim.RULES)}, got {rule!r}")
    if not callable(update):
        raise TypeError(
            "update must be a function update(w, dw, config) -> (next_w, config), got "
            f"{type(update).__name__}"
        )
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples must be an integer >= 1, got {max_examples!r}")
    if _isolation(isolation) == "inline":
        return _check_optimiser(update, rule, max_examples, TimedCall(update, timeout, "update"))
    process = _forked({"update": update}, _label(update), timeout)
    try:
        remote = user_process.RemoteFunction(process, "update", _label(update))
        return _check_optimiser(update, rule, max_examples, remote)
    finally:
        process.stop()


def _check_optimiser(update, rule, max_examples, call_update) -> Result:
    from parity_tests import own_optim
    from reference import optim_registry

    user = own_optim.UserOptim(own_optim.RULES[rule], _label(update), call_update)
    entry = optim_registry.optimiser(user.rule.optimiser)
    try:
        found, stopped = own_optim.search(user, max_examples), ""
    except Exception as exc:  # noqa: BLE001  (naming the mistake runs a failing case again)
        found, stopped = None, f"{type(exc).__name__}: {exc}"
    messages = []
    if stopped:
        messages.append(f"{user.label} ({rule}) could not be run on a drawn case: {stopped}")
    if found is None:
        case = own_optim.Example((3, 4), dict(entry.hyper), (0.0, -3.0, -6.0), 0)
        step, note = len(case.exponents), f"no failure in {max_examples} drawn cases; shown: {case}"
    else:
        case, (step, tensor, _), name = found
        note = f"minimal failing case: {case}"
        messages.append(
            f"{user.label} ({rule}) departs from the reference at step {step}, {tensor or '?'}: "
            f"{note}; explainer: {name or 'no catalogue mistake fits'}"
        )
    call = f"parity_tests.check_optimiser({user.label}, {rule!r}, max_examples={max_examples})"
    context = RunContext(
        seed=case.seed, data_source="own optimiser: drawn cases", versions=_environment(()),
        init_scheme="", reduction="", impl=user.label, reproduce_options="",
    )  # fmt: skip
    rec = ApiRecorder(context, call).at(f"{TEST_OWN_OPTIM}::test_own_optim[{rule}]")
    p, grads = case.arrays()
    state = entry.init_state(p)
    try:
        if stopped:
            raise RuntimeError(stopped)
        for g in grads[: (step or 1) - 1]:
            p, state = user.step(p, g, dict(state), case.h)
        checks = own_optim.checks(user, p, grads[(step or 1) - 1], state, case.h)
    except Exception as exc:  # noqa: BLE001  (the user's function raising is a record)
        error = stopped or f"{type(exc).__name__}: {exc}"
        rec.record(tensor=f"{rule}.p_new", status="error", mode="stage", dtype="float64",
                   against="reference", error=error)  # fmt: skip
        checks = {}
    for tensor, c in checks.items():
        rec.check(
            tensor=f"{rule}.{tensor}", equation=",".join(entry.equations(user.rule.form, case.h)),
            step="optimiser", quantity="update", mode="stage", against="reference", dtype="float64",
            compute=lambda c=c: c, fail=False, note=note,
        )  # fmt: skip
    meta = dict(impl=user.label, data_source=context.data_source, frameworks=[], dtypes=["float64"])
    return Result(rec.records, meta, tuple(messages))


# --------------------------------------------------------------------------- the result


class Result:
    """What check / check_layers found.

    records: every record as a pandas DataFrame (reports.records_frame, outliers filled);
    headline: the verdict lines, as every report shows them first; passed: no comparison
    failed, was vacuous or could not be made (a tensor not provided is no failure);
    messages: check_layers' failure messages (the failing case and the sweep);
    raise_for_failures(): raises ParityFailure with the headline when not passed.
    In Jupyter the result shows as HTML: the headline, the run's heat map and the
    explainer's verdict for each failing comparison.
    """

    def __init__(self, records: list[dict], meta: dict, messages: tuple = ()):
        from reports import fill_outliers, records_frame

        self.raw = list(records)
        self.meta = meta
        self.messages = tuple(messages)
        self.records = fill_outliers(records_frame(self.raw))

    @property
    def order(self) -> tuple:
        return tuple(self.meta.get("tensor_order", ()))

    @property
    def headline_lines(self) -> list[str]:
        from reports import headline

        return headline(self.records, self.order, self.meta.get("data_source", ""))

    @property
    def headline(self) -> str:
        return "\n".join(self.headline_lines)

    @property
    def failures(self):
        """The records that failed, were vacuous or could not be compared."""
        return self.records[self.records["status"].isin(FAILED)]

    @property
    def passed(self) -> bool:
        return not self.records.empty and self.failures.empty

    def raise_for_failures(self) -> Result:
        """Raise ParityFailure (an AssertionError) with the headline, and check_layers'
        messages, when something failed; return the result otherwise."""
        if not self.passed:
            raise ParityFailure("\n\n".join([self.headline, *self.messages]))
        return self

    def __repr__(self) -> str:
        return f"<parity Result: {'passed' if self.passed else 'FAILED'}>\n{self.headline}"

    def _repr_html_(self) -> str:
        from reports.render import headline_html, heat_map_html, synthetic_banner

        esc = html.escape
        df, meta = self.records, self.meta
        verdict = "passed" if self.passed else "FAILED"
        parts = [f"<h3>Parity check of {esc(str(meta.get('impl', '')))}: {verdict}</h3>"]
        parts.append(headline_html(df, meta))
        synthetic = synthetic_banner(df, meta)
        if synthetic:
            parts.append(f"<p><strong>{esc(synthetic[0])}</strong>: {esc(synthetic[1])}</p>")
        if not df.empty:
            parts.append(heat_map_html(df, self.order))
        failures = self.failures
        if not failures.empty:
            rows = "".join(
                "<tr>"
                + "".join(
                    f"<td>{esc(str(r[c]))}</td>"
                    for c in ("tensor", "mode", "against", "dtype", "status")
                )
                + f"<td>{esc(str(r['explanation'] or r['error'] or r['note']))}</td></tr>"
                for _, r in failures.iterrows()
            )
            parts += [
                "<h4>Failing comparisons: the explainer's verdicts</h4>",
                "<table><tr><th>tensor</th><th>mode</th><th>against</th><th>dtype</th>"
                f"<th>status</th><th>verdict</th></tr>{rows}</table>",
            ]
        parts += [f"<pre>{esc(m)}</pre>" for m in self.messages]
        return "\n".join(parts)
