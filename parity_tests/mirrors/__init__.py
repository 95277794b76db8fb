"""Framework mirrors: one module per framework, any network the reference builds.

`model_torch` and `model_tf` run a spec network (reference/network.py) layer by layer from a
table keyed by the registry's layer kinds; the article is the `article` network, its names
and layout a view (parity_tests/stages.py). Each mirror provides:

    stage(net, node, x, params, upstream, target, reduction) -> dict  # one layer, autograd
    end_to_end(net, params, X, target, reduction, lr) -> dict         # whole network + SGD
    update(param, grad, lr) -> ndarray                                # the framework's SGD
    patches(x, size) -> (windows, layout)                             # the article's E1
    version() -> str

Their LAYERS tables have one row per registry kind (test_model_mirrors.py).
"""

from __future__ import annotations

import importlib

FRAMEWORKS = ("torch", "tensorflow")
_MODULES = {"torch": "parity_tests.mirrors.model_torch", "tensorflow": "parity_tests.mirrors.model_tf"}


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
