"""The mutation catalogue of the spec-built networks (parity_tests/model_mutants.py): each
classic mistake in a layer of reference/layers/ is caught at its own tensor by the
stage-isolated checks (the default layer in float64 fed the mutant network's own inputs)
and named by the mismatch explainer (parity_tests/explain.py); where a mistake cannot show (a
stride of 1, no padding, moderate logits, a sum reduction) the checks stay quiet, and on the
correct layers the checks agree and the explainer names nothing.

Each mutant test records one "detection" record (impl mutant:<id>, qualified tensor names)
for the report's detection table.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from parity_tests import detection, mutants
from parity_tests import explain as explain_module
from parity_tests import model_mutants as mm
from parity_tests.explain import explain
from parity_tests.metrics import compare_arrays
from reference.layers import KINDS, conv2d
from reference.layers import dense as layer_dense
from reference.layers import loss as layer_loss
from reference.network import DEFAULT_OPS, Network

CATALOGUE = list(mm.MODEL_MUTANTS.values())
WITH_BLIND = [m for m in CATALOGUE if m.blind is not None]
# Every case the catalogue runs, once: the correct layers must agree with their truths there.
CASES = list(dict.fromkeys(c for m in CATALOGUE for c in (m.case, m.blind) if c is not None))


@pytest.mark.parametrize("mutant", CATALOGUE, ids=[m.id for m in CATALOGUE])
def test_model_mutant_caught(article_batch, parity, mutant):
    finding = mm.detect(mutant, article_batch, parity)
    rec = parity.add(detection.detection_record(finding, mutant))
    assert finding.detected and finding.first_tensor == mutant.first, mm.message(finding, mutant)
    assert finding.first_suspect == mutant.explains, (
        f"{mutant.label}: the explainer's verdict on {mutant.first}: expected suspect "
        f"{mutant.explains!r}, got {finding.first_explanation!r}"
    )
    assert (rec["mode"], rec["impl"], rec["first_diverging"]) == (
        "detection",
        mutant.label,
        mutant.first,
    )
    assert rec["passed"] and rec["suspect"] == mutant.explains and rec["against"] == mm.AGAINST


@pytest.mark.parametrize("mutant", WITH_BLIND, ids=[m.id for m in WITH_BLIND])
def test_model_mutant_blind_where_the_mistake_cannot_show(article_batch, parity, mutant):
    # The honest limit of each entry: on its `blind` case the mistake computes the right
    # numbers (stride 1, pad 0, a sum reduction) or numbers within rounding of them
    # (moderate logits), so no stage check may flag it there.
    finding = mm.detect(mutant, article_batch, parity, mutant.blind)
    assert not finding.disagree, mm.message(finding, mutant)


def test_catalogue_covers_every_layer_kind_with_valid_cases():
    assert {m.kind for m in CATALOGUE} == set(DEFAULT_OPS)
    assert len(CATALOGUE) >= 12 and len(mm.MODEL_MUTANTS) == len(CATALOGUE)
    assert not set(mm.MODEL_MUTANTS) & set(mutants.MUTANTS)  # one "mutant:<id>" namespace
    source = inspect.getsource(explain_module)
    for m in CATALOGUE:
        for case in (m.case, m.blind):
            if case is not None:
                net = Network(case.spec)
                assert m.first in net.order, (m.id, case, net.order)
                assert net.node_of(m.first).kind == m.kind, (m.id, m.first)
        # Named by a hand-written recogniser, or by replaying the mistake's own mutant on the
        # stage's inputs (explain._catalogue_fits, registry.replay); test_model_mutant_caught
        # holds the explainer to the name on the mutant's own run.
        mistake = next(x for x in KINDS[m.kind].mistakes if x.id == m.id)
        named = f'"{m.explains}"' in source or (mistake.forward or mistake.backward) is not None
        assert m.title and m.equation and m.caught_on and named, m.id
    assert [d["id"] for d in mm.as_dicts()] == [m.id for m in CATALOGUE]
    assert {d["first"] for d in mm.as_dicts()} == {m.first for m in CATALOGUE}


def _premise_run(article_batch, case):
    return mm.run(case, article_batch)  # the correct layers


def test_premises_of_the_cases(article_batch):
    # softmax_no_max_shift: caught only where a logit exceeds log(max float32); its blind
    # case's logits stay far below that.
    limit = float(np.log(np.finfo(np.float32).max))
    m = mm.MODEL_MUTANTS["softmax_no_max_shift"]
    big = _premise_run(article_batch, m.case).tensors["dense2.Z"]
    small = _premise_run(article_batch, m.blind).tensors["dense2.Z"]
    assert big.max() > limit > 10 * small.max(), (big.max(), small.max())
    # pool_grad_all_maxima: the pool it is caught at has tied windows (after the ReLU).
    m = mm.MODEL_MUTANTS["pool_grad_all_maxima"]
    r = _premise_run(article_batch, m.case)
    X = mm.stage_inputs(r, m.first)["X"]
    win = conv2d._windows(X, 2, 2).reshape(*X.shape[:2], X.shape[2] // 2, X.shape[3] // 2, 4)
    tied = (win == win.max(axis=-1, keepdims=True)).sum(axis=-1) > 1
    assert tied.sum() > 0


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_correct_layers_agree_and_the_explainer_names_nothing(article_batch, case):
    # The control of every detection above (no stage check fails on the correct layers,
    # or "caught" would be free), and the explainer's silence on correct results: it is
    # asked about every (truth, ours) pair with the context a failure would get.
    r = mm.run(case, article_batch)
    assert not r.crash, r.crash
    failed, claims = [], []
    for tensor in r.net.order:
        c = mm.stage_check(r, tensor)
        status = compare_arrays(c.actual, c.expected, c.tolerance.array, brief=True)["status"]
        if status in ("fail", "error"):
            failed.append(f"{tensor} ({status})")
        if tensor in r.net.exact_zeros:  # 0 in exact arithmetic: both sides are rounding
            continue  # noise around it, which any scale "fits"; there is nothing to explain
        found = explain(c.actual, c.expected, tensor=tensor, against=mm.AGAINST, context=c.context)
        if found is not None:
            claims.append(f"{tensor}: {found}")
    assert not failed, failed
    assert not claims, claims


# --- layer suspects no catalogue entry exercises, on small made-up layers ------------------

RNG = np.random.default_rng(11)
_Z = RNG.standard_normal((4, 3, 4, 4))
_DA = RNG.standard_normal((4, 3, 4, 4))
_A = np.tanh(_Z)
_LOGITS = RNG.standard_normal((5, 10))
_P = np.exp(_LOGITS) / np.exp(_LOGITS).sum(axis=1, keepdims=True)
_LABELS = np.arange(5)
_ONEHOT = np.arange(10) == _LABELS[:, None]
_FLAT = RNG.standard_normal((4, 48))
_O, _Y = RNG.random((6, 1)), (RNG.random((6, 1)) > 0.5).astype(float)
_X, _F, _DZ = (
    RNG.standard_normal((2, 2, 5, 5)),
    RNG.standard_normal((3, 2, 3, 3)),
    RNG.standard_normal((2, 3, 5, 5)),
)
_CONV = dict(kind="conv", X=_X, F=_F, b=None, dZ=_DZ, stride=1, pad=1, bias=False)


def _conv_input_grad_cropped(top):
    full = conv2d.conv2d_grad_input(_DZ, _F, (2, 2, 7, 7), 1, 0)
    return full[:, :, top : top + 5, top : top + 5]


LAYER_CASES = {  # id: (tensor, theirs, ours, layer context, suspect, words in the message)
    "tanh-1-minus-A": (
        "tanh1.dZ",
        _DA * (1 - _A**2),
        _DA * (1 - _A),
        dict(kind="tanh", Z=_Z, A=_A, dA=_DA),
        "tanh_grad_missing_square",
        "square forgotten",
    ),
    "ce-divided-by-N-under-sum": (
        "softmax_ce.dZ",
        _P - _ONEHOT,
        (_P - _ONEHOT) / 5,
        dict(kind="softmax_ce", Z=_LOGITS, P=_P, labels=_LABELS, reduction="sum"),
        "ce_grad_divided_by_N",
        "sum reduction",
    ),
    "flatten-backward-channel-last": (
        "flatten.dX",
        _FLAT.reshape(4, 3, 4, 4),
        layer_dense.flatten_channel_last_backward(_FLAT, (4, 3, 4, 4)),
        dict(kind="flatten", X=_Z, dA=_FLAT),
        "flatten_channel_last",
        "channel-last",
    ),
    "mse-gradient-without-half": (
        "mse.dO",
        _O - _Y,
        2 * (_O - _Y),
        dict(kind="mse", O=_O, Y=_Y, reduction="sum"),
        "mse_without_half",
        "1/2",
    ),
    "conv-crop-bottom-right": (
        "conv2.dX",
        _conv_input_grad_cropped(1),
        _conv_input_grad_cropped(2),
        _CONV,
        "conv_grad_input_crop",
        "bottom-right",
    ),
    "conv-pad-before": (
        "conv1.Z",
        conv2d.conv2d_forward(_X, _F, None, 1, 1),
        conv2d.conv2d_forward(np.pad(_X, ((0, 0), (0, 0), (2, 0), (2, 0))), _F, None, 1, 0),
        _CONV,
        "conv_pad_one_side",
        "before the image",
    ),
}


@pytest.mark.parametrize("case", LAYER_CASES.values(), ids=list(LAYER_CASES))
def test_explainer_names_layer_mistakes(case):
    tensor, theirs, ours, layer, suspect, words = case
    found = explain(theirs, ours, tensor=tensor, against="torch", context={"layer": layer})
    assert found is not None and found.suspect == suspect and words in found.message, found


def test_explainer_explains_a_nan_only_by_an_overflow_it_recomputes():
    theirs = _P.astype(np.float32)
    ours = theirs.copy()
    ours[0, 0] = np.nan
    layer = dict(kind="softmax_ce", Z=_LOGITS.astype(np.float32), labels=_LABELS, reduction="sum")
    # No layer context, or logits that cannot overflow: a NaN stays unexplained.
    assert explain(theirs, ours, tensor="softmax_ce.P", against="torch") is None
    assert (
        explain(theirs, ours, tensor="softmax_ce.P", against="torch", context={"layer": layer}) is None
    )
    big = dict(layer, Z=(_LOGITS * 100).astype(np.float32))
    unshifted, _ = layer_loss.softmax_ce_unshifted(big["Z"], _LABELS, "sum")
    right = layer_loss.softmax(big["Z"])  # the shifted softmax: finite
    found = explain(right, unshifted, tensor="softmax_ce.P", against="torch", context={"layer": big})
    assert found is not None and found.suspect == "softmax_no_max_shift", found
