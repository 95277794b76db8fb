"""K training steps (--parity-steps K, --parity-optim SPEC) of the --parity-model network:
each framework's own training loop against the reference in that framework's convention,
every parameter and optimiser state at every step, under the drift bound
(parity_tests/trajectory.py, docs/optimisers.md):
test_trajectory[dense3.W_new@step7-end_to_end-torch-float32]. A departure's note says
whether it is chaos (reference runs whose gradients are moved by their one-step allowances
differ as much) or a mistake.

With --parity-optim-impl RULE=... for the --parity-optim optimiser, the user's update rule
trains the reference's network in place of the registry's (parity_tests/own_optim.py), and
is checked against torch's own loop: CS231n's rules are torch's equations (sgd_momentum's
velocity, in parameter units, compared as torch's: -v / lr). Keras' convention differs
from CS231n's (epsilon, float32 hyper-parameters), so those runs are against torch alone.
"""

from __future__ import annotations

import pytest

from parity_tests.settings import SETTINGS


def user_optimiser(config):
    """The --parity-optim-impl rule for the --parity-optim optimiser, or None."""
    from parity_tests import own_optim

    s = config.stash[SETTINGS]
    for value in config.getoption("--parity-optim-impl") or ():
        user = own_optim.parse(value)
        if user.rule.optimiser == s.optim_name:
            return user
    return None


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ != "test_trajectory":
        return
    s = metafunc.config.stash[SETTINGS]
    from reference.optim_registry import optimiser

    states = optimiser(s.optim_name).state
    names = []
    for k in range(1, s.steps + 1):
        for p in s.network.param_names:
            names += [(f"{p}_new", k)] + [(f"{p}.{st}", k) for st in states]
    metafunc.parametrize("tensor,k", names, ids=[f"{t}@step{k}-end_to_end" for t, k in names])


@pytest.fixture(scope="session")
def trajectory(pytestconfig, parity_settings, article_data):
    from parity_tests.trajectory import Trajectory

    s = parity_settings
    user = user_optimiser(pytestconfig)
    return Trajectory(
        s.network, s.seed, s.reduction, article_data, s.optim_name, s.optim_hyper, s.steps, user
    )


def test_trajectory(model_parity, parity_settings, trajectory, tensor, k, framework, dtype):
    import dataclasses

    from parity_tests.optim_stages import CONVENTION_OF
    from reference.optim_registry import canonical

    s = parity_settings
    user = trajectory.impl
    if user is not None and hasattr(user, "label"):  # a user's optim.py rule
        context = dataclasses.replace(model_parity.context, impl=f"own-optim:{user.label}")
        model_parity = type(model_parity)(model_parity.node, context)
    convention = CONVENTION_OF[framework]
    holder = {}

    def compute():
        holder["check"] = c = trajectory.check(framework, dtype, tensor, k)
        return c

    def note():
        if "check" not in holder:
            return ""
        kind, budget = trajectory.verdict(framework, dtype, tensor, k)
        up_to = trajectory.agrees_up_to(framework, dtype)
        text = (
            f"{kind} (drift bound alone: budget {budget:.3g}); {framework} {dtype} agrees "
            f"within the drift bound up to step {up_to} of {trajectory.steps}"
        )
        if kind == "mistake" and trajectory.impl is not None:  # a user's optimiser: name it
            from parity_tests.trajectory import name_mistake

            named = name_mistake(trajectory, dtype, k, framework)
            text += f"; optimiser explainer: {named or 'no catalogue mistake fits'}"
        return text

    record = model_parity.check(
        tensor=tensor,
        equation=",".join(trajectory.entry.equations(convention, trajectory.h)),
        step=tensor.split(".", 1)[0],
        quantity="update" if tensor.endswith("_new") else "state",
        mode="end_to_end",
        against=framework,
        dtype=dtype,
        compute=compute,
        model=s.network.label,
        note=note,
        extra=lambda: dict(
            train_step=k,
            optimiser=canonical(s.optim_name, s.optim_hyper),
            **trajectory.losses(framework, dtype, k),
        ),
        fail=False,
    )
    # A state that crosses zero (a velocity, a one-element bias's m) lies within its
    # allowance of zero at that step: recorded as vacuous, and a failure only where the
    # tensor is vacuous at every step (its trajectory proves nothing); docs/optimisers.md.
    if record["status"] == "vacuous" and not trajectory.vacuous_throughout(framework, dtype, tensor):
        return
    if not record["passed"]:
        from parity_tests.metrics import format_mismatch

        if record["status"] == "error":
            pytest.fail(f"{tensor}@step{k}: {record['error']}", pytrace=False)
        pytest.fail(format_mismatch(record, model_parity.reproduce()), pytrace=False)


