"""A user's own optimiser, CS231n's optim.py convention, checked against the reference
(--parity-optim-impl RULE=path/or.module:function; docs/optimisers.md, "Your own optim.py").
The module runs in a child process (parity_tests/user_process.py), as --parity-layer's do.

    next_w, config = update(w, dw, config)

`config` holds the hyper-parameters and the state, under CS231n's names:

    sgd           learning_rate
    sgd_momentum  learning_rate, momentum;         state velocity
    rmsprop       learning_rate, decay_rate, epsilon;   state cache
    adam          learning_rate, beta1, beta2, epsilon; state m, v, t

The reference it is held to is the registry's rule in CS231n's form, hyper-parameters exact
(float64): sgd O1; sgd_momentum O5 (v' = mu v - lr g; w' = w + v', the velocity in parameter
units); rmsprop O8 (epsilon outside the root); adam O10 (t incremented first, epsilon after
the bias correction). Each step is checked stage-isolated: the reference is fed the user's
own w, dw and state at that step, and p' and every state are compared under the optimiser
stage rule (parity_tests/optim_stages.py).

Against Keras (`against_keras`, below): the rule and keras.optimizers fed the same inputs
differ by exactly Keras' named convention, no more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from parity_tests import optim_stages, user_process
from parity_tests.harness import Check
from parity_tests.own_layers import _is_path
from reference import optim_registry as registry
from reference.optim import Convention

OPTION = "--parity-optim-impl"


@dataclass(frozen=True)
class Rule:
    """One CS231n update rule: the registry entry it is, the form of its equations, its
    config's hyper-parameter names (CS231n's -> ours) and state names (CS231n's -> ours)."""

    name: str
    optimiser: str
    form: str  # "torch" or "keras": whose equations CS231n's are
    hyper: Mapping[str, str]
    state: Mapping[str, str]


RULES = {
    "sgd": Rule("sgd", "sgd", "torch", {"learning_rate": "lr"}, {}),
    "sgd_momentum": Rule(
        "sgd_momentum", "momentum", "keras",
        {"learning_rate": "lr", "momentum": "momentum"}, {"velocity": "velocity"},
    ),
    "rmsprop": Rule(
        "rmsprop", "rmsprop", "torch",
        {"learning_rate": "lr", "decay_rate": "rho", "epsilon": "eps"}, {"cache": "cache"},
    ),
    "adam": Rule(
        "adam", "adam", "torch",
        {"learning_rate": "lr", "beta1": "beta1", "beta2": "beta2", "epsilon": "eps"},
        {"m": "m", "v": "v", "t": "t"},
    ),
}  # fmt: skip


@dataclass(frozen=True)
class UserOptim:
    rule: Rule
    label: str  # as given: examples/optim/optim.py:adam
    fn: Callable

    def step(self, p, g, state: Mapping, h: Mapping):
        """One update by the user's function, in the registry's calling form."""
        config = {cs: h[ours] for cs, ours in self.rule.hyper.items()}
        # The state always passed in, zeros (t = 0) before the first step: what CS231n's
        # config.setdefault(...) would create, so a rule that creates its own sees the same.
        config.update({cs: _copy(state[ours]) for cs, ours in self.rule.state.items()})
        result = self.fn(np.array(p, copy=True), np.array(g, copy=True), config)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"{self.label} must return (next_w, config), got {type(result).__name__}")
        next_w, config = result
        new_state = {}
        for cs, ours in self.rule.state.items():
            if cs not in config:
                raise KeyError(f"{self.label} returned a config without {cs!r}")
            new_state[ours] = config[cs] if ours == "t" else np.asarray(config[cs], dtype=p.dtype)
        return np.asarray(next_w, dtype=p.dtype), new_state


def _copy(v):
    return np.array(v, copy=True) if isinstance(v, np.ndarray) else v


def _usage(value, expected: str) -> pytest.UsageError:
    return pytest.UsageError(f"{OPTION} {value!r}: expected {expected}")


