"""Computes every tensor once per run and hands out checks: the implementation under test,
the float64 truth, each framework's whole-model run and each framework's stage results.

One `Harness` lives for the whole pytest session (per xdist worker); everything is cached,
so a test only compares.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from parity_tests import tolerance
from parity_tests.mirrors import load_mirror
from parity_tests.stages import BY_TENSOR, UPDATE_GRADIENT, Stage, stage_tolerance
from reference import model
from reference.tensors import Tensors


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    n_images: int = 200
    lr: float = 0.0625       # 2^-4: Keras keeps lr in float32; a value float32 holds exactly
    reduction: str = "sum"
    init_scheme: str = "informative"
    impl: str = "reference"


@dataclass(frozen=True)
class Check:
    """One comparison ready to be made: framework (actual) vs implementation (expected)."""

    actual: np.ndarray
    expected: np.ndarray
    tolerance: tolerance.Tolerance
    truth: np.ndarray | None
    context: dict | None = None   # what reports.explain may use to name a mismatch


def _f64(tensors):
    return {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}


class Harness:
    def __init__(self, config: RunConfig, data, impl=model):
        self.config, self.data, self.impl = config, data, impl

    @functools.cache
    def params(self, dtype: str) -> Tensors:
        return model.init_params(self.config.seed, dtype, self.config.init_scheme)

    @functools.cache
    def inputs(self, dtype: str):
        return self.data.X.astype(dtype), self.data.y.astype(dtype)

    def _train(self, impl, params, dtype):
        X, y = self.inputs(dtype)
        out = impl.train_step(params, X, y, lr=self.config.lr, reduction=self.config.reduction)
        # The inputs are known here; an implementation need not echo them back.
        return Tensors({"X": X, **params, **out}, y=y)

    @functools.cache
    def implementation(self, dtype: str) -> Tensors:
        """Every named tensor of one step of the implementation under test."""
        return self._train(self.impl, self.params(dtype), dtype)

    @functools.cache
    def reference(self, dtype: str) -> Tensors:
        """The project's own reference (used for the end-to-end rounding spread)."""
        if self.impl is model:
            return self.implementation(dtype)
        return self._train(model, self.params(dtype), dtype)

    @functools.cache
    def truth(self, dtype: str) -> Tensors:
        """The reference in float64 on `dtype`'s rounded inputs and parameters."""
        X, y = self.inputs(dtype)
        out = model.train_step(_f64(self.params(dtype)), X.astype(np.float64),
                               y.astype(np.float64), lr=self.config.lr,
                               reduction=self.config.reduction)
        return Tensors(out, y=y.astype(np.float64))

    @functools.cache
    def mirror(self, framework: str):
        return load_mirror(framework)

    @functools.cache
    def end_to_end(self, framework: str, dtype: str) -> Tensors:
        X, y = self.inputs(dtype)
        return self.mirror(framework).train_step(self.params(dtype), X, y, self.config.lr,
                                                 self.config.reduction)

    def explain_context(self, stage: Stage, inputs, dtype: str) -> dict:
        """Run facts the mismatch explainer (reports.explain) uses to name a mistake."""
        p = self.params(dtype)
        ctx = dict(lr=self.config.lr, n_images=int(self.data.X.shape[2]),
                   n_filters=int(p["f"].shape[2]), filter_size=int(p["f"].shape[0]),
                   bias=float(p["b"][0]))
        if stage.tensor in UPDATE_GRADIENT:
            ctx.update(old=inputs[stage.tensor[0]], grad=inputs[UPDATE_GRADIENT[stage.tensor]])
        return ctx

    def stage_check(self, stage: Stage, framework: str, dtype: str) -> Check:
        impl = self.implementation(dtype)
        inputs = {name: impl[name] for name in stage.inputs}
        cfg = self.config
        actual = self.mirror(framework).stage(stage.tensor, inputs, cfg.lr, cfg.reduction)
        expected = impl[stage.tensor]
        tol = stage_tolerance(stage, inputs, expected, cfg.lr, cfg.reduction)
        truth = None
        if dtype != "float64":
            truth = stage.compute(_f64(inputs), cfg.lr, cfg.reduction)
        return Check(np.asarray(actual), np.asarray(expected), tol, truth,
                     self.explain_context(stage, inputs, dtype))

    def end_to_end_check(self, stage: Stage, framework: str, dtype: str) -> Check:
        impl, cfg = self.implementation(dtype), self.config
        inputs = {name: impl[name] for name in stage.inputs}
        stage_tol = stage_tolerance(stage, inputs, impl[stage.tensor], cfg.lr, cfg.reduction)
        tol = tolerance.end_to_end(stage_tol, self.reference("float32")[stage.tensor],
                                   self.truth("float32")[stage.tensor], dtype)
        if stage.tensor in UPDATE_GRADIENT:
            grad = UPDATE_GRADIENT[stage.tensor]
            grad_tol = self.end_to_end_check(BY_TENSOR[grad], framework, dtype).tolerance
            tol = tolerance.end_to_end_update(tol, grad_tol, cfg.lr, grad)
        truth = self.truth(dtype)[stage.tensor] if dtype != "float64" else None
        actual = self.end_to_end(framework, dtype)[stage.tensor]
        return Check(np.asarray(actual), np.asarray(impl[stage.tensor]), tol, truth,
                     self.explain_context(stage, inputs, dtype))
