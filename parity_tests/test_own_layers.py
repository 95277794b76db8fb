"""Your own layers (--parity-layer, CS231n convention) against the reference and both frameworks.

One test per layer kind given with --parity-layer and per dtype (test_own_layer[conv-float64]):
Hypothesis draws the layer's hyper-parameters and values, runs your forward and backward,
and compares the output and every gradient with the reference's layer and with torch's and
TensorFlow's (autograd with the same upstream gradient), each under the stage rule of the
layer's own rounding count (parity_tests/own_layer_checks.py). Without --parity-layer it
checks the bundled example, examples/cs231n_layers/layers.py, every kind.

A failure gives the minimal failing draw with its hyper-parameters, the mismatch with the
explainer's verdict, and a sweep saying which hyper-parameters trigger it (docs/own_layers.md).
The draws per test follow the Hypothesis profile: "gate" (the default) 25, "thorough" 200.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import settings as hyp_settings

from parity_tests import own_layers
from parity_tests.compare import ParityRecorder
from parity_tests.own_layer_checks import check_layer
from parity_tests.settings import SETTINGS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cs231n_layers" / "layers.py"


def example_values(path: Path = EXAMPLE) -> tuple[str, ...]:
    """--parity-layer values for every kind of one CS231n-style file."""
    return tuple(own_layers.option_value(kind, path) for kind in own_layers.KINDS)


def configured_layers(config) -> dict:
    """The --parity-layer layers of this run, else the bundled example's."""
    s = config.stash[SETTINGS]
    if s.layers:
        return dict(s.user_layers)  # loaded once, when the options were validated
    return dict(own_layers.load(example_values(), "mean", s.layer_isolation, s.layer_timeout))


def draws() -> int:
    """Draws per test: the active Hypothesis profile's max_examples."""
    return hyp_settings().max_examples


def pytest_generate_tests(metafunc):
    if "own_kind" in metafunc.fixturenames:
        metafunc.parametrize("own_kind", list(configured_layers(metafunc.config)))


def test_own_layer(parity, parity_settings, pytestconfig, own_kind, dtype):
    # A batch norm given with its batchnorm_backward_alt: the forward with each backward.
    for layer in own_layers.pairs(configured_layers(pytestconfig)[own_kind]):
        recorder = ParityRecorder(parity.node, dataclasses.replace(parity.context, impl=layer.label))
        outcome = check_layer(recorder, layer, dtype, parity_settings.frameworks, draws())
        if outcome.message:
            pytest.fail(outcome.message, pytrace=False)
