"""The kink rules (parity_tests/kinks.py) on hand-made inputs: what counts as a kink, what
decides there, and that nothing else is excused."""

import numpy as np

from parity_tests import kinks
from reference.data import load_article_data
from reference.network import Network, images_nchw


def test_relu_kink_takes_the_framework_branch_only_within_the_allowance():
    ours = np.array([-1e-9, 2e-9, -0.5, 0.0, 0.3])
    theirs = np.array([1e-9, 2e-9, 0.1, 0.0, 0.3])  # 0: kink flipped; 2: a clear flip
    decide, found = kinks.relu(ours, theirs, 1e-8, "relu1")
    assert found.ambiguous == 2 and found.taken == 1  # the exact zeros on both sides are no kink
    assert decide[0] == theirs[0] and decide[2] == ours[2]  # a clear flip stays ours: it fails


def _window(values):
    return np.array(values, dtype=np.float64).reshape(1, 1, 2, 2)


def test_maxpool_exact_tie_is_no_kink_and_near_tie_is():
    zeros = _window([0, 0, 0, 0])
    _, found = kinks.maxpool(zeros, zeros.copy(), 1e-8, 2, 2, "pool1")
    assert (found.ambiguous, found.taken) == (0, 0)
    ours, theirs = _window([1.0, 1.0 + 1e-10, 0, 0]), _window([1.0 + 2e-10, 1.0, 0, 0])
    decide, found = kinks.maxpool(ours, theirs, 1e-8, 2, 2, "pool1")
    assert (found.ambiguous, found.taken) == (1, 1)
    assert decide.reshape(-1)[0] == theirs.reshape(-1)[0]


def test_maxpool_clear_window_decides_from_ours():
    ours, theirs = _window([1.0, 0.5, 0, 0]), _window([0.4, 0.5, 0, 0])
    decide, found = kinks.maxpool(ours, theirs, 1e-8, 2, 2, "pool1")
    assert found.ambiguous == 0 and np.array_equal(decide, ours)


def test_following_the_framework_at_a_kink_moves_exactly_that_delta():
    # conv-relu-dense on 2 images: flip one ReLU input's branch by `decide` and only the
    # gradients that element feeds change.
    net = Network("conv(1,3)-relu-dense(10)-softmax_ce")
    data = load_article_data(2, source="synthetic")
    X, params = images_nchw(data.X), net.init_params(0)
    fwd = net.forward(params, X, data.labels)
    z = fwd["conv1.Z"].copy()
    i = np.unravel_index(np.argmin(np.abs(z)), z.shape)
    z[i] = -z[i]
    plain = net.backward(params, X, fwd, data.labels)
    moved = net.backward(params, X, fwd, data.labels, decide={"relu1": z})
    diff = plain["relu1.dZ"] != moved["relu1.dZ"]
    assert diff.sum() == 1 and diff[i]


def test_synthetic_fallback_has_ten_classes():
    labels = load_article_data(40, source="synthetic").labels
    assert set(labels.tolist()) == set(range(10))
    assert np.array_equal(Network("lenet").targets(labels, "float32"), labels)


def test_overlapping_exact_tie_next_to_a_kink_follows_the_framework_whole():
    # Found by the generated networks: sigmoid of a constant map, ours all equal, the
    # framework's 1 ulp higher except its last element; 2x2 windows at stride 1 overlap, so
    # the exact-tie windows share elements with the kink window at the corner.
    from reference.layers import pool

    ours = np.full((1, 1, 3, 3), 0.5, dtype=np.float32)
    theirs = np.full_like(ours, np.nextafter(np.float32(0.5), np.float32(1)))
    theirs[0, 0, 2, 2] = 0.5
    decide, found = kinks.maxpool(ours, theirs, 1e-6, 2, 1, "pool1")
    assert (found.ambiguous, found.taken) == (1, 0)
    dA = np.arange(1.0, 5.0, dtype=np.float32).reshape(1, 1, 2, 2)
    expected = pool.max_pool_backward(theirs, dA, 2, 1)
    assert np.array_equal(pool.max_pool_backward(decide, dA, 2, 1), expected)