def parse(value: str) -> UserOptim:
    """RULE=module:function -> UserOptim; one pytest.UsageError naming the option otherwise."""
    rule, eq, target = value.partition("=")
    rule, target = rule.strip(), target.strip()
    if not eq or rule not in RULES:
        raise _usage(value, f"RULE=module:function, RULE one of {', '.join(RULES)}")
    module, colon, name = target.rpartition(":")
    if not colon or not module or not name.isidentifier():
        raise _usage(value, f"{rule}=module:function (a dotted module or a .py path, ':', a name)")
    source, is_path = module, False
    if _is_path(module):
        path = Path(module).expanduser()
        if not path.is_file():
            raise _usage(value, f"{module!r} to be a .py file (no such file)")
        source, is_path = str(path.resolve()), True
    elif not all(part.isidentifier() for part in module.split(".")):
        raise _usage(value, f"{module!r} to be a dotted module name or a path to a .py file")
    # In a child process, as --parity-layer functions (parity_tests/user_process.py): what
    # the module does at import or in a call cannot reach the suite's memory.
    try:
        process = user_process.process_for(source, is_path, user_process.DEFAULT_TIMEOUT_S, OPTION)
        process.load()
        what, _ = process.lookup(name)
    except user_process.LoadError as exc:
        raise _usage(value, f"an importable file or module ({exc})") from None
    if what != "function":
        raise _usage(value, f"{module} to define a function {name}(w, dw, config)")
    found = user_process.RemoteFunction(process, name, f"{module}:{name}")
    return UserOptim(RULES[rule], f"{module}:{name}", found)


def reference_step(rule: Rule):
    """The registry's step in CS231n's form, hyper-parameters exact."""
    return registry.form_step(rule.optimiser, Convention(rule.form, "CS231n", cast32=False))


def checks(user: UserOptim, p, g, state: Mapping, h: Mapping) -> dict:
    """{tensor: Check} of one step: the user's p' and state against the reference's, both fed
    the same p, g and state (float64 truth: none needed, the user's runs in its own dtype)."""
    rule = user.rule
    theirs_p, theirs_s = user.step(p, g, dict(state), h)
    ours_p, ours_s = reference_step(rule)(p, g, dict(state), h)
    got = {"p_new": (ours_p, theirs_p), **{k: (ours_s[k], theirs_s[k]) for k in ours_s}}
    out = {}
    for tensor, (ours, theirs) in got.items():
        tol = optim_stages.tolerance_of(
            rule.optimiser, rule.form, tensor, p, g, state, h, np.asarray(p).dtype
        )
        as_type = np.float64 if tensor == "t" else None
        out[tensor] = Check(
            np.asarray(ours, dtype=as_type), np.asarray(theirs, dtype=as_type), tol, None
        )
    return out


def run_steps(user: UserOptim, p, grads, h):
    """The user's update over `grads`, each step checked stage-isolated: the first failing
    (step, tensor, record) or None."""
    from parity_tests.metrics import compare_arrays

    state = registry.optimiser(user.rule.optimiser).init_state(p)
    for k, g in enumerate(grads, start=1):
        for tensor, c in checks(user, p, g, state, h).items():
            r = compare_arrays(c.actual, c.expected, c.tolerance.array, against="reference", brief=True)
            if not r["passed"] and r["status"] != "vacuous":
                return k, tensor, r
        p, state = user.step(p, g, dict(state), h)
    return None


def name_mistake(user: UserOptim, p, grads, h) -> str:
    """The catalogue mistake (the optimiser's registry entry) that reproduces the user's
    every output over `grads` (to 1e-12 relative), or ""."""
    entry = registry.optimiser(user.rule.optimiser)
    for m in entry.mistakes:
        if m.step is None:
            continue
        a_p, b_p = p, p
        a_s, b_s = entry.init_state(p), entry.init_state(p)
        same = True
        for g in grads:
            a_p, a_s = user.step(a_p, g, dict(a_s), h)
            with np.errstate(all="ignore"):
                b_p, b_s = m.step(b_p, g, dict(b_s), h)
            if not np.allclose(a_p, b_p, rtol=1e-12, atol=0, equal_nan=True):
                same = False
                break
        if same:
            return m.id
    return ""


# --- the hypothesis search ------------------------------------------------------------------
# Ranges: a parameter of 1..3 axes of 1..5; each step's gradient uniform in [-1, 1] times
# 10^e, e in [-9, 0] (where epsilon matters and where it does not); 1..5 steps; the
# hyper-parameters over the ranges people use.
HYPER_RANGES = {
    "lr": (1e-4, 1e-1),
    "momentum": (0.0, 0.99),
    "rho": (0.5, 0.999),
    "beta1": (0.5, 0.99),
    "beta2": (0.9, 0.9999),
}
EPS_EXPONENTS = (-8.0, -3.0)


