"""The checked tensors: for each, its article equation, its inputs, how the reference
computes it from those inputs, and the magnitude its stage tolerance is built on.

A stage-isolated check hands a framework operation the implementation's own inputs for
that stage (the same patches, the same A1, the same upstream gradient...), so a mismatch
points at that one operation. `compute` re-derives the tensor with the reference's public
stage functions; run on float64 copies of float32 inputs it gives the float64 truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from parity_tests import tolerance
from reference import activations as act
from reference import conv, dense, flatten, loss, patches, update

S = tolerance.SIGMOID_ROUNDINGS


@dataclass(frozen=True)
class Stage:
    tensor: str
    equation: str
    step: str
    quantity: str  # forward | gradient | update
    inputs: tuple  # names of the tensors the operation is fed
    compute: Callable  # (inputs, lr, reduction) -> array, reference stage functions
    bound: Callable  # (inputs, lr, reduction) -> (magnitude M, roundings k, what)

    @property
    def id(self) -> str:
        return self.tensor


def _p(i):
    return patches.extract_patches(i["X"], i["f"].shape[0])


def _o(i):
    return act.sigmoid(i["Z2"])


def _scale(i, reduction):
    return 1.0 / i["y"].shape[1] if reduction == "mean" else 1.0


def _dE_dZ2(i, reduction):
    O = _o(i)
    return loss.loss_grad_output(O, i["y"], reduction) * act.sigmoid_grad_from_output(O)


def _new(name, grad):
    return lambda i, lr, r: update.sgd_update(i[name], i[grad], lr)


def _new_bound(name, grad):
    return lambda i, lr, r: (np.abs(i[name]) + lr * np.abs(i[grad]), 2, "(|p|+lr|g|)")


STAGES = (
    Stage(
        "patches",
        "E1",
        "patches",
        "forward",
        ("X", "f"),
        lambda i, lr, r: _p(i),
        lambda i, lr, r: (None, 0, "exact"),
    ),
    Stage(
        "Z1",
        "E1",
        "conv",
        "forward",
        ("X", "f"),
        lambda i, lr, r: conv.conv_forward(_p(i), i["f"]),
        lambda i, lr, r: (
            conv.conv_forward(np.abs(_p(i)), np.abs(i["f"])),
            i["f"].shape[0] ** 2,
            "|patches|*|f|",
        ),
    ),
    Stage(
        "A1",
        "E3",
        "activation",
        "forward",
        ("Z1",),
        lambda i, lr, r: act.sigmoid(i["Z1"]),
        lambda i, lr, r: (act.sigmoid(i["Z1"]), S, "|A1|"),
    ),
    Stage(
        "Z2",
        "E5",
        "dense",
        "forward",
        ("A1", "W", "b"),
        lambda i, lr, r: dense.dense_forward(flatten.flatten(i["A1"]), i["W"], i["b"]),
        lambda i, lr, r: (
            dense.dense_forward(flatten.flatten(np.abs(i["A1"])), np.abs(i["W"]), np.abs(i["b"])),
            i["W"].shape[0] + 1,
            "|W|^T|A1|+|b|",
        ),
    ),
    Stage(
        "O",
        "E6",
        "output",
        "forward",
        ("Z2",),
        lambda i, lr, r: act.sigmoid(i["Z2"]),
        lambda i, lr, r: (_o(i), S, "|O|"),
    ),
    Stage(
        "E",
        "E7",
        "loss",
        "forward",
        ("O", "y"),
        lambda i, lr, r: loss.half_squared_error(i["O"], i["y"], r),
        lambda i, lr, r: (
            loss.half_squared_error(i["O"], i["y"], r),
            i["y"].shape[1] + 3,
            "sum (y-O)^2/2",
        ),
    ),
    Stage(
        "dE_dO",
        "E8",
        "loss",
        "gradient",
        ("O", "y"),
        lambda i, lr, r: loss.loss_grad_output(i["O"], i["y"], r),
        lambda i, lr, r: ((np.abs(i["O"]) + np.abs(i["y"])) * _scale(i, r), 2, "|O|+|y|"),
    ),
    Stage(
        "dO_dZ2",
        "E9",
        "output",
        "gradient",
        ("Z2",),
        lambda i, lr, r: act.sigmoid_grad_from_output(_o(i)),
        lambda i, lr, r: (_o(i) * (1 + _o(i)), 2 + S, "|O|(1+|O|)"),
    ),
    Stage(
        "dE_dZ2",
        "E8*E9",
        "output",
        "gradient",
        ("Z2", "y"),
        lambda i, lr, r: _dE_dZ2(i, r),
        lambda i, lr, r: (
            (_o(i) + np.abs(i["y"])) * _o(i) * (1 + _o(i)) * _scale(i, r),
            4 + S,
            "(|O|+|y|)|O|(1+|O|)",
        ),
    ),
    Stage(
        "dE_dW",
        "E11",
        "dense",
        "gradient",
        ("A1", "W", "b", "dE_dZ2"),
        lambda i, lr, r: dense.dense_grad_weights(flatten.flatten(i["A1"]), i["dE_dZ2"]),
        lambda i, lr, r: (
            dense.dense_grad_weights(flatten.flatten(np.abs(i["A1"])), np.abs(i["dE_dZ2"])),
            i["A1"].shape[0],
            "|A1|.|dE_dZ2|",
        ),
    ),
    Stage(
        "dE_db",
        "E12",
        "dense",
        "gradient",
        ("A1", "W", "b", "dE_dZ2"),
        lambda i, lr, r: dense.dense_grad_bias(i["dE_dZ2"]),
        lambda i, lr, r: (
            dense.dense_grad_bias(np.abs(i["dE_dZ2"])),
            i["dE_dZ2"].shape[1],
            "sum|dE_dZ2|",
        ),
    ),
    Stage(
        "dE_dA1",
        "E13",
        "dense",
        "gradient",
        ("A1", "W", "b", "dE_dZ2"),
        lambda i, lr, r: flatten.unflatten(
            dense.dense_grad_input(i["W"], i["dE_dZ2"]), i["A1"].shape[1]
        ),
        lambda i, lr, r: (
            flatten.unflatten(
                dense.dense_grad_input(np.abs(i["W"]), np.abs(i["dE_dZ2"])), i["A1"].shape[1]
            ),
            1,
            "|W||dE_dZ2|",
        ),
    ),
    Stage(
        "dE_dZ1",
        "E14",
        "activation",
        "gradient",
        ("Z1", "dE_dA1"),
        lambda i, lr, r: i["dE_dA1"] * act.sigmoid_grad_from_output(act.sigmoid(i["Z1"])),
        lambda i, lr, r: (
            np.abs(i["dE_dA1"]) * act.sigmoid(i["Z1"]) * (1 + act.sigmoid(i["Z1"])),
            3 + S,
            "|dE_dA1||A1|(1+|A1|)",
        ),
    ),
    Stage(
        "dE_df",
        "E16",
        "conv",
        "gradient",
        ("X", "f", "dE_dZ1"),
        lambda i, lr, r: conv.conv_grad_filter(_p(i), i["dE_dZ1"]),
        lambda i, lr, r: (
            conv.conv_grad_filter(np.abs(_p(i)), np.abs(i["dE_dZ1"])),
            i["dE_dZ1"].shape[0] * i["dE_dZ1"].shape[2],
            "|patches|.|dE_dZ1|",
        ),
    ),
    Stage(
        "f_new",
        "E17",
        "update",
        "update",
        ("f", "W", "b", "dE_df", "dE_dW", "dE_db"),
        _new("f", "dE_df"),
        _new_bound("f", "dE_df"),
    ),
    Stage(
        "W_new",
        "E17",
        "update",
        "update",
        ("f", "W", "b", "dE_df", "dE_dW", "dE_db"),
        _new("W", "dE_dW"),
        _new_bound("W", "dE_dW"),
    ),
    Stage(
        "b_new",
        "E17",
        "update",
        "update",
        ("f", "W", "b", "dE_df", "dE_dW", "dE_db"),
        _new("b", "dE_db"),
        _new_bound("b", "dE_db"),
    ),
)

BY_TENSOR = {s.tensor: s for s in STAGES}
# The gradient each updated parameter moves along (E17).
UPDATE_GRADIENT = {"f_new": "dE_df", "W_new": "dE_dW", "b_new": "dE_db"}
FORWARD = tuple(s for s in STAGES if s.quantity == "forward")
GRADIENT = tuple(s for s in STAGES if s.quantity == "gradient")
UPDATE = tuple(s for s in STAGES if s.quantity == "update")
# Everything a whole-model run produces (patches are an input re-indexing, not a model output).
END_TO_END = tuple(s for s in STAGES if s.tensor != "patches")


def stage_tolerance(stage: Stage, inputs, expected, lr, reduction) -> tolerance.Tolerance:
    """The stage rule for `stage` fed `inputs` (the policy lives in parity_tests.tolerance)."""
    magnitude, k, what = stage.bound(inputs, lr, reduction)
    if magnitude is None:
        return tolerance.exact(np.shape(expected))
    return tolerance.stage(magnitude, k, np.asarray(expected).dtype, what)
