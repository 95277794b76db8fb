"""--parity-layer for the normalisations and dropout (CS231n assignment 2): batchnorm (the
(N, D) pair, and its batchnorm_backward_alt), spatial_batchnorm, layernorm, groupnorm (the
spatial group norm) and dropout, checked alone against the reference and both frameworks,
their conventions (CS231n's p keeps a value; the running statistics' momentum and biased
variance; the test modes), and inside a spec network.

Each mistake planted in examples/cs231n_layers/broken.py is caught, named by the registry's
catalogue (reference/layers/norm.py) and pinned by the sweep to the hyper-parameters that
trigger it. The checks run in-process with a QuietRecorder, as test_own_layers_examples.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from parity_tests import model_stages, own_layers
from parity_tests.compare import explain_check
from parity_tests.detection import QuietRecorder
from parity_tests.metrics import compare_arrays
from parity_tests.model_harness import ModelHarness
from parity_tests.own_layer_checks import check_layer
from parity_tests.test_own_layers import draws
from reference.network import Network

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "cs231n_layers"
GOOD, BROKEN = EXAMPLES / "layers.py", EXAMPLES / "broken.py"
NEW = ("batchnorm", "spatial_batchnorm", "layernorm", "groupnorm", "dropout")


def _layer(kind, path):
    return own_layers.parse_layer(own_layers.option_value(kind, path))


def _check(parity, layer, dtype="float64", frameworks=()):
    quiet = QuietRecorder(parity.node, dataclasses.replace(parity.context, impl=layer.label))
    return check_layer(quiet, layer, dtype, frameworks, draws())


def test_batchnorm_backward_alt_is_checked_as_a_second_pair(parity):
    layer = _layer("batchnorm", GOOD)
    main, alt = own_layers.pairs(layer)
    assert alt.functions[1].label.endswith(":batchnorm_backward_alt")
    assert alt.label == "own:batchnorm[backward_alt]" and main.label == "own:batchnorm"
    assert _check(parity, alt).message is None


@pytest.mark.parametrize("count", [1, 4], ids=["one", "four"])
def test_batchnorm_takes_two_or_three_functions(count):
    names = ["batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt", "batchnorm_forward"]
    value = "batchnorm=" + ",".join(f"{GOOD}:{n}" for n in names[:count])
    with pytest.raises(pytest.UsageError, match="2 or 3 functions for batchnorm"):
        own_layers.parse_layer(value)


# kind -> (the tensors that fail, in the minimal example, the sweep's verdict, the catalogue's
# name for it (None: a mistake the catalogue does not hold))
PLANTED = {
    "batchnorm": (
        {"batchnorm.dX"},
        "batchnorm(N=2",
        "fails at all 6 points (every N and tiny)",
        "bn_grad_without_mean_terms",
    ),
    "spatial_batchnorm": (
        {"spatial_batchnorm.A", "spatial_batchnorm.dX", "spatial_batchnorm.dgamma"},
        "H=2",
        "fails for size >= 2 (size=2, 3), at every N and tiny; passes for size=1",
        "spatial_bn_per_position",
    ),
    "layernorm": (
        {"layernorm.A", "layernorm.dX", "layernorm.dgamma"},
        "layernorm(N=1",
        "fails at all 6 points (every N and tiny)",
        "layernorm_over_batch",
    ),
    "groupnorm": (
        {"groupnorm.A", "groupnorm.dX", "groupnorm.dgamma"},
        "G=2, cpg=2",
        "fails for G >= 2 (G=2, 3) and cpg >= 2 (cpg=2, 3), at every tiny; passes otherwise",
        "groupnorm_channels_interleaved",
    ),
    "dropout": (
        {"dropout.A", "dropout.dX"},
        "p=0.3",
        "fails for p in {0.3, 0.5, 0.75}, at every dims and N; passes for p=1.0",
        "dropout_unscaled",
    ),
}


@pytest.mark.parametrize("kind", NEW)
def test_planted_norm_mistake_is_caught_named_and_pinned(parity, kind):
    tensors, minimal, swept, suspect = PLANTED[kind]
    outcome = _check(parity, _layer(kind, BROKEN))
    message = outcome.message
    assert message is not None, f"{kind}: the planted mistake was not caught"
    failed = {r["tensor"] for r in outcome.records if r["status"] == "fail"}
    assert failed == tensors, message
    example = next(line for line in message.splitlines() if line.startswith("minimal failing example"))
    assert minimal in example, message
    assert swept in message, message
    assert suspect in message, message


@pytest.mark.slow  # both frameworks, both dtypes: ~20 s
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", NEW)
def test_example_norm_layer_passes_against_both_frameworks(parity, kind, dtype):
    for pair in own_layers.pairs(_layer(kind, GOOD)):
        outcome = _check(parity, pair, dtype, ("torch", "tensorflow"))
        assert outcome.message is None, outcome.message
        assert {r["against"] for r in outcome.records} == {"reference", "torch", "tensorflow"}


# Mistakes of convention, each an edit of layers.py: (kind, source appended, what is said,
# the error record's tensor).
CONVENTIONS = {
    "dropout-p-drops": (
        "dropout",
        "\ndef dropout_forward(x, dropout_param):\n"
        "    p = dropout_param['p']\n"
        "    if dropout_param['mode'] == 'train':\n"
        "        np.random.seed(dropout_param['seed'])\n"
        "        mask = (np.random.rand(*x.shape) >= p) / p  # drops with p, scales as keeping\n"
        "        mask = mask.astype(x.dtype)\n"
        "        return x * mask, (dropout_param, mask)\n"
        "    return x, (dropout_param, None)\n",
        "it keeps 1 - p: p taken as the probability of dropping",
        "dropout.A",
    ),
    "dropout-test-mode-scaled": (
        "dropout",
        "\n_good_dropout_forward = dropout_forward\n"
        "def dropout_forward(x, dropout_param):\n"
        "    out, cache = _good_dropout_forward(x, dropout_param)\n"
        "    if dropout_param['mode'] == 'test':\n"
        "        out = x * dropout_param['p']  # non-inverted dropout's test time\n"
        "    return out, cache\n",
        "in mode 'test' did not return x",
        "dropout.A_test",
    ),
    "bn-running-var-unbiased": (
        "batchnorm",
        "\n_good_batchnorm_forward = batchnorm_forward\n"
        "def batchnorm_forward(x, gamma, beta, bn_param):\n"
        "    old = bn_param['running_var'].copy()\n"
        "    out, cache = _good_batchnorm_forward(x, gamma, beta, bn_param)\n"
        "    m, N = bn_param['momentum'], x.shape[0]\n"
        "    if bn_param['mode'] == 'train':\n"
        "        bn_param['running_var'] = m * old + (1 - m) * x.var(axis=0) * N / (N - 1)\n"
        "    return out, cache\n",
        "it matches the UNBIASED batch variance",
        "batchnorm.running_var",
    ),
    "bn-test-mode-batch-statistics": (
        "batchnorm",
        "\n_good_batchnorm_forward = batchnorm_forward\n"
        "def batchnorm_forward(x, gamma, beta, bn_param):\n"
        "    if bn_param['mode'] == 'test':  # the batch's statistics at test time too\n"
        "        return _good_batchnorm_forward(x, gamma, beta, dict(bn_param, mode='train'))\n"
        "    return _good_batchnorm_forward(x, gamma, beta, bn_param)\n",
        "it normalises with the batch's own statistics, as in training",
        "batchnorm.A_test",
    ),
}


@pytest.mark.parametrize("name", CONVENTIONS)
def test_a_convention_mistake_is_caught_and_said(parity, tmp_path, name):
    kind, source, says, tensor = CONVENTIONS[name]
    path = tmp_path / f"{name.replace('-', '_')}.py"
    path.write_text(GOOD.read_text(encoding="utf-8") + source, encoding="utf-8")
    outcome = _check(parity, _layer(kind, path))
    assert outcome.message is not None, f"{name} passed"
    assert says in outcome.message, outcome.message
    errors = {r["tensor"] for r in outcome.records if r["status"] == "error"}
    assert errors == {tensor}, outcome.message


# Catalogue mistakes of the batch-norm forward, each an edit of layers.py's
# batchnorm_forward: (its line for std, the catalogue's name). Both fail at every point of
# the sweep in float64, where the allowance is far below eps's weight.
BN_FORWARDS = {
    "eps-outside-sqrt": ("std = np.sqrt(var) + eps", "bn_eps_outside_sqrt"),
    "unbiased-variance": ("std = np.sqrt(var * N / (N - 1) + eps)", "bn_unbiased_variance"),
}


@pytest.mark.parametrize("name", BN_FORWARDS)
def test_a_batchnorm_forward_mistake_is_named_by_the_catalogue(parity, tmp_path, name):
    line, suspect = BN_FORWARDS[name]
    source = GOOD.read_text(encoding="utf-8")
    right = "        std = np.sqrt(var + eps)\n"
    assert source.count(right) == 1
    edited = source.replace(right, f"        N = x.shape[0]\n        {line}\n")
    path = tmp_path / f"bn_{name.replace('-', '_')}.py"
    path.write_text(edited, encoding="utf-8")
    outcome = _check(parity, _layer("batchnorm", path))
    assert outcome.message is not None, f"{name} passed"
    failed = {r["tensor"] for r in outcome.records if r["status"] == "fail"}
    assert "batchnorm.A" in failed, outcome.message
    assert suspect in outcome.message, outcome.message


# --- inside a network ---------------------------------------------------------------------

# kind -> (a spec network using it, its tensor where broken.py's mistake shows first)
NETWORKS = {
    "batchnorm": ("dense(16)-batchnorm-relu-dense(10)-softmax_ce", "batchnorm2.dX"),
    "spatial_batchnorm": ("conv(4,3)-batchnorm-relu-dense(10)-softmax_ce", "batchnorm2.A"),
    "layernorm": ("dense(16)-layernorm-relu-dense(10)-softmax_ce", "layernorm2.A"),
    "groupnorm": ("conv(8,3)-groupnorm(2)-relu-dense(10)-softmax_ce", "groupnorm2.A"),
}


@pytest.mark.parametrize("path", [GOOD, BROKEN], ids=["layers", "broken"])
@pytest.mark.parametrize("kind", NETWORKS)
def test_own_norm_inside_a_network(run_config, article_data, framework, kind, path):
    spec, first = NETWORKS[kind]
    net = Network(spec)
    layers = own_layers.load((own_layers.option_value(kind, path),))
    assert own_layers.impl_label(own_layers.used_layers(layers, net)) == f"own:{kind}"
    impl = own_layers.user_network(spec, (own_layers.option_value(kind, path),))
    harness = ModelHarness(net, run_config, article_data, impl=impl)
    c = harness.stage_check(first, framework, "float64")
    result = compare_arrays(c.actual, c.expected, c.tolerance.array, against=framework)
    assert result["passed"] is (path == GOOD), result
    if path == BROKEN:
        verdict, _ = explain_check(c, first, framework)
        assert verdict["suspect"] == PLANTED[kind][3], verdict


def test_user_norm_layers_match_the_reference_in_a_network():
    """Every tensor of a network with every user normalisation equals the reference's layer
    on the same inputs, under the stage rule (the adapters' gamma shapes, bn_param, G)."""
    spec = (
        "conv(4,3)-batchnorm-relu-conv(4,3)-groupnorm(2)-dense(12)-batchnorm-layernorm"
        "-dense(10)-softmax_ce"
    )
    values = tuple(own_layers.option_value(k, GOOD) for k in NETWORKS)
    ours, ref = Network(spec, ops=own_layers.user_ops(own_layers.load(values))), Network(spec)
    rng = np.random.default_rng(1)
    X, labels = rng.standard_normal((3, 1, 28, 28)), rng.integers(0, 10, 3)
    params = ref.init_params(0)
    step = ours.train_step(params, X, labels, 0.1, "mean")
    for node in ours.nodes:
        x, up = ours.inputs_of(node, X, step), ours.upstream_of(node, step)
        want = ref.node_step(node, x, params, up, labels, "mean")
        for name in (*map(node.q, node.outputs), *map(node.q, node.grads)):
            short = name.split(".", 1)[1]
            tol = model_stages.stage_tolerance(
                node, short, x, params, up, want, "mean", "float64", labels
            )
            result = compare_arrays(want[name], step[name], tol.array, against="reference")
            assert result["passed"] or result["vacuous"], (name, result["note"])


@pytest.mark.parametrize(
    "kind,spec,says",
    [
        ("dropout", "dense(16)-relu-dropout(0.5)-dense(10)-softmax_ce", "draws its own"),
        ("spatial_batchnorm", "dense(16)-batchnorm-dense(10)-softmax_ce", "on (N, C, H, W) maps"),
        ("batchnorm", "conv(4,3)-batchnorm-dense(10)-softmax_ce", "on (N, D) features"),
        ("groupnorm", "lenet", "lenet has no groupnorm layer"),
    ],
    ids=["dropout", "spatial-after-dense", "batchnorm-after-conv", "absent"],
)
def test_a_kind_the_network_does_not_run_is_not_credited(kind, spec, says):
    net = Network(spec)
    layers = own_layers.load((own_layers.option_value(kind, GOOD),))
    assert own_layers.used_layers(layers, net) == {}
    assert says in own_layers.not_in_network(kind, net, spec if spec == "lenet" else "the network")


def test_notebook_check_layers_takes_the_norms_and_the_alt_backward():
    """The notebook API (check_layers) takes the new kinds as --parity-layer does: batchnorm
    with two or three functions, each backward checked with the forward."""
    from parity_tests import check_layers
    from parity_tests.test_api import _example_layers

    B = _example_layers("broken")
    bn = (B.batchnorm_forward, B.batchnorm_backward, B.batchnorm_backward_alt)
    result = check_layers({"batchnorm": bn}, frameworks=(), dtypes="float64")
    assert set(result.records["impl"]) == {"own:batchnorm", "own:batchnorm[backward_alt]"}
    failed = result.records[result.records["status"] == "fail"]
    assert set(failed["impl"]) == {"own:batchnorm"}, result.headline
    assert len(result.messages) == 1 and "bn_grad_without_mean_terms" in result.messages[0]
    with pytest.raises(TypeError, match="batchnorm takes 2 or 3 function"):
        check_layers({"batchnorm": bn[:1]}, frameworks=())