@dataclass(frozen=True)
class Example:
    """One drawn case: shape, hyper-parameters, per-step gradient exponents, the seed."""

    shape: tuple
    h: Mapping
    exponents: tuple
    seed: int

    def arrays(self):
        rng = np.random.default_rng(self.seed)
        p = rng.uniform(-1, 1, self.shape)
        grads = [rng.uniform(-1, 1, self.shape) * 10.0**e for e in self.exponents]
        return p, grads

    def __str__(self) -> str:
        h = ", ".join(f"{k}={v:.3g}" for k, v in self.h.items() if k != "weight_decay")
        e = ", ".join(f"{x:.2g}" for x in self.exponents)
        return f"shape {self.shape}, {h}, gradient magnitudes 10^({e}), seed {self.seed}"


def examples(rule: Rule):
    """The hypothesis strategy of one rule's cases."""
    from hypothesis import strategies as st

    names = [ours for ours in rule.hyper.values()]

    def hyper_of(draw_values):
        h = dict(registry.optimiser(rule.optimiser).hyper)
        h.update(draw_values)
        return h

    fields = {}
    for name in names:
        if name == "eps":
            fields[name] = st.floats(*EPS_EXPONENTS).map(lambda e: 10.0**e)
        else:
            fields[name] = st.floats(*HYPER_RANGES[name])
    return st.builds(
        Example,
        shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
        h=st.fixed_dictionaries(fields).map(hyper_of),
        exponents=st.lists(st.floats(-9.0, 0.0), min_size=1, max_size=5).map(tuple),
        seed=st.integers(0, 2**16),
    )


