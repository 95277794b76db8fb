"""K training steps of a spec network: the reference in each framework's convention against
that framework's own training loop, with the drift bound (docs/optimisers.md).

Batch schedule: full batch. Every step k = 1..K sees the run's N images (--parity-n-images,
in the data's order), so step k's difference is the optimiser's and the chain's, never a
different sample.

Drift bound at step k for a parameter or a state X (tolerance.end_to_end_from_spread):

    stage_k = sum_{j<=k} 2 gamma(k_j) M_j     the optimiser's stage rule (optim_stages.py)
                                              at each step j on the reference's own inputs,
                                              carried forward: an error in p or the state
                                              enters the next step's result with a factor
                                              at most 1 (every rule is p + ..., v mu + ...)
    spread_k = max_{j<=k} max|ref32_j - ref64_j|   the reference's own float32 error along
                                              its trajectory: the gradients' rounding, the
                                              updates' and how training carries them on
    carried_k = max over the sign s of |X_k(g_j + s dg_j) - X_k(g_j)|, the optimiser alone
                                              run in float64 on the reference's gradients
                                              g_j, each moved by its own end-to-end
                                              allowance dg_j (the one-step rule for that
                                              gradient at step j: its stage rule on our
                                              inputs to its layer + E2E_FACTOR (u/u32) x the
                                              ref32-vs-ref64 spread): a framework's gradient
                                              may differ by that much, and the optimiser
                                              carries it on (velocity, m, v accumulate it)
    allowance_k = stage_k + E2E_FACTOR (u/u32) max(spread_k, max(stage_k) u32/u) + carried_k

Chaos. Training may amplify rounding faster than any bound on the arithmetic can follow
(an exploding loss, ReLUs and max-pool windows flipping): `chaos` measures it, as the
largest difference at step k between the float64 reference run and CHAOS_PROBES float64
runs of the same network whose every gradient, at every step, is moved by its one-step
end-to-end allowance dg_j in the checked dtype (all up; all down; two with random signs,
drawn once per element from default_rng((seed, probe))): a framework may legitimately
differ by that much at each step, and here the network, not the optimiser alone, carries
it on: through the weights into the next forward pass, across the kinks it moves.
(Probes from weights 1 ulp apart, tried first, grow far more slowly than a framework's
float32 kernels drive LeNet and cried wolf at 4 of 12 seeds; docs/optimisers.md.) The
allowance adds E2E_FACTOR times it (the rule text names the term), so a chaotic stretch is
no false alarm; each record's note then says whether the drift bound alone held (`agrees`)
or the difference is within chaos (`chaos`); a difference beyond both is a mistake. A
mistake in an optimiser shows at its first step, long before chaos grows.
"""

from __future__ import annotations

import numpy as np

from parity_tests import model_stages, optim_stages, tolerance
from parity_tests.harness import _memo
from reference import optim_registry as registry
from reference.network import Network, images_nchw, update_pairs

CHAOS_PROBES = 4

FRAMEWORK_MIRRORS = {
    "torch": "parity_tests.mirrors.optim_torch",
    "tensorflow": "parity_tests.mirrors.optim_tf",
}


