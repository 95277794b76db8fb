"""Checks for a spec-built network (reference/network.py), as harness.py does for the article.

One `ModelHarness` per network and session: the reference's step per dtype, each
framework's whole-network run and each framework's layer run on our inputs, all cached,
so a test only compares. Tensor names are layer-qualified (conv1.Z, pool1.dX, conv1.F_new).

- stage: a framework's layer fed our input to that layer, its parameters and our upstream
  gradient (updates: our parameter and our gradient); the stage rule of model_stages.py.
- end_to_end: the framework's whole network from the same weights; the end-to-end rule of
  tolerance.py (stage allowance + the reference's own float32 error, floored), with the
  kinks of ReLU and max-pool handled as parity_tests/kinks.py explains.
- stage against TRUTH ("reference"): the reference's own layer in float64 on our inputs,
  rounded to the dtype, is the other side: what the mutation catalogue is localised with
  (parity_tests/model_mutants.py), so only a broken layer disagrees.
"""

from __future__ import annotations

import contextlib
import math
import traceback
from collections.abc import Callable, Mapping

import numpy as np

from parity_tests import kinks as kink_rules
from parity_tests import metrics, model_stages, tolerance
from parity_tests.harness import (
    Check,
    _memo,
    _read_only,
    rounded_truth,
    truth_dtype,
    truth_precision,
    widened,
)
from parity_tests.impl_call import ImplementationError
from parity_tests.mirrors import load_mirror
from reference.layers import norm
from reference.layers.registry import call_arguments
from reference.network import KINKED, Network, images_nchw, update_pairs

# A normalisation statistic over at least this many values: TensorFlow's float32 reductions
# over it are not held to the precision verdict (ModelHarness.precision_waived). A running
# float32 sum of m near-equal values errs by up to m u, a pairwise one by log2(m) u: from
# m = 128 the two may differ by more than the verdict's limit of 16.
LONG_STATISTIC = 128
# The other side of a stage check that is the reference itself (in float64, rounded): the
# `against` of the mutation catalogue's detection records.
TRUTH = "reference"


class LayerFailed(ImplementationError):
    """A layer of the network under test raised (or wrote into its arguments) in its
    forward or backward: `node` (None: the update), `phase`, the exception."""

    def __init__(self, node, phase: str, error: BaseException):
        self.node, self.phase, self.error = node, phase, error
        where = f"{node.name} ({node.kind}, {phase})" if node is not None else phase
        function = getattr(error, "parity_function", "")
        self.where = where
        self.text = (
            f"{function + ' ' if function else ''}raised at {where}: {type(error).__name__}: {error}"
        )
        self.tensors = (
            tuple(node.q(t) for t in (node.outputs if phase == "forward" else node.grads))
            if node is not None
            else ()
        )
        frames = "".join(traceback.format_exception(error, limit=-3)).rstrip()
        super().__init__(f"{self.text} ({', '.join(self.tensors)})\n{frames}")

    def about(self, tensor: str) -> ImplementationError:
        """The error of a check of `tensor`, which the failing layer kept from being made."""
        if tensor in self.tensors:
            return ImplementationError(str(self))
        return ImplementationError(
            f"{tensor} was not computed: {self.text} first ({', '.join(self.tensors)}), and "
            f"{tensor} depends on it"
        )


def load_model_mirror(framework: str):
    return load_mirror(framework)


def _shared(tensors: dict, reference: dict) -> dict:
    """`tensors` with every array equal to the reference's, value for value, replaced by the
    reference's own (a zero's sign aside, which no check reads): the fast kernels' step is
    the readable one's, so a session holds it once, not twice."""
    out = {}
    for name, a in tensors.items():
        ref = reference.get(name)
        same = (
            ref is not None
            and isinstance(a, np.ndarray)
            and a.shape == ref.shape
            and a.dtype == ref.dtype
            and np.array_equal(a, ref)
        )
        out[name] = ref if same else a
    return out


