"""Computes every tensor once per run and hands out checks: the implementation under test,
the float64 truth, each framework's whole-model run and each framework's stage results.

One `Harness` lives for the whole pytest session (per xdist worker); everything is cached,
so a test only compares.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import functools
import traceback
from dataclasses import dataclass

import numpy as np

from parity_tests import stages, tolerance
from parity_tests.impl_call import (
    INPUT_NAMES,
    Absent,
    ImplementationError,
    modified_inputs,
    run_train_step,
)
from parity_tests.mirrors import load_mirror
from parity_tests.stages import BY_TENSOR, END_TO_END, STAGES, UPDATE_GRADIENT, Stage
from reference import model
from reference._validate import EXTENDED, HAS_EXTENDED, extended
from reference.data import ARTICLE_IMAGES
from reference.layout import to_layout
from reference.tensors import ORDER, Tensors
from reference.update import SUITE_LR


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    n_images: int = ARTICLE_IMAGES
    lr: float = SUITE_LR
    reduction: str = "sum"
    init_scheme: str = "informative"
    impl: str = "reference"


@dataclass(frozen=True)
class Check:
    """One comparison ready to be made. `actual` is the other side (the framework, or a hand
    value, a naive loop, finite differences, the pristine input); `expected` is the
    implementation under test's value (records call them `against` and `impl`)."""

    actual: np.ndarray
    expected: np.ndarray
    tolerance: tolerance.Tolerance
    truth: np.ndarray | None
    context: dict | None = None  # what parity_tests.explain may use to name a mismatch
    # The float64 truth is exactly zero at every element: two sides of zeros are then right
    # (metrics.compare_arrays truth_zero), not a check that could not fail.
    truth_zero: bool = False
    # False: `truth` says where zeros are right and which side is nearer it, but the precision
    # verdict is waived (ModelHarness.precision_waived; the tolerance's rule says why).
    precision: bool = True
    # A correct computation's elementwise error in the checked dtype (end to end: the
    # reference's own float32 error over the spread's weight points), the precision
    # verdict's least reference (metrics.precision_stats), or None.
    legit: np.ndarray | None = None


def _failure(exc: BaseException) -> str:
    """The message every check of a failed implementation carries."""
    if isinstance(exc, ImplementationError):
        return str(exc)
    where = "".join(traceback.format_exception(exc, limit=-3)).rstrip()
    return f"train_step raised {type(exc).__name__}: {exc}\n{where}"


def _f64(tensors):
    return {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}


def truth_dtype(dtype) -> np.dtype | None:
    """The precision a `dtype` check's truth is computed in: float64 for a float32 check,
    extended precision (np.longdouble, 11 more bits on x86) for a float64 one, None where
    the platform's longdouble is float64 (no truth: the allowance alone judges)."""
    if np.dtype(dtype) == np.float32:
        return np.dtype(np.float64)
    return EXTENDED if HAS_EXTENDED else None


@contextlib.contextmanager
def truth_precision(dtype):
    """(the truth's dtype for a `dtype` check, or None), with the reference admitting
    extended-precision arrays for the block (reference/_validate.py, `extended`)."""
    wide = truth_dtype(dtype)
    with extended():
        yield wide


def widened(tensors: dict, wide) -> dict:
    """The float arrays of `tensors` as `wide` (labels and other integers as they are)."""
    return {k: np.asarray(v, wide) if np.asarray(v).dtype.kind == "f" else v for k, v in tensors.items()}


def rounded_truth(tensors: dict) -> dict:
    """A truth computed wide, as the read-only float64 arrays every comparison reads."""
    return {k: _read_only(np.asarray(v, np.float64)) for k, v in tensors.items()}


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _memo(method):
    """Cache a method's results on the instance (functools.cache on a method keeps every
    harness alive for the whole session: 20 LeNet seeds held ~15 GB until the OOM killer
    ended a CI run; the same on Harness kept every sweep's, test_stability's 20 seeds and
    test_batch_sizes' 10 sizes among them). Gone with the harness."""

    @functools.wraps(method)
    def cached(self, *args):
        memo = self.__dict__.setdefault("_memo", {})
        key = (method.__name__, args)
        if key not in memo:
            memo[key] = method(self, *args)
        return memo[key]

    return cached