class Trajectory:
    """One network, run config, data and optimiser (name, h); K steps, every result cached."""

    def __init__(
        self, net: Network, seed: int, reduction: str, data, name: str, h: dict, steps: int, impl=None
    ):
        """impl: the optimiser under test, a registry Mistake (reference/optim_mistakes.py), a
        user's rule (parity_tests/own_optim.py UserOptim) or None (the reference itself). A
        Mistake runs in the convention of the framework it is compared with (its torch or
        its Keras form); a user's rule, CS231n's, in torch's."""
        self.net, self.seed, self.reduction, self.data = net, seed, reduction, data
        self.name, self.h, self.steps, self.impl = name, dict(h), steps, impl
        self.entry = registry.optimiser(name)
        self.grad_of = dict(update_pairs(net))
        # (convention, dtype, probe) -> (step, why): a run of the reference that left the
        # floating-point range at that step (an exploding loss), so stopped there
        self.stopped: dict = {}

    def tensors(self) -> tuple[str, ...]:
        """Per step: every parameter's new value, then each of its states."""
        out = []
        for p in self.net.param_names:
            out.append(f"{p}_new")
            out.extend(f"{p}.{s}" for s in self.entry.state)
        return tuple(out)

    def batch(self, dtype: str):
        X = images_nchw(self.data.X).astype(dtype)
        return X, self.net.targets(self.data.labels, dtype)

    def _start(self, dtype: str) -> dict:
        return {k: v.astype(dtype) for k, v in self.net.init_params(self.seed, "float64").items()}

    @_memo
    def reference(self, convention: str, dtype: str, probe: tuple = ()) -> tuple:
        """Per step k (index k - 1): {"E", "<param>_new", "<param>.<state>"} and, for the
        bound, the inputs the optimiser saw: {"<param>": (p, g, state), "<param>.grad_stage"}.
        probe (dtype, n): a chaos probe (module docstring), every gradient moved by its
        one-step allowance in that dtype, all up (n = 1), all down (2) or with random signs."""
        return self._run(convention, dtype, probe, None)

    @_memo
    def implementation(self, convention: str, dtype: str) -> tuple:
        """The optimiser under test's run (the reference's when impl is None)."""
        if self.impl is None:
            return self.reference(convention, dtype)
        return self._run(self.impl_convention(convention), dtype, (), self.impl)

    def impl_convention(self, convention: str) -> str:
        """The convention the optimiser under test runs in when compared with a framework of
        `convention`: a catalogue Mistake has both forms, a user's rule is torch's."""
        return convention if isinstance(self.impl, registry.Mistake) else "torch"

    def _update(self, convention, mistake, p, g, state):
        if mistake is None or mistake.step is None:
            return registry.step(self.name, convention, p, g, state, self.h)
        if isinstance(mistake, registry.Mistake):
            step = mistake.step_in(convention)
            if step is None:
                raise ValueError(f"mistake {mistake.id!r} has no {convention} form")
            return step(p, g, dict(state), self.h)
        return mistake.step(p, g, dict(state), self.h)

    def _run(self, convention: str, dtype: str, probe: tuple, mistake) -> tuple:
        params = self._start(dtype)
        states = {p: self.entry.init_state(v) for p, v in params.items()}
        scope = getattr(mistake, "scope", "parameter")
        shared: dict = {}
        X, target = self.batch(dtype)
        rows, seen = [], []
        signs = self._probe_signs(params, probe)
        for j in range(1, self.steps + 1):
            if not all(np.isfinite(v).all() for v in params.values()):
                # the optimiser under test made a parameter non-finite, or the training
                # diverged: nothing runs on
                if mistake is None:
                    self.stopped.setdefault((convention, dtype, probe), (j, "a parameter is not finite"))
                break
            if probe and j > self._allowance_steps(probe[0]):
                break  # the allowances the probe moves its gradients by end there
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    fwd = self.net.forward(params, X, target, self.reduction)
            except ValueError as exc:  # finite parameters whose forward pass overflows
                if mistake is None:
                    self.stopped.setdefault((convention, dtype, probe), (j, str(exc)))
                break
            grads = self.net.backward(params, X, fwd, target, self.reduction)
            row, inputs = {"E": float(fwd[self.net.nodes[-1].q("E")])}, {}
            for p in self.net.param_names:
                g = grads[self.grad_of[p]]
                if probe:
                    g = g + signs[p] * self.grad_allowance(probe[0], p, j)
                if scope == "restart":  # the state not carried: every step from zeros
                    states[p] = self.entry.init_state(params[p])
                elif scope == "shared":  # one state for all: another parameter's, if it fits
                    fits = all(np.shape(v) in ((), params[p].shape) for v in shared.values())
                    states[p] = dict(shared) if shared and fits else self.entry.init_state(params[p])
                inputs[p] = (params[p], g, states[p])
                if mistake is None and not probe:
                    inputs[f"{p}.grad_stage"] = self._grad_stage(p, params, X, fwd, grads, target, dtype)
                params[p], states[p] = self._update(convention, mistake, params[p], g, states[p])
                shared = dict(states[p])
                row[f"{p}_new"] = params[p]
                row.update({f"{p}.{s}": v for s, v in states[p].items()})
            rows.append(row)
            seen.append(inputs)
        return tuple(rows), tuple(seen)

    def _allowance_steps(self, dtype: str) -> int:
        """The steps for which grad_allowance(dtype, ., j) exists: those of the runs it reads."""
        runs = (("torch", "float32"), ("torch", "float64"), ("torch", dtype))
        return min(len(self.reference(c, d)[0]) for c, d in runs)

    def require_steps(self, framework: str, dtype: str, k: int, probes: bool = False) -> None:
        """Raise TrainingDiverged where a run the check at step k reads stopped before k
        (probes: the chaos probes', read only where the drift bound does not hold)."""
        convention = optim_stages.CONVENTION_OF[framework]
        if probes:
            runs = [(convention, "float64", (dtype, n)) for n in range(1, CHAOS_PROBES + 1)]
        else:
            runs = [(convention, d, ()) for d in (dtype, "float32", "float64")]
            runs += [("torch", d, ()) for d in (dtype, "float32", "float64")]
        for c, d, probe in runs:
            rows, _ = self.reference(c, d, probe)
            if len(rows) >= k:
                continue
            from parity_tests.impl_call import TrainingDiverged

            step, why = self.stopped.get((c, d, probe), (len(rows) + 1, "its allowances end"))
            what = f"a chaos probe ({probe[1]})" if probe else f"the reference's {d} run"
            losses = ", ".join(f"{r['E']:.3g}" for r in rows)
            raise TrainingDiverged(
                f"the training diverges: {what} in {c}'s convention left the floating-point "
                f"range at step {step} ({why}; its loss at steps 1..{len(rows)}: {losses}), "
                f"so step {k} cannot be checked; "
                f"{registry.canonical(self.name, self.h)} is too large a step for this "
                f"network and batch: use a smaller learning rate"
            )

    def _probe_signs(self, params: dict, probe: tuple) -> dict:
        if not probe:
            return {}
        rng = np.random.default_rng((self.seed, probe[1]))
        return {
            p: np.full(v.shape, 3.0 - 2 * probe[1])
            if probe[1] <= 2
            else rng.choice([-1.0, 1.0], v.shape)
            for p, v in params.items()
        }

    def _grad_stage(self, param, params, X, fwd, grads, target, dtype) -> np.ndarray:
        """The stage allowance of `param`'s gradient at this step, on our inputs to its layer."""
        name = self.grad_of[param]
        node = self.net.node_of(name)
        x = self.net.inputs_of(node, X, fwd)
        upstream = self.net.upstream_of(node, grads)
        ours = {**fwd, **grads}
        tol = model_stages.stage_tolerance(
            node, name.split(".", 1)[1], x, params, upstream, ours, self.reduction, dtype, target
        )
        return np.broadcast_to(tol.array, np.shape(grads[name]))

    @_memo
    def grad_allowance(self, dtype: str, param: str, j: int) -> np.ndarray:
        """dg_j: the one-step end-to-end rule for `param`'s gradient at step j (the spread of
        the torch-convention runs: the gradient at step 1 does not depend on it, and later
        steps' spread is the trajectory's own)."""
        _, seen32 = self.reference("torch", "float32")
        _, seen64 = self.reference("torch", "float64")
        _, seen = self.reference("torch", dtype)
        spread = float(
            np.max(
                np.abs(seen32[j - 1][param][1].astype(np.float64) - seen64[j - 1][param][1]), initial=0.0
            )
        )
        stage = tolerance.Tolerance(np.asarray(seen[j - 1][f"{param}.grad_stage"], np.float64), "")
        return tolerance.end_to_end_from_spread(stage, spread, dtype, "").array

    @_memo
    def carried(self, convention: str, dtype: str, tensor: str, k: int) -> np.ndarray:
        """max over s = +-1 of |X_k(g + s dg) - X_k(g)|: the optimiser alone, float64, on our
        gradients in `dtype` moved by their end-to-end allowance (carried_k above)."""
        param, short = _split(tensor)
        _, seen = self.reference(convention, dtype)
        runs = {}
        for sign in (0, 1, -1):
            p, state = seen[0][param][0].astype(np.float64), None
            state = self.entry.init_state(p)
            for j in range(1, k + 1):
                g = seen[j - 1][param][1].astype(np.float64)
                g = g + sign * self.grad_allowance(dtype, param, j)
                p, state = registry.step(self.name, convention, p, g, state, self.h)
            runs[sign] = p if short == "p_new" else np.asarray(state[short], np.float64)
        return np.maximum(np.abs(runs[1] - runs[0]), np.abs(runs[-1] - runs[0]))

    @_memo
    def framework(self, framework: str, dtype: str) -> tuple:
        import importlib

        mirror = importlib.import_module(FRAMEWORK_MIRRORS[framework])
        X, target = self.batch(dtype)
        batches = [(X, target)] * self.steps
        return tuple(
            mirror.train(self.net, self._start(dtype), batches, self.reduction, self.name, self.h)
        )

    def losses(self, framework: str, dtype: str, k: int) -> dict:
        """{"against_loss", "impl_loss"}: the loss E of step k's forward pass (before its
        update) in the framework's own loop and in the optimiser under test's run in that
        framework's convention (the report's loss curves); NaN where a run stopped before
        step k (an optimiser under test that made a parameter non-finite)."""
        ours, _ = self.implementation(optim_stages.CONVENTION_OF[framework], dtype)
        theirs = self.framework(framework, dtype)
        return {
            "against_loss": float(theirs[k - 1]["E"]) if k <= len(theirs) else float("nan"),
            "impl_loss": float(ours[k - 1]["E"]) if k <= len(ours) else float("nan"),
        }

    def _value(self, rows, k: int, tensor: str) -> np.ndarray:
        return np.asarray(rows[k - 1][tensor], dtype=None if not tensor.endswith(".t") else np.float64)

    @_memo
    def stage_sum(self, convention: str, dtype: str, tensor: str, k: int) -> np.ndarray:
        """sum over j <= k of the optimiser's stage allowance at step j (the reference's own
        p, g and state at step j in `dtype`)."""
        param, short = _split(tensor)
        _, seen = self.reference(convention, dtype)
        total = 0.0
        for j in range(k):
            p, g, state = seen[j][param]
            tol = optim_stages.tolerance_of(self.name, convention, short, p, g, state, self.h, dtype)
            total = total + tol.array
        return np.asarray(total, dtype=np.float64)

    @_memo
    def spread(self, convention: str, tensor: str, k: int) -> float:
        """max over j <= k of max|ref32_j - ref64_j| at `tensor`."""
        lo, _ = self.reference(convention, "float32")
        hi, _ = self.reference(convention, "float64")
        return max(
            float(
                np.max(
                    np.abs(self._value(lo, j, tensor).astype(np.float64) - self._value(hi, j, tensor)),
                    initial=0.0,
                )
            )
            for j in range(1, k + 1)
        )

    def allowance(self, framework: str, dtype: str, tensor: str, k: int) -> tolerance.Tolerance:
        """The drift bound + E2E_FACTOR x chaos (module docstring)."""
        tol = self.drift_bound(framework, dtype, tensor, k)
        if tensor.endswith(".t"):
            return tol
        convention = optim_stages.CONVENTION_OF[framework]
        self.require_steps(framework, dtype, k, probes=True)
        c = self.chaos(convention, dtype, tensor, k)
        return tolerance.Tolerance(
            tol.array + tolerance.E2E_FACTOR * c,
            f"{tol.rule} + {tolerance.E2E_FACTOR:g}*chaos (max|ref64 - ref64(every gradient moved "
            f"by its allowance)| = {c:.3g})",
        )

    def _drift_bound(self, framework: str, dtype: str, tensor: str, k: int) -> tolerance.Tolerance:
        convention = optim_stages.CONVENTION_OF[framework]
        if tensor.endswith(".t"):
            return tolerance.exact(())
        stage_arr = self.stage_sum(convention, dtype, tensor, k)
        stage_tol = tolerance.Tolerance(
            stage_arr, f"sum over steps 1..{k} of the optimiser's stage rule"
        )
        what = f"max over steps 1..{k} of max|ref32-ref64|"
        tol = tolerance.end_to_end_from_spread(
            stage_tol, self.spread(convention, tensor, k), dtype, what
        )
        # The gradients' allowances carried by the optimiser, added after the floor: they
        # already hold their own (the one-step rule's), not to be raised to the tensor's max.
        return tolerance.Tolerance(
            tol.array + self.carried(convention, dtype, tensor, k),
            f"{tol.rule} + the gradients' end-to-end allowances carried by the optimiser",
        )

    @_memo
    def chaos(self, convention: str, dtype: str, tensor: str, k: int) -> float:
        """max over the probes of max|ref(g) - ref(g moved by its allowance in dtype)| at
        step k, both float64 runs in `convention` (module docstring)."""
        a, _ = self.reference(convention, "float64")
        worst = 0.0
        for probe in range(1, CHAOS_PROBES + 1):
            b, _ = self.reference(convention, "float64", (dtype, probe))
            d = np.abs(self._value(a, k, tensor) - self._value(b, k, tensor))
            worst = max(worst, float(np.max(d, initial=0.0)))
        return worst

    @_memo
    def drift_bound(self, framework: str, dtype: str, tensor: str, k: int) -> tolerance.Tolerance:
        """The allowance without the chaos term."""
        return self._drift_bound(framework, dtype, tensor, k)

    @_memo
    def _sides(self, framework: str, dtype: str, tensor: str, k: int):
        """(actual, expected, truth, truth_zero) of `tensor` at step k."""
        convention = optim_stages.CONVENTION_OF[framework]
        self.require_steps(framework, dtype, k)
        ours, _ = self.implementation(convention, dtype)
        exact, _ = self.reference(convention, "float64")
        if k > len(ours):
            from parity_tests.impl_call import ImplementationError

            raise ImplementationError(
                f"the optimiser under test made a parameter non-finite at step {len(ours)}: "
                f"step {k} could not run"
            )
        expected = self._value(ours, k, tensor)
        rule = getattr(self.impl, "rule", None)
        if rule is not None and rule.form == "keras" and tensor.endswith(".velocity"):
            # a CS231n velocity (parameter units, O5) as torch's (gradient units, O4)
            expected = (-expected / self.h["lr"]).astype(expected.dtype)
        actual = np.asarray(
            self._value(self.framework(framework, dtype), k, tensor), dtype=expected.dtype
        )
        # The float64 truth (and with it the effective-precision verdict, docs/tolerance.md)
        # at step 1 only: later, both float32 runs have fed their own rounding back through
        # the network, and a side's typical error measures the trajectory's sensitivity,
        # not the precision of its operands.
        first = k == 1 and dtype != "float64" and not tensor.endswith(".t")
        truth = self._value(exact, k, tensor) if first else None
        return actual, expected, truth, not np.any(self._value(exact, k, tensor))

    @_memo
    def check(self, framework: str, dtype: str, tensor: str, k: int):
        """The comparison at step k: under the drift bound where the framework is within it
        (the chaos term then changes no verdict, and would make a tight check look vacuous),
        else under the drift bound + the chaos term."""
        from parity_tests.harness import Check

        actual, expected, truth, truth_zero = self._sides(framework, dtype, tensor, k)
        kind, _ = self.verdict(framework, dtype, tensor, k)
        tol = (
            self.drift_bound(framework, dtype, tensor, k)
            if kind == "agrees"
            else self.allowance(framework, dtype, tensor, k)
        )
        return Check(actual, expected, tol, truth, truth_zero=truth_zero)

    @_memo
    def verdict(self, framework: str, dtype: str, tensor: str, k: int) -> tuple[str, float]:
        """("agrees", budget): within the drift bound alone; ("chaos", budget of the drift
        bound): beyond it, within the chaos term; ("mistake", budget): beyond both."""
        from parity_tests.metrics import compare_arrays

        actual, expected, _, _ = self._sides(framework, dtype, tensor, k)
        drift = self.drift_bound(framework, dtype, tensor, k).array
        alone = compare_arrays(actual, expected, drift, against=framework, brief=True)
        if alone["budget_used"] <= 1:
            return "agrees", float(alone["budget_used"])
        full_tol = self.allowance(framework, dtype, tensor, k).array
        full = compare_arrays(actual, expected, full_tol, against=framework, brief=True)
        return ("chaos" if full["budget_used"] <= 1 else "mistake"), float(alone["budget_used"])

    @_memo
    def status(self, framework: str, dtype: str, tensor: str, k: int) -> str:
        """compare_arrays' status of the check at step k (pass, fail, vacuous)."""
        from parity_tests.metrics import compare_arrays

        c = self.check(framework, dtype, tensor, k)
        tol = c.tolerance.array
        r = compare_arrays(c.actual, c.expected, tol, truth_zero=c.truth_zero, brief=True)
        return r["status"]

    def vacuous_throughout(self, framework: str, dtype: str, tensor: str) -> bool:
        """Whether `tensor` is vacuous at every step: only then does its trajectory prove
        nothing. A state crossing zero (a velocity, a one-element bias's m) is within its
        allowance of zero at that step alone; its other steps are checks that can fail."""
        steps = range(1, self.steps + 1)
        return all(self.status(framework, dtype, tensor, k) == "vacuous" for k in steps)

    @_memo
    def agrees_up_to(self, framework: str, dtype: str) -> int:
        """The last step at which every tensor agrees within the drift bound alone."""
        for k in range(1, self.steps + 1):
            if any(self.verdict(framework, dtype, t, k)[0] != "agrees" for t in self.tensors()):
                return k - 1
        return self.steps


