"""A spec-built network (--parity-model; lenet beside the article by default) vs the frameworks.

Every tensor of the network, by its layer-qualified name (reference/network.py), is checked
stage-isolated (a framework's layer fed our input, parameters and upstream gradient) and
end to end (the framework's whole network from the same weights), against each framework
in each dtype: test_model_stage[conv2.dX-stage-torch-float32],
test_model_end_to_end[relu1.dZ-end_to_end-tensorflow-float64]. End to end, ReLU and
max-pool kinks are handled and counted as parity_tests/kinks.py says.
"""

from __future__ import annotations

from parity_tests import model_stages
from parity_tests.settings import SETTINGS


def pytest_generate_tests(metafunc):
    if "tensor" not in metafunc.fixturenames:
        return
    net = metafunc.config.stash[SETTINGS].network  # built once, when the options were validated
    mode = "stage" if metafunc.function.__name__ == "test_model_stage" else "end_to_end"
    metafunc.parametrize("tensor", net.order, ids=[f"{t}-{mode}" for t in net.order])


def _kinks(harness, tensor, framework, dtype) -> dict:
    found = harness.kinks_reaching(tensor, framework, dtype)
    if not found:
        return {}
    return dict(
        kinks=sum(k.ambiguous for k in found),
        kinks_taken=sum(k.taken for k in found),
    )


def _check(parity, harness, tensor, framework, dtype, mode):
    net = harness.net
    stage = mode == "stage"
    make = harness.stage_check if stage else harness.end_to_end_check
    parity.check(
        tensor=tensor,
        equation=model_stages.equation(net, tensor),
        step=tensor.split(".", 1)[0],
        quantity=model_stages.quantity(net, tensor),
        mode=mode,
        against=framework,
        dtype=dtype,
        compute=lambda: make(tensor, framework, dtype),
        model=net.label,
        extra=None if stage else (lambda: _kinks(harness, tensor, framework, dtype)),
        note=None
        if stage
        else (lambda: "; ".join(k.text() for k in harness.kinks_reaching(tensor, framework, dtype))),
    )


def test_model_stage(model_parity, model_harness, tensor, framework, dtype):
    _check(model_parity, model_harness, tensor, framework, dtype, "stage")


def test_model_end_to_end(model_parity, model_harness, tensor, framework, dtype):
    _check(model_parity, model_harness, tensor, framework, dtype, "end_to_end")
