"""Each framework's optimiser alone, fed our parameter, gradient and state at step k, against
the reference's variant of that framework's convention (parity_tests/optim_stages.py):
test_optim_stage[adam-m@step4-stage-torch-float32]. p_new and every state (velocity, cache,
m, v, t) are compared, in both dtypes, under the stage rule for optimisers.

The other convention is not allowed for: test_other_convention_fails holds that each
framework, compared with the *other* framework's variant, fails the same rule wherever the
conventions differ in the dtype (docs/optimisers.md has the measured sizes).

test_mistake_caught_at_its_tensor_in_one_step: each catalogue mistake, in the framework's
convention, is caught at its own tensor in one stage-isolated step (the fast subset of
test_optim_mistakes.py); its control holds the variant itself caught nowhere.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from parity_tests import optim_stages
from parity_tests.metrics import compare_arrays
from reference import optim_registry as registry

STEPS = (1, 4)  # the first step (state from zeros, t = 1) and one with carried state

CASES = [
    (name, tensor, k)
    for name, entry in registry.OPTIMISERS.items()
    for tensor in ("p_new", *entry.state)
    for k in STEPS
]


@functools.lru_cache(maxsize=64)
def _inputs(name, convention, k, dtype, hyper):
    return optim_stages.inputs(name, convention, k, dtype, h=dict(hyper))


def _hyper(settings, name) -> dict:
    """--parity-optim's hyper-parameters for its optimiser, the entry's defaults otherwise."""
    if settings.optim and settings.optim_name == name:
        return dict(settings.optim_hyper)
    return registry.hyper(name)


@pytest.mark.parametrize("name,tensor,k", CASES, ids=[f"{n}-{t}@step{k}-stage" for n, t, k in CASES])
def test_optim_stage(parity, parity_settings, name, tensor, k, framework, dtype):
    convention = optim_stages.CONVENTION_OF[framework]
    h = _hyper(parity_settings, name)
    p, g, state = _inputs(name, convention, k, dtype, tuple(sorted(h.items())))
    parity.check(
        tensor=tensor if tensor == "p_new" else f"p.{tensor}",
        equation=",".join(registry.optimiser(name).equations(convention, h)),
        step="optimiser",
        quantity="update" if tensor == "p_new" else "state",
        mode="stage",
        against=framework,
        dtype=dtype,
        compute=lambda: optim_stages.stage_check(name, framework, tensor, p, g, state, h),
        extra=dict(train_step=k, optimiser=registry.canonical(name, h)),
    )


# Where the two conventions differ in each dtype, with the suite's inputs (gradients 1e-9..1):
# float32 computes both in float32 alike, so only the equations' forms show there.
DIFFER = [
    ("sgd", {"lr": 0.1}, ("float64",)),  # Keras' float32 learning rate
    ("momentum", {}, ("float64",)),  # momentum 0.9 cast through float32
    ("nesterov", {}, ("float64",)),
    ("rmsprop", {}, ("float64", "float32")),  # epsilon inside / outside the root
    ("adam", {}, ("float64", "float32")),  # epsilon before / after the bias correction
    ("adamw", {}, ("float64", "float32")),
]
OTHER = {"torch": "keras", "tensorflow": "torch"}


@pytest.mark.parametrize(
    "name,given,dtype",
    [(n, g, d) for n, g, ds in DIFFER for d in ds],
    ids=[f"{n}-{d}" for n, g, ds in DIFFER for d in ds],
)
def test_other_convention_fails(name, given, dtype, framework):
    """The framework against the other convention's variant: beyond the rule at p_new."""
    from parity_tests.mirrors import optim_tf, optim_torch

    mirror = optim_torch if framework == "torch" else optim_tf
    other = OTHER[framework]
    h = registry.hyper(name, **given)
    p, g, state = optim_stages.inputs(name, other, 4, dtype)
    p_fw, _ = mirror.step(name, p, g, dict(state), h)
    p_ref, _ = registry.step(name, other, p, g, dict(state), h)
    tol = optim_stages.tolerance_of(name, other, "p_new", p, g, state, h, dtype)
    r = compare_arrays(p_fw, p_ref, tol.array, against=framework)
    assert not r["passed"], f"{framework} matched {other}'s {name} (budget {r['budget_used']:.3g})"


