"""Property-based: any small CNN the spec grammar allows is checked like lenet.

hypothesis draws a network (parity_tests/strategies.py: 1 to 3 conv blocks with random
channels, kernel, stride, padding and bias, optionally a normalisation, an activation and
optionally a pool each, optionally a global average pooling, 1 to 2 dense layers (the
hidden one optionally normalised and followed by a dropout), mse or softmax_ce), a batch
size, a seed (the weights' and the dropout masks') and a reduction:

* test_generated_network_matches_the_frameworks: every tensor of the drawn network,
  stage-isolated and end to end, against each framework and dtype of the run, under the
  same policy as test_model.py (kinks included); no false alarm allowed. A failure shrinks
  to the minimal network and names it with the command that reruns it.
* test_broken_layer_is_caught_at_its_own_tensor: a mistake from the mutation catalogue
  (parity_tests/model_mutants.py), put into whatever network is drawn that uses its layer
  in a way the mistake can show (and through which something flows: a dead ReLU network
  carries zeros), is caught first at a tensor of that layer kind and named by the explainer.

The `gate` profile (plain pytest) draws a few networks, `thorough` (./parity test) many.
"""

from __future__ import annotations

import dataclasses
import shlex
from types import SimpleNamespace

import numpy as np
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from parity_tests import model_mutants as mm
from parity_tests.explain import fit_tolerance
from parity_tests.model_harness import ModelHarness
from parity_tests.strategies import specs
from reference.network import Network