class ModelHarness:
    """`net` is the reference; `impl` the network under test (None: the reference itself;
    the fixture's: the fast kernels' network, or the readable one with a user's layers
    plugged in). Both get read-only inputs."""

    def __init__(
        self,
        net: Network,
        config,
        data,
        impl: Network | None = None,
        params: Callable[[str], dict] | None = None,
        derived: Mapping[str, Callable[[dict], np.ndarray]] | None = None,
    ):
        """`params` (optional): dtype -> the network's parameters, where the run's weights are
        not the network's own init (the article's schemes, parity_tests/stages.py);
        `derived`: tensors a view names that the network has no node for (the article's
        dO_dZ2), each computed from a whole step, so they are in every step, spread included."""
        self.net, self.config, self.data = net, config, data
        self.impl = impl or net
        self.grad_of = dict(update_pairs(net))  # conv1.F -> conv1.dF
        self._params, self.derived = params, dict(derived or {})

    # --- inputs -----------------------------------------------------------------------

    @_memo
    def params(self, dtype: str) -> dict:
        p = self._params(dtype) if self._params else self.net.init_params(self.config.seed, dtype)
        return {k: _read_only(v) for k, v in p.items()}

    @_memo
    def inputs(self, dtype: str):
        X = _read_only(images_nchw(self.data.X).astype(dtype))
        target = self.net.targets(self.data.labels, dtype)
        return X, _read_only(np.ascontiguousarray(target))

    @_memo
    def _point_params(self, point: int, dtype: str) -> dict:
        """The weights at spread point `point` (0: the run's; 1.. : each weight times
        1 + SPREAD_PERTURBATION xi, xi uniform in [-1, 1] from default_rng((seed, point)))."""
        if point == 0:
            return self.params(dtype)
        base = self.params("float64")
        rng = np.random.default_rng((self.config.seed, point))
        scale = tolerance.SPREAD_PERTURBATION
        return {
            k: (v * (1 + scale * rng.uniform(-1, 1, v.shape))).astype(dtype) for k, v in base.items()
        }

    def _at_point(self, point: int, dtype: str, decide: dict | None = None) -> dict:
        """The reference's step at weight point `point` (a float32 run given `decide`: the
        float64 run's branches at the kinks, so that a kink never enters the spread). Not
        kept: the spread keeps only each tensor's maximum (_spreads)."""
        X, _ = self.inputs(dtype)
        cfg = self.config
        params = self._point_params(point, dtype)
        # The spread's float32 run (decide given) sums the batch statistics in order, as a
        # framework's kernel may (reference/layers/norm.py, running_sums); no effect without
        # a normalisation layer.
        with norm.running_sums() if decide is not None else contextlib.nullcontext():
            step = self.net.train_step(params, X, self.data.labels, cfg.lr, cfg.reduction, decide)
        return self._with_derived(step)

    def _with_derived(self, step: dict) -> dict:
        return {**step, **{name: fn(step) for name, fn in self.derived.items()}}

    @_memo
    def truth(self, dtype: str) -> dict | None:
        """The reference's step on `dtype`'s weights and images (wide copies of the rounded
        values) in the truth's precision (harness.truth_dtype: float64 for float32, extended
        for float64), rounded to float64: what a check's result is measured against. In
        float64 it takes the float64 step's branches at the kinks, as the spread's float32
        runs do (a kink a framework takes the other way is kinks.py's). None: no truth."""
        X, _ = self.inputs(dtype)
        cfg = self.config
        with truth_precision(dtype) as wide:
            if wide is None:
                return None
            decide = None
            if dtype == "float64":
                ref = self.reference("float64")
                decide = {n.name: ref[self._input_name(n)].astype(wide) for n in self._kinked()}
            params = widened(self.params(dtype), wide)
            X = X.astype(wide)
            step = self.net.train_step(params, X, self.data.labels, cfg.lr, cfg.reduction, decide)
            return rounded_truth(self._with_derived(step))

    @_memo
    def _spreads(self) -> tuple[dict, dict]:
        """({tensor: (max |ref32 - ref64|, the same elementwise)}, {small tensor: its layer's
        own float32 error elementwise}) over the run's weights and SPREAD_POINTS weight
        points nearby, one point at a time (each point's two steps are dropped once read:
        nine steps held at once were most of a harness's memory). The second: for each
        tensor of fewer than PRECISION_MIN_ELEMENTS elements (a loss, a bias gradient of few
        channels), the largest |layer32 - layer64| of its layer alone on the float32 step's
        inputs to it (stage_legit)."""
        out: dict = {}
        stage: dict = {}
        small = self._small_layers()
        for k in range(1 + tolerance.SPREAD_POINTS):
            hi = self.reference("float64") if k == 0 else self._at_point(k, "float64")
            decide = {n.name: hi[self._input_name(n)].astype("float32") for n in self._kinked()}
            lo = self._at_point(k, "float32", decide)
            for name, value in lo.items():
                diff = np.abs(np.asarray(value, np.float64) - hi[name])
                most, each = out.get(name, (0.0, 0.0))
                # each element's largest too (legit_error), in float32: plenty for an
                # error's magnitude, and half what float64 would keep
                out[name] = (max(most, float(np.max(diff, initial=0.0))),
                             np.maximum(each, diff.astype(np.float32)))  # fmt: skip
            for node, names in small:
                own = self._layer_error(node, names, self._point_params(k, "float32"), lo)
                for name, diff in own.items():
                    stage[name] = np.maximum(stage.get(name, 0.0), diff)
        return out, stage

    @_memo
    def _small_layers(self) -> tuple:
        """(node, its tensors of fewer than PRECISION_MIN_ELEMENTS elements) for each layer
        that computes one: the tensors a stage check can only judge by their scale."""
        ref = self.reference("float64")
        found = []
        for node in self.net.nodes:
            names = [
                node.q(t)
                for t in (*node.outputs, *node.grads)
                if node.q(t) in ref and np.size(ref[node.q(t)]) < metrics.PRECISION_MIN_ELEMENTS
            ]
            if names:
                found.append((node, tuple(names)))
        return tuple(found)

    def _layer_error(self, node, names, params: dict, step: dict) -> dict:
        """|layer32 - layer64| of `names` for `node` alone, fed the float32 `step`'s inputs
        to it (the float64 run on float64 copies of the same values)."""
        X, target = self.inputs("float32")
        x, upstream = self.net.inputs_of(node, X, step), self.net.upstream_of(node, step)
        low = self.net.node_step(node, x, params, upstream, target, self.config.reduction)
        high = self._node_step_wide(node, x, params, upstream, target, np.float64)
        return {name: np.abs(np.asarray(low[name], np.float64) - high[name]) for name in names}

    def _node_step_wide(self, node, x, params: dict, upstream, target, wide) -> dict:
        """The reference layer `node` on `wide` copies of its inputs (integer labels as they
        are): a truth's or the spread's float64 side."""
        w, p = widened({"x": x, "upstream": upstream, "target": target}, wide), widened(params, wide)
        return self.net.node_step(node, w["x"], p, w["upstream"], w["target"], self.config.reduction)

    def spread(self, tensor: str) -> float:
        """max |ref32 - ref64| of `tensor` over the run's weights and SPREAD_POINTS weight
        points nearby: the reference's own float32 error, sampled more than once."""
        return self._spreads()[0][tensor][0]

    @_memo
    def legit_error(self, tensor: str, dtype: str) -> np.ndarray | None:
        """A correct end-to-end computation's error in `dtype`, elementwise, which the
        precision verdict takes as its least reference. float32: |ref32 - ref64|, its largest
        over the spread's weight points. float64: the larger of |ref64 - truth| at the run's
        weights and the float32 one scaled by u64 / u32 (the same operations' rounding, four
        points' worth); None where there is no float64 truth."""
        each = np.asarray(self._spreads()[0][tensor][1], np.float64)
        if dtype != "float64":
            return _read_only(each)  # a copy, shared by both frameworks' checks
        truth = self.truth("float64")
        if truth is None:
            return None
        own = np.abs(np.asarray(self.reference("float64")[tensor]) - truth[tensor])
        return _read_only(np.maximum(own, each * tolerance.from_float32("float64")))

    @_memo
    def stage_legit(self, tensor: str, dtype: str) -> np.ndarray | None:
        """A correct computation's error in `tensor`'s layer alone, elementwise, for a tensor
        of fewer than PRECISION_MIN_ELEMENTS elements (None for the others): what its stage
        check's scale verdict is measured against (metrics.precision_stats), as legit_error
        end to end. The larger of the reference's layer at the run's inputs to it against
        its truth, and float32: its layer's float32 error at the spread's weight points
        (_spreads); float64: that scaled by u64 / u32. None where there is no truth."""
        small = {name for _, names in self._small_layers() for name in names}
        if tensor not in small or truth_dtype(dtype) is None:
            return None  # (before the spread: a stage-only run need not compute it)
        samples = self._spreads()[1][tensor] * tolerance.from_float32(dtype)
        layer = tensor.split(".", 1)[0]
        ours = np.asarray(self._layer_step(layer, dtype, "reference")[tensor], np.float64)
        exact = self._layer_step(layer, dtype, "reference", True)[tensor]
        return _read_only(np.maximum(np.abs(ours - exact), samples))

    # --- our side ---------------------------------------------------------------------

    @_memo
    def reference(self, dtype: str) -> dict:
        """The reference's step at the run's weights."""
        return self._at_point(0, dtype, None)

    def _step(self, net, dtype, decide):
        if net is not self.net:
            return self._partial_step(net, dtype, decide)
        X, target = self.inputs(dtype)
        cfg = self.config
        labels = self.data.labels
        return net.train_step(self.params(dtype), X, labels, cfg.lr, cfg.reduction, decide)

    def _partial_step(self, net, dtype, decide) -> dict:
        """The network under test's train_step layer by layer (as Network.train_step): where
        a layer raises (a user's function raising or writing in place), the tensors made
        before it are kept and the failure is remembered (self.failures[dtype]): the checks
        of what does not depend on it still run, the others are errors naming the layer
        that raised, and the step is not run again by every test (the callers are cached)."""
        X, _ = self.inputs(dtype)
        cfg = self.config
        params, X = net.check_params(self.params(dtype), X)
        target = net.targets(self.data.labels, X.dtype)
        out: dict = {}
        grads: dict = {}
        node, phase = None, "forward"
        try:
            h = X
            for node in net.nodes:
                h = net._forward_node(node, params, h, target, cfg.reduction, out)
            phase = "backward"
            for node in reversed(net.nodes):
                if node.grads:
                    x = net.inputs_of(node, X, out)
                    grads.update(
                        net._backward_node(
                            node, params, x, out, grads, target, cfg.reduction, decide or {}
                        )
                    )
            out.update(grads)
            phase, node = "update", None
            out.update(net.sgd_step(params, grads, cfg.lr))
        except Exception as exc:  # noqa: BLE001  (the user's code: localised, not re-raised)
            out.update(grads)  # the gradients of the layers backward reached before it
            self.__dict__.setdefault("failures", {}).setdefault(dtype, LayerFailed(node, phase, exc))
        return out

    def failure(self, dtype: str):
        """The LayerFailed of the network under test's step in `dtype`, or None."""
        self.implementation(dtype)
        return self.__dict__.get("failures", {}).get(dtype)

    def _ours(self, tensor: str, dtype: str, tensors: dict):
        """`tensor` of our step, or the error of the layer that raised before making it."""
        if tensor not in tensors:
            failure = self.failure(dtype)
            if failure is not None:
                raise failure.about(tensor)
        return tensors[tensor]

    @_memo
    def implementation(self, dtype: str) -> dict:
        if self.impl is self.net:
            return self.reference(dtype)
        return _shared(self._step(self.impl, dtype, None), self.reference(dtype))

    def _kinked(self):
        return [n for n in self.net.nodes if n.kind in KINKED and n.grads]

    def _input_name(self, node) -> str:
        i = self.net.nodes.index(node)
        if i == 0:
            raise ValueError(f"{node.name} is the first layer: its input is the image")
        prev = self.net.nodes[i - 1]
        return prev.q(prev.outputs[0])

    # --- stage ------------------------------------------------------------------------

    def _stage_inputs(self, tensor: str, dtype: str, source: str = "implementation"):
        """(node, x, upstream) of the layer that computes `tensor`, from our own step
        (source "implementation") or the reference's ("reference")."""
        net, ours = self.net, getattr(self, source)(dtype)
        node = net.node_of(tensor)
        X, _ = self.inputs(dtype)
        x = net.inputs_of(node, X, ours)
        try:
            upstream = net.upstream_of(node, ours)
        except KeyError:  # a layer after it raised in its backward: the forward stands alone
            upstream = np.zeros_like(ours[node.q(node.outputs[0])])
        return node, x, upstream

    def _layer_step(self, layer: str, dtype: str, source: str, exact: bool = False) -> dict:
        """The reference layer `layer` (every tensor it computes) on `source`'s inputs to it
        (_stage_inputs); when `exact`, in the truth's precision (harness.truth_dtype; float64
        where there is none) rounded to float64: the truth of a stage check.
        Once per layer, not once per tensor and framework; and once for both sources when
        the network under test is the reference (implementation() is then reference()'s
        very dict, so the stage check and the end-to-end allowance feed it the same arrays)."""
        if self.impl is self.net or self._same_inputs(layer, dtype):
            source = "reference"
        return self._layer_step_from(layer, dtype, source, exact)

    @_memo
    def _same_inputs(self, layer: str, dtype: str) -> bool:
        """Whether the network under test fed `layer` the reference's very arrays (its
        tensors equal to the reference's are held as those: `_shared`), so that the reference
        layer on them is computed once."""
        node = next(n for n in self.net.nodes if n.name == layer)
        tensor = node.q(node.outputs[0])
        try:
            ours = self._stage_inputs(tensor, dtype, "implementation")
        except KeyError:  # a layer before it raised: its input was never made
            return False
        ref = self._stage_inputs(tensor, dtype, "reference")
        return ours[1] is ref[1] and ours[2] is ref[2]

    @_memo
    def _layer_step_from(self, layer: str, dtype: str, source: str, exact: bool = False) -> dict:
        node = next(n for n in self.net.nodes if n.name == layer)
        node, x, upstream = self._stage_inputs(node.q(node.outputs[0]), dtype, source)
        _, target = self.inputs(dtype)
        params = self.params(dtype)
        if not exact:
            out = self.net.node_step(node, x, params, upstream, target, self.config.reduction)
            return {k: _read_only(v) for k, v in out.items()}  # shared by every check of the layer
        with truth_precision(dtype) as wide:
            out = self._node_step_wide(node, x, params, upstream, target, wide or np.float64)
        return rounded_truth(out)

    @_memo
    def _framework_stage(self, framework: str, layer: str, dtype: str) -> dict:
        node = next(n for n in self.net.nodes if n.name == layer)
        node, x, upstream = self._stage_inputs(node.q(node.outputs[0]), dtype)
        _, target = self.inputs(dtype)
        mirror = load_model_mirror(framework)
        params = self.params(dtype)
        return mirror.stage(self.net, node, x, params, upstream, target, self.config.reduction)

    def stage_check(self, tensor: str, framework: str, dtype: str) -> Check:
        """`framework`'s layer (or update) fed our inputs to it, against our `tensor`; with
        framework TRUTH, the reference's own layer in float64 on those inputs, rounded."""
        ours = self.implementation(dtype)
        expected = np.asarray(self._ours(tensor, dtype, ours))
        cfg = self.config
        if tensor.endswith("_new"):
            param = tensor[: -len("_new")]
            p, g = self.params(dtype)[param], self._ours(self.grad_of[param], dtype, ours)
            tol = model_stages.update_tolerance(p, g, cfg.lr, dtype)
            wide = truth_dtype(dtype) or np.dtype(np.float64)
            exact = np.asarray(p.astype(wide) - cfg.lr * g.astype(wide), np.float64)
            if framework == TRUTH:
                context = {"lr": cfg.lr, "n_images": self.inputs(dtype)[0].shape[0], "old": p, "grad": g}
                return _against_truth(exact, expected, tol, dtype, context)
            actual = load_model_mirror(framework).update(p, g, cfg.lr)
            truth = exact if truth_dtype(dtype) else None
            return Check(np.asarray(actual), expected, tol, truth, truth_zero=not np.any(exact))
        node = self.net.node_of(tensor)
        tol = self._stage_tolerance(tensor, dtype)
        context = self._explain_context(tensor, dtype)
        # The reference's layer in the truth's precision on our inputs to it: the truth, and
        # what says whether zeros are right here (a dead ReLU's region).
        exact = self._layer_step(node.name, dtype, "implementation", True)[tensor]
        if framework == TRUTH:
            return _against_truth(np.asarray(exact, np.float64), expected, tol, dtype, context)
        actual = self._framework_stage(framework, node.name, dtype)[tensor]
        truth = exact if truth_dtype(dtype) else None
        waived = self.precision_waived(tensor, framework, dtype, "stage")
        if waived:  # the allowance still judges it; the note says why no precision verdict
            tol = tolerance.Tolerance(tol.array, f"{tol.rule}; {waived}", tol.roundings)
        zero = not np.any(exact) or tensor in self.net.exact_zeros
        legit = self.stage_legit(tensor, dtype)
        return Check(np.asarray(actual), expected, tol, truth, context, zero, not waived, legit)

    @_memo
    def _stage_tolerance(self, tensor: str, dtype: str) -> tolerance.Tolerance:
        """The stage rule of `tensor` on our inputs to its layer: once per tensor and dtype,
        whichever framework's check reads it."""
        node, x, upstream = self._stage_inputs(tensor, dtype)
        _, target = self.inputs(dtype)
        own = self._layer_step(node.name, dtype, "implementation")
        short, r = tensor.split(".", 1)[1], self.config.reduction
        return model_stages.stage_tolerance(
            node, short, x, self.params(dtype), upstream, own, r, dtype, target
        )

    def _explain_context(self, tensor: str, dtype: str) -> dict:
        """What parity_tests.explain reads to name a layer's mistake: the layer's own inputs in
        the calling form of reference.network.Ops (layer_arguments)."""
        X, _ = self.inputs(dtype)
        return {
            "layer": self.layer_arguments(tensor, dtype),
            "n_images": X.shape[0],
            "lr": self.config.lr,
        }

    def layer_arguments(self, tensor: str, dtype: str) -> dict:
        """What the layer of `tensor` was fed in our step (its input, upstream gradient,
        parameters, drawn mask, forward outputs), by the names of its calling form
        (reference/layers/registry.py, call_arguments), with its `kind`. A tensor our step
        never made raises the failure of the layer that stopped it."""
        net, ours = self.impl, self.implementation(dtype)
        X, target = self.inputs(dtype)
        node = net.node_of(tensor)
        short = tensor.split(".", 1)[1]
        backward = short.startswith("d") and short not in node.outputs
        x = net.inputs_of(node, X, _Made(self, dtype, ours))
        up = None
        if backward and not node.layer.is_loss:
            up = net.upstream_of(node, _Made(self, dtype, ours))
        params = self.params(dtype)
        p = {**{s: params[node.q(s)] for s in node.params}, **net.drawn(node, np.shape(x))}
        fwd = {s: ours[node.q(s)] for s in node.outputs if backward and node.q(s) in ours}
        if backward and node.entry.family == "activation":
            self._ours(node.q("A"), dtype, ours)  # its output, which the backward reads
        args = call_arguments(
            node.entry, node.layer, x, p, fwd, target, self.config.reduction, up, backward
        )
        return {"kind": node.kind, **args}

    # --- end to end -------------------------------------------------------------------

    @_memo
    def end_to_end(self, framework: str, dtype: str) -> dict:
        X, target = self.inputs(dtype)
        cfg = self.config
        mirror = load_model_mirror(framework)
        return mirror.end_to_end(self.net, self.params(dtype), X, target, cfg.reduction, cfg.lr)

    @_memo
    def end_to_end_tolerance(self, tensor: str, dtype: str) -> tolerance.Tolerance:
        """stage allowance on the reference's own inputs + the reference's float32 error
        (its float32 run taking the float64 run's branches: rounding, not a kink), measured
        at the run's weights and SPREAD_POINTS points nearby (tolerance.py)."""
        cfg, ref = self.config, self.reference(dtype)
        spread = self.spread(tensor)
        what = f"max|ref32-ref64| over {1 + tolerance.SPREAD_POINTS} weight points"
        if tensor.endswith("_new"):
            param = tensor[: -len("_new")]
            grad = self.grad_of[param]
            p, g = self.params(dtype)[param], ref[grad]
            stage_tol = model_stages.update_tolerance(p, g, cfg.lr, dtype)
            tol = tolerance.end_to_end_from_spread(stage_tol, spread, dtype, what)
            share = tolerance.update_share(p, g, cfg.lr)
            grad_tol = self.end_to_end_tolerance(grad, dtype)
            return tolerance.end_to_end_update(tol, grad_tol, cfg.lr, grad, share)
        tol = tolerance.end_to_end_from_spread(self._stage_allowance(tensor, dtype), spread, dtype, what)
        carried, source = self._carried(tensor, dtype), self._upstream_name(tensor)
        if carried is None:
            carried, source = self._carried_forward(tensor, dtype), self._input_of(tensor)
        if carried is None:
            return tol
        return tolerance.carried(tol, carried, source)

    @_memo
    def _propagated_forward(self, tensor: str, dtype: str) -> np.ndarray:
        """The stage allowance of forward tensor `tensor` plus those its layer passes on
        from its input (_carried_forward), element by element."""
        shape = np.shape(self.reference(dtype)[tensor])
        own = np.array(np.broadcast_to(self._stage_allowance(tensor, dtype).array, shape))
        carried = self._carried_forward(tensor, dtype)
        return own if carried is None else own + carried

    def _input_of(self, tensor: str) -> str | None:
        """The forward tensor the layer of `tensor` reads (None for the first layer's)."""
        node = self.net.node_of(tensor)
        return None if self.net.nodes.index(node) == 0 else self._input_name(node)

    def _carried_forward(self, tensor: str, dtype: str) -> np.ndarray | None:
        """A forward tensor of a layer that passes its input on (the registry's `passes_on`:
        ReLU, the pools, flatten, dropout, gap): the end-to-end allowance of its input, fed
        through the layer's forward (None for any other tensor).

        A framework's input to the layer may legitimately be off by the stage allowances of
        the operations that made it; such a layer's output is then off by at most its forward
        applied to them (a ReLU or a max passes at most the deviation, a mean averages it),
        while its own stage rule is exact. As for the backward chain (_carried), only the
        stage allowances travel (_propagated_forward), not the measured spread, which is
        already the whole chain's. Without it, a ReLU right after a batch norm over a few
        near-equal values failed end to end (torch budget 22 in float64, 37 in float32)
        where the batch norm's output, the same numbers, used 0.002 of its allowance: the
        frameworks' variance algorithms differ from the reference's by more than its own
        float32 run."""
        node = self.net.node_of(tensor)
        source = self._input_of(tensor)
        if not node.entry.passes_on or tensor not in self.net.forward_names or source is None:
            return None
        d = self._propagated_forward(source, dtype)
        _, target = self.inputs(dtype)
        p64 = {k: v.astype(np.float64) for k, v in self.params(dtype).items()}
        out = self.net.node_step(node, d.astype(np.float64), p64, None, target, self.config.reduction)
        return np.asarray(out[tensor], dtype=np.float64)

    @_memo
    def _stage_allowance(self, tensor: str, dtype: str) -> tolerance.Tolerance:
        """The stage rule of `tensor` on the reference's own inputs to its layer."""
        _, target = self.inputs(dtype)
        node, x, upstream = self._stage_inputs(tensor, dtype, "reference")
        own = self._layer_step(node.name, dtype, "reference")
        short = tensor.split(".", 1)[1]
        params, r = self.params(dtype), self.config.reduction
        return model_stages.stage_tolerance(node, short, x, params, upstream, own, r, dtype, target)

    def _upstream_name(self, tensor: str) -> str | None:
        """dE/d(the output) of the layer computing backward tensor `tensor` (None: a forward
        tensor, or the loss's own gradient)."""
        node = self.net.node_of(tensor)
        if tensor in self.net.forward_names or node.layer.is_loss:
            return None
        nxt = self.net.nodes[self.net.nodes.index(node) + 1]
        return nxt.q(nxt.input_grad)

    @_memo
    def _propagated(self, tensor: str, dtype: str) -> np.ndarray:
        """The stage allowances of the backward chain down to `tensor`, each carried through
        the layers after it (_carried): how far a framework's `tensor` may be from ours by
        the rounding of each backward operation alone, element by element."""
        own = np.array(
            np.broadcast_to(
                self._stage_allowance(tensor, dtype).array, np.shape(self.reference(dtype)[tensor])
            )
        )
        carried = self._carried(tensor, dtype)
        return own if carried is None else own + carried

    def _carried(self, tensor: str, dtype: str) -> np.ndarray | None:
        """The upstream's propagated allowance carried through this layer's backward (None
        for a forward tensor and the loss's gradient).

        A backward is linear in its upstream delta, and the registry's bound of it is the same
        expression on absolute values: fed the upstream's allowance d in place of |upstream|
        it bounds what a framework's upstream, off by up to d, makes of this tensor (a
        re-indexing moves d as it moves the delta). That worst case adds the errors of the
        terms of a sum; independent errors add in quadrature, and the same bound fed the
        squares gives sum (a d)^2, whose root times lambda holds but for a 1e-6 chance
        (tolerance.quadrature). The smaller of the two is carried. Only the stage
        allowances travel (_propagated), not the measured spread, which is already the whole
        chain's. Without it a tensor that re-combines a few upstream values (dense's db at
        one image: a copy of dZ) got an allowance far below the same numbers' own
        (TensorFlow's float32 article network, one MNIST image: db at 1.08 of its allowance
        while dZ, the same number, was at 0.02)."""
        up_name = self._upstream_name(tensor)
        if up_name is None:
            return None
        _, target = self.inputs(dtype)
        node, x, _ = self._stage_inputs(tensor, dtype, "reference")
        own = self._layer_step(node.name, dtype, "reference")
        up = self._propagated(up_name, dtype)
        # In float64: the allowance is float64, and the bound's own rounding must not shrink it.
        x64, own64 = x.astype(np.float64), {k: v.astype(np.float64) for k, v in own.items()}
        p64 = {k: v.astype(np.float64) for k, v in self.params(dtype).items()}
        linear = self._through(node, tensor, x64, p64, up, own64, target)
        squares = self._through(
            node, tensor, x64**2, {k: v**2 for k, v in p64.items()}, up**2,
            {k: v**2 for k, v in own64.items()}, target,
        )  # fmt: skip
        return np.minimum(linear, tolerance.quadrature(squares, up.size))

    def _through(self, node, tensor: str, x, params, up, own, target) -> np.ndarray:
        """The registry's bound of `tensor` fed `up` in place of |upstream| (a re-indexing:
        the layer's own backward applied to `up`)."""
        short, reduction = tensor.split(".", 1)[1], self.config.reduction
        b = model_stages.bound(node, short, x, params, up, own, reduction, target)
        M = b.magnitude if b.coherent is None or b.magnitude is None else b.magnitude + b.coherent
        if M is None:
            M = self.net.node_step(node, x, params, up, target, reduction)[tensor]
        return np.asarray(M, dtype=np.float64)

    @_memo
    def kinks(self, framework: str, dtype: str) -> tuple[dict, tuple]:
        """(decide, Kinks per kinked layer) of our step against this framework's run."""
        ours, theirs = self.implementation(dtype), self.end_to_end(framework, dtype)
        decide, found = {}, []
        for node in self._kinked():
            name = self._input_name(node)
            tol = self.end_to_end_tolerance(name, dtype).array
            if node.kind == "relu":
                d, k = kink_rules.relu(ours[name], np.asarray(theirs[name]), tol, node.name)
            else:
                layer = node.layer
                d, k = kink_rules.maxpool(
                    ours[name], np.asarray(theirs[name]), tol, layer.size, layer.stride, node.name
                )
            decide[node.name] = d
            found.append(k)
        return decide, tuple(found)

    @_memo
    def following(self, framework: str, dtype: str) -> dict:
        """Our step with the framework's branches at the kinks (and only there)."""
        if self.failure(dtype) is not None:  # a layer raised: not run again, per framework
            return self.implementation(dtype)
        decide, _ = self.kinks(framework, dtype)
        if not decide:
            return self.implementation(dtype)
        return self._step(self.impl, dtype, decide)

    def kinks_reaching(self, tensor: str, framework: str, dtype: str) -> tuple:
        """The kinked layers whose branch `tensor` depends on: those at or after its layer."""
        if tensor in self.net.forward_names:
            return ()
        name = tensor.split(".", 1)[0]
        position = {n.name: i for i, n in enumerate(self.net.nodes)}
        _, found = self.kinks(framework, dtype)
        return tuple(k for k in found if position[k.layer] >= position[name])

    def end_to_end_check(self, tensor: str, framework: str, dtype: str) -> Check:
        self._ours(tensor, dtype, self.implementation(dtype))  # the layer that raised, if any
        ours = (
            self.following(framework, dtype)
            if tensor not in self.net.forward_names
            else self.implementation(dtype)
        )
        exact = self.reference("float64")[tensor]  # the reference's whole step in float64
        # a float64 check's truth: the same step in extended precision (None: none here)
        truth = exact if dtype != "float64" else (self.truth("float64") or {}).get(tensor)
        actual = self.end_to_end(framework, dtype)[tensor]
        tol = self.end_to_end_tolerance(tensor, dtype)
        waived = self.precision_waived(tensor, framework, dtype, "end_to_end")
        if waived:
            tol = tolerance.Tolerance(tol.array, f"{tol.rule}; {waived}", tol.roundings)
        return Check(
            np.asarray(actual),
            np.asarray(self._ours(tensor, dtype, ours)),
            tol,
            truth,
            truth_zero=not np.any(exact) or tensor in self.net.exact_zeros,
            precision=not waived,
            legit=self.legit_error(tensor, dtype),
        )

    def precision_waived(self, tensor: str, framework: str, dtype: str, mode: str) -> str:
        """Why the precision verdict (parity_tests/metrics.py) is not applied to this check,
        or "". TensorFlow's float32 reductions keep far fewer bits over a statistic of many
        near-equal values than its calibration's legitimate orders of summation (the
        channel means of conv(8,3,pad=1) over 200 MNIST images: 5.7e-4 relative, about 11
        bits; a group norm of 784 sigmoid outputs: 12 bits; torch accumulates them in
        float64): a normalisation whose statistic spans at least LONG_STATISTIC values,
        and, end to end, every tensor computed after it. In float64 neither framework has a
        wider accumulator: both sum a statistic in order (38 to 46 bits of 53 at the layer
        of the normalisation sweeps' networks), so the layer's own stage check is waived
        for both; end to end the reference's own error (legit_error: its float32 spread
        sums statistics in order too) covers what follows. The allowance still judges every
        such check."""
        if dtype == "float64" and mode == "stage":
            node = self.net.node_of(tensor)
            m = statistic_size(node, self.inputs(dtype)[0].shape[0])
            if m < LONG_STATISTIC:
                return ""
            return (
                f"no precision verdict: {node.name}'s statistic over {m} values (>= "
                f"{LONG_STATISTIC}), summed in order in float64"
            )
        if framework != "tensorflow" or dtype != "float32":
            return ""
        n_images = self.inputs(dtype)[0].shape[0]
        long = [
            (i, m)
            for i, n in enumerate(self.net.nodes)
            if (m := statistic_size(n, n_images)) >= LONG_STATISTIC
        ]
        if not long:
            return ""
        (first, m), i = long[0], self.net.nodes.index(self.net.node_of(tensor))
        forward = tensor in self.net.forward_names
        if mode == "stage":
            here = [m for j, m in long if j == i]
            if not here:
                return ""
            first, m = i, here[0]
        elif forward and i < first:
            return ""
        node = self.net.nodes[first]
        return (
            f"no precision verdict: TensorFlow float32 after {node.name}'s statistic over "
            f"{m} values (>= {LONG_STATISTIC})"
        )

    def budgets(self, frameworks, dtypes, label: str = "", allow_vacuous: bool = False):
        """(budget used, where, failure message or None) for every check of test_model.py,
        compared directly (as Harness.budgets): the sweeps over seeds and generated
        networks. A crash is raised, not caught. allow_vacuous: a comparison of two zeros
        (a drawn network whose ReLUs are all off carries nothing) is no failure."""
        from parity_tests.metrics import compare_check

        makers = {"stage": self.stage_check, "end_to_end": self.end_to_end_check}
        for framework in frameworks:
            for dtype in dtypes:
                for mode, make in makers.items():
                    for tensor in self.net.order:
                        where = f"{label} {tensor} {framework} {dtype} {mode}".strip()
                        c = make(tensor, framework, dtype)
                        r = compare_check(c, against=framework)
                        budget, failure = float(r["budget_used"]), None
                        if not r["passed"] and not (allow_vacuous and r["status"] == "vacuous"):
                            found = self.kinks_reaching(tensor, framework, dtype)
                            kinks = "; ".join(k.text() for k in found) or "none"
                            failure = (
                                f"{where}: budget {budget:.3g}, {r['status']} {r['note']} "
                                f"(rule {c.tolerance.rule}); kinks: {kinks}"
                            )
                        yield budget, where, failure