def search(user: UserOptim, max_examples: int = 200):
    """None if no drawn case fails; else (the minimal failing Example, its first failing
    (step, tensor, record), the explainer's name for the mistake or "")."""
    from hypothesis import HealthCheck, find, settings
    from hypothesis.errors import NoSuchExample

    def fails(ex: Example) -> bool:
        p, grads = ex.arrays()
        try:
            return run_steps(user, p, grads, ex.h) is not None
        except Exception:  # noqa: BLE001  (a user's function raising on a case is a failure)
            return True

    try:
        ex = find(
            examples(user.rule),
            fails,
            settings=settings(
                max_examples=max_examples, deadline=None, database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )  # fmt: skip
    except NoSuchExample:
        return None
    p, grads = ex.arrays()
    try:
        first = run_steps(user, p, grads, ex.h)
    except Exception as exc:  # noqa: BLE001
        first = (None, "", {"error": f"{type(exc).__name__}: {exc}"})
    return ex, first, name_mistake(user, p, grads, ex.h)


# --- against Keras' optimiser (docs/optimisers.md, "Against Keras") --------------------------
# CS231n's rules have Keras counterparts, keras.optimizers.SGD / RMSprop / Adam. Where
# Keras' convention is CS231n's (plain SGD and momentum at hyper-parameters float32 holds)
# the user's rule is compared with Keras' optimiser directly; where Keras differs by a
# named convention (the epsilon's place in RMSprop and Adam; lr, momentum and Adam's betas
# held in float32), the comparison holds that the user's rule and Keras' optimiser differ
# by exactly that convention:
#
#     (U - K) - (R_cs - R_keras)    within    tol_cs + tol_keras
#
# U the user's output and K Keras' for the same w, dw and state (one step, stage-isolated);
# R_cs the reference in CS231n's form with exact hyper-parameters and R_keras its Keras
# variant (O9, O11, float32 hyper-parameters), both in float64 on the same inputs; tol_cs
# and tol_keras the optimiser stage rule of each form. |U - R_cs| <= tol_cs and
# |K - R_keras| <= tol_keras give the bound (triangle inequality); a mistake in the user's
# rule moves U and nothing else. The named difference D = R_keras - R_cs is split, as
# benchmarks/optim_conventions.py does, into its form (Keras' equations, exact
# hyper-parameters, minus CS231n's) and its float32 casting (the rest), and each part's size
# is stated in allowances: above 1 it is visible, and not absorbed by any tolerance.

# What separates Keras' optimiser from CS231n's rule: (its equations' form, its casting).
KERAS_DIFFERENCE = {
    "sgd": ("none (O1 both)", "the learning rate a float32 variable"),
    "sgd_momentum": ("none (O5 both)", "lr and momentum through float32"),
    "rmsprop": ("epsilon inside the root (O9) vs outside (O8)", "lr a float32 variable"),
    "adam": (
        "epsilon added before the bias correction (O11) vs after (O10)",
        "lr and the betas of b^t through float32",
    ),
}

# Hyper-parameter sets of the Keras comparison, in CS231n's names: its own defaults (which
# float32 does not hold: the casting shows) and dyadic values float32 holds exactly (the
# form alone; for sgd and sgd_momentum the conventions coincide and it is a direct
# comparison).
KERAS_HYPER = {
    "cs231n": {"learning_rate": 1e-2, "momentum": 0.9, "decay_rate": 0.99, "beta1": 0.9,
               "beta2": 0.999, "epsilon": 1e-8},
    "float32-exact": {"learning_rate": 2.0**-7, "momentum": 0.875, "decay_rate": 0.875,
                      "beta1": 0.75, "beta2": 0.9375, "epsilon": 2.0**-20},
}  # fmt: skip
KERAS_STEPS = 3
KERAS_SHAPE = (3, 7)


def keras_hyper(rule: Rule, which: str) -> dict:
    """The registry's hyper-parameters of `rule` at KERAS_HYPER[which] (Adam's learning rate
    CS231n's 1e-3, or 2^-10 where exact)."""
    values = dict(KERAS_HYPER[which])
    if rule.name == "adam":
        values["learning_rate"] = 1e-3 if which == "cs231n" else 2.0**-10
    given = {ours: values[cs] for cs, ours in rule.hyper.items()}
    return registry.hyper(rule.optimiser, **given)


def keras_inputs(dtype: str, seed: int = 0):
    """(p, [g_1..g_K]): p uniform in [-1, 1]; each gradient uniform in [-1, 1] times 10^e, e
    from -9 to 0 across the last axis (where epsilon matters and where it does not)."""
    rng = np.random.default_rng(seed)
    mags = 10.0 ** np.linspace(-9, 0, KERAS_SHAPE[-1])
    p = rng.uniform(-1, 1, KERAS_SHAPE).astype(dtype)
    return p, [(rng.uniform(-1, 1, KERAS_SHAPE) * mags).astype(dtype) for _ in range(KERAS_STEPS)]


@dataclass(frozen=True)
class KerasRow:
    """One tensor at one step: the budget of (U - K) - D under tol_cs + tol_keras, and the
    named difference's parts in allowances (form, casting) and relative to the reference."""

    which: str
    dtype: str
    step: int
    tensor: str
    budget: float
    form: float
    cast: float
    relative: float
    direct: float  # the budget of U against K with no convention term: > 1 where it matters


def _budget(err, allowance) -> float:
    err, allowance = np.asarray(err, np.float64), np.asarray(allowance, np.float64)
    if not np.all(np.isfinite(err)):
        return float("inf")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / allowance)
    return float(np.max(ratio, initial=0.0))


def keras_step(user: UserOptim, p, g, state: Mapping, h: Mapping, which: str, dtype: str, k: int):
    """[KerasRow] of one step: the user's rule and Keras' optimiser fed the same p, g, state."""
    from parity_tests.mirrors import optim_tf

    rule, name = user.rule, user.rule.optimiser
    u_p, u_s = user.step(p, g, dict(state), h)
    k_p, k_s = optim_tf.step(name, p, g, dict(state), h)
    wide = (p.astype(np.float64), g.astype(np.float64))
    state64 = {s: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for s, v in state.items()}
    r_cs = reference_step(rule)(*wide, dict(state64), h)
    r_form = registry.form_step(name, registry.KERAS_FLOAT64)(*wide, dict(state64), h)
    r_keras = registry.step(name, "keras", *wide, dict(state64), h)
    rows = []
    for tensor in ("p_new", *r_cs[1]):
        pick = (lambda out: out[0]) if tensor == "p_new" else (lambda out, t=tensor: out[1][t])
        U, K, Rcs, Rf, Rk = (
            np.asarray(pick(x), np.float64) for x in ((u_p, u_s), (k_p, k_s), r_cs, r_form, r_keras)
        )
        allowance = (
            optim_stages.tolerance_of(name, rule.form, tensor, p, g, state, h, dtype).array
            + optim_stages.tolerance_of(name, "keras", tensor, p, g, state, h, dtype).array
        )
        scale = float(np.max(np.abs(Rcs), initial=0.0)) or 1.0
        rows.append(
            KerasRow(
                which, dtype, k, tensor,
                budget=_budget(np.abs((U - K) - (Rcs - Rk)), allowance),
                form=_budget(np.abs(Rf - Rcs), allowance),
                cast=_budget(np.abs(Rk - Rf), allowance),
                relative=float(np.max(np.abs(Rk - Rcs), initial=0.0)) / scale,
                direct=_budget(np.abs(U - K), allowance),
            )
        )  # fmt: skip
    return rows, (u_p, u_s)


