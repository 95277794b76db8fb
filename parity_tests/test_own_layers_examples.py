"""--parity-layer on the bundled examples: examples/cs231n_layers/layers.py passes every
layer's checks, and each mistake planted in examples/cs231n_layers/broken.py is caught,
named (the tensor, the explainer's suspect), shown on a minimal example with its
hyper-parameters and pinned by the sweep to the hyper-parameters that trigger it. Also: the
option's usage errors, the adapters that build a spec network from a user's layers, and
lenet built with the broken max-pool failing at the pool's dX.

The checks run in-process (own_layer_checks.check_layer, as test_own_layers.py calls it)
with a QuietRecorder: measured and failed like every check, but not recorded (the report is
about the layers the session checks, not about these examples).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from parity_tests import model_stages, own_layers
from parity_tests.compare import explain_check
from parity_tests.detection import QuietRecorder
from parity_tests.metrics import compare_arrays
from parity_tests.model_harness import ModelHarness
from parity_tests.own_layer_checks import Case, check_layer, describe_sweep
from parity_tests.test_own_layers import draws
from reference.network import Network

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "cs231n_layers"
GOOD, BROKEN = EXAMPLES / "layers.py", EXAMPLES / "broken.py"


def _layer(kind, path):
    return own_layers.parse_layer(own_layers.option_value(kind, path))


def _quiet(parity, layer):
    return QuietRecorder(parity.node, dataclasses.replace(parity.context, impl=layer.label))


# The normalisations and dropout: test_own_layers.py's default run checks layers.py's against
# both frameworks in both dtypes, and test_own_norm_layers.py (slow) asserts their records.
NORM_KINDS = ("batchnorm", "spatial_batchnorm", "layernorm", "groupnorm", "dropout")


@pytest.mark.parametrize("kind", [k for k in own_layers.KINDS if k not in NORM_KINDS])
def test_example_passes_every_layer(parity, parity_settings, kind):
    layer = _layer(kind, GOOD)
    outcome = check_layer(_quiet(parity, layer), layer, "float64", parity_settings.frameworks, draws())
    assert outcome.message is None, outcome.message
    sides = {"reference", *parity_settings.frameworks}
    assert {(r["tensor"], r["against"]) for r in outcome.records} == {
        (f"{kind}.{s}", side) for s in own_layers.OUTPUTS[kind] for side in sides
    }


# kind -> (the tensor, in the minimal example, the sweep's verdict, the explainer's suspect)
PLANTED = {
    "conv": (
        "conv.dX",
        "stride=2",
        "fails for stride >= 2 (stride=2, 3), at every pad, k and size; passes for stride=1",
        "conv_grad_input_no_dilation",
    ),
    "maxpool": (
        "maxpool.dX",
        "ties=yes",
        "fails for ties=yes and k >= 2 (k=2, 3), at every stride; passes otherwise",
        "pool_grad_all_maxima",
    ),
    "softmax_ce": (
        "softmax_ce.dZ",
        "N=2",
        "fails for N >= 2 (N=2, 3, 4), at every K and big; passes for N=1",
        "ce_grad_missing_1_over_N",
    ),
}


@pytest.mark.parametrize("kind", PLANTED)
def test_planted_mistake_is_caught_named_and_pinned(parity, parity_settings, kind):
    tensor, minimal, swept, suspect = PLANTED[kind]
    layer = _layer(kind, BROKEN)
    outcome = check_layer(_quiet(parity, layer), layer, "float64", parity_settings.frameworks, draws())
    message = outcome.message
    assert message is not None, f"{kind}: the planted mistake was not caught"
    first = message.splitlines()[0]
    # Only the planted tensor differs, and from every side.
    assert first.endswith(
        ", ".join(f"{tensor} vs {s}" for s in ("reference", *parity_settings.frameworks))
    )
    assert f"`{tensor}`" in message
    example = next(line for line in message.splitlines() if line.startswith("minimal failing example"))
    assert minimal in example, message
    assert swept in message, message
    assert suspect in message, message  # the explainer's verdict
    assert "reproduce: " in message
    failed = [r for r in outcome.records if r["status"] == "fail"]
    assert failed and {r["tensor"] for r in failed} == {tensor}


def test_sweep_summary_names_the_values_that_fail():
    grid = (("stride", (1, 2, 3)), ("pad", (0, 1)))
    points = [({"stride": s, "pad": p}, s >= 2 and p == 1) for s in (1, 2, 3) for p in (0, 1)]
    assert describe_sweep(grid, points) == (
        "fails for stride >= 2 (stride=2, 3) and pad=1; passes otherwise"
    )
    scattered = [
        ({"stride": s, "pad": p}, (s, p) in {(1, 0), (3, 1)}) for s in (1, 2, 3) for p in (0, 1)
    ]
    assert describe_sweep(grid, scattered).startswith("fails at 2 of 6 points")
    assert describe_sweep(grid, [(p, False) for p, _ in points]) == "passes at all 6 points"


# Sweeps whose failing points no product of single values describes: a relation of the
# window geometry that involves two hyper-parameters (issue 21, point 3b).
_POOL_GRID = (("ties", (False, True)), ("k", (1, 2, 3)), ("stride", (1, 2, 3)))
_CONV_GRID = (("stride", (1, 2, 3)), ("pad", (0, 1, 2)), ("k", (1, 2, 3, 4)), ("size", (8, 9)))


def _grid_points(grid, fails):
    from itertools import product

    names = [n for n, _ in grid]
    rows = [dict(zip(names, values)) for values in product(*(v for _, v in grid))]
    return [(row, bool(fails(row))) for row in rows]


def _conv_span(p):
    return p["size"] + 2 * p["pad"] - p["k"]


RELATION_SWEEPS = {
    "stride-below-k": (
        _POOL_GRID, {"H": 6, "W": 6}, lambda p: p["stride"] < p["k"],
        "fails when stride < k (the windows overlap), at every ties: 6 of 18 points; passes otherwise",
    ),
    "stride-below-k-and-ties": (
        _POOL_GRID, {"H": 6, "W": 6}, lambda p: p["stride"] < p["k"] and p["ties"],
        "fails when stride < k (the windows overlap) and ties=yes: 3 of 18 points; passes otherwise",
    ),
    "span-not-multiple-of-stride": (
        _CONV_GRID, {}, lambda p: _conv_span(p) % p["stride"] != 0,
        "fails when (H + 2p - k) % stride != 0 (H + 2p - k is not a multiple of the stride",
    ),
    "output-size-rounded": (
        _CONV_GRID, {}, lambda p: round(_conv_span(p) / p["stride"]) > _conv_span(p) // p["stride"],
        "(an output size rounded, not floored, is one too large): 14 of 72 points, all of them "
        "where (H + 2p - k) % stride != 0",
    ),
    "only-a-necessary-condition": (
        _CONV_GRID, {}, lambda p: _conv_span(p) % p["stride"] != 0 and p["k"] == 2 and p["pad"] != 1,
        "fails at 5 of 72 points, only where (H + 2p - k) % stride != 0 (H + 2p - k is not a "
        "multiple of the stride: the last windows stop short of the input's end; 5 of its 28 points)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", RELATION_SWEEPS)
def test_sweep_summary_names_a_relation_of_two_hyper_parameters(name):
    grid, fixed, fails, says = RELATION_SWEEPS[name]
    text = describe_sweep(grid, _grid_points(grid, fails), fixed)
    assert says in text, text


# Planted mistakes that only a relation of two hyper-parameters describes, each an edit of
# layers.py: (the kind, the source appended, what the sweep says).
RELATION_MISTAKES = {
    "maxpool-assign-not-add": (
        "maxpool",
        "\ndef max_pool_backward(dout, cache):\n"
        "    x, pool_param = cache\n"
        "    ph, pw = pool_param['pool_height'], pool_param['pool_width']\n"
        "    stride = pool_param['stride']\n"
        "    N, C, H_out, W_out = dout.shape\n"
        "    windows = _windows(x, ph, pw, stride).reshape(N, C, H_out, W_out, ph * pw)\n"
        "    di, dj = np.divmod(windows.argmax(axis=-1), pw)\n"
        "    rows = stride * np.arange(H_out)[None, None, :, None] + di\n"
        "    cols = stride * np.arange(W_out)[None, None, None, :] + dj\n"
        "    dx = np.zeros_like(x)\n"
        "    n, c = np.arange(N)[:, None, None, None], np.arange(C)[None, :, None, None]\n"
        "    dx[n, c, rows, cols] = dout  # '=': overlapping windows overwrite, not add up\n"
        "    return dx\n",
        "fails when stride < k (the windows overlap), at every ties: 6 of 18 points",
    ),
    "conv-round-output-size": (
        "conv",
        "\ndef conv_forward(x, w, b, conv_param):\n"
        "    stride, pad = conv_param['stride'], conv_param['pad']\n"
        "    H_out = int(round((x.shape[2] + 2 * pad - w.shape[2]) / stride)) + 1\n"
        "    W_out = int(round((x.shape[3] + 2 * pad - w.shape[3]) / stride)) + 1\n"
        "    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad + stride), (pad, pad + stride)))\n"
        "    windows = _windows(x_pad, w.shape[2], w.shape[3], stride)[:, :, :H_out, :W_out]\n"
        "    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)\n"
        "    return out + b[None, :, None, None], (x, w, b, conv_param)\n",
        "fails when round((H + 2p - k) / stride) > (H + 2p - k) // stride (an output size "
        "rounded, not floored, is one too large): 14 of 72 points, all of them where "
        "(H + 2p - k) % stride != 0 (H + 2p - k is not a multiple of the stride",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", RELATION_MISTAKES)
def test_mistake_of_two_hyper_parameters_is_pinned_by_a_relation(parity, tmp_path, name):
    kind, source, says = RELATION_MISTAKES[name]
    path = tmp_path / f"{name.replace('-', '_')}.py"
    path.write_text(GOOD.read_text(encoding="utf-8") + source, encoding="utf-8")
    layer = _layer(kind, path)
    outcome = check_layer(_quiet(parity, layer), layer, "float64", (), draws())
    assert outcome.message is not None, f"{name} passed"
    assert says in outcome.message, outcome.message
    # The shrunk example of the '=' pool holds one nonzero per side: no factor is fitted on it.
    assert "constant factor" not in outcome.message, outcome.message


# A softmax_loss without the max shift, as CS231n students first write it: exp(x) overflows
# once a logit passes log(max float), 709.8 in float64 and 88.7 in float32.
UNSHIFTED_SOFTMAX = (
    "\ndef softmax_loss(x, y):\n"
    "    N = x.shape[0]\n"
    "    e = np.exp(x)  # no max shift\n"
    "    probs = e / e.sum(axis=1, keepdims=True)\n"
    "    loss = -np.log(probs[np.arange(N), y]).sum() / N\n"
    "    dx = probs.copy()\n"
    "    dx[np.arange(N), y] -= 1\n"
    "    return loss, dx / N\n"
)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_unshifted_softmax_fails_in_every_dtype(parity, tmp_path, precision):
    """The 'big' logits reach past the checked dtype's exp overflow (x 30 alone stayed
    within +-150, so float64 passed): the unshifted softmax fails at big=yes in float64 as
    in float32, the explainer names it, and the sweep pins it to big."""
    from parity_tests.own_layer_checks import make_inputs, overflow_logit

    case = Case.make("softmax_ce", 0, N=1, K=2, big=True)
    limit = float(np.log(np.finfo(precision).max))
    assert make_inputs(case, precision).a["Z"].max() > limit
    assert overflow_logit(precision) > limit
    path = tmp_path / "softmax_unshifted.py"
    path.write_text(GOOD.read_text(encoding="utf-8") + UNSHIFTED_SOFTMAX, encoding="utf-8")
    layer = _layer("softmax_ce", path)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        outcome = check_layer(_quiet(parity, layer), layer, precision, (), draws())
    message = outcome.message
    assert message is not None, f"an unshifted softmax passed in {precision}"
    assert outcome.case is not None and outcome.case["big"] is True, message
    assert "softmax_no_max_shift" in message, message
    assert "fails for big=yes, at every N and K; passes for big=no" in message, message


FLOAT64_RELU_BACKWARD = (
    "\ndef relu_backward(dout, cache):\n"
    "    x = cache\n"
    "    dx = np.zeros(x.shape)  # float64, whatever x is\n"
    "    dx[x > 0] = dout[x > 0]\n"
    "    return dx\n"
)


def test_float64_result_in_a_float32_run_is_said_once(parity, tmp_path):
    """A layer that returns float64 for float32 inputs raises the same error at every point
    of the sweep: the message says it once, with no 'fails at all 16 points' after it."""
    path = tmp_path / "relu_float64.py"
    path.write_text(GOOD.read_text(encoding="utf-8") + FLOAT64_RELU_BACKWARD, encoding="utf-8")
    layer = _layer("relu", path)
    message = check_layer(_quiet(parity, layer), layer, "float32", (), draws()).message
    assert message is not None
    assert message.count("as float64 for float32 inputs") == 1, message
    assert "does not depend on the hyper-parameters" in message.splitlines()[0], message
    assert "fails at all" not in message and "sweep of" not in message, message
    assert check_layer(_quiet(parity, layer), layer, "float64", (), draws()).message is None


# --- the option --------------------------------------------------------------------------------


def _value(kind, module, names=None):
    names = names or own_layers.FUNCTION_NAMES[kind]
    return f"{kind}=" + ",".join(f"{module}:{n}" for n in names)


@pytest.fixture
def raising_module(tmp_path):
    path = tmp_path / "raises_at_import.py"
    path.write_text("1 / 0\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "values,says",
    [
        (["conv"], "expected KIND=module:forward,module:backward"),
        (["convv=a.py:f,a.py:g"], "closest: 'conv'"),
        (
            [_value("relu", GOOD, ["relu_forward", "relu_backward", "relu_forward"])],
            "2 functions for relu",
        ),
        ([_value("softmax_ce", GOOD, ["softmax_loss", "softmax_loss"])], "one function for softmax_ce"),
        (["relu=relu_forward,relu_backward"], "no ':'"),
        ([_value("relu", "no_such_module_here_xyz")], "not an importable module"),
        ([_value("relu", "/no/such/dir/layers.py")], "no such file"),
        ([_value("relu", "not a module")], "dotted module name or a path"),
        ([_value("relu", GOOD, ["relu_forwardd", "relu_backward"])], "has no 'relu_forwardd'"),
        ([_value("relu", GOOD, ["np", "relu_backward"])], "is a module, not a function"),
        ([_value("relu", GOOD), _value("relu", GOOD)], "at most once"),
        ([_value("tanh", "RAISING")], "could not be imported .ZeroDivisionError"),
        ([_value("tanh", "FIFO")], "not a regular file"),  # refused, never read (it would block)
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, str) else None,
)
def test_bad_layer_option_is_one_usage_error(values, says, raising_module, tmp_path):
    fifo = tmp_path / "layers_fifo.py"
    os.mkfifo(fifo)
    values = [v.replace("RAISING", str(raising_module)).replace("FIFO", str(fifo)) for v in values]
    with pytest.raises(pytest.UsageError, match=f"(?s)--parity-layer '.*{says}") as err:
        own_layers.parse_layers(values)
    assert repr(values[-1]) in str(err.value)  # the value as given


def test_softmax_loss_needs_the_mean_reduction():
    value = _value("softmax_ce", GOOD)
    with pytest.raises(
        pytest.UsageError, match="needs --parity-reduction mean; this run's reduction is 'sum'"
    ):
        own_layers.load((value,), "sum")
    ops = own_layers.user_ops(own_layers.load((value,), "mean"))
    net = Network("conv(2,5,stride=3)-relu-dense(10)-softmax_ce", ops=ops)
    X = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    with pytest.raises(ValueError, match="cannot stand for reduction 'sum'"):
        net.train_step(net.init_params(0), X, np.array([1, 2]), 0.1, "sum")


def test_layers_are_reproduced_and_an_experiment_fact_only_when_given(parity_settings, article_data):
    import shlex

    from parity_tests import settings

    value = _value("relu", "examples/cs231n_layers/layers.py")
    given = dataclasses.replace(parity_settings, layers=(value,))
    assert shlex.split(settings.reproduce_options(given))[-2:] == ["--parity-layer", value]
    assert settings.experiment(given, article_data)["layers"] == {"relu": value}
    plain = dataclasses.replace(parity_settings, layers=())
    assert "layers" not in settings.experiment(plain, article_data)
    assert "--parity-layer" not in settings.reproduce_options(plain)


@pytest.mark.slow  # a whole pytest process (~1.5 s); the option checks above run in-process
def test_usage_error_on_the_command_line_exits_4():
    import subprocess

    value = _value("softmax_ce", "examples/cs231n_layers/layers.py")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "parity_tests/test_own_layers.py"]
        + [f"--parity-layer={value}", "--parity-no-report"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"--parity-layer {value!r}: softmax_loss computes the MEAN" in run.stderr


# --- the adapters: a spec network from the user's layers -------------------------------------------

SPEC = (
    "conv(3,3,stride=2,pad=1,bias=false)-relu-maxpool(2)-conv(4,3)-tanh-avgpool(2,stride=1)"
    "-dense(6,bias=false)-sigmoid-dense(10)-softmax_ce"
)


def test_user_layers_build_any_spec_network(parity):
    """Every tensor of a network built from layers.py equals the reference's layer on the same
    inputs, under the stage rule: the adapters pass the right arguments (a bias-free conv and
    dense get zeros and lose db, a pool's k and stride, softmax_loss's mean)."""
    values = tuple(own_layers.option_value(kind, GOOD) for kind in own_layers.KINDS)
    ours, ref = Network(SPEC, ops=own_layers.user_ops(own_layers.load(values))), Network(SPEC)
    rng = np.random.default_rng(1)
    X, labels = rng.standard_normal((3, 1, 28, 28)), rng.integers(0, 10, 3)
    params = ref.init_params(0)
    step = ours.train_step(params, X, labels, 0.1, "mean")
    assert set(step) == set(ref.order)
    for node in ours.nodes:
        x, up = ours.inputs_of(node, X, step), ours.upstream_of(node, step)
        want = ref.node_step(node, x, params, up, labels, "mean")
        for name in (*map(node.q, node.outputs), *map(node.q, node.grads)):
            short = name.split(".", 1)[1]
            tol = model_stages.stage_tolerance(
                node, short, x, params, up, want, "mean", "float64", labels
            )
            result = compare_arrays(want[name], step[name], tol.array, against="reference")
            assert result["passed"] or result["vacuous"], (name, result["note"], result["budget_used"])


@pytest.mark.parametrize("path,passes", [(GOOD, True), (BROKEN, False)], ids=["layers", "broken"])
def test_lenet_with_own_max_pool(article_data, run_config, framework, path, passes):
    """End to end (test_model.py's stage checks): lenet built with the broken max-pool fails at
    the pools' dX (ReLU zeros tie the windows), with the correct one it passes."""
    value = own_layers.option_value("maxpool", path)
    impl = own_layers.user_network("lenet", (value,))
    harness = ModelHarness(Network("lenet"), run_config, article_data, impl=impl)
    results = {}
    for tensor in ("pool1.A", "pool1.dX", "pool2.dX"):
        c = harness.stage_check(tensor, framework, "float64")
        results[tensor] = compare_arrays(c.actual, c.expected, c.tolerance.array, against=framework)
    assert results["pool1.A"]["passed"]
    assert results["pool1.dX"]["passed"] is passes and results["pool2.dX"]["passed"] is passes, results
    if not passes:  # the network's own check names the mistake too, as the layer check does
        verdict, _ = explain_check(
            harness.stage_check("pool2.dX", framework, "float64"), "pool2.dX", framework
        )
        assert verdict["suspect"] == "pool_grad_all_maxima", verdict


def test_case_text_is_what_hypothesis_prints():
    case = Case.make("maxpool", 0, N=1, C=1, H=3, W=3, k=2, stride=1, ties=True)
    assert repr(case) == "maxpool(N=1, C=1, H=3, W=3, k=2, stride=1, ties=yes, seed=0)"


# --- what is compared is what the forward gave -------------------------------------------------

# A forward's output is compared as it was when the forward returned, before the backward ran
# on the same cache: a backward that writes into its cache can neither repair a wrong output
# nor spoil a right one.
CACHE_WRITERS = {
    # relu_forward keeps out in its cache; relu_backward builds dx in that buffer.
    "repairs_wrong_forward": (
        "import numpy as np\n"
        "def relu_forward(x):\n"
        "    out = np.abs(x)  # wrong: |x| is not max(x, 0)\n"
        "    return out, (x, out)\n"
        "def relu_backward(dout, cache):\n"
        "    x, out = cache\n"
        "    np.maximum(x, 0, out=out)  # repairs the forward's output in place\n"
        "    return dout * (x > 0)\n",
        False,
    ),
    "reuses_its_cache": (
        "import numpy as np\n"
        "def relu_forward(x):\n"
        "    out = np.maximum(x, 0)\n"
        "    return out, out\n"
        "def relu_backward(dout, cache):\n"
        "    dx = cache  # the forward's out, reused as dx's buffer: legal, the cache is its own\n"
        "    dx[...] = dout * (cache > 0)\n"
        "    return dx\n",
        True,
    ),
}


@pytest.mark.parametrize("name", CACHE_WRITERS)
def test_forward_output_is_compared_before_the_backward_runs(parity, tmp_path, name):
    source, correct = CACHE_WRITERS[name]
    path = tmp_path / f"relu_{name}.py"
    path.write_text(source, encoding="utf-8")
    layer = _layer("relu", path)
    outcome = check_layer(_quiet(parity, layer), layer, "float64", (), draws())
    if correct:
        assert outcome.message is None, outcome.message
    else:
        assert outcome.message is not None, "a wrong relu forward repaired by its backward passed"
        failed = {r["tensor"] for r in outcome.records if r["status"] == "fail"}
        assert failed == {"relu.A"}, outcome.message


# --- the covering grid: what 25 draws leave untried ---------------------------------------------

# A conv wrong only at one corner of its ranges (its forward off by 1e-3 there), each of
# which the default profile's 25 draws can miss.
CORNERS = {
    "stride3-pad2": "conv_param['stride'] == 3 and conv_param['pad'] == 2",
    "k4-pad2": "w.shape[2] == 4 and conv_param['pad'] == 2",
    "H9-W9": "x.shape[2] == 9 and x.shape[3] == 9",
}


@pytest.mark.parametrize("corner", CORNERS)
def test_a_conv_wrong_at_one_corner_is_caught_by_the_default_run(parity, tmp_path, corner):
    path = tmp_path / f"conv_{corner.replace('-', '_')}.py"
    path.write_text(
        GOOD.read_text(encoding="utf-8")
        + "\n_good_conv_forward = conv_forward\n"
        + "def conv_forward(x, w, b, conv_param):\n"
        + "    out, cache = _good_conv_forward(x, w, b, conv_param)\n"
        + f"    if {CORNERS[corner]}:\n"
        + "        out = out + 1e-3\n"
        + "    return out, cache\n",
        encoding="utf-8",
    )
    layer = _layer("conv", path)
    outcome = check_layer(_quiet(parity, layer), layer, "float64", (), draws())
    assert outcome.message is not None, f"a conv wrong only at {corner} passed the default run"
    failed = {r["tensor"] for r in outcome.records if r["status"] == "fail"}
    assert failed == {"conv.Z"}, outcome.message


def test_the_covering_grid_covers_every_product_point_and_every_pair():
    from itertools import combinations, product

    from parity_tests.own_layer_checks import PRODUCTS, RANGES, covering_grid

    for kind in own_layers.KINDS:
        grid = covering_grid(kind)
        assert len({c.seed for c in grid}) == len(grid)
        held = [dict(c.hyper) for c in grid]
        if kind in PRODUCTS:  # conv: every stride x pad x k at H = W = 8 and at 9
            names = [n for n, _ in PRODUCTS[kind]]
            square = [{**h, "size": h["H"]} for h in held if h["H"] == h["W"]]
            got = {tuple(h[n] for n in names) for h in square}
            assert set(product(*(v for _, v in PRODUCTS[kind]))) <= got, kind
        if kind in ACTIVATION_KINDS or kind == "dropout":
            continue  # C, H, W and D belong to different ranks; their pairs are not all drawn
        for a, b in combinations(RANGES[kind], 2):  # every pair of drawn values meets
            pairs = {(h[a], h[b]) for h in held}
            assert set(product(RANGES[kind][a], RANGES[kind][b])) <= pairs, (kind, a, b)


ACTIVATION_KINDS = ("relu", "sigmoid", "tanh")


# --- a user function that raises inside a network ------------------------------------------------

RAISING_RELU_BACKWARD = (
    "\nimport pathlib\n"
    "def relu_backward(dout, cache):\n"
    "    # counted in a file: the function runs in its own process (isolation 'process')\n"
    "    with open(pathlib.Path(__file__).with_suffix('.calls'), 'a') as calls:\n"
    "        calls.write('1')\n"
    "    raise ValueError('relu_backward is not written yet')\n"
)


def test_a_raising_layer_is_localised_and_what_precedes_it_is_checked(
    tmp_path, run_config, article_data, parity_settings
):
    """lenet with a relu_backward that raises: the errors name relu's tensors (the last ReLU
    is the first layer backward reaches), every forward tensor and the gradients made before
    it still pass, and the user's network is run once per dtype, not once per check."""
    path = tmp_path / "relu_raises.py"
    path.write_text(GOOD.read_text(encoding="utf-8") + RAISING_RELU_BACKWARD, encoding="utf-8")
    impl = own_layers.user_network("lenet", (own_layers.option_value("relu", path),))
    net = Network("lenet")
    harness = ModelHarness(net, run_config, article_data, impl=impl)
    relus = [n.name for n in net.nodes if n.kind == "relu"]
    failing = relus[-1]  # backward meets the last ReLU first
    before = net.backward_names[: net.backward_names.index(f"{failing}.dZ")]
    errors, passed = {}, set()
    for framework in parity_settings.frameworks:
        for dtype in parity_settings.dtypes:
            for mode in ("stage", "end_to_end"):
                make = harness.stage_check if mode == "stage" else harness.end_to_end_check
                for tensor in net.order:
                    try:
                        c = make(tensor, framework, dtype)
                    except Exception as exc:  # noqa: BLE001
                        errors[(tensor, mode)] = str(exc)
                        continue
                    r = compare_arrays(c.actual, c.expected, c.tolerance.array, truth_zero=c.truth_zero)
                    if r["passed"]:
                        passed.add((tensor, mode))
    for tensor in (*net.forward_names, *before):
        assert (tensor, "stage") in passed, (tensor, errors.get((tensor, "stage")))
    for tensor in net.forward_names:
        assert (tensor, "end_to_end") in passed, (tensor, errors.get((tensor, "end_to_end")))
    own = errors[(f"{failing}.dZ", "stage")]
    assert f"relu_raises.py:relu_backward raised at {failing} (relu, backward)" in own, own
    assert "ValueError: relu_backward is not written yet" in own
    later = errors[("conv1.dF", "stage")]
    assert later.startswith("conv1.dF was not computed: ") and f"({failing}.dZ)" in later, later
    assert all(f"at {failing} (relu, backward)" in e for e in errors.values()), errors
    calls = path.with_suffix(".calls").read_text()
    assert len(calls) == len(parity_settings.dtypes), len(calls)  # cached: one try per dtype


RELU_WRITES_DOUT = (
    "\ndef relu_backward(dout, cache):\n"
    "    x = cache\n"
    "    dout[x <= 0] = 0  # in place: harmless in the CS231n network\n"
    "    return dout\n"
)


def test_relu_writing_into_dout_is_reported_and_the_pool_mistake_still_named(
    parity, tmp_path, run_config, article_data, framework
):
    """lenet with a relu_backward that writes into dout and broken.py's max-pool backward:
    the write is reported (an OwnLayerWarning in the network; the layer's own check fails on
    it), but the backward pass goes on with the copy it got, so the pools' dX still fail and
    the explainer still names the max-pool mistake, as without the ReLU."""
    path = tmp_path / "relu_writes_dout.py"
    path.write_text(GOOD.read_text(encoding="utf-8") + RELU_WRITES_DOUT, encoding="utf-8")
    values = (own_layers.option_value("relu", path), own_layers.option_value("maxpool", BROKEN))
    harness = ModelHarness(
        Network("lenet"), run_config, article_data, impl=own_layers.user_network("lenet", values)
    )
    with pytest.warns(own_layers.OwnLayerWarning, match="relu_backward changed its argument dout"):
        check = harness.stage_check("pool2.dX", framework, "float64")
    result = compare_arrays(check.actual, check.expected, check.tolerance.array, against=framework)
    assert not result["passed"], result
    verdict, _ = explain_check(check, "pool2.dX", framework)
    assert verdict["suspect"] == "pool_grad_all_maxima", verdict
    relu = _layer("relu", path)  # checked alone, the write is a failure of relu's own test
    message = check_layer(_quiet(parity, relu), relu, "float64", (), draws()).message
    assert message and "relu_backward changed its argument dout in place" in message, message


def _docs_one_command() -> str:
    text = (ROOT / "docs" / "own_layers.md").read_text(encoding="utf-8")
    block = text.split("## One command", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return block.split("\n", 2)[2]  # after the L=... line: the command itself


def test_broken_example_is_a_drop_in_for_the_docs_commands():
    """broken.py lacked relu/affine: the docs' one command with L=broken.py exited 4. Every
    kind now loads from it (the unbroken ones are layers.py's own), and its docstring shows
    the commands of README.md and docs/own_layers.md (issue 24, point 9)."""
    layers = own_layers.parse_layers(
        [own_layers.option_value(kind, BROKEN) for kind in own_layers.KINDS]
    )
    own = {"conv_forward", "conv_backward", "max_pool_forward", "max_pool_backward", "softmax_loss"}
    own |= {"batchnorm_backward", "spatial_batchnorm_forward", "spatial_batchnorm_backward"}
    own |= {"layernorm_forward", "spatial_groupnorm_forward", "spatial_groupnorm_backward"}
    own |= {"dropout_forward", "dropout_backward"}
    for layer in layers.values():
        for fn in layer.functions:
            name = fn.label.rsplit(":", 1)[1]
            # A function in its own process (isolation "process") says which file defined it.
            where = Path(getattr(fn.fn, "file", None) or fn.fn.__code__.co_filename).resolve()
            assert where == (BROKEN if name in own else GOOD).resolve(), name
    doc = own_layers._load_path(BROKEN.resolve()).__doc__
    words = " ".join  # the same words, whatever the indentation
    assert words(_docs_one_command().split()) in words(doc.split())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--parity-layer=maxpool=$L:max_pool_forward,$L:max_pool_backward" in readme
    assert "--parity-layer=maxpool=$L:max_pool_forward,$L:max_pool_backward" in doc