def _split(tensor: str) -> tuple[str, str]:
    """conv1.F_new -> (conv1.F, p_new); conv1.F.m -> (conv1.F, m)."""
    if tensor.endswith("_new"):
        return tensor[: -len("_new")], "p_new"
    param, _, short = tensor.rpartition(".")
    return param, short


def first_departure(tr: Trajectory, framework: str, dtype: str):
    """(step, [tensors failing there]) of the first step where any tensor leaves its
    allowance, or (None, [])."""
    from parity_tests.metrics import compare_arrays

    for k in range(1, tr.steps + 1):
        bad = []
        for tensor in tr.tensors():
            c = tr.check(framework, dtype, tensor, k)
            r = compare_arrays(c.actual, c.expected, c.tolerance.array, against=framework, brief=True)
            if not r["passed"] and r["status"] != "vacuous":
                bad.append(tensor)
        if bad:
            return k, bad
    return None, []


def name_mistake(tr: Trajectory, dtype: str, k: int, framework: str = "torch") -> str:
    """The explainer for an optimiser under test: the catalogue mistake (of the optimiser's
    registry entry) whose run, in the convention the implementation ran in against
    `framework`, gives the implementation's every tensor up to step k, to the rounding of a
    replay (1e-12 relative in float64, 1e-5 in float32); "" when none does."""
    convention = tr.impl_convention(optim_stages.CONVENTION_OF[framework])
    ours, _ = tr.implementation(optim_stages.CONVENTION_OF[framework], dtype)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for m in tr.entry.mistakes:
        other = Trajectory(tr.net, tr.seed, tr.reduction, tr.data, tr.name, tr.h, k, impl=m)
        theirs, _ = other.implementation(convention, dtype)
        same = all(
            np.allclose(
                np.asarray(ours[j][t], np.float64), np.asarray(theirs[j][t], np.float64),
                rtol=rtol, atol=0, equal_nan=True,
            )
            for j in range(k) for t in tr.tensors()
        )  # fmt: skip
        if same:
            return m.id
    return ""


