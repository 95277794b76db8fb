"""Layers beyond the article (X1..X19 of docs/extensions.md), batch-first NCHW, NumPy only.

One module per family of layer kinds (convolution, pooling, activations, flatten and dense,
losses, normalisation and its neighbours), each holding its forwards beside their
hand-derived backwards, its kinds' registry entries (`ENTRIES`, reference/layers/registry.py)
and its equations' audit records (`EQUATIONS`); this package collects them in `KINDS` and
`EQUATIONS`. Adding a kind to a module adds it everywhere.

Shapes: X (N, C, H, W), filters F (C_out, C_in, k, k), dense A (N, F) and W (F, U), logits
(N, K). Every public function validates its arguments (reference._validate) and vectorises
over images, channels, windows and pixels: no Python loop runs per element.
"""

from itertools import chain
from operator import attrgetter

from reference.layers import activations, conv2d, dense, loss, norm, pool
from reference.layers.registry import Equation, LayerKind


def _number(equation: Equation) -> int:
    return int(equation.id[1:])  # X10 after X9


_MODULES = (conv2d, pool, activations, dense, loss, norm)
_ENTRIES = tuple(chain.from_iterable(map(attrgetter("ENTRIES"), _MODULES)))

# Every layer kind, by its spec token's name: the one registry (reference/layers/registry.py).
KINDS: dict[str, LayerKind] = dict(zip(map(attrgetter("name"), _ENTRIES), _ENTRIES))
# X1..X19 in order: the audit's rows after the article's E1..E17 (reference/equations.py).
EQUATIONS: tuple[Equation, ...] = tuple(
    sorted(chain.from_iterable(map(attrgetter("EQUATIONS"), _MODULES)), key=_number)
)

__all__ = ["EQUATIONS", "KINDS", "activations", "conv2d", "dense", "loss", "norm", "pool"]