def against_keras(user: UserOptim, dtypes=("float64", "float32")) -> list[KerasRow]:
    """Every KerasRow of the user's rule over KERAS_HYPER x dtypes x KERAS_STEPS steps, each
    step fed the user's own previous outputs (stage-isolated); a run stops at a non-finite
    parameter (its rows say inf)."""
    rows = []
    for which in KERAS_HYPER:
        h = keras_hyper(user.rule, which)
        for dtype in dtypes:
            p, grads = keras_inputs(dtype)
            state = {
                s: (v.astype(dtype) if isinstance(v, np.ndarray) else v)
                for s, v in registry.optimiser(user.rule.optimiser).init_state(p).items()
            }
            for k, g in enumerate(grads, start=1):
                step_rows, (p, state) = keras_step(user, p, g, state, h, which, dtype, k)
                rows += step_rows
                if not np.all(np.isfinite(p)):
                    break
    return rows


def keras_verdict(user: UserOptim) -> tuple[str, str]:
    """(failure, summary): failure "" when every row is within its allowance, else the first
    row beyond it, whether the user's output is Keras' convention itself, and the catalogue's
    name for the mistake; summary the named difference and its measured size."""
    rows = against_keras(user)
    form_name, cast_name = KERAS_DIFFERENCE[user.rule.name]
    worst = max(rows, key=lambda r: r.budget)
    summary = (
        f"{user.label} ({user.rule.name}) vs keras.optimizers: worst budget {worst.budget:.3g} "
        f"({worst.tensor}, step {worst.step}, {worst.dtype}, {worst.which}); the named "
        f"difference: form {form_name}, up to {max(r.form for r in rows):.3g} allowances; "
        f"float32 hyper-parameters ({cast_name}), up to {max(r.cast for r in rows):.3g} "
        f"allowances; relative size up to {max(r.relative for r in rows):.3g}"
    )
    bad = [r for r in rows if not r.budget <= 1]
    if not bad:
        return "", summary
    first = bad[0]
    h = keras_hyper(user.rule, first.which)
    p, grads = keras_inputs(first.dtype)
    p64, grads64 = p.astype(np.float64), [g.astype(np.float64) for g in grads[: first.step]]
    named = name_mistake(user, p64, grads64, h)
    if not named and is_keras_convention(user, p64, grads64, h):
        named = f"Keras' convention ({form_name.split(' vs ')[0]}), not CS231n's"
    failure = (
        f"{user.label} ({user.rule.name}) departs from keras.optimizers beyond the named "
        f"difference at step {first.step}, {first.tensor} ({first.dtype}, {first.which} "
        f"hyper-parameters): budget {first.budget:.3g}; explainer: "
        f"{named or 'no catalogue mistake fits'}"
    )
    return failure, summary


def is_keras_convention(user: UserOptim, p, grads, h) -> bool:
    """Whether the user's every output over `grads` (float64) is Keras' form with exact
    hyper-parameters (to 1e-12 relative): a rule written in Keras' convention."""
    step = registry.form_step(user.rule.optimiser, registry.KERAS_FLOAT64)
    entry = registry.optimiser(user.rule.optimiser)
    a_p, a_s, b_p, b_s = p, entry.init_state(p), p, entry.init_state(p)
    for g in grads:
        a_p, a_s = user.step(a_p, g, dict(a_s), h)
        b_p, b_s = step(b_p, g, dict(b_s), h)
        if not np.allclose(a_p, b_p, rtol=1e-12, atol=0):
            return False
    return True