# The no-false-alarm sweep (docs/optimisers.md, "Drift bound"): every optimiser at its
# defaults, K = 10, both frameworks and dtypes, article and LeNet. Two seeds here (several
# minutes on two cores); benchmarks/trajectory_sweep.py runs the 20-seed sweep.
SWEEP_SEEDS = (0, 1)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["article", "lenet"])
@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_no_false_alarm(article_data, model, name):
    from parity_tests.trajectory import sweep

    n, fails, worst, _, _ = sweep(model, name, SWEEP_SEEDS, 10, article_data)
    assert n and not fails, f"{len(fails)} of {n} comparisons failed: {fails[:5]} (worst {worst:.3g})"


# The chaos probes' first form (weights 1 ulp apart) cried wolf at these LeNet runs: torch's
# float32 kernels (and Keras' at rmsprop) drove the run across ReLU and max-pool kinks the
# 1-ulp runs never reached (docs/optimisers.md, "Chaos or mistake").
@pytest.mark.slow
@pytest.mark.parametrize("seed,name", [(5, "nesterov"), (7, "adamw"), (8, "rmsprop"), (10, "rmsprop")])
def test_no_false_alarm_where_one_ulp_probes_cried_wolf(article_data, seed, name):
    from parity_tests.trajectory import sweep

    n, fails, worst, _, _ = sweep("lenet", name, (seed,), 10, article_data)
    assert n and not fails, f"{len(fails)} of {n} comparisons failed: {fails[:5]} (worst {worst:.3g})"


@pytest.mark.parametrize("probe,sign", [(1, 1.0), (2, -1.0)])
def test_chaos_probe_moves_each_gradient_by_its_allowance(article_data, probe, sign):
    """At step 1 a probe run's sgd update differs from the reference's by exactly lr times
    the gradient's one-step allowance, in the probe's direction: the probe is the
    framework's legitimate difference, not a guess."""
    import numpy as np

    from parity_tests.trajectory import Trajectory
    from reference import optim_registry as registry
    from reference.network import Network

    tr = Trajectory(
        Network("article"), 0, "sum", article_data, "sgd", registry.hyper("sgd", lr=0.0625), 2
    )
    ref, _ = tr.reference("torch", "float64")
    moved, _ = tr.reference("torch", "float64", ("float32", probe))
    for p in tr.net.param_names:
        dg = tr.grad_allowance("float32", p, 1)
        assert np.all(dg > 0), p
        np.testing.assert_allclose(
            moved[0][f"{p}_new"] - ref[0][f"{p}_new"], -0.0625 * sign * dg, rtol=1e-6, atol=1e-300
        )


def test_a_diverging_training_is_an_error_naming_its_step(article_data):
    """A learning rate that overflows the run: the steps after it are errors that say so
    (which run, which step, its losses, the spec to change), never a crash or a pass."""
    import warnings

    from parity_tests.impl_call import TrainingDiverged
    from parity_tests.trajectory import Trajectory
    from reference import optim_registry as registry
    from reference.network import Network

    h = registry.hyper("sgd", lr=1e36)
    tr = Trajectory(Network("article"), 0, "sum", article_data, "sgd", h, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tr.check("torch", "float32", "dense2.W_new", 1)  # step 1 still runs
        with pytest.raises(TrainingDiverged, match=r"float32 run .* at step 2 .*lr=1e\+36"):
            tr.check("torch", "float32", "dense2.W_new", 3)
