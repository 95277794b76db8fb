"""parity_tests.explain's specific suspects on a small synthetic step, without any framework.

Each mistake (a published-code variant or a catalogue mutant) runs on 6 random 9 x 9 images;
the framework's side is played by the reference's own stage computation on the mistaken
run's inputs (what a stage-isolated check feeds a framework), plus a few units of rounding
noise. The explainer, given the suite's context (parity_tests.harness.explain_context's
keys), must name the mistake the registry says, stay silent on the correct step, and stay
silent when the run's tensors (its evidence) are missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from parity_tests import mutants, stages
from parity_tests.explain import explain
from parity_tests.stages import BY_TENSOR, UPDATE_GRADIENT
from reference.model import ArticleStep, init_params
from reference.published import VARIANTS

LR, N, SIDE = 0.0625, 6, 9
RNG = np.random.default_rng(11)
X = RNG.uniform(size=(SIDE, SIDE, N))
Y = RNG.integers(0, 2, size=(1, N)).astype(np.float64)
PARAMS = init_params(5, "float64", "informative", image_side=SIDE)

SPECIFIC = {  # the mistakes named by recomputing them from the run's tensors
    "D2": VARIANTS["D2"],
    "D3": VARIANTS["D3"],
    "D5": VARIANTS["D5"],
    "D6": VARIANTS["D6"],
    "D7": VARIANTS["D7"],
    "D8": VARIANTS["D8"],
    **{
        m: mutants.MUTANTS[m]
        for m in (
            "sigmoid_grad_of_Z2",
            "sigmoid_grad_of_Z1",
            "true_convolution",
            "flatten_position_major",
            "sigmoid_factor_dropped",
        )
    },
}


def _context(run, tensor, with_tensors=True) -> dict:
    ctx = dict(
        lr=LR,
        n_images=N,
        n_filters=PARAMS["f"].shape[2],
        filter_size=PARAMS["f"].shape[0],
        bias=float(PARAMS["b"][0]),
    )
    if tensor in UPDATE_GRADIENT:
        ctx.update(old=run[tensor[0]], grad=run[UPDATE_GRADIENT[tensor]])
    if with_tensors:
        ctx["tensors"] = dict(run)
    return ctx


def _theirs(run, tensor, noise=4):
    """The framework's side: the correct stage computation on the run's inputs, off by a
    few units of rounding (a different summation order)."""
    stage = BY_TENSOR[tensor]
    inputs = {n: Y if n == "y" else run[n] for n in stage.inputs}  # y is not returned
    value, _ = stages.reference_stage(stage, inputs, LR, "sum", stages.shape_of(PARAMS))
    out = np.asarray(value, dtype=np.float64)
    eps = np.finfo(np.float64).eps
    return out * (1 + noise * eps * RNG.uniform(-1, 1, size=out.shape))


def _run(step):
    return step.train_step(PARAMS, X, Y, LR, "sum")


@pytest.mark.parametrize("step", SPECIFIC.values(), ids=list(SPECIFIC))
def test_specific_suspect_names_the_mistake(step):
    run = _run(step)
    tensor = step.first
    found = explain(
        _theirs(run, tensor), run[tensor], tensor=tensor, against="torch", context=_context(run, tensor)
    )
    assert found is not None and found.suspect == step.explains and found.specific, found


@pytest.mark.parametrize("step", SPECIFIC.values(), ids=list(SPECIFIC))
def test_specific_suspect_needs_its_evidence(step):
    # Without the run's tensors only the generic fits remain, which name none of these
    # mistakes; D6 and D8 need only the update's old and grad, and b, which stay.
    run = _run(step)
    tensor = step.first
    ctx = _context(run, tensor, with_tensors=False)
    found = explain(_theirs(run, tensor), run[tensor], tensor=tensor, against="torch", context=ctx)
    expected = {"D6": "update_one_slice", "D8": "missing_bias"}.get(step.id)
    assert (found.suspect if found else None) == expected, found


@pytest.mark.parametrize("tensor", list(BY_TENSOR))
def test_no_suspect_on_the_correct_step(tensor):
    run = _run(ArticleStep())
    for noise in (0, 4, 64):
        ctx = _context(run, tensor)
        found = explain(_theirs(run, tensor, noise), run[tensor], tensor=tensor, context=ctx)
        assert found is None, (noise, found)


def test_one_slice_update_names_the_slice():
    run = _run(ArticleStep())
    f, g = run["f"], run["dE_df"]
    ours = f.copy()
    ours[:, :, 2] -= LR * g.sum(axis=-1)
    found = explain(run["f_new"], ours, tensor="f_new", context=_context(run, "f_new"))
    assert found is not None and found.suspect == "update_one_slice" and "slice 2" in found.message


def test_a_constant_derivative_other_than_one_is_named_with_its_value():
    run = _run(ArticleStep())
    ours = 0.25 * run["dE_dA1"]  # the sigmoid's largest slope, used as a constant
    found = explain(run["dE_dZ1"], ours, tensor="dE_dZ1", context=_context(run, "dE_dZ1"))
    assert found is not None and found.suspect == "derivative_dropped" and "x 0.25" in found.message


def test_identical_values_need_no_explanation():
    # Both sides equal: any symmetry of the array would fit exactly; nothing is claimed.
    z = np.zeros((4, 4, 3))
    assert explain(z, z.copy(), tensor="dE_df", context={}) is None
