"""The fast path (reference.fast, what `--parity-impl reference` runs) is the article network
(Network("article"), the reference, seen through the article view parity_tests/stages.py)
computed faster: every tensor of a fast step equals the network's layers fed the fast step's
own inputs for that stage, within the stage tolerance policy. And the readable article model
(reference.model, the article's equations one function each) is the same network.

Checked at the run's batch and seed, at batch 1, 7 and the run's batch for seeds 0..2 and at
1000 for seed 0, both dtypes (the run's batch at seeds 0..2 and 1000 images in the slow
set). The run's batch at the run's seed is recorded (against "readable", one record per tensor),
so every report says that the kernels that ran were proven against the model the audit
names; the other sizes and seeds fail the test with the same message but do not fill the
report.
"""

from __future__ import annotations

import dataclasses

import pytest

from parity_tests import stages
from parity_tests.audit_hook import traced_functions
from parity_tests.compare import ParityRecorder
from parity_tests.detection import QuietRecorder
from parity_tests.harness import Check
from parity_tests.metrics import compare_arrays
from parity_tests.stages import END_TO_END, STAGES
from reference import fast, model
from reference.data import load_article_data
from reference.network import Network

BATCHES = (1, 7, None, 1000)  # None: the run's --parity-n-images
SEEDS = (0, 1, 2)


def _case(n, seed, slow=False):
    return pytest.param(
        n,
        seed,
        marks=[pytest.mark.slow] if slow else [],
        id=f"n_images={n or 'run'}-seed={'run' if seed is None else seed}",
    )


# The gate: the run's batch at the run's seed (the one recorded) and the small batches at
# every seed. The slow set: the run's batch at every seed and 1000 images at one (up to a
# second each).
CASES = [
    _case(None, None),
    *(_case(n, seed) for n in (1, 7) for seed in SEEDS),
    *(_case(None, seed, slow=True) for seed in SEEDS),
    _case(1000, 0, slow=True),
]


@pytest.fixture(scope="module")
def batch_of(pytestconfig, article_data):
    made = {}

    def get(n):
        if n is None or n == article_data.X.shape[2]:
            return article_data
        if n not in made:
            made[n] = load_article_data(n, source=pytestconfig.getoption("--parity-data"))
        return made[n]

    return get


def _checks(data, seed, dtype, run_config):
    """(stage, Check) for every tensor of one fast step."""
    params = model.init_params(seed, dtype, run_config.init_scheme)
    X, y = data.X.astype(dtype), data.y.astype(dtype)
    lr, r = run_config.lr, run_config.reduction
    t = dict(fast.train_step(params, X, y, lr=lr, reduction=r), y=y)
    shape = stages.shape_of(params)
    for stage in STAGES:
        inputs = {name: t[name] for name in stage.inputs}
        network, tol = stages.reference_stage(stage, inputs, lr, r, shape)
        yield stage, Check(network, t[stage.tensor], tol, None)


@pytest.mark.parametrize("n,seed", CASES)
def test_fast_path_is_the_readable_model(parity, run_config, batch_of, n, seed, dtype):
    data = batch_of(n)
    # The run's own batch and seed go into the report; the rest only fail the test.
    recorded = n is None and seed is None
    seed = run_config.seed if seed is None else seed
    context = dataclasses.replace(parity.context, seed=seed, impl="reference")
    recorder = (ParityRecorder if recorded else QuietRecorder)(parity.node, context)
    bad = []
    for stage, check in _checks(data, seed, dtype, run_config):
        rec = recorder.check(
            tensor=stage.tensor,
            equation=stage.equation,
            step=stage.step,
            quantity=stage.quantity,
            mode="stage",
            against="readable",
            dtype=dtype,
            compute=lambda c=check: c,
            fail=False,
            expect_zero=run_config.init_scheme == "article" and stage.quantity != "forward",
        )
        if not rec.get("passed"):
            bad.append(f"{stage.tensor}: {rec.get('status')} budget {rec.get('budget_used')}")
    assert not bad, f"fast path != readable model at {data.X.shape[2]} images:\n" + "\n".join(bad)


