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

pytestmark = pytest.mark.slow

STEPS = 3
# Where each scope shows: a rule wrong for every parameter shows on LeNet; a state shared
# between parameters needs two parameters of one shape (the last two dense layers' W).
MODELS = {
    "parameter": "lenet",
    "restart": "lenet",
    "shared": "dense(10,bias=false)-relu-dense(10,bias=false)-relu-dense(10,bias=false)-softmax_ce",
}
CASES = [(name, m) for name, o in registry.OPTIMISERS.items() for m in o.mistakes]


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


@pytest.mark.parametrize("name", list(registry.OPTIMISERS))
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_reference_is_not_a_mistake(article_data, name, framework):
    """No false alarm and no name for the reference itself over the same run."""
    tr = Trajectory(Network("lenet"), 0, "sum", article_data, name, registry.hyper(name), STEPS)
    assert first_departure(tr, framework, "float32") == (None, [])
