"""The registry of checked tensors (parity_tests/stages.py) is the one description of each:
every mirror's table of stage operations has exactly its tensors, each stage is built by
keyword from named functions, and an unknown tensor is refused by name."""

import dataclasses
import importlib

import pytest

from parity_tests.mirrors import _MODULES, FRAMEWORKS
from parity_tests.stages import STAGES, UPDATE, UPDATE_GRADIENT, Stage

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
