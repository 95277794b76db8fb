"""Hypothesis strategies for whole networks: valid spec strings of small CNNs.

`specs()` draws 1 to 3 conv blocks (channels, kernel, stride, padding, bias; optionally a
normalisation; an activation; optionally a pool, drawn from the registry's pool kinds),
optionally a `gap`, then 1 to 2 dense layers (the hidden one optionally normalised and
followed by a dropout) and a loss (`mse` after a dense(1), or `softmax_ce` after a
dense(10)). `specs(normalise=False)` draws no normalisation, dropout or gap (a batch norm
after a dense layer is undefined at one image). Every draw is valid by construction: each
window is drawn to fit the size the layer will get (reference/spec.py would refuse it
otherwise). Shrinking moves towards fewer blocks, fewer channels, smaller kernels, stride
1, no padding, no normalisation, no pool, one dense layer: the minimal failing network.
"""

from __future__ import annotations

from hypothesis import strategies as st

from reference.layers import KINDS
from reference.spec import CLASSES, INPUT_SHAPE

# The kinds a drawn block may use, by family from the registry: a new activation or pool
# kind is drawn without touching this module.
ACTIVATIONS = tuple(sorted(name for name, kind in KINDS.items() if kind.family == "activation"))
POOLS = tuple(name for name, kind in KINDS.items() if kind.family == "pool")


# A layer or group norm's statistic spans at least this many values here: over one value
# the spec is refused; over two, xhat is +-sqrt(var / (var + eps)) whatever the input and
# the gradient is the cancellation 1 - xhat^2 = eps / (var + eps), whose rounding the
# end-to-end rule does not carry downstream (docs/normalisation.md, "Known limits").
MIN_STATISTIC = 3


def _image_norms(channels: int, side: int) -> tuple:
    """The normalisations a conv block may draw on a channels x side x side map (None first:
    shrinks to none), each over at least MIN_STATISTIC values."""
    groups = [
        g
        for g in range(2, channels + 1)
        if channels % g == 0 and channels // g * side * side >= MIN_STATISTIC
    ]
    layer = ("layernorm",) if channels * side * side >= MIN_STATISTIC else ()
    return (None, "batchnorm", *layer, *(f"groupnorm({g})" for g in groups))


@st.composite
def conv_block(draw, side: int, normalise: bool = True) -> tuple[str, int]:
    """One 'conv(...)[-norm]-act[-pool(...)]' for an input of side `side`; returns (text,
    new side)."""
    pad = draw(st.integers(0, 2))
    kernel = draw(st.integers(1, min(5, side + 2 * pad)))
    stride = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 4))
    bias = draw(st.booleans())
    args = [str(channels), str(kernel)]
    if stride != 1:
        args.append(f"stride={stride}")
    if pad:
        args.append(f"pad={pad}")
    if not bias:
        args.append("bias=false")
    side = (side + 2 * pad - kernel) // stride + 1
    parts = [f"conv({','.join(args)})"]
    norm = draw(st.sampled_from(_image_norms(channels, side))) if normalise else None
    parts += [norm] if norm else []
    parts.append(draw(st.sampled_from(ACTIVATIONS)))
    pool = draw(st.sampled_from((None, *POOLS)))
    if pool and side >= 2:
        size = draw(st.integers(2, min(3, side)))
        stride = draw(st.integers(1, size))
        parts.append(f"{pool}({size})" if stride == size else f"{pool}({size},stride={stride})")
        side = (side - size) // stride + 1
    return "-".join(parts), side


@st.composite
def specs(draw, max_convs: int = 3, normalise: bool = True) -> str:
    """A valid spec string of a small CNN (see the module docstring)."""
    side, parts = INPUT_SHAPE[1], []
    for _ in range(draw(st.integers(1, max_convs))):
        text, side = draw(conv_block(side, normalise))
        parts.append(text)
    if normalise and draw(st.booleans()):
        parts.append("gap")
    if draw(st.booleans()):  # a hidden dense layer
        units = draw(st.integers(2, 16))
        parts.append(f"dense({units})")
        norms = (None, "batchnorm", *(("layernorm",) if units >= MIN_STATISTIC else ()))
        norm = draw(st.sampled_from(norms)) if normalise else None
        parts += [norm] if norm else []
        parts.append(draw(st.sampled_from(ACTIVATIONS)))
        p = draw(st.sampled_from((None, 0.25, 0.5))) if normalise else None
        parts += [f"dropout({p:g})"] if p else []
    if draw(st.booleans()):
        parts.append(f"dense({CLASSES})-softmax_ce")
    else:
        out = draw(st.sampled_from(("sigmoid", None)))
        parts.append("dense(1)" + (f"-{out}" if out else "") + "-mse")
    return "-".join(parts)