@pytest.mark.parametrize("impl", ["reference", "published:D1"], ids=["fast", "readable"])
def test_audit_names_the_functions_that_ran(impl):
    e16 = traced_functions(impl, "")["E16"]
    assert e16.startswith("reference.conv.conv_grad_filter") == (impl != "reference")
    assert (
        "reference.fast._conv_grad_filter_images (fast path; proven equal to "
        "reference.layers.conv2d._grad_filter)" in e16
    ) == (impl == "reference")


# --- the readable article model is the article network ------------------------------------


@pytest.fixture(scope="module")
def readable_step(harness):
    """{dtype: the readable article model's step} from the run's weights and images."""
    cfg = harness.config
    return {
        dtype: model.train_step(
            dict(harness.params(dtype)), *harness.inputs(dtype), lr=cfg.lr, reduction=cfg.reduction
        )
        for dtype in ("float64", "float32")
    }


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("tensor", [s.tensor for s in STAGES])
def test_article_network_is_the_readable_model(tensor, dtype, harness, readable_step):
    """Every article tensor of Network("article")'s step (the reference, through the view's
    names and layout) against reference.model's, within the allowance a whole framework
    model gets (the network sums in other orders: im2col products)."""
    expected = readable_step[dtype][tensor]
    actual = harness.reference(dtype)[tensor]
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    exact = tensor not in {s.tensor for s in END_TO_END}  # patches: a re-indexing
    allowance = 0.0 if exact else harness.end_to_end_tolerance(tensor, dtype).array
    r = compare_arrays(actual, expected, allowance, against="network")
    name = stages.AS_NETWORK.get(tensor, "X re-indexed")
    assert r["passed"], f"Network('article') {name} != reference.model's {tensor}: {r['note']}"


# --- each reference step once --------------------------------------------------------------


def _counting(monkeypatch, module, name) -> list:
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_the_reference_step_is_computed_once_per_dtype(monkeypatch, run_config, article_data):
    """The article network's step at the run's weights runs once per dtype, however many
    checks and implementations read it; each implementation under test once."""
    from parity_tests import harness as harness_module

    monkeypatch.setattr(harness_module, "_NETWORKS", type(harness_module._NETWORKS)())
    impl_calls = _counting(monkeypatch, harness_module, "run_train_step")
    net_calls = _counting(monkeypatch, stages.NETWORK, "train_step")
    h = harness_module.Harness(run_config, article_data, model)
    for _ in range(2):
        h.reference("float64"), h.implementation("float64")
    # A second implementation of the same run (a published variant, a mutant) shares it.
    other = harness_module.Harness(run_config, article_data, fast)
    other.reference("float64"), other.implementation("float64")
    assert (len(net_calls), len(impl_calls)) == (1, 2)
    assert other.network is h.network


def _relu_backward_plus_one(dA, Z, A):
    return dA * (Z > 0) + 1  # wrong on purpose: an upstream gradient unlike the reference's


@pytest.mark.parametrize(
    "impl,once",
    [("reference", True), ("equal", True), ("different", False)],
    ids=["impl-is-reference-once", "impl-equal-tensors-once", "impl-other-inputs-twice"],
)
def test_a_model_layer_step_is_computed_once_when_its_inputs_are_the_references(
    monkeypatch, run_config, article_data, impl, once
):
    """The stage check (our side) and the end-to-end allowance (the reference's side) run
    the same layer on the same arrays when the network under test is the reference, or
    computed the reference's tensors (the fast kernels: held as the reference's own);
    twice when it fed the layer other values."""
    from parity_tests.model_harness import ModelHarness
    from reference.network import Ops

    net = Network("conv(2,3)-relu-maxpool(2)-dense(10)-softmax_ce")
    ops = dict(net.ops)
    if impl == "different":
        ops["relu"] = Ops(ops["relu"].forward, _relu_backward_plus_one)
    other = None if impl == "reference" else Network(net.spec, ops=ops)
    h = ModelHarness(net, run_config, article_data, impl=other)
    calls = _counting(monkeypatch, net, "node_step")
    ours = h._layer_step("conv1", "float32", "implementation")
    theirs = h._layer_step("conv1", "float32", "reference")
    assert len(calls) == (1 if once else 2)
    assert (ours is theirs) == once