# The article network's harnesses, by run settings (the implementation aside) and data: the
# last two, as the detection harnesses per test file (each holds every tensor of nine
# network steps and each framework's run; one per mutant was ~0.5 GB of ./parity report's
# peak).
_NETWORKS: collections.OrderedDict = collections.OrderedDict()
_NETWORKS_KEPT = 2


def shared_network(config: RunConfig, data):
    """The ModelHarness of the article network for `config` (its implementation aside) and
    `data`: one per run settings and batch, whoever asks."""
    from parity_tests.model_harness import ModelHarness

    key = (dataclasses.replace(config, impl=""), id(data))
    found = _NETWORKS.get(key)
    if found is None or found.data is not data:
        seed, scheme = config.seed, config.init_scheme

        def params(dtype):
            return stages.network_params(model.init_params(seed, dtype, scheme))

        found = ModelHarness(stages.NETWORK, config, data, params=params, derived=stages.DERIVED)
        _NETWORKS[key] = found
        while len(_NETWORKS) > _NETWORKS_KEPT:
            _NETWORKS.popitem(last=False)
    _NETWORKS.move_to_end(key)
    return found


class Harness:
    """The shared inputs (`params`, `inputs`) are read-only arrays: nothing, neither the
    implementation under test (which gets copies) nor a mirror, can change what the
    others are fed."""

    def __init__(self, config: RunConfig, data, impl=model):
        self.config, self.data, self.impl = config, data, impl
        self._steps: dict = {}  # (impl id, dtype) -> (tensors, inputs after) or the failure

    @_memo
    def params(self, dtype: str) -> Tensors:
        p = model.init_params(self.config.seed, dtype, self.config.init_scheme)
        return Tensors({k: _read_only(v) for k, v in p.items()})

    @_memo
    def inputs(self, dtype: str):
        return _read_only(self.data.X.astype(dtype)), _read_only(self.data.y.astype(dtype))

    def pristine_inputs(self, dtype: str) -> dict:
        X, y = self.inputs(dtype)
        return {"X": X, "y": y, **self.params(dtype)}

    def _train(self, impl, dtype):
        """(every tensor of one step, the inputs as train_step left them); a failure of the
        implementation is remembered and raised again, so it is called once per dtype."""
        key = (id(impl), dtype)
        if key not in self._steps:
            try:
                X, y = self.inputs(dtype)
                params = self.params(dtype)
                cfg = self.config
                result = run_train_step(impl, params, X, y, cfg.lr, cfg.reduction)
                # The suite's own inputs, never the implementation's: an implementation need
                # not echo them back, and what the frameworks are fed must be ours.
                tensors = Tensors({**result.outputs, "X": X, **params}, y=y)
                tensors.returned = tuple(result.outputs)  # what train_step itself returned
                tensors.layout = result.layout
                self._steps[key] = (tensors, result.inputs_after)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001  (SystemExit from user code included)
                self._steps[key] = _failure(exc)
        found = self._steps[key]
        if isinstance(found, str):
            raise ImplementationError(found)
        return found

    def implementation(self, dtype: str) -> Tensors:
        """Every named tensor of one step of the implementation under test."""
        return self._train(self.impl, dtype)[0]

    def inputs_after(self, dtype: str) -> dict:
        """The copies of X, y, f, W, b handed to train_step, as it left them."""
        return self._train(self.impl, dtype)[1]

    def modified_inputs(self, dtype: str) -> list[str]:
        return modified_inputs(self.pristine_inputs(dtype), self.inputs_after(dtype))

    def inputs_check(self, name: str, dtype: str) -> Check:
        """The copy of input `name` after train_step against the suite's original: exact."""
        after, pristine = self.inputs_after(dtype).get(name), self.pristine_inputs(dtype)[name]
        if not isinstance(after, np.ndarray):
            raise ImplementationError(f"train_step replaced its input {name} by {type(after).__name__}")
        # impl: its copy. The pristine input is the truth: an input of zeros (the article
        # init's b) left as zeros is untouched, not a check that proves nothing.
        return Check(
            pristine, after, tolerance.exact(pristine.shape), None, truth_zero=not np.any(pristine)
        )

    @functools.cached_property
    def shape(self) -> tuple[int, int]:
        """(K filters, s): what the article's layout conversions need."""
        return stages.shape_of(self.params("float64"))

    @functools.cached_property
    def network(self):
        """The reference: the article network (parity_tests/stages.py) from the run's weights
        and images; its harness computes its step, truth, spread and framework runs once,
        and is shared by every Harness of the same run settings and data (the published
        variants and the mutants each check an implementation against the same reference)."""
        return shared_network(self.config, self.data)

    def _article(self, step: dict, dtype: str, X, y) -> Tensors:
        p = self.params(dtype)
        if X.dtype != p["f"].dtype:
            p = _f64(p)
        out = stages.article_step(step, self.shape)
        out["patches"] = stages.patches(X, self.shape)
        return Tensors({**out, "X": X, **p}, y=y)

    @_memo
    def reference(self, dtype: str) -> Tensors:
        """The reference's step (the article network's), under the article's names and layout."""
        X, y = self.inputs(dtype)
        return self._article(self.network.reference(dtype), dtype, X, y)

    @_memo
    def truth(self, dtype: str) -> Tensors | None:
        """The reference in the truth's precision (float64 for float32, extended for float64:
        truth_dtype) on `dtype`'s rounded inputs and parameters, rounded to float64; None
        where there is none."""
        X, y = self.inputs(dtype)
        X64, y64 = X.astype(np.float64), y.astype(np.float64)
        step = self.network.truth(dtype)
        return None if step is None else self._article(step, dtype, X64, y64)

    @_memo
    def mirror(self, framework: str):
        return load_mirror(framework)

    @_memo
    def end_to_end(self, framework: str, dtype: str) -> Tensors:
        """The framework's whole article network from the run's weights, article names."""
        step = self.network.end_to_end(framework, dtype)
        out = stages.article_step(step, self.shape)
        mirror, r = self.mirror(framework), self.config.reduction
        out["dO_dZ2"] = stages.framework_dO_dZ2(mirror, step, r, self.shape)
        return Tensors(out)

    def explain_context(self, stage: Stage, inputs, dtype: str) -> dict:
        """Run facts the mismatch explainer (parity_tests.explain) uses to name a mistake."""
        p = self.params(dtype)
        ctx = dict(
            lr=self.config.lr,
            n_images=int(self.data.X.shape[2]),
            n_filters=int(p["f"].shape[2]),
            filter_size=int(p["f"].shape[0]),
            bias=float(p["b"][0]),
        )
        if stage.tensor in UPDATE_GRADIENT:
            ctx.update(old=inputs[stage.tensor[0]], grad=inputs[UPDATE_GRADIENT[stage.tensor]])
        # The run's own tensors, the stage's inputs among them (cached, nothing recomputed):
        # the specific suspects recompute ours the mistaken way from them (W_new, patches...).
        ctx["tensors"] = {**self.implementation(dtype), **inputs}
        return ctx

    def provided(self, names, dtype: str) -> dict:
        """The implementation's tensors `names` as a framework may be fed them: Absent if one
        was not returned, ImplementationError if its shape is not the reference's (article
        layout), and always in the run's dtype (a float64 tensor of a float32 run is fed as
        float32; its own check records the dtype mismatch)."""
        impl, ref = self.implementation(dtype), self.reference(dtype)
        out = {}
        for name in names:
            if name not in impl:
                raise Absent(name)
            value, want = np.asarray(impl[name]), np.shape(ref[name])
            if value.shape != want:
                raise ImplementationError(
                    f"{name}, an input of this check, has shape {value.shape}; the article "
                    f"layout's is {want} (see test_contract)"
                )
            out[name] = value.astype(dtype, copy=False)
        return out

    def contract(self, dtype: str) -> list[tuple[str, str, str]]:
        """What train_step returned against the article's names, shapes (article layout) and
        the run's dtype: (name, kind, message) with kind absent | unknown | shape | dtype."""
        impl, ref = self.implementation(dtype), self.reference(dtype)
        returned = getattr(impl, "returned", tuple(impl))
        known = (*ORDER, *INPUT_NAMES)
        problems = [(n, "absent", f"{n} was not returned") for n in ORDER if n not in returned]
        for name in returned:
            if name not in known:
                # Case-blind: dE_dw is a typo of dE_dW, not of dE_df.
                lower = {k.lower(): k for k in known}
                close = difflib.get_close_matches(name.lower(), lower, n=1)
                hint = f" (closest article name: {lower[close[0]]})" if close else ""
                problems.append((name, "unknown", f"{name} is not an article name{hint}"))
            elif name in ORDER:
                value, want = np.asarray(impl[name]), np.shape(ref[name])
                wrong_dtype = f"{name} has dtype {value.dtype}, expected {dtype} (a {dtype} run)"
                if value.dtype.kind != "f":
                    problems.append((name, "dtype", wrong_dtype))
                elif value.shape != want:
                    problems.append((name, "shape", self._shape_message(name, value, ref, impl)))
                elif value.dtype != np.dtype(dtype):
                    problems.append((name, "dtype", wrong_dtype))
        return problems

    @staticmethod
    def _shape_message(name, value, ref, impl) -> str:
        """Expected and actual shape, in the layout the implementation declared."""
        layout = getattr(impl, "layout", "article")
        want = ref[name]
        if layout != "article":
            f = ref["f"]
            want = to_layout({name: want}, layout, f.shape[2], f.shape[0])[name]
        return f"{name} has shape {value.shape}, expected {np.shape(want)} ({layout} layout)"

    def own(self, name: str, dtype: str) -> np.ndarray:
        """The implementation's tensor `name` as it returned it (Absent if it did not)."""
        impl = self.implementation(dtype)
        if name not in impl:
            raise Absent(name)
        return np.asarray(impl[name])

    @_memo
    def _stage_reference(self, stage: Stage, dtype: str, precision) -> tuple:
        """(the stage rule, the truth or None) of `stage` on the implementation's own inputs
        to it: once per stage, dtype and truth precision (`precision`, truth_dtype(dtype); None:
        no truth), whichever framework's check reads them."""
        cfg = self.config
        inputs = self.provided(stage.inputs, dtype)
        _, tol = stages.reference_stage(stage, inputs, cfg.lr, cfg.reduction, self.shape)
        with truth_precision(dtype) as wide:
            if wide is None:
                return tol, None
            value = stages.reference_value(
                stage, widened(inputs, wide), cfg.lr, cfg.reduction, self.shape
            )
            return tol, _read_only(np.asarray(value, np.float64))

    def stage_check(self, stage: Stage, framework: str, dtype: str) -> Check:
        """The framework's layers (or optimiser) fed the implementation's own inputs to the
        stage, against the implementation's tensor; the stage rule on those inputs."""
        expected = self.own(stage.tensor, dtype)
        inputs = self.provided(stage.inputs, dtype)
        cfg = self.config
        actual = stages.framework_stage(
            stage, self.mirror(framework), inputs, cfg.lr, cfg.reduction, self.shape
        )
        tol, truth = self._stage_reference(stage, dtype, truth_dtype(dtype))
        # A loss or a bias (under 16 elements) is judged by its scale, against the reference
        # layer's own error (ModelHarness.stage_legit), in the article's layout.
        legit = self.network.stage_legit(stage.network, dtype) if stage.network else None
        if legit is not None:
            legit = stages.to_article(stage.tensor, legit, self.shape)
        return Check(
            np.asarray(actual),
            expected,
            tol,
            truth,
            self.explain_context(stage, inputs, dtype),
            legit=legit,
        )

    @_memo
    def end_to_end_tolerance(self, tensor: str, dtype: str) -> tolerance.Tolerance:
        """The network's end-to-end allowance of `tensor` (model_harness.py: the stage rule
        on the reference's own inputs + the reference's float32 error at several weight
        points), in the article's layout; it depends on the weights and data only."""
        stage, net = BY_TENSOR[tensor], self.network
        if tensor == "dO_dZ2":  # the view's own: its stage rule on the reference's Z2
            ref = self.reference(dtype)
            inputs = {name: ref[name] for name in stage.inputs}
            _, stage_tol = stages.reference_stage(
                stage, inputs, self.config.lr, self.config.reduction, self.shape
            )
            what = f"max|ref32-ref64| over {1 + tolerance.SPREAD_POINTS} weight points"
            return tolerance.end_to_end_from_spread(stage_tol, net.spread(stage.network), dtype, what)
        tol = net.end_to_end_tolerance(stage.network, dtype)
        shape = np.shape(net.reference(dtype)[stage.network])
        array = np.array(np.broadcast_to(tol.array, shape))  # ascontiguousarray makes () (1,)
        array = stages.to_article(tensor, array, self.shape)
        return tolerance.Tolerance(array, tol.rule, tol.roundings)

    def end_to_end_check(self, stage: Stage, framework: str, dtype: str) -> Check:
        expected = self.own(stage.tensor, dtype)
        ref = self.reference(dtype)
        truth = self.truth(dtype)
        truth = None if truth is None else truth[stage.tensor]
        actual = self.end_to_end(framework, dtype)[stage.tensor]
        # The explainer reads the implementation's inputs where it returned them.
        impl = self.implementation(dtype)
        inputs = {name: impl.get(name, ref[name]) for name in stage.inputs}
        # The network's own float32 error over the spread's weight points, in the article's
        # layout: the precision verdict's least reference (ModelHarness.legit_error). It is
        # measured against the float64 step on the float64 weights, this check's truth on
        # the rounded ones: it also holds the weights' rounding, so it errs towards leniency.
        legit = self.network.legit_error(stage.network, dtype)
        if legit is not None:
            legit = stages.to_article(stage.tensor, legit, self.shape)
        return Check(
            np.asarray(actual),
            expected,
            self.end_to_end_tolerance(stage.tensor, dtype),
            truth,
            self.explain_context(stage, inputs, dtype),
            legit=legit,
        )

    def budgets(self, frameworks, dtypes, modes=("stage", "end_to_end"), label: str = ""):
        """(budget used, where, failure message or None) for every stage-isolated and
        end-to-end check of test_parity.py, compared directly (not recorded): the sweeps over
        seeds and batch sizes. A crash is raised, not caught."""
        from parity_tests.metrics import compare_check

        makers = {"stage": (STAGES, self.stage_check), "end_to_end": (END_TO_END, self.end_to_end_check)}
        article = self.config.init_scheme == "article"
        for framework in frameworks:
            for dtype in dtypes:
                for mode in modes:
                    stages, make = makers[mode]
                    for stage in stages:
                        where = f"{label} {stage.tensor} {framework} {dtype} {mode}".strip()
                        c = make(stage, framework, dtype)
                        r = compare_check(
                            c, against=framework, expect_zero=article and stage.quantity != "forward"
                        )
                        budget = float(r["budget_used"])
                        failure = None
                        if not r["passed"]:
                            failure = (
                                f"{where}: budget {budget:.3g}, {r['status']} {r['note']} "
                                f"(rule {c.tolerance.rule})"
                            )
                        yield budget, where, failure