def statistic_size(node, n_images: int) -> int:
    """The values one statistic of a normalisation layer spans (0 for other kinds): batch
    norm N x H x W (N after a dense layer), layer norm the image's values, group norm
    C / G x H x W."""
    shape = node.in_shape
    if node.kind == "batchnorm":
        return n_images * math.prod(shape[1:])
    if node.kind == "layernorm":
        return math.prod(shape)
    if node.kind == "groupnorm":
        return shape[0] // node.layer.groups * math.prod(shape[1:])
    return 0


def _against_truth(exact, expected, tol, dtype: str, context: dict) -> Check:
    """The stage check whose other side is the truth rounded to `dtype`: rounding it there
    errs by u |truth|, which the allowance gains."""
    u = tolerance.unit_roundoff(dtype)
    rule = f"{tol.rule} + u|truth| (rounded)"
    tol = tolerance.Tolerance(tol.array + u * np.abs(exact), rule, tol.roundings)
    truth = exact if truth_dtype(dtype) else None
    return Check(exact.astype(dtype), expected, tol, truth, context)


class _Made(Mapping):
    """Our step's tensors; one it never made raises the failure of the layer that stopped
    it (ModelHarness._ours), not a bare KeyError."""

    def __init__(self, harness: ModelHarness, dtype: str, tensors: dict):
        self.harness, self.dtype, self.tensors = harness, dtype, tensors

    def __getitem__(self, name):
        return self.harness._ours(name, self.dtype, self.tensors)

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self):
        return len(self.tensors)