SWEEP_FRAMEWORKS = ("torch", "tensorflow")
SWEEP_DTYPES = ("float64", "float32")


# The sweep's hyper-parameters: each optimiser's defaults, except sgd on LeNet. At the
# suite's 2^-4 LeNet's loss, summed over 200 images, grows over tenfold within ten steps at
# 15 of 20 seeds (up to 1e45; seed 11 overflows in float32 at step 9) and falls at none: a
# run that checks chaos, not training. At 2^-10, the other optimisers' (ADAPTIVE_LR), it
# trains.
SWEEP_HYPER = {("lenet", "sgd"): {"lr": registry.ADAPTIVE_LR}}


def sweep(model, name, seeds, steps, data):
    """(comparisons, failures [(seed, fw, dtype, k, tensor, status, budget)], worst budget,
    worst drift-bound-alone budget, sorted set of agree-up-to steps). A step that cannot
    be checked (TrainingDiverged) is a failure with status "diverged"."""
    from parity_tests.impl_call import TrainingDiverged
    from parity_tests.metrics import compare_check

    net = Network(model)
    h = registry.hyper(name, **SWEEP_HYPER.get((model, name), {}))
    n, fails, worst, worst_alone, agreed = 0, [], 0.0, 0.0, set()
    for seed in seeds:
        tr = Trajectory(net, seed, "sum", data, name, h, steps)
        for fw in SWEEP_FRAMEWORKS:
            for dtype in SWEEP_DTYPES:
                for k in range(1, steps + 1):
                    for tensor in tr.tensors():
                        n += 1
                        try:
                            c = tr.check(fw, dtype, tensor, k)
                        except TrainingDiverged:
                            fails.append((seed, fw, dtype, k, tensor, "diverged", float("nan")))
                            continue
                        r = compare_check(c, against=fw, brief=True)
                        worst = max(worst, float(r["budget_used"]))
                        worst_alone = max(worst_alone, tr.verdict(fw, dtype, tensor, k)[1])
                        alone = r["status"] == "vacuous"  # at this step only: no failure
                        if alone and not tr.vacuous_throughout(fw, dtype, tensor):
                            continue
                        if not r["passed"]:
                            fails.append((seed, fw, dtype, k, tensor, r["status"], r["budget_used"]))
                try:
                    agreed.add(tr.agrees_up_to(fw, dtype))
                except TrainingDiverged:
                    pass
    return n, fails, worst, worst_alone, sorted(agreed)
