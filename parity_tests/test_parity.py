"""Reference vs frameworks, tensor by tensor.

Stage-isolated checks (test_forward, test_gradient, test_update) feed one framework
operation the reference's own inputs for that stage; test_end_to_end runs the whole model
in the framework from the shared weights. Ids name the tensor, the mode, the framework and
the dtype: test_gradient[dE_df-stage-torch-float32], test_end_to_end[dE_df-end_to_end-...],
so `-k "dE_dO and stage"` selects what it says.
test_inputs_untouched checks that train_step left the copies of its inputs as it got them.
"""

import pytest

from parity_tests.harness import contract_records, inputs_check_fields, stage_check_fields
from parity_tests.impl_call import INPUT_NAMES
from parity_tests.stages import END_TO_END, FORWARD, GRADIENT, UPDATE
from reference.tensors import ORDER


def test_contract(parity, harness, dtype):
    # What train_step returns, checked before the comparisons: a name it does not return is
    # recorded once as absent (its checks are skipped); an unknown name, a wrong shape or
    # dtype fails here with one clear line each (the frameworks are still fed our dtype).
    problems = harness.contract(dtype)
    for fields in contract_records(problems, dtype):
        parity.record(**fields)
    if sum(kind == "absent" for _, kind, _ in problems) == len(ORDER):
        pytest.fail("train_step returned none of the article's names: nothing was compared")
    bad = [message for _, kind, message in problems if kind != "absent"]
    assert not bad, "train_step's result breaks the contract:\n" + "\n".join(bad)


def _ids(stages, mode="stage"):
    return pytest.mark.parametrize("stage", stages, ids=[f"{s.id}-{mode}" for s in stages])


def _stage_check(parity, harness, stage, framework, dtype, mode):
    parity.check(**stage_check_fields(harness, stage, framework, dtype, mode))


@_ids(FORWARD)
def test_forward(parity, harness, stage, framework, dtype):
    _stage_check(parity, harness, stage, framework, dtype, "stage")


@_ids(GRADIENT)
def test_gradient(parity, harness, stage, framework, dtype):
    _stage_check(parity, harness, stage, framework, dtype, "stage")


@_ids(UPDATE)
def test_update(parity, harness, stage, framework, dtype):
    _stage_check(parity, harness, stage, framework, dtype, "stage")


@_ids(END_TO_END, "end_to_end")
def test_end_to_end(parity, harness, stage, framework, dtype):
    _stage_check(parity, harness, stage, framework, dtype, "end_to_end")


@pytest.mark.parametrize("name", INPUT_NAMES)
def test_inputs_untouched(parity, harness, name, dtype):
    # The implementation gets copies; the frameworks are fed the suite's originals either
    # way, but an implementation that writes into its inputs has a bug worth naming.
    parity.check(**inputs_check_fields(harness, name, dtype))
