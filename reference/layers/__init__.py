"""Layers beyond the article (X1..X12 of EXTENSIONS.md), batch-first NCHW, NumPy only.

One module per layer kind, each forward beside its hand-derived backward:

- `conv2d`: padding (X1), stride (X2), bias (X3), channels (X4), input gradient (X5);
- `pool`: max pooling (X6, ties to the first maximum) and average pooling (X7), no padding;
- `activations`: ReLU (X8, derivative 0 at 0), tanh (X9), the article's sigmoid (E3, E9);
- `dense`: the NCHW flatten and the dense layer with U units (X10);
- `loss`: softmax (X11) with cross-entropy on integer labels (X12), and the squared error;
- `norm`: batch norm (X13, X14, its running statistics X15), layer norm (X16), group norm
  (X17), inverted dropout (X18), global average pooling (X19).

Shapes: X (N, C, H, W), filters F (C_out, C_in, k, k), dense A (N, F) and W (F, U), logits
(N, K). Every public function validates its arguments (reference._validate) and vectorises
over images, channels, windows and pixels: no Python loop runs per element.

Each module also holds its kinds' registry entries (reference/layers/registry.py), collected
in `KINDS`.
"""

from operator import attrgetter

from reference.layers import activations, conv2d, dense, loss, norm, pool
from reference.layers.registry import LayerKind

# Every layer kind, by its spec token's name: the one registry (reference/layers/registry.py).
_ENTRIES = (
    conv2d.CONV,
    pool.MAXPOOL,
    pool.AVGPOOL,
    activations.RELU,
    activations.SIGMOID,
    activations.TANH,
    dense.FLATTEN,
    dense.DENSE,
    loss.SOFTMAX_CE,
    loss.MSE,
    norm.BATCHNORM,
    norm.LAYERNORM,
    norm.GROUPNORM,
    norm.DROPOUT,
    norm.GAP,
)
KINDS: dict[str, LayerKind] = dict(zip(map(attrgetter("name"), _ENTRIES), _ENTRIES))

__all__ = ["KINDS", "activations", "conv2d", "dense", "loss", "norm", "pool"]
