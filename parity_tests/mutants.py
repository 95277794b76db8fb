"""The mutation catalogue: typical derivation mistakes, each the reference step with one
method changed.

A mutant is a typical derivation mistake (beyond the published-code variants D1..D13 of
reference.published): the reference step (`ArticleStep`) with one method changed, so it
has the model's `train_step` API (`--parity-impl mutant:sign_dE_dO` runs the whole suite on
it). Each carries the tensor it must be caught at (`first`, in forward/backward order), the
equation it breaks, the dtype in which it shows, and the explainer suspect expected for it.
parity_tests/detection.py localises each one through the suite's stage checks.
"""

from __future__ import annotations

import numpy as np

from reference import conv, dense, flatten, patches
from reference.published import ArticleStep


class Mutant(ArticleStep):
    """A derivation mistake: the reference step with one method changed."""


class SignDEdO(Mutant):
    id, equation, first, explains = "sign_dE_dO", "E8", "dE_dO", "factor"
    title = "dE/dO = y - O: the sign of E8 flipped"

    def dE_dO(self, t, lr, reduction):
        return -super().dE_dO(t, lr, reduction)


class SigmoidGradOfZ2(Mutant):
    id, equation, first, explains = "sigmoid_grad_of_Z2", "E9", "dO_dZ2", "sigmoid_grad_of_preactivation"
    title = "dO/dZ2 = Z2 (1 - Z2): the sigmoid derivative from the pre-activation, not from O"

    def dO_dZ2(self, t, lr, reduction):
        return t.Z2 * (1 - t.Z2)


class SigmoidGradOfZ1(Mutant):
    id, equation, first, explains = (
        "sigmoid_grad_of_Z1",
        "E14",
        "dE_dZ1",
        "sigmoid_grad_of_preactivation",
    )
    title = "dA1/dZ1 = Z1 (1 - Z1): the conv sigmoid derivative from the pre-activation"

    def dE_dZ1(self, t, lr, reduction):
        return t.dE_dA1 * (t.Z1 * (1 - t.Z1))


class MissingTranspose(Mutant):
    id, equation, first, explains = "missing_transpose_dE_dA1", "E13", "dE_dA1", "reshape_for_transpose"
    title = (
        "dE/dA1 = (dE/dZ2^T . W^T).reshape(F, N): a reshape where a transpose belongs, so "
        "images and W's rows mix"
    )

    def dE_dA1(self, t, lr, reduction):
        rows = t.dE_dZ2.T @ t.W.T  # (N, F): right values
        return flatten.unflatten(rows.reshape(t.W.shape[0], -1), t.f.shape[2])


class TrueConvolution(Mutant):
    id, equation, first, explains = "true_convolution", "E1", "Z1", "flipped_kernel"
    title = "Z1 with the filter flipped (a true convolution, not the cross-correlation)"

    def Z1(self, t, lr, reduction):
        return conv.conv_forward(t.patches, np.ascontiguousarray(t.f[::-1, ::-1]))


class FlippedFilterGradient(Mutant):
    id, equation, first, explains = "flipped_dE_df", "E16", "dE_df", "flipped_kernel"
    title = "dE/df computed as a true convolution: the filter gradient rotated 180 degrees"

    def dE_df(self, t, lr, reduction):
        return np.ascontiguousarray(super().dE_df(t, lr, reduction)[::-1, ::-1])


def _flatten_position_major(A1):
    N, K, P = A1.shape
    return A1.transpose(0, 2, 1).reshape(N, P * K).T  # row p * K + k


class FlattenPositionMajor(Mutant):
    id, equation, first, explains = "flatten_position_major", "E4", "Z2", "flatten_order"
    title = (
        "features flattened position-major (p * K + k) instead of the article's filter-major "
        "order, consistently in Z2, dE/dW and dE/dA1"
    )

    def Z2(self, t, lr, reduction):
        return dense.dense_forward(_flatten_position_major(t.A1), t.W, t.b)

    def dE_dW(self, t, lr, reduction):
        return dense.dense_grad_weights(_flatten_position_major(t.A1), t.dE_dZ2)

    def dE_dA1(self, t, lr, reduction):
        N, K, P = t.A1.shape
        flat = dense.dense_grad_input(t.W, t.dE_dZ2)  # (P * K, N)
        return np.ascontiguousarray(flat.T.reshape(N, P, K).transpose(0, 2, 1))