# A drawn network is checked against both frameworks in both dtypes: one example costs
# what ~30 property examples of a layer do, so each profile draws an eighth of its count.
EXAMPLES = max(2, settings.default.max_examples // 8)
# At one to three images a tensor can rest on a single long dot product (a dense(1) output),
# and the frameworks' small-batch kernels are less accurate there than our blocked BLAS
# (torch float32 at one image, conv(1,1)-sigmoid-dense(1)-sigmoid-mse: dense2.db 8 ulp off
# where our float32 run is ~1; docs/guarantees.md, "Known limit"). From four
# images up no false alarm in two sweeps of 60 drawn networks (at 4..8 and at 1..8 images).
MIN_IMAGES = 4


def _subset(data, n):
    return SimpleNamespace(X=data.X[:, :, :n], labels=data.labels[:n])


@settings(max_examples=EXAMPLES)
@given(
    spec=specs(),
    n_images=st.integers(MIN_IMAGES, 8),
    seed=st.integers(0, 2**16),
    reduction=st.sampled_from(("sum", "mean")),
)
def test_generated_network_matches_the_frameworks(
    parity_settings, run_config, article_data, spec, n_images, seed, reduction
):
    config = dataclasses.replace(run_config, seed=seed, n_images=n_images, reduction=reduction)
    harness = ModelHarness(Network(spec, seed=seed), config, _subset(article_data, n_images))
    s = parity_settings
    # A vacuous check fails here as in a run: a dead network's zeros are declared by the
    # float64 truth, and so is a sum that cancels below its allowance.
    failures = [f for _, _, f in harness.budgets(s.frameworks, s.dtypes) if f]
    rerun = shlex.join(
        ["python", "-m", "pytest", "parity_tests/test_model.py", "--parity-model", spec]
        + ["--parity-seed", str(seed), "--parity-n-images", str(n_images)]
        + ["--parity-reduction", reduction]
    )
    assert not failures, (
        f"network {spec!r} ({n_images} image(s), seed {seed}, reduction {reduction}): "
        f"{len(failures)} check(s) fail:\n  " + "\n  ".join(failures[:8]) + f"\nrerun: {rerun}"
    )


def _positions(node):
    return node.out_shape[1] * node.out_shape[2]


def _everywhere(node):
    return True


# Where each mistake can show: a layer of its kind, used so that the mistake changes numbers
# (a gradient it computes, a window of more than one element, a stride of 2 or more with
# more than one output position, channels and positions to mix), and a batch of two or
# more where the mistake is a mean for a sum. (mistake -> (its layer kind's test, the
# smallest batch, the reduction it needs or None))
VISIBLE = {
    "pool_grad_spread_evenly": (_everywhere, 1, None),
    "avgpool_grad_not_divided": (_everywhere, 1, None),
    "conv_grad_input_no_dilation": (lambda c: c.layer.stride > 1 and _positions(c) > 1, 1, None),
    "conv_bias_grad_mean_positions": (lambda c: c.layer.bias and _positions(c) > 1, 1, None),
    "tanh_grad_of_input": (_everywhere, 1, None),
    "sigmoid_grad_of_input": (_everywhere, 1, None),
    "dense_bias_grad_mean": (lambda d: d.layer.bias, 2, None),
    "ce_grad_mean_without_1_over_N": (_everywhere, 2, "mean"),
    "flatten_channel_last": (
        lambda f: f.in_shape[0] > 1 and f.in_shape[1] * f.in_shape[2] > 1,
        1,
        None,
    ),
    "mse_without_half": (_everywhere, 1, None),
}


def _layers_it_breaks(mutant, net):
    test = VISIBLE[mutant.id][0]
    short = mutant.first.split(".", 1)[1]
    forward = short in ("A", "Z", "P", "E")  # a forward mistake: every layer of its kind runs it
    return [n for n in net.nodes if n.kind == mutant.kind and (forward or short in n.grads) and test(n)]


TANH_VISIBLE = 0.1  # some |z| reached by a delta above this: the two differ by > 6e-5


def _live(net, node, tensors, X) -> bool:
    """Does anything flow through `node` in this step (a dead ReLU network carries zeros:
    no mistake in it can show)? Its input, and for a gradient its upstream, not all zero."""
    x = net.inputs_of(node, X, tensors)
    up = net.upstream_of(node, tensors)
    if node.kind == "tanh" and up is not None:
        # 1 - Z^2 for 1 - A^2 differs by ~(2/3) z^4: invisible under rounding while every
        # |z| is small (a thorough run drew a dense(2)-tanh fed 1e-3s).
        return bool(np.any(up != 0) and np.abs(x[up != 0]).max() > TANH_VISIBLE)
    return bool(np.any(x != 0) and (up is None or np.any(up != 0)))


@st.composite
def _broken_networks(draw):
    mutant = mm.MODEL_MUTANTS[draw(st.sampled_from(sorted(VISIBLE)))]
    _, smallest, reduction = VISIBLE[mutant.id]
    n_images = draw(st.integers(smallest, 6))
    reduction = reduction or draw(st.sampled_from(("sum", "mean")))
    # No normalisation: a batch norm after a dense layer is undefined at one image.
    spec = draw(specs(normalise=False).filter(lambda s: _layers_it_breaks(mutant, Network(s))))
    return mutant, spec, n_images, reduction


@settings(
    max_examples=max(3, settings.default.max_examples // 4), suppress_health_check=list(HealthCheck)
)
@given(case=_broken_networks())
def test_broken_layer_is_caught_at_its_own_tensor(article_data, parity, case):
    mutant, spec, n_images, reduction = case
    note(f"{mutant.label} in {spec!r}, {n_images} image(s), reduction {reduction}")
    where, data = mm.Case(spec, reduction), _subset(article_data, n_images)
    correct = mm.run(where, data, None, mutant.dtype)
    net = correct.net
    assume(any(_live(net, n, correct.tensors, correct.X) for n in _layers_it_breaks(mutant, net)))
    r = mm.run(where, data, {mutant.kind: mutant.ops}, mutant.dtype)
    finding = mm.localise(r, mm.recorder(parity, mutant.label, where))
    first = finding.first_tensor
    expected = mutant.first.split(".", 1)[1]
    node = r.net.node_of(first) if first else None
    assert node is not None and node.kind == mutant.kind and first.endswith(f".{expected}"), (
        f"{mutant.label} in {spec!r} ({n_images} image(s), {reduction}): expected the first "
        f"diverging tensor to be a {mutant.kind} layer's {expected}, got {first or 'none'}\n"
        + mm.message(finding, mutant)
    )
    # The explainer names a mismatch only above its own fit tolerance (parity_tests/explain.py):
    # a tanh fed small z, or a delta that reaches a few elements, can be caught below it.
    c = mm.stage_check(r, first)
    mismatch = np.linalg.norm(c.actual.astype(float) - c.expected) / np.linalg.norm(c.expected)
    if mismatch <= fit_tolerance(c.actual.dtype, c.expected.dtype):
        note(f"caught at {first}, relative mismatch {mismatch:.2g}: below the explainer's fit")
        return
    assert finding.first_suspect == mutant.explains, (
        f"{mutant.label} in {spec!r}: caught at {first}, but the explainer said "
        f"{finding.first_explanation!r}, not {mutant.explains!r}"
    )
