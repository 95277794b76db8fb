"""The mutation catalogue (parity_tests/mutants.py): every typical derivation mistake is
caught by the suite's stage checks at the tensor it changes (parity_tests/detection.py);
and the mismatch explainer (parity_tests/explain.py) names planted mistakes and stays silent on
unrelated differences.

Each mutant test records one "detection" record (impl mutant:<id>): audit.md turns them into
the catalogue and its detection rate.
"""

import numpy as np
import pytest

from parity_tests import mutants
from parity_tests.explain import explain
from parity_tests.test_variants import assert_caught, detect
from reference.published import ORDER


@pytest.mark.parametrize("mutant", mutants.MUTANTS.values(), ids=list(mutants.MUTANTS))
def test_mutant_detected(
    detection_harness_for, parity, run_config, article_batch, parity_settings, mutant
):
    frameworks = parity_settings.frameworks
    framework = "torch" if "torch" in frameworks else frameworks[0]
    finding = detect(detection_harness_for, parity, run_config, article_batch, mutant, framework)
    assert_caught(finding, mutant)


def test_catalogue_is_complete():
    ms = list(mutants.MUTANTS.values())
    assert len(ms) >= 12
    assert len({m.id for m in ms}) == len(ms)
    assert all(m.first in ORDER and m.title and m.equation for m in ms)
    assert all(isinstance(m, mutants.Mutant) for m in ms)
    assert {d["id"] for d in mutants.as_dicts()} == set(mutants.MUTANTS)


# --- the explainer on planted mistakes ------------------------------------------------------

RNG = np.random.default_rng(7)
G = RNG.standard_normal((6, 3, 16))  # a conv map (N, K, P), P = 4 x 4
F = RNG.standard_normal((5, 5, 3))  # filters (s, s, K)
W = RNG.standard_normal((12, 1))
CTX = dict(lr=0.0625, n_images=6, n_filters=3, filter_size=5, bias=0.25)


def _flatten_position_major(g):
    N, K, P = g.shape  # D4: the (K, P) buffer read as (P, K)
    return g.reshape(N, K * P).reshape(N, P, K).transpose(0, 2, 1)


OLD, GRAD = RNG.standard_normal((12, 1)), RNG.standard_normal((12, 1))
UPDATE = dict(CTX, old=OLD, grad=GRAD)
THEIRS = OLD - 0.0625 * GRAD

CASES = {  # id: (tensor, theirs, ours, context, expected suspect, words in the message)
    "mean-vs-sum": ("dE_dW", W, W / 6, CTX, "factor", "mean vs sum"),
    "sign": ("dE_dO", G, -G, CTX, "factor", "sign"),
    "half": ("E", np.array(2.0), np.array(4.0), CTX, "factor", "1/2"),
    "lr-twice": ("dE_dW", W, 0.0625 * W, CTX, "factor", "lr applied twice"),
    "free-factor": ("Z1", G, G / 3.7, CTX, "factor", "no known constant"),
    "flipped-kernel": ("dE_df", F, F[::-1, ::-1], CTX, "flipped_kernel", "true convolution"),
    "filter-transposed": ("dE_df", F, F.transpose(1, 0, 2), CTX, "swap_axes", "filter transposed"),
    "flatten-order": ("dE_dA1", G, _flatten_position_major(G), CTX, "flatten_order", "position-major"),
    "positions-transposed": (
        "Z1",
        G,
        G.reshape(6, 3, 4, 4).transpose(0, 1, 3, 2).reshape(6, 3, 16),
        CTX,
        "position_transpose",
        "transposed",
    ),
    "W-transposed": ("dE_dW", W, W.T, CTX, "transpose", "W vs W^T"),
    "unreduced": ("dE_db", G[0, :1, :6].sum(axis=1), G[0, :1, :6], CTX, "unreduced", "summed"),
    "dtype": (
        "dE_df",
        F.astype(np.float32),
        F.astype(np.float32).astype(np.float64),
        CTX,
        "dtype",
        "upcast",
    ),
    "bias-missing": ("Z2", G[:, 0, 0][None] + 0.25, G[:, 0, 0][None], CTX, "missing_bias", "bias"),
    "offset-not-b": ("Z2", G[:, 0, 0][None] + 0.5, G[:, 0, 0][None], CTX, "affine", "constant offset"),
    "standardised": (
        "Z2",
        3 * G[:, 0, 0][None] + 1,
        ((G[:, 0, 0] - G[:, 0, 0].mean()) / G[:, 0, 0].std())[None],
        CTX,
        "affine",
        "standardised",
    ),
    "update-twice": ("W_new", THEIRS, OLD - 2 * 0.0625 * GRAD, UPDATE, "update_twice", "twice"),
    "update-missing": ("W_new", THEIRS, OLD.copy(), UPDATE, "update_missing", "not applied"),
    "ascent": ("W_new", THEIRS, OLD + 0.0625 * GRAD, UPDATE, "update_sign", "flipped"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_explainer_names_the_mistake(case):
    tensor, theirs, ours, ctx, suspect, words = case
    found = explain(theirs, ours, tensor=tensor, against="torch", context=ctx)
    assert found is not None and found.suspect == suspect and words in found.message, found


@pytest.mark.parametrize(
    "ours", [G + 0.01 * RNG.standard_normal(G.shape), np.abs(G), G**2], ids=["noise", "abs", "square"]
)
def test_explainer_stays_silent_on_unrelated_differences(ours):
    assert explain(G, ours, tensor="Z1", against="torch", context=CTX) is None


def test_explainer_claims_no_ratio_for_a_scalar():
    # Any two numbers have a ratio: for a scalar only a named constant is an explanation.
    assert explain(np.array(2.0), np.array(1.3), tensor="E", against="torch", context=CTX) is None
