"""The published code's departures from the article's derivation, as runnable variants.

Public transcriptions of the article's code differ from its text in the ways docs/article.md
lists as D1..D13. Each variant here is the reference model with exactly one of those
departures and nothing else, so the parity suite can show, tensor by tensor, what each one
changes. `VARIANTS["D3"].train_step(params, X, y, lr, reduction)` has the reference model's
API and returns the same article names in the same layout (`--parity-impl published:D3`).

`ArticleStep` is the reference model split into one overridable method per named tensor,
in forward/backward order (`ORDER`); a variant overrides the one method whose line the
published code changes. `ArticleStep()` itself computes what `reference.model` computes.

Applicability: docs/article.md describes D1..D8, D12 and D13, and all of them are here.
D9..D11 are not described in docs/article.md, so there is nothing to implement for them.
"""

from __future__ import annotations

import math

import numpy as np

from reference import conv, dense, flatten, patches
from reference.model import ArticleStep
from reference.tensors import ORDER  # noqa: F401  (the variants' order, re-exported)

# --- the published code's departures ------------------------------------------------------


class D1(ArticleStep):
    id, equation, first, explains = "D1", "E5,E6", "Z2", "affine"
    title = (
        "Z2 standardised over the batch, (Z2 - mean) / std, before the output sigmoid; "
        "the derivation ignores it"
    )

    def Z2(self, t, lr, reduction):
        z = super().Z2(t, lr, reduction)
        return (z - z.mean()) / z.std()


class D2(ArticleStep):
    id, equation, first, explains = "D2", "E14", "dE_dZ1", "derivative_dropped"
    title = "conv sigmoid derivative written A1 + (1 - A1) (always 1) instead of A1 * (1 - A1)"

    def dE_dZ1(self, t, lr, reduction):
        return t.dE_dA1 * (t.A1 + (1 - t.A1))


class D3(ArticleStep):
    id, equation, first, explains = "D3", "E16", "dE_df", "batch_mean_delta"
    title = (
        "conv delta averaged over the images first; that one average map is convolved with every image"
    )

    def dE_df(self, t, lr, reduction):
        mean_delta = t.dE_dZ1.mean(axis=0, keepdims=True)
        return conv.conv_grad_filter(
            t.patches, np.ascontiguousarray(np.broadcast_to(mean_delta, t.dE_dZ1.shape))
        )


class D4(ArticleStep):
    id, equation, first, explains = "D4", "E4,E13", "dE_dA1", "flatten_order"
    title = (
        "the 1728-long delta (filter-major, 3 x 576) reshaped to (24, 24, 3) channel-last, "
        "mixing filters and positions"
    )

    def dE_dA1(self, t, lr, reduction):
        flat = dense.dense_grad_input(t.W, t.dE_dZ2)  # (K * P, N), row k * P + p
        N, K, P = t.A1.shape
        m = math.isqrt(P)
        # Each image's vector reshaped to (m, m, K): [i, j, k] reads row (i * m + j) * K + k.
        channel_last = flat.T.reshape(N, m, m, K)
        return np.ascontiguousarray(channel_last.transpose(0, 3, 1, 2)).reshape(N, K, P)


class D5(ArticleStep):
    id, equation, first, explains = "D5", "E13", "dE_dA1", "updated_weights"
    title = "W updated before dZ2/dA1 is taken, so the filter gradient flows through the new W"

    def dE_dA1(self, t, lr, reduction):
        W_updated = t.W - lr * t.dE_dW
        return flatten.unflatten(dense.dense_grad_input(W_updated, t.dE_dZ2), t.f.shape[2])


class D6(ArticleStep):
    id, equation, first, explains = "D6", "E17", "f_new", "update_one_slice"
    title = "the update loop subtracts every filter's gradient from filter number 1 only"

    def f_new(self, t, lr, reduction):
        new = t.f.copy()
        for k in range(t.f.shape[2]):  # the published loop, with its index bug
            new[:, :, 0] -= lr * t.dE_df[:, :, k]
        return new


class D7(ArticleStep):
    id, equation, first, explains = "D7", "E16", "dE_df", "partial_sums"
    title = (
        "the filter-gradient loop stores running partial sums inside the image loop; "
        "the reshaped gradient holds the first stored partial sums"
    )

    def dE_df(self, t, lr, reduction):
        # The published loop (filters outer, images inner) appends the running sum
        # S[k, n] = sum over images n' <= n of filter k's contribution after every image;
        # reshaping that list to f's shape keeps its first K entries: slot j holds S[0, j]
        # (filter 1's partial sum over the first j + 1 images) when N > K. K entries, so the
        # loop below is over 3 stored entries, not over images or pixels.
        N, K, _ = t.dE_dZ1.shape
        s = t.f.shape[0]
        out = np.empty((s, s, K), dtype=t.f.dtype)
        for entry in range(K):
            k, n = divmod(entry, N)
            out[:, :, entry] = np.einsum("npuv,np->uv", t.patches[: n + 1], t.dE_dZ1[: n + 1, k])
        return out


class D8(ArticleStep):
    id, equation, first, explains = "D8", "E5,E12", "Z2", "missing_bias"
    title = "no bias in the code although the text has b"

    def Z2(self, t, lr, reduction):
        return t.W.T @ flatten.flatten(t.A1)

    def dE_db(self, t, lr, reduction):
        return np.zeros_like(t.b)

    def b_new(self, t, lr, reduction):
        return t.b.copy()


class D12(ArticleStep):
    id, equation, first, explains = "D12", "E7,E16", "dE_df", "factor"
    title = (
        "dense gradient summed over the batch, filter gradient divided by the batch size: "
        "the two layers train with different effective learning rates"
    )

    def dE_df(self, t, lr, reduction):
        return super().dE_df(t, lr, reduction) / t.X.shape[2]


class D13(ArticleStep):
    id, equation, first, explains = "D13", "E1", "patches", "factor"
    title = (
        "pixels divided by 255 in the code only; as a variant of the text: the pixels "
        "are not scaled (X * 255 of the scaled data)"
    )

    def patches(self, t, lr, reduction):
        # The data handed in are scaled as the published code does; the text never divides,
        # so its windows hold raw pixel values. X itself is returned unchanged (it is an input).
        return patches.extract_patches(t.X * 255, t.f.shape[0])


VARIANTS = {v.id: v for v in (D1(), D2(), D3(), D4(), D5(), D6(), D7(), D8(), D12(), D13())}


def as_dicts(steps=None) -> list[dict]:
    """Plain-data description of variants (for reports/, which cannot import reference/)."""
    steps = VARIANTS.values() if steps is None else steps
    return [
        dict(
            id=s.id,
            title=s.title,
            equation=s.equation,
            first=s.first,
            dtype=s.dtype,
            explains=s.explains or "",
        )
        for s in steps
    ]
