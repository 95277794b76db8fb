"""Your own optim.py (--parity-optim-impl RULE=path/or.module:function; CS231n's
`next_w, config = update(w, dw, config)`), checked alone against the reference: hypothesis
draws shapes, gradients over magnitudes 1e-9..1, hyper-parameters and step counts, every
step is compared stage-isolated (parity_tests/own_optim.py), and a failure reports the
minimal failing case and the explainer's name for the mistake.

Without the option, the bundled correct examples/optim/optim.py is checked, every rule;
test_examples_broken_is_found_and_named holds the suite to its planted mistake (Adam's
epsilon inside the root, examples/optim/optim_broken.py): found, shrunk and named.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from parity_tests import own_optim

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "optim"


def configured(config) -> list[str]:
    """The --parity-optim-impl values of this run, else every rule of the bundled correct
    examples/optim/optim.py."""
    values = config.getoption("--parity-optim-impl")
    return list(values or [f"{rule}={EXAMPLES / 'optim.py'}:{rule}" for rule in own_optim.RULES])


def pytest_generate_tests(metafunc):
    if "user_optim" in metafunc.fixturenames:
        values = configured(metafunc.config)
        metafunc.parametrize("user_optim", values, ids=[v.partition("=")[0] for v in values])


def _verdict(user, max_examples=200) -> str:
    found = own_optim.search(user, max_examples)
    if found is None:
        return ""
    ex, first, name = found
    step, tensor, record = first if first else (None, "", {})
    what = record.get("error") or (
        f"budget {record.get('budget_used', float('nan')):.3g} at {record.get('worst_index')}"
    )
    return (
        f"{user.label} ({user.rule.name}) departs from the reference at step {step}, "
        f"{tensor}: {what}; minimal case: {ex}; explainer: {name or 'no catalogue mistake fits'}"
    )


def test_own_optim(user_optim):
    user = own_optim.parse(user_optim)
    failure = _verdict(user)
    assert not failure, failure


def test_examples_broken_is_found_and_named():
    user = own_optim.parse(f"adam={EXAMPLES / 'optim_broken.py'}:adam")
    found = own_optim.search(user, max_examples=200)
    assert found is not None, "the planted mistake (epsilon inside the root) was not found"
    ex, (step, tensor, _), name = found
    assert name == "adam_eps_inside_sqrt" and tensor == "p_new" and step == 1, (ex, step, tensor, name)


@pytest.mark.parametrize(
    "file,rule,caught",
    [("optim.py", "adam", None), ("optim.py", "sgd_momentum", None), ("optim.py", "rmsprop", None),
     ("optim_broken.py", "adam", (1, "p_new"))],
    ids=["optim-adam", "optim-sgd_momentum", "optim-rmsprop", "optim_broken-adam"],
)  # fmt: skip
def test_examples_inside_a_training_run(article_data, file, rule, caught):
    """The user's rule training the article's network three steps against torch's loop
    (test_trajectory.py with --parity-optim-impl): the correct rules agree throughout, the
    planted mistake departs at its first step, at the update."""
    from parity_tests.trajectory import Trajectory, first_departure
    from reference import optim_registry as registry
    from reference.network import Network

    user = own_optim.parse(f"{rule}={EXAMPLES / file}:{rule}")
    name = user.rule.optimiser
    tr = Trajectory(Network("article"), 0, "sum", article_data, name, registry.hyper(name), 3, user)
    k, bad = first_departure(tr, "torch", "float64")
    if caught is None:
        assert k is None, f"{file}:{rule} departs at step {k}: {bad}"
    else:
        assert k == caught[0] and all(t.endswith("_new") for t in bad), (k, bad)


def test_a_module_that_patches_the_suite_cannot_forge_the_verdict(tmp_path):
    """The module runs in a child process (parity_tests/user_process.py): its import-time
    patch of the suite's search patches the child's copy, and its wrong rule is still found."""
    path = tmp_path / "forging_optim.py"
    path.write_text(
        "import parity_tests.own_optim as o\n"
        "o.run_steps = lambda *args, **kwargs: None  # every case 'passes'\n"
        "def sgd(w, dw, config):\n"
        "    return w + config['learning_rate'] * dw, config  # the sign of the step flipped\n",
        encoding="utf-8",
    )
    user = own_optim.parse(f"sgd={path}:sgd")
    assert type(user.fn).__name__ == "RemoteFunction"
    assert own_optim.search(user, max_examples=20) is not None
