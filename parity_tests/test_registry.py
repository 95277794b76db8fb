"""The registry of checked tensors (parity_tests/stages.py) is the one description of each:
every mirror's table of stage operations has exactly its tensors, each stage is built by
keyword from named functions, and an unknown tensor is refused by name; the mirrors' one
optimiser step serving the three update checks gives each the value of its own step."""

import dataclasses
import importlib

import numpy as np
import pytest

from parity_tests.mirrors import _MODULES, FRAMEWORKS
from parity_tests.stages import STAGES, UPDATE, UPDATE_GRADIENT, Stage
from reference import model
from reference.tensors import UPDATE_PAIRS

TENSORS = {s.tensor for s in STAGES}


@pytest.fixture(params=FRAMEWORKS, ids=FRAMEWORKS)
def mirror(request):
    # Imported directly (not through load_mirror): a missing framework is an error here.
    return importlib.import_module(_MODULES[request.param])


def test_mirror_table_has_exactly_the_checked_tensors(mirror):
    assert set(mirror.STAGE_OPS) == TENSORS
    assert all(callable(op) for op in mirror.STAGE_OPS.values())


def test_mirror_refuses_an_unknown_tensor_by_name(mirror):
    with pytest.raises(ValueError, match=r"no stage for tensor 'Z3'; known: patches, Z1"):
        mirror.stage("Z3", {}, 0.0625, "sum")


def test_tensor_names_are_unique():
    assert len(TENSORS) == len(STAGES)


def test_stage_is_built_by_keyword_only():
    fields = {f.name: None for f in dataclasses.fields(Stage) if f.name != "gradient"}
    with pytest.raises(TypeError):
        Stage(*fields.values())


@pytest.mark.parametrize("stage", STAGES, ids=[s.id for s in STAGES])
def test_stage_functions_are_named(stage):
    for fn in (stage.compute, stage.bound):
        assert fn.__name__ != "<lambda>", f"{stage.tensor}: {fn.__qualname__}"


def test_update_gradients_come_from_the_registry():
    assert UPDATE_GRADIENT == {s.tensor: s.gradient for s in UPDATE}
    assert set(UPDATE_GRADIENT.values()) <= TENSORS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_update_step_gives_each_update_check_its_value(mirror, dtype):
    """Harness.update takes f_new, W_new, b_new from one optimiser step over all three
    (mirror.update); each must be, bit for bit, what the step fed that check's own inputs
    (its parameter, its gradient, zeros for the others) gives, and a gradient left out
    leaves its parameter where it is."""
    rng = np.random.default_rng(0)
    params = {k: v.astype(dtype) for k, v in model.init_params(0).items()}
    grads = {g: rng.standard_normal(params[p].shape).astype(dtype) for p, g in UPDATE_PAIRS}
    lr = 0.0625
    one = mirror.update({**params, **grads}, lr)
    for stage in UPDATE:
        alone = mirror.stage(stage.tensor, {**params, stage.gradient: grads[stage.gradient]}, lr, "sum")
        assert one[stage.tensor].dtype == alone.dtype == np.dtype(dtype)
        assert np.array_equal(one[stage.tensor], alone), stage.tensor
    without_dW = mirror.update({**params, "dE_df": grads["dE_df"], "dE_db": grads["dE_db"]}, lr)
    assert np.array_equal(without_dW["W_new"], params["W"])
    assert np.array_equal(without_dW["f_new"], one["f_new"])