class LossMeanForSum(Mutant):
    id, equation, first, explains = "batch_mean_for_sum", "E7,E8", "E", "factor"
    title = "E and dE/dO averaged over the batch where the run declares a sum"

    def E(self, t, lr, reduction):
        return super().E(t, lr, "mean")

    def dE_dO(self, t, lr, reduction):
        return super().dE_dO(t, lr, "mean")


class BiasGradNotSummed(Mutant):
    id, equation, first, explains = "bias_grad_not_summed", "E12", "dE_db", "unreduced"
    title = "dE/db = dE/dZ2 per image: the batch sum of E12 not taken (b_new broadcasts to (1, N))"

    def dE_db(self, t, lr, reduction):
        return t.dE_dZ2.copy()


class OffByOneWindow(Mutant):
    id, equation, first, explains = "off_by_one_window", "E1,E2", "patches", "shift"
    title = "windows start one pixel late (1-based window loop over a zero-padded image)"

    def patches(self, t, lr, reduction):
        n, _, N = t.X.shape
        padded = np.zeros((n + 1, n + 1, N), dtype=t.X.dtype)
        padded[:n, :n] = t.X
        return patches.extract_patches(np.ascontiguousarray(padded[1:, 1:]), t.f.shape[0])


class UntransposedImages(Mutant):
    id, equation, first, explains = "untransposed_images", "E1", "patches", "image_transpose"
    title = "windows cut from the untransposed images (the article's X = x_train.T forgotten)"

    def patches(self, t, lr, reduction):
        return patches.extract_patches(np.ascontiguousarray(t.X.transpose(1, 0, 2)), t.f.shape[0])


class LrWrongSign(Mutant):
    id, equation, first, explains = "lr_wrong_sign", "E17", "f_new", "update_sign"
    title = "new = old + lr * gradient: gradient ascent"

    def f_new(self, t, lr, reduction):
        return t.f + lr * t.dE_df

    def W_new(self, t, lr, reduction):
        return t.W + lr * t.dE_dW

    def b_new(self, t, lr, reduction):
        return t.b + lr * t.dE_db


class UpdateTwice(Mutant):
    id, equation, first, explains = "update_applied_twice", "E17", "W_new", "update_twice"
    title = "the W update line runs twice: W - 2 lr dE/dW"

    def W_new(self, t, lr, reduction):
        return t.W - lr * t.dE_dW - lr * t.dE_dW


class UpdateMissing(Mutant):
    id, equation, first, explains = "update_not_applied", "E17", "b_new", "update_missing"
    title = "b is never updated"

    def b_new(self, t, lr, reduction):
        return t.b.copy()


class LrInGradient(Mutant):
    id, equation, first, explains = "lr_applied_twice", "E11,E17", "dE_dW", "factor"
    title = "dE/dW stored already multiplied by lr, then the update multiplies by lr again (lr^2)"

    def dE_dW(self, t, lr, reduction):
        return lr * super().dE_dW(t, lr, reduction)


class HalfFactorDropped(Mutant):
    id, equation, first, explains = "half_factor_dropped", "E7,E8", "E", "factor"
    title = "E = (y - O)^2 without the 1/2 (and dE/dO = -2 (y - O) to match)"

    def E(self, t, lr, reduction):
        return 2 * super().E(t, lr, reduction)

    def dE_dO(self, t, lr, reduction):
        return 2 * super().dE_dO(t, lr, reduction)


class SigmoidFactorDropped(Mutant):
    id, equation, first, explains = "sigmoid_factor_dropped", "E9,E11", "dE_dZ2", "derivative_dropped"
    title = "dE/dZ2 = dE/dO: the factor O (1 - O) of E11 dropped"

    def dE_dZ2(self, t, lr, reduction):
        return t.dE_dO.copy()


class TransposedDEdW(Mutant):
    id, equation, first, explains = "dE_dW_transposed", "E11", "dE_dW", "transpose"
    title = "dE/dW = dE/dZ2 . A1^T: W^T's shape (1, F) instead of W's (F, 1)"

    def dE_dW(self, t, lr, reduction):
        return t.dE_dZ2 @ flatten.flatten(t.A1).T

    def W_new(self, t, lr, reduction):
        return t.W - lr * t.dE_dW.T


