"""K training steps (--parity-steps K, --parity-optim SPEC) of the --parity-model network:
each framework's own training loop against the reference in that framework's convention,
every parameter and optimiser state at every step, under the drift bound
(parity_tests/trajectory.py, docs/optimisers.md):
test_trajectory[dense3.W_new@step7-end_to_end-torch-float32]. A departure's note says
whether it is chaos (two reference runs 1 ulp apart differ as much) or a mistake.

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
