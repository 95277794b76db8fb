"""The layout module: every conversion round-trips, and the mapping is the one the
frameworks need (checked on an asymmetric example, where a wrong transpose shows)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference import layout, model

PAIRS = [
    ("images_nchw", layout.images_to_nchw, layout.nchw_to_images, lambda n, s, K, N: (n, n, N)),
    ("images_nhwc", layout.images_to_nhwc, layout.nhwc_to_images, lambda n, s, K, N: (n, n, N)),
    ("filters_oihw", layout.filters_to_oihw, layout.oihw_to_filters, lambda n, s, K, N: (s, s, K)),
    ("filters_hwio", layout.filters_to_hwio, layout.hwio_to_filters, lambda n, s, K, N: (s, s, K)),
    (
        "convmap_nchw",
        layout.conv_map_to_nchw,
        layout.nchw_to_conv_map,
        lambda n, s, K, N: (N, K, (n - s + 1) ** 2),
    ),
    (
        "convmap_nhwc",
        layout.conv_map_to_nhwc,
        layout.nhwc_to_conv_map,
        lambda n, s, K, N: (N, K, (n - s + 1) ** 2),
    ),
    (
        "patches_unfold",
        layout.patches_to_unfold,
        lambda c: layout.unfold_to_patches(c, int(round(c.shape[1] ** 0.5))),
        lambda n, s, K, N: (N, (n - s + 1) ** 2, s, s),
    ),
]


@given(
    data=st.data(),
    n=st.integers(3, 9),
    s=st.integers(1, 3),
    K=st.integers(1, 4),
    N=st.integers(1, 3),
    dtype=st.sampled_from([np.float32, np.float64]),
)
@pytest.mark.parametrize("name, to, back, shape", PAIRS, ids=[p[0] for p in PAIRS])
def test_round_trip(name, to, back, shape, data, n, s, K, N, dtype):
    a = data.draw(
        hnp.arrays(dtype, shape(n, s, K, N), elements=st.floats(-1, 1, width=32)), label="array"
    )
    assert np.array_equal(back(to(a)), a)


@pytest.mark.parametrize(
    "to, back",
    [
        (layout.dense_weights_to_torch, layout.torch_to_dense_weights),
        (layout.dense_weights_to_keras, layout.keras_to_dense_weights),
    ],
    ids=["torch", "keras"],
)
def test_dense_weights_round_trip(to, back):
    W = np.arange(3 * 16, dtype=np.float64).reshape(-1, 1)
    assert np.array_equal(back(to(W, 3), 3), W)


def test_article_row_mapping_by_hand():
    # Article row k*P + i*m + j is torch row k*P + j*m + i and keras row (j*m + i)*K + k.
    K, m = 2, 3
    W = np.arange(K * m * m, dtype=np.float64).reshape(-1, 1)
    torch_w, keras_w = layout.dense_weights_to_torch(W, K), layout.dense_weights_to_keras(W, K)
    k, i, j = 1, 0, 2
    article_row = k * m * m + i * m + j
    assert torch_w[0, k * m * m + j * m + i] == W[article_row, 0]
    assert keras_w[(j * m + i) * K + k, 0] == W[article_row, 0]


def test_images_are_transposed_back():
    X = np.arange(2 * 2 * 1, dtype=np.float64).reshape(2, 2, 1)  # X[a, b, n] = img[b, a]
    assert layout.images_to_nchw(X)[0, 0].tolist() == [[0.0, 2.0], [1.0, 3.0]]


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="f must have shape"):
        layout.filters_to_oihw(np.zeros((5, 5)))
    with pytest.raises(TypeError, match="X must"):
        layout.images_to_nchw([[1.0]])


@pytest.mark.parametrize("target", layout.LAYOUTS)
def test_a_whole_step_round_trips_through_each_layout(target):
    params = model.init_params(0)
    X = np.random.default_rng(0).random((28, 28, 3))
    step = dict(model.train_step(params, X, np.ones((1, 3))))
    converted = layout.to_layout(step, target, 3, 5)
    back, failed = layout.from_layout(converted, target, 3, 5)
    assert failed == [] and set(back) == set(step)
    assert all(np.array_equal(np.asarray(back[k]), np.asarray(step[k])) for k in step)


def test_from_layout_hands_back_what_it_cannot_convert():
    Z1 = np.zeros((2, 3, 24, 23))  # not square: not an NCHW conv map
    back, failed = layout.from_layout({"Z1": Z1, "mine": 1}, "nchw", 3, 5)
    assert failed == ["Z1"] and back["Z1"] is Z1 and back["mine"] == 1
    with pytest.raises(ValueError, match="layout must be one of"):
        layout.to_layout({}, "nhcw", 3, 5)
