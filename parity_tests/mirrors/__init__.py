"""Framework mirrors of the article's model: one module per framework.

Every mirror takes the reference's parameters (article layout), converts them with
`reference.layout` only, and returns article-layout NumPy arrays under the reference's
names. Each mirror module provides:

    train_step(params, X, y, lr, reduction) -> dict   # whole model, autograd + own optimiser
    STAGE_OPS: dict[str, Callable]                     # tensor -> fn(inputs, lr, reduction)
    stage(tensor, inputs, lr, reduction) -> ndarray    # STAGE_OPS[tensor]: one operation
                                                       # fed the reference's inputs
    update(inputs, lr) -> dict                         # one optimiser step over f, W, b
                                                       # fed their gradients: f_new, W_new,
                                                       # b_new (the update stage checks)
    version() -> str

STAGE_OPS has one entry per tensor of parity_tests.stages.STAGES (test_registry.py).
"""

from __future__ import annotations

import importlib

FRAMEWORKS = ("torch", "tensorflow")
_MODULES = {"torch": "parity_tests.mirrors.torch_mirror", "tensorflow": "parity_tests.mirrors.tf_mirror"}


class MirrorUnavailable(RuntimeError):
    """A framework could not be imported or set up; carries the framework's own message."""


def load_mirror(framework: str):
    if framework not in _MODULES:
        raise ValueError(f"framework must be one of {list(FRAMEWORKS)}, got {framework!r}")
    try:
        return importlib.import_module(_MODULES[framework])
    except Exception as exc:  # ImportError, but also a broken install raising anything
        raise MirrorUnavailable(
            f"{framework} is selected (--parity-frameworks) but could not be imported: "
            f"{type(exc).__name__}: {exc}. Install it (README 'Quick start') or deselect it "
            f"with --parity-frameworks."
        ) from exc