@pytest.mark.parametrize(
    "option,value,says",
    [
        ("parity_optim", "adm", "unknown optimiser 'adm'"),
        ("parity_optim", "adam(lr=x)", "lr='x' is not a number"),
        ("parity_optim", "momentum(1.5)", r"momentum must be in \[0, 1\]"),
        ("parity_optim", "adam(foo=1)", "no hyper-parameter"),
        ("parity_optim", "sgd(lr=0.1", "closing"),
        ("parity_optim", "adam(lr=-1)", r"lr must be in \(0"),
        ("parity_steps", "0", "integer 1..10000"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_bad_option_is_one_usage_error(pytestconfig, tmp_path, option, value, says):
    from parity_tests.test_trust import validate

    with pytest.raises(pytest.UsageError, match=f"(?s)--{option.replace('_', '-')}.*{says}"):
        validate(pytestconfig, tmp_path, **{option: value})


@pytest.mark.parametrize(
    "spec,name,given",
    [
        ("sgd", "sgd", {}),
        ("momentum(0.9)", "momentum", {"momentum": 0.9}),
        ("nesterov(0.95,lr=0.01)", "nesterov", {"momentum": 0.95, "lr": 0.01}),
        ("adam(lr=1e-3,beta1=0.9,beta2=0.999,eps=1e-8)", "adam",
         {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
        (" rmsprop( rho = 0.8 ) ", "rmsprop", {"rho": 0.8}),
    ],
)  # fmt: skip
def test_spec_forms(spec, name, given):
    got_name, h = registry.parse(spec)
    assert got_name == name and h == {**registry.optimiser(name).hyper, **given}
    assert registry.parse(registry.canonical(got_name, h)) == (got_name, h)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_stage_rule_over_random_hyper(seed, framework, dtype):
    """The stage rule at drawn hyper-parameters (lr 1e-4..0.3, momentum/rho/beta1 0.5..0.99,
    beta2 0.9..0.9999, eps 1e-8..1e-3, weight_decay 0, 0.01 or 0.1) and steps 1..29, each
    optimiser in turn: no comparison beyond its allowance (a sweep of 150 such cases per
    framework and dtype measured a worst budget of 0.31, docs/optimisers.md)."""
    rng = np.random.default_rng(seed)
    name = list(registry.OPTIMISERS)[seed % len(registry.OPTIMISERS)]
    h = dict(registry.hyper(name))
    h["lr"] = float(10 ** rng.uniform(-4, -0.5))
    for key in ("momentum", "rho", "beta1"):
        if key in h:
            h[key] = float(rng.uniform(0.5, 0.99))
    if "beta2" in h:
        h["beta2"] = float(rng.uniform(0.9, 0.9999))
    if "eps" in h:
        h["eps"] = float(10 ** rng.uniform(-8, -3))
    h["weight_decay"] = float(rng.choice([0, 0.01, 0.1]))
    k = int(rng.integers(1, 30))
    convention = optim_stages.CONVENTION_OF[framework]
    p, g, state = optim_stages.inputs(name, convention, k, dtype, seed=seed, h=h)
    for tensor in ("p_new", *registry.optimiser(name).state):
        c = optim_stages.stage_check(name, framework, tensor, p, g, state, h)
        r = compare_arrays(c.actual, c.expected, c.tolerance.array, truth=c.truth, against=framework)
        assert r["passed"], f"{name} {tensor} step {k} {h}: {r['status']} budget {r['budget_used']:.3g}"


# The mistakes catalogue (reference/optim_mistakes.py), one step: the fast subset of
# test_optim_mistakes.py (slow: K-step training runs against each framework's loop). Each
# mistake with a rule of its own (not the scope ones, which need several steps or
# parameters), in the framework's convention (its torch form or its Keras mirror), fed that
# framework's optimiser the suite's inputs at step 1 (gradients of 1e-9..1), is beyond the
# stage rule at its own tensor and, for a mistake in the update alone, nowhere else.
MISTAKES = [(n, m) for n, o in registry.OPTIMISERS.items() for m in o.mistakes if m.step is not None]


def _caught_in_one_step(name, framework, dtype, h, step) -> set:
    """The tensors where `step` (a Variant's calling form, in the framework's convention),
    fed the framework's optimiser inputs at step 1, is beyond the stage rule."""
    from parity_tests.mirrors import optim_tf, optim_torch

    convention = optim_stages.CONVENTION_OF[framework]
    p, g, state = optim_stages.inputs(name, convention, 1, dtype, h=h)
    mirror = optim_torch if framework == "torch" else optim_tf
    theirs = mirror.step(name, p, g, dict(state), h)
    with np.errstate(all="ignore"):
        ours = step(p, g, dict(state), h)
    caught = set()
    for tensor in ("p_new", *registry.optimiser(name).state):
        pick = (lambda out: out[0]) if tensor == "p_new" else (lambda out, t=tensor: out[1][t])
        tol = optim_stages.tolerance_of(name, convention, tensor, p, g, state, h, dtype)
        as_type = np.float64 if tensor == "t" else None
        r = compare_arrays(
            np.asarray(pick(theirs), as_type), np.asarray(pick(ours), as_type), tol.array,
            against=framework, brief=True,
        )  # fmt: skip
        if not r["passed"] and r["status"] != "vacuous":
            caught.add(tensor)
    return caught


@pytest.mark.parametrize("name,mistake", MISTAKES, ids=[f"{n}-{m.id}" for n, m in MISTAKES])
def test_mistake_caught_at_its_tensor_in_one_step(name, mistake, framework, dtype):
    convention = optim_stages.CONVENTION_OF[framework]
    h = registry.hyper(name, **mistake.hyper)
    caught = _caught_in_one_step(name, framework, dtype, h, mistake.step_in(convention))
    assert mistake.first in caught, f"{mistake.id} ({convention}): caught at {caught}"
    if mistake.first == "p_new":
        assert caught == {"p_new"}, f"{mistake.id} ({convention}): the state departs too: {caught}"


@pytest.mark.parametrize("name", sorted({n for n, _ in MISTAKES}))
def test_the_variant_itself_is_caught_nowhere_in_one_step(name, framework, dtype):
    """The control of the test above: the registry's own variant, at every hyper-parameter
    set a mistake of the optimiser needs, is within the stage rule everywhere."""
    convention = optim_stages.CONVENTION_OF[framework]
    step = registry.optimiser(name).variants[convention].step
    for m in registry.optimiser(name).mistakes:
        h = registry.hyper(name, **m.hyper)
        assert _caught_in_one_step(name, framework, dtype, h, step) == set()
