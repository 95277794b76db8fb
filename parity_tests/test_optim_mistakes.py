"""The optimiser mistakes catalogue (reference/optim_mistakes.py, each registry entry's
`mistakes`): each mistake, run as the optimiser under test in a K-step training run, is
caught against each framework's own loop -- torch's (the mistake in torch's convention) and
Keras' (its mirror in Keras' convention, `*_keras`) -- at its own tensor and first step, in
both dtypes, and the explainer (trajectory.name_mistake) names it. Slow (several minutes on
two shared cores): run by ./parity test, or `pytest -m slow parity_tests/test_optim_mistakes.py`.
"""

from __future__ import annotations

import pytest

from parity_tests.trajectory import Trajectory, first_departure, name_mistake
from reference import optim_registry as registry
from reference.network import Network

STEPS = 3
# Where each scope shows: a rule wrong for every parameter shows on LeNet; a state shared
# between parameters needs two parameters of one shape (the last two dense layers' W).
MODELS = {
    "parameter": "lenet",
    "restart": "lenet",
    "shared": "dense(10,bias=false)-relu-dense(10,bias=false)-relu-dense(10,bias=false)-softmax_ce",
}
CASES = [(name, m) for name, o in registry.OPTIMISERS.items() for m in o.mistakes]


@pytest.mark.slow
@pytest.mark.parametrize("name,mistake", CASES, ids=[f"{n}-{m.id}" for n, m in CASES])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_mistake_caught_and_named(article_data, name, mistake, dtype, framework):
    h = registry.hyper(name, **mistake.hyper)
    net = Network(MODELS[mistake.scope])
    tr = Trajectory(net, 0, "sum", article_data, name, h, STEPS, impl=mistake)
    k, bad = first_departure(tr, framework, dtype)
    shorts = {t.rpartition(".")[2] if not t.endswith("_new") else "p_new" for t in bad}
    assert k == mistake.first_step, f"{mistake.id}: first caught at step {k} ({bad})"
    assert mistake.first in shorts, f"{mistake.id}: caught at {bad}, not at its {mistake.first}"
    if mistake.first == "p_new":  # a rule wrong in the update only: its state is right
        assert shorts == {"p_new"}, f"{mistake.id}: the state departs too: {bad}"
    assert name_mistake(tr, dtype, k, framework) == mistake.id


@pytest.mark.slow
@pytest.mark.parametrize("name", list(registry.OPTIMISERS))
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_reference_is_not_a_mistake(article_data, name, framework):
    """No false alarm and no name for the reference itself over the same run."""
    tr = Trajectory(Network("lenet"), 0, "sum", article_data, name, registry.hyper(name), STEPS)
    assert first_departure(tr, framework, "float32") == (None, [])


# The gate's fast subset: one step, stage-isolated, float32 (the coarser rounding: the
# harder to catch). Each mistake with a rule of its own (not the scope ones, which need
# several steps or parameters), in each framework's convention, fed that framework's
# optimiser inputs (optim_stages.inputs, gradients of 1e-9..1), is beyond the stage rule at
# its own tensor and, for a mistake in the update alone, nowhere else.
RULED = [(n, m) for n, m in CASES if m.step is not None]


def _caught_in_one_step(name, framework, h, step) -> set:
    """The tensors where `step` (a Variant's calling form, in the framework's convention),
    fed the framework's optimiser inputs at step 1 in float32, is beyond the stage rule."""
    import numpy as np

    from parity_tests import optim_stages
    from parity_tests.metrics import compare_arrays
    from parity_tests.mirrors import optim_tf, optim_torch

    convention = optim_stages.CONVENTION_OF[framework]
    p, g, state = optim_stages.inputs(name, convention, 1, "float32", h=h)
    mirror = optim_torch if framework == "torch" else optim_tf
    theirs = mirror.step(name, p, g, dict(state), h)
    with np.errstate(all="ignore"):
        ours = step(p, g, dict(state), h)
    caught = set()
    for tensor in ("p_new", *registry.optimiser(name).state):
        pick = (lambda out: out[0]) if tensor == "p_new" else (lambda out, t=tensor: out[1][t])
        tol = optim_stages.tolerance_of(name, convention, tensor, p, g, state, h, "float32")
        as_type = np.float64 if tensor == "t" else None
        r = compare_arrays(
            np.asarray(pick(theirs), as_type), np.asarray(pick(ours), as_type), tol.array,
            against=framework, brief=True,
        )  # fmt: skip
        if not r["passed"] and r["status"] != "vacuous":
            caught.add(tensor)
    return caught


@pytest.mark.parametrize("name,mistake", RULED, ids=[f"{n}-{m.id}" for n, m in RULED])
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_mistake_caught_at_its_tensor_in_one_step(name, mistake, framework):
    convention = "torch" if framework == "torch" else "keras"
    h = registry.hyper(name, **mistake.hyper)
    caught = _caught_in_one_step(name, framework, h, mistake.step_in(convention))
    assert mistake.first in caught, f"{mistake.id} ({convention}): caught at {caught}"
    if mistake.first == "p_new":
        assert caught == {"p_new"}, f"{mistake.id} ({convention}): the state departs too: {caught}"


@pytest.mark.parametrize("name", sorted({n for n, _ in RULED}))
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_the_variant_itself_is_caught_nowhere_in_one_step(name, framework):
    """The control of the test above: the registry's own variant, at every hyper-parameter
    set a mistake of the optimiser needs, is within the stage rule everywhere."""
    convention = "torch" if framework == "torch" else "keras"
    step = registry.optimiser(name).variants[convention].step
    for m in registry.optimiser(name).mistakes:
        assert _caught_in_one_step(name, framework, registry.hyper(name, **m.hyper), step) == set()
