"""The article view (parity_tests/stages.py) is the one description of each checked article
tensor: every article name has one stage, built by keyword, naming a tensor the article
network computes (or one of the view's two intermediates), fed a run of consecutive layers
from inputs it lists; and each framework's mirror offers what the view asks of it."""

import dataclasses
import importlib

import pytest

from parity_tests import stages
from parity_tests.mirrors import _MODULES, FRAMEWORKS
from parity_tests.stages import NETWORK, STAGES, UPDATE, UPDATE_GRADIENT, Stage
from reference.tensors import ORDER

TENSORS = {s.tensor for s in STAGES}


@pytest.fixture(params=FRAMEWORKS, ids=FRAMEWORKS)
def mirror(request):
    # Imported directly (not through load_mirror): a missing framework is an error here.
    return importlib.import_module(_MODULES[request.param])


def test_every_article_tensor_has_one_stage():
    assert len(TENSORS) == len(STAGES) and TENSORS == set(ORDER)


def test_stage_is_built_by_keyword_only():
    fields = {f.name: None for f in dataclasses.fields(Stage)}
    with pytest.raises(TypeError):
        Stage(*fields.values())


@pytest.mark.parametrize("stage", STAGES, ids=[s.id for s in STAGES])
def test_stage_names_a_tensor_of_the_article_network(stage):
    if stage.tensor == "patches":
        assert not stage.network and not stage.nodes  # X re-indexed: the view's own
        return
    assert stage.network in {*NETWORK.order, *stages.DERIVED}, stage.network
    if stage.quantity == "update":
        return
    names = [n.name for n in NETWORK.nodes]
    first = names.index(stage.nodes[0])
    assert list(stage.nodes) == names[first : first + len(stage.nodes)], "consecutive layers"
    assert stage.source in stage.inputs
    assert stage.upstream in (None, "ones", *stage.inputs)


def test_update_gradients_come_from_the_registry():
    assert UPDATE_GRADIENT == {s.tensor: s.gradient for s in UPDATE}
    assert set(UPDATE_GRADIENT.values()) <= TENSORS


def test_mirror_offers_what_the_view_asks(mirror):
    for name in ("stage", "end_to_end", "update", "patches", "version"):
        assert callable(getattr(mirror, name)), name
