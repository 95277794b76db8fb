"""Rounding counts: how many roundings each operation's result goes through.

The stage rule (parity_tests/tolerance.py) allows 2 gamma(k) M between two correct
evaluations of one expression, M the expression on absolute values and k its longest chain
of roundings. The k of every operation lives here, each with its reason, so that a layer
kind's registry entry (reference/layers/registry.py) states its own bound and the article's
stages (parity_tests/stages.py) read the same counts: one count per operation, wherever it
sits.
"""

from __future__ import annotations

import numpy as np

# Roundings charged to an evaluation of the sigmoid: exp (<= 1 ulp in NumPy; vectorised
# framework kernels ~2 ulp), one add, one divide, and the choice of form for negative x.
SIGMOID_ROUNDINGS = 8

# Rounding counts k of the stage rule, one per kind of operation; every stage in
# parity_tests/stages.py takes its k from here. n is the batch size throughout.

# patches: a re-indexing of X, no arithmetic.
EXACT_ROUNDINGS = 0


def roundings_dot(k: int) -> int:
    """A k-term sum of products: each term is rounded by its product and at most k - 1 additions."""
    return k


def roundings_affine(k: int) -> int:
    """w.x + b over k terms: the k-term sum of products, then one addition of the bias."""
    return roundings_dot(k) + 1


def roundings_sum(n: int) -> int:
    """A sum of n terms (n - 1 additions), charged as an n-term sum of products (one spare)."""
    return roundings_dot(n)


def roundings_loss(n: int) -> int:
    """E over n images: y - O, its square, the halving (3), n - 1 additions, mean's 1/n (1)."""
    return 3 + (n - 1) + 1


# dE/dO = O - y (times 1/n for the mean): the subtraction and the mean's scaling.
LOSS_GRAD_ROUNDINGS = 2

# sigmoid'(z) = s (1 - s) from s = sigmoid(z): the sigmoid, then 1 - s and the product.
SIGMOID_GRAD_ROUNDINGS = SIGMOID_ROUNDINGS + 2

# dE/dZ1 = dE/dA1 * A1 (1 - A1): sigmoid' and the product with the upstream gradient.
SIGMOID_BACKWARD_ROUNDINGS = SIGMOID_GRAD_ROUNDINGS + 1


def sigmoid_grad_magnitude(A):
    """M of sigmoid'(z) = A (1 - A) written through the output A, wherever a sigmoid's
    derivative is computed (E9, E14, a spec network's sigmoid): A (1 - A) for the roundings
    of 1 - A and of the product, plus A for the error A itself carries (an error e in A moves
    A (1 - A) by |1 - 2A| e <= e, and e is relative to A). One rule for the article and the
    spec networks."""
    A = np.abs(A)
    return A * (1 - A) + A


# dE/dZ2 = (O - y) O (1 - O): as dE/dZ1, plus the subtraction O - y that makes the upstream
# (the mean's 1/n is not charged a rounding of its own here).
LOSS_SIGMOID_BACKWARD_ROUNDINGS = SIGMOID_BACKWARD_ROUNDINGS + 1

# SGD, p - lr * g (E17): the product lr * g and the subtraction.
SGD_ROUNDINGS = 2

# --- the layers beyond the article (X1..X12, parity_tests/model_stages.py) -------------
# Each is charged the operations of its expression; M is always the expression evaluated on
# absolute values, so the counts below only say how many roundings each term goes through.

# Re-indexing and selection: flatten, ReLU (max(0, z) and its masked delta), max-pool's
# forward (a maximum is one of its inputs) all return an input value exactly.
SELECT_ROUNDINGS = 0

# tanh from a vectorised kernel (NumPy's libm tanh is <= 1 ulp; framework kernels are
# polynomial or exp-based and measured a few ulp): charged as the sigmoid.
TANH_ROUNDINGS = SIGMOID_ROUNDINGS

# dE/dZ = dA (1 - A^2) with the framework's own A = tanh(z): tanh, the square, 1 - A^2 and
# the product. (An error e in A moves 1 - A^2 by 2|A|e: M carries |dA| (1 + A^2).)
TANH_BACKWARD_ROUNDINGS = TANH_ROUNDINGS + 3


def roundings_window_sum(windows: int) -> int:
    """A gradient scattered back from `windows` overlapping windows (pool backward,
    ceil(k / s)^2 per element): one addition per window, charged as a sum."""
    return roundings_sum(windows)


def roundings_softmax(K: int) -> int:
    """P over K classes: the shift z - max (1), exp (2, as the sigmoid's), the K-term sum
    and the division (1). The exponent's own error u |z - max| is in M, not here."""
    return 1 + 2 + roundings_sum(K) + 1


def roundings_cross_entropy(K: int, n: int) -> int:
    """E = -sum_n log P[n, y_n] from the shifted logits: log-sum-exp (as softmax, plus the
    log), the subtraction, then n - 1 additions and the mean's 1/n."""
    return roundings_softmax(K) + 2 + (n - 1) + 1


def roundings_softmax_backward(K: int) -> int:
    """dE/dZ = P - onehot (times 1/n for the mean): P's roundings, the subtraction, the scaling."""
    return roundings_softmax(K) + 2


# --- normalisation, dropout, global average pooling (X13..X19) ---------------------------

# Beyond the m-term sums of the statistics (mean, variance), the roundings one element of a
# normalisation's tensors goes through: X - mu (1), the mean's division (1), eps + var and
# the square root (2, or an rsqrt kernel's few ulp, charged the same); the products with
# gamma and the addition of beta, or the backward's three-term bracket, are charged to the
# multipliers that reference/layers/norm.py's bounds carry in M (see norm_roundings).
NORM_EXTRA_ROUNDINGS = 4


def norm_roundings(m: int, n_sum: int) -> int:
    """A normalisation's tensors: the longest chain is an m-term statistic (the mean, then the
    variance of X - mu, each m terms; or the backward's means over the same m values), or the
    n_sum-term sum of dgamma / dbeta over the axes gamma is broadcast along, plus
    NORM_EXTRA_ROUNDINGS. The cancellation in X - mu is not a count: its error is relative to
    |X| + mean|X|, not to |X - mu|, and the bounds' M carries that magnitude."""
    return max(roundings_sum(m), roundings_sum(n_sum)) + NORM_EXTRA_ROUNDINGS


# Dropout: X mask / (1 - p) as the reference writes it (one division, 1 - p exact in the
# dtype for the suite's p = 0.5), or x * (mask / (1 - p)) as torch's kernel and
# (x * (1 / (1 - p))) * mask as tf.nn.dropout do: the reciprocal's rounding and the product.
DROPOUT_ROUNDINGS = 2


def roundings_global_avg_pool(hw: int) -> int:
    """X19 forward: an H W-term sum and the division by H W (or a multiply by 1 / (H W): 2)."""
    return roundings_sum(hw) + 2


# X19 backward: dA / (H W) to every position (a division, or a product with 1 / (H W)).
GLOBAL_AVG_POOL_BACKWARD_ROUNDINGS = 2