# --- the article's checks as ParityRecorder.check / .record arguments ---------------------
# One home for what test_parity.py records and what the notebook API (parity_tests/api.py)
# records for the same check.

# What each contract problem of Harness.contract becomes: (status, mismatch_kind).
CONTRACT_KINDS = {
    "absent": ("absent", ""),
    "unknown": ("error", "error"),
    "shape": ("fail", "shape"),
    "dtype": ("fail", "dtype"),
}
NOTHING_RETURNED = "train_step returned none of the article's names: nothing to compare"


def contract_records(problems, dtype: str) -> list[dict]:
    """test_contract's records for Harness.contract's problems: one per problem, and a
    vacuous one when train_step returned none of the article's names."""
    out = []
    for name, kind, message in problems:
        status, mismatch_kind = CONTRACT_KINDS[kind]
        out.append(
            dict(
                tensor=name,
                status=status,
                mismatch_kind=mismatch_kind,
                error=message,
                mode="contract",
                dtype=dtype,
            )
        )
    if sum(kind == "absent" for _, kind, _ in problems) == len(ORDER):
        out.append(
            dict(tensor="(all)", status="vacuous", mode="contract", dtype=dtype, error=NOTHING_RETURNED)
        )
    return out


def stage_check_fields(harness: Harness, stage: Stage, framework: str, dtype: str, mode: str) -> dict:
    """The ParityRecorder.check arguments of one stage-isolated or end-to-end check."""
    make = harness.stage_check if mode == "stage" else harness.end_to_end_check
    return dict(
        tensor=stage.tensor,
        equation=stage.equation,
        step=stage.step,
        quantity=stage.quantity,
        mode=mode,
        against=framework,
        dtype=dtype,
        compute=lambda: make(stage, framework, dtype),
        expect_zero=harness.config.init_scheme == "article" and stage.quantity != "forward",
    )


def inputs_check_fields(harness: Harness, name: str, dtype: str) -> dict:
    """The ParityRecorder.check arguments of test_inputs_untouched[name-dtype]."""
    return dict(
        tensor=name,
        equation="",
        step="inputs",
        quantity="input",
        mode="inputs",
        against="pristine",
        dtype=dtype,
        compute=lambda: harness.inputs_check(name, dtype),
        note=lambda: (
            f"train_step modified its input {name} in place"
            if name in harness.modified_inputs(dtype)
            else ""
        ),
    )
