"""The checked tensors: for each, its article equation, its inputs, how the reference
computes it from those inputs, and the magnitude its stage tolerance is built on.

A stage-isolated check hands a framework operation the implementation's own inputs for
that stage (the same patches, the same A1, the same upstream gradient...), so a mismatch
points at that one operation. `compute` re-derives the tensor with the reference's public
stage functions; run on float64 copies of float32 inputs it gives the float64 truth.

This registry describes each checked tensor once. Adding one touches `STAGES` here and
the `STAGE_OPS` table of each mirror (parity_tests/mirrors), nothing else;
parity_tests/test_registry.py checks that the tables match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from parity_tests import tolerance
from reference import activations as act
from reference import conv, dense, flatten, loss, patches, update


class Bound(NamedTuple):
    """What a stage tolerance is built on: 2 * gamma(k) * magnitude (None: exact)."""

    magnitude: np.ndarray | None  # the expression on absolute values, M
    k: int  # roundings, from parity_tests.tolerance
    what: str  # M as written in the report's tolerance_rule


@dataclass(frozen=True, kw_only=True)
class Stage:
    tensor: str
    equation: str
    step: str
    quantity: str  # forward | gradient | update
    inputs: tuple  # names of the tensors the operation is fed
    compute: Callable  # (inputs, lr, reduction) -> array, reference stage functions
    bound: Callable  # (inputs, lr, reduction) -> Bound(magnitude M, roundings k, what)
    gradient: str | None = None  # update stages: the gradient the parameter moves along (E17)

    @property
    def id(self) -> str:
        return self.tensor


# Shared pieces. i: the stage's inputs by name; lr: learning rate; r: loss reduction.


def _p(i):
    return patches.extract_patches(i["X"], i["f"].shape[0])


def _o(i):
    return act.sigmoid(i["Z2"])


def _scale(i, reduction):
    return 1.0 / i["y"].shape[1] if reduction == "mean" else 1.0


def _n(i, name):
    """The batch size, read off a row-layout (1, n) input."""
    return i[name].shape[1]


# One compute and one bound per checked tensor, in forward/backward order.


def _patches(i, lr, r):
    return _p(i)


def _patches_bound(i, lr, r):
    return Bound(None, tolerance.EXACT_ROUNDINGS, "exact")


def _z1(i, lr, r):
    return conv.conv_forward(_p(i), i["f"])


def _z1_bound(i, lr, r):
    return Bound(
        conv.conv_forward(np.abs(_p(i)), np.abs(i["f"])),
        tolerance.roundings_dot(i["f"].shape[0] ** 2),  # one s x s patch . filter
        "|patches|*|f|",
    )


def _a1(i, lr, r):
    return act.sigmoid(i["Z1"])


def _a1_bound(i, lr, r):
    return Bound(act.sigmoid(i["Z1"]), tolerance.SIGMOID_ROUNDINGS, "|A1|")


def _z2(i, lr, r):
    return dense.dense_forward(flatten.flatten(i["A1"]), i["W"], i["b"])


def _z2_bound(i, lr, r):
    return Bound(
        dense.dense_forward(flatten.flatten(np.abs(i["A1"])), np.abs(i["W"]), np.abs(i["b"])),
        tolerance.roundings_affine(i["W"].shape[0]),  # all flattened A1 entries . W, + b
        "|W|^T|A1|+|b|",
    )


def _out(i, lr, r):
    return act.sigmoid(i["Z2"])


def _out_bound(i, lr, r):
    return Bound(_o(i), tolerance.SIGMOID_ROUNDINGS, "|O|")


def _e(i, lr, r):
    return loss.half_squared_error(i["O"], i["y"], r)


def _e_bound(i, lr, r):
    return Bound(
        loss.half_squared_error(i["O"], i["y"], r),
        tolerance.roundings_loss(_n(i, "y")),
        "sum (y-O)^2/2",
    )


def _de_do(i, lr, r):
    return loss.loss_grad_output(i["O"], i["y"], r)


def _de_do_bound(i, lr, r):
    return Bound(
        (np.abs(i["O"]) + np.abs(i["y"])) * _scale(i, r), tolerance.LOSS_GRAD_ROUNDINGS, "|O|+|y|"
    )


def _do_dz2(i, lr, r):
    return act.sigmoid_grad_from_output(_o(i))


def _do_dz2_bound(i, lr, r):
    return Bound(tolerance.sigmoid_grad_magnitude(_o(i)), tolerance.SIGMOID_GRAD_ROUNDINGS, "O(1-O)+O")


def _de_dz2(i, lr, r):
    O = _o(i)
    return loss.loss_grad_output(O, i["y"], r) * act.sigmoid_grad_from_output(O)


def _de_dz2_bound(i, lr, r):
    return Bound(
        (_o(i) + np.abs(i["y"])) * tolerance.sigmoid_grad_magnitude(_o(i)) * _scale(i, r),
        tolerance.LOSS_SIGMOID_BACKWARD_ROUNDINGS,
        "(|O|+|y|)(O(1-O)+O)",
    )


def _de_dw(i, lr, r):
    return dense.dense_grad_weights(flatten.flatten(i["A1"]), i["dE_dZ2"])


def _de_dw_bound(i, lr, r):
    return Bound(
        dense.dense_grad_weights(flatten.flatten(np.abs(i["A1"])), np.abs(i["dE_dZ2"])),
        tolerance.roundings_dot(i["A1"].shape[0]),  # a sum over the n images
        "|A1|.|dE_dZ2|",
    )


def _de_db(i, lr, r):
    return dense.dense_grad_bias(i["dE_dZ2"])


def _de_db_bound(i, lr, r):
    return Bound(
        dense.dense_grad_bias(np.abs(i["dE_dZ2"])),
        tolerance.roundings_sum(_n(i, "dE_dZ2")),  # a sum over the n images
        "sum|dE_dZ2|",
    )


def _de_da1(i, lr, r):
    return flatten.unflatten(dense.dense_grad_input(i["W"], i["dE_dZ2"]), i["A1"].shape[1])


def _de_da1_bound(i, lr, r):
    return Bound(
        flatten.unflatten(dense.dense_grad_input(np.abs(i["W"]), np.abs(i["dE_dZ2"])), i["A1"].shape[1]),
        tolerance.roundings_dot(i["W"].shape[1]),  # a sum over the output units (one)
        "|W||dE_dZ2|",
    )


def _de_dz1(i, lr, r):
    return i["dE_dA1"] * act.sigmoid_grad_from_output(act.sigmoid(i["Z1"]))


def _de_dz1_bound(i, lr, r):
    return Bound(
        np.abs(i["dE_dA1"]) * tolerance.sigmoid_grad_magnitude(act.sigmoid(i["Z1"])),
        tolerance.SIGMOID_BACKWARD_ROUNDINGS,
        "|dE_dA1|(A1(1-A1)+A1)",
    )


def _de_df(i, lr, r):
    return conv.conv_grad_filter(_p(i), i["dE_dZ1"])


def _de_df_bound(i, lr, r):
    return Bound(
        conv.conv_grad_filter(np.abs(_p(i)), np.abs(i["dE_dZ1"])),
        # a sum over the n images x the output positions of each
        tolerance.roundings_dot(i["dE_dZ1"].shape[0] * i["dE_dZ1"].shape[2]),
        "|patches|.|dE_dZ1|",
    )


def _sgd(i, lr, param, grad):
    return update.sgd_update(i[param], i[grad], lr)


def _sgd_bound(i, lr, param, grad):
    return Bound(np.abs(i[param]) + lr * np.abs(i[grad]), tolerance.SGD_ROUNDINGS, "(|p|+lr|g|)")


def _f_new(i, lr, r):
    return _sgd(i, lr, "f", "dE_df")


def _f_new_bound(i, lr, r):
    return _sgd_bound(i, lr, "f", "dE_df")


def _w_new(i, lr, r):
    return _sgd(i, lr, "W", "dE_dW")


def _w_new_bound(i, lr, r):
    return _sgd_bound(i, lr, "W", "dE_dW")


def _b_new(i, lr, r):
    return _sgd(i, lr, "b", "dE_db")


def _b_new_bound(i, lr, r):
    return _sgd_bound(i, lr, "b", "dE_db")


_DENSE_BACKWARD_INPUTS = ("A1", "W", "b", "dE_dZ2")
# An update check needs the parameters (the suite's own, always there) and its own gradient
# only: an implementation that lacks one gradient still has the other two updates checked.
_PARAMS = ("f", "W", "b")

STAGES = (
    Stage(
        tensor="patches",
        equation="E1",
        step="patches",
        quantity="forward",
        inputs=("X", "f"),
        compute=_patches,
        bound=_patches_bound,
    ),
    Stage(
        tensor="Z1",
        equation="E1",
        step="conv",
        quantity="forward",
        inputs=("X", "f"),
        compute=_z1,
        bound=_z1_bound,
    ),
    Stage(
        tensor="A1",
        equation="E3",
        step="activation",
        quantity="forward",
        inputs=("Z1",),
        compute=_a1,
        bound=_a1_bound,
    ),
    Stage(
        tensor="Z2",
        equation="E5",
        step="dense",
        quantity="forward",
        inputs=("A1", "W", "b"),
        compute=_z2,
        bound=_z2_bound,
    ),
    Stage(
        tensor="O",
        equation="E6",
        step="output",
        quantity="forward",
        inputs=("Z2",),
        compute=_out,
        bound=_out_bound,
    ),
    Stage(
        tensor="E",
        equation="E7",
        step="loss",
        quantity="forward",
        inputs=("O", "y"),
        compute=_e,
        bound=_e_bound,
    ),
    Stage(
        tensor="dE_dO",
        equation="E8",
        step="loss",
        quantity="gradient",
        inputs=("O", "y"),
        compute=_de_do,
        bound=_de_do_bound,
    ),
    Stage(
        tensor="dO_dZ2",
        equation="E9",
        step="output",
        quantity="gradient",
        inputs=("Z2",),
        compute=_do_dz2,
        bound=_do_dz2_bound,
    ),
    Stage(
        tensor="dE_dZ2",
        equation="E8*E9",
        step="output",
        quantity="gradient",
        inputs=("Z2", "y"),
        compute=_de_dz2,
        bound=_de_dz2_bound,
    ),
    Stage(
        tensor="dE_dW",
        equation="E11",
        step="dense",
        quantity="gradient",
        inputs=_DENSE_BACKWARD_INPUTS,
        compute=_de_dw,
        bound=_de_dw_bound,
    ),
    Stage(
        tensor="dE_db",
        equation="E12",
        step="dense",
        quantity="gradient",
        inputs=_DENSE_BACKWARD_INPUTS,
        compute=_de_db,
        bound=_de_db_bound,
    ),
    Stage(
        tensor="dE_dA1",
        equation="E13",
        step="dense",
        quantity="gradient",
        inputs=_DENSE_BACKWARD_INPUTS,
        compute=_de_da1,
        bound=_de_da1_bound,
    ),
    Stage(
        tensor="dE_dZ1",
        equation="E14",
        step="activation",
        quantity="gradient",
        inputs=("Z1", "dE_dA1"),
        compute=_de_dz1,
        bound=_de_dz1_bound,
    ),
    Stage(
        tensor="dE_df",
        equation="E16",
        step="conv",
        quantity="gradient",
        inputs=("X", "f", "dE_dZ1"),
        compute=_de_df,
        bound=_de_df_bound,
    ),
    Stage(
        tensor="f_new",
        equation="E17",
        step="update",
        quantity="update",
        inputs=(*_PARAMS, "dE_df"),
        compute=_f_new,
        bound=_f_new_bound,
        gradient="dE_df",
    ),
    Stage(
        tensor="W_new",
        equation="E17",
        step="update",
        quantity="update",
        inputs=(*_PARAMS, "dE_dW"),
        compute=_w_new,
        bound=_w_new_bound,
        gradient="dE_dW",
    ),
    Stage(
        tensor="b_new",
        equation="E17",
        step="update",
        quantity="update",
        inputs=(*_PARAMS, "dE_db"),
        compute=_b_new,
        bound=_b_new_bound,
        gradient="dE_db",
    ),
)

BY_TENSOR = {s.tensor: s for s in STAGES}
# The gradient each updated parameter moves along (E17).
UPDATE_GRADIENT = {s.tensor: s.gradient for s in STAGES if s.gradient is not None}
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
