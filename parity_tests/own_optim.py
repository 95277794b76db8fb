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