class Float64Accumulation(Mutant):
    id, equation, first, explains, dtype = ("float64_accumulation", "E16", "dE_df", "dtype", "float32")
    title = (
        "dE/df accumulated in float64 and returned as float64 in a float32 run (a silent "
        "upcast; the values are fine, the dtype is not)"
    )

    def dE_df(self, t, lr, reduction):
        return conv.conv_grad_filter(t.patches.astype(np.float64), t.dE_dZ1.astype(np.float64))


def round_operand(x: np.ndarray, fmt: str) -> np.ndarray:
    """`x` rounded to the low-precision format `fmt` and back to its own dtype: what a
    mixed-precision policy or a tensor core does to an operand before the product.

    fmt: "float16", "bfloat16" (ml_dtypes, installed with TensorFlow) or "tf32" (float32
    with its mantissa rounded to 10 bits, round to nearest even, as TF32 tensor cores
    read their float32 operands).
    """
    if fmt == "float16":
        return x.astype(np.float16).astype(x.dtype)
    if fmt == "bfloat16":
        import ml_dtypes

        return x.astype(ml_dtypes.bfloat16).astype(x.dtype)
    if fmt == "tf32":
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
        drop = np.uint32(23 - 10)  # float32 keeps 23 stored mantissa bits, TF32 10
        half = np.uint32(1 << (23 - 10 - 1))
        odd = (bits >> drop) & np.uint32(1)
        rounded = ((bits + half - np.uint32(1) + odd) >> drop) << drop
        return rounded.view(np.float32).astype(x.dtype)
    raise ValueError(f"unknown low-precision format {fmt!r}")


class FilterGradFloat16Operands(Mutant):
    id, equation, first, explains, dtype = (
        "dE_df_float16_operands",
        "E16",
        "dE_df",
        "precision",
        "float32",
    )
    title = (
        "dE/df from float16-rounded operands (patches and dE/dZ1 cast to float16, products "
        "summed in float32): a mixed-precision policy, about 1% off, within the worst-case "
        "allowance of a 115,200-term sum"
    )
    fmt = "float16"

    def dE_df(self, t, lr, reduction):
        return conv.conv_grad_filter(
            round_operand(t.patches, self.fmt), round_operand(t.dE_dZ1, self.fmt)
        )


class FilterGradBfloat16Operands(FilterGradFloat16Operands):
    id = "dE_df_bfloat16_operands"
    title = "dE/df from bfloat16-rounded operands (8-bit mantissa), products summed in float32"
    fmt = "bfloat16"


class ConvForwardTF32(Mutant):
    id, equation, first, explains, dtype = ("Z1_tf32", "E1", "Z1", "precision", "float32")
    title = (
        "Z1 in TF32: the operands' mantissas rounded to 10 bits before the products (a GPU "
        "convolution with TF32 on, cuDNN's default)"
    )

    def Z1(self, t, lr, reduction):
        return conv.conv_forward(round_operand(t.patches, "tf32"), round_operand(t.f, "tf32"))


MUTANTS = {
    m.id: m
    for m in (
        SignDEdO(),
        SigmoidGradOfZ2(),
        SigmoidGradOfZ1(),
        MissingTranspose(),
        TrueConvolution(),
        FlippedFilterGradient(),
        FlattenPositionMajor(),
        LossMeanForSum(),
        BiasGradNotSummed(),
        OffByOneWindow(),
        UntransposedImages(),
        LrWrongSign(),
        UpdateTwice(),
        UpdateMissing(),
        LrInGradient(),
        HalfFactorDropped(),
        SigmoidFactorDropped(),
        TransposedDEdW(),
        Float64Accumulation(),
        FilterGradFloat16Operands(),
        FilterGradBfloat16Operands(),
        ConvForwardTF32(),
    )
}


def as_dicts() -> list[dict]:
    """Plain-data catalogue for reports/audit.py."""
    return [
        dict(
            id=m.id,
            title=m.title,
            equation=m.equation,
            first=m.first,
            dtype=m.dtype,
            explains=m.explains or "",
        )
        for m in MUTANTS.values()
    ]
