"""A model written as one line: parse a spec string into layers and their shapes.

"conv(4,3,stride=2,pad=1)-tanh-avgpool(2)-dense(10)-softmax_ce" reads left to right from
the input image (1 channel, 28 x 28). `parse_spec` turns it into a `ModelSpec`: a tuple of
frozen layer dataclasses (one per layer kind, with the implied flatten before the first
dense written out) and the shape each layer gets and gives. Anything that cannot be built
is one ValueError naming the layer (its position in the string and its text) and the size
it would get. The grammar, the rules and the presets are in docs/extensions.md; the
equation ids X1..X12 are the layers' maths, E1..E17 the article's.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import ClassVar

INPUT_SHAPE = (1, 28, 28)  # channels, height, width of one MNIST image
CLASSES = 10  # softmax_ce's labels are the digits 0..9

PRESETS = {
    # The article's network (E1..E17): 5x5 filters without bias, sigmoid, the implied
    # flatten, one output unit, sigmoid, the half squared error.
    "article": "conv(3,5,bias=false)-sigmoid-dense(1)-sigmoid-mse",
    # LeNet-5 on 28 x 28 input: 28 -> 28 -> 14 -> 10 -> 5, then 16 * 5 * 5 = 400 features.
    "lenet": "conv(6,5,pad=2)-relu-maxpool(2)-conv(16,5)-relu-maxpool(2)"
    "-dense(120)-relu-dense(84)-relu-dense(10)-softmax_ce",
}

Shape = tuple[int, ...]


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def format_shape(shape: Shape) -> str:
    """A shape as the messages and `describe` write it: 3x24x24, 1728, scalar."""
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _what(shape: Shape) -> str:
    """The size a layer would get, in words: 'the 4x4 input', '84 features'."""
    if len(shape) == 3:
        return f"a {format_shape(shape)} image"
    if len(shape) == 1:
        return f"{shape[0]} feature" + ("" if shape[0] == 1 else "s")
    return "a scalar"


@dataclass(frozen=True, kw_only=True)
class Layer:
    """Base of the layer kinds: `kind` is the spec token's name, `equations` the ids."""

    kind: ClassVar[str] = ""
    equations: ClassVar[tuple[str, ...]] = ()
    positional: ClassVar[tuple[str, ...]] = ()  # the arguments written without a name
    keywords: ClassVar[dict[str, type]] = {}  # the optional `name=value` arguments
    floats: ClassVar[tuple[str, ...]] = ()  # the arguments read as real numbers (else ints)

    def text(self) -> str:
        """The layer as a spec token, defaults left out: conv(4,3,stride=2)."""
        args = [str(getattr(self, name)) for name in self.positional]
        for name in self.keywords:
            value = getattr(self, name)
            if value != self._default(name):
                args.append(f"{name}={str(value).lower()}")
        return f"{self.kind}({','.join(args)})" if args else self.kind

    def _default(self, name: str):
        return next(f.default for f in fields(self) if f.name == name)

    def output_shape(self, shape: Shape) -> Shape:
        """The shape this layer gives for `shape`; ValueError (the problem) if it cannot."""
        return shape

    @property
    def is_loss(self) -> bool:
        return False


class _Windowed(Layer):
    """Shared by conv and pooling: square windows cut from a (C, H, W) input (X2)."""

    def _windows(self, shape: Shape, kernel: int, stride: int, pad: int) -> tuple[int, int]:
        if len(shape) != 3:
            raise ValueError(
                f"{self.kind} needs an image (channels x height x width) but would get "
                f"{_what(shape)}: conv and pooling layers must come before the first dense"
            )
        _, h, w = shape
        ph, pw = h + 2 * pad, w + 2 * pad
        if kernel > ph or kernel > pw:
            padded = f" ({ph}x{pw} with pad={pad})" if pad else ""
            raise ValueError(
                f"a {kernel}x{kernel} window does not fit the {h}x{w} input{padded} it would get"
            )
        return (ph - kernel) // stride + 1, (pw - kernel) // stride + 1  # X2


@dataclass(frozen=True, kw_only=True)
class Conv(_Windowed):
    """`conv(C,k[,stride=s][,pad=p][,bias=true])`: C filters of k x k over all input channels.

    X1 zero padding p on every side, X2 stride s (output side floor((n + 2p - k) / s) + 1),
    X3 the per-filter bias c (on by default; the article's conv has none), X4 the sum over
    input channels, X5 the input gradient. With one input channel, s = 1, p = 0 and no bias
    it is the article's E1 (sizes E2, filter gradient E15, E16). (C_in, H, W) ->
    (C, H', W').
    """

    kind: ClassVar[str] = "conv"
    equations: ClassVar[tuple[str, ...]] = ("X1", "X2", "X3", "X4", "X5")
    positional: ClassVar[tuple[str, ...]] = ("channels", "kernel")
    keywords: ClassVar[dict[str, type]] = {"stride": int, "pad": int, "bias": bool}

    channels: int
    kernel: int
    stride: int = 1
    pad: int = 0
    bias: bool = True

    def __post_init__(self):
        _check_int("channels", self.channels, 1)
        _check_int("kernel", self.kernel, 1)
        _check_int("stride", self.stride, 1)
        _check_int("pad", self.pad, 0)
        _check_bool("bias", self.bias)

    def output_shape(self, shape: Shape) -> Shape:
        return (self.channels, *self._windows(shape, self.kernel, self.stride, self.pad))


@dataclass(frozen=True, kw_only=True)
class _Pool(_Windowed):
    positional: ClassVar[tuple[str, ...]] = ("size",)
    keywords: ClassVar[dict[str, type]] = {"stride": int}

    size: int
    stride: int | None = None  # None: the window size (non-overlapping windows)

    def __post_init__(self):
        _check_int("size", self.size, 1)
        if self.stride is None:
            object.__setattr__(self, "stride", self.size)
        _check_int("stride", self.stride, 1)

    def text(self) -> str:
        extra = "" if self.stride == self.size else f",stride={self.stride}"
        return f"{self.kind}({self.size}{extra})"

    def output_shape(self, shape: Shape) -> Shape:
        sides = self._windows(shape, self.size, self.stride, 0)
        return (shape[0], *sides)


@dataclass(frozen=True, kw_only=True)
class MaxPool(_Pool):
    """`maxpool(k[,stride=s])`: X6, the largest value of each k x k window per channel.

    No padding; the stride defaults to k and sets the output side as in X2. The gradient
    goes to the window's maximum only (ties: the first in row-major order).
    """

    kind: ClassVar[str] = "maxpool"
    equations: ClassVar[tuple[str, ...]] = ("X6", "X2")


@dataclass(frozen=True, kw_only=True)
class AvgPool(_Pool):
    """`avgpool(k[,stride=s])`: X7, the mean of each k x k window per channel.

    No padding; the stride defaults to k (X2). Every element gets delta / k^2.
    """

    kind: ClassVar[str] = "avgpool"
    equations: ClassVar[tuple[str, ...]] = ("X7", "X2")


@dataclass(frozen=True, kw_only=True)
class Sigmoid(Layer):
    """`sigmoid`: elementwise 1 / (1 + exp(-z)), the article's E3 and E6 (derivative E9, E14)."""

    kind: ClassVar[str] = "sigmoid"
    equations: ClassVar[tuple[str, ...]] = ("E3", "E6", "E9", "E14")


@dataclass(frozen=True, kw_only=True)
class Relu(Layer):
    """`relu`: X8, elementwise max(0, z); derivative 1 where z > 0, 0 where z <= 0."""

    kind: ClassVar[str] = "relu"
    equations: ClassVar[tuple[str, ...]] = ("X8",)


@dataclass(frozen=True, kw_only=True)
class Tanh(Layer):
    """`tanh`: X9, elementwise tanh(z); derivative 1 - A^2, taken from the output."""

    kind: ClassVar[str] = "tanh"
    equations: ClassVar[tuple[str, ...]] = ("X9",)


@dataclass(frozen=True, kw_only=True)
class Flatten(Layer):
    """The flatten implied before the first dense: (C, H, W) -> (C * H * W,), as E4.

    It has no token of its own in a spec; `parse_spec` inserts it.
    """

    kind: ClassVar[str] = "flatten"
    equations: ClassVar[tuple[str, ...]] = ("E4",)

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)


@dataclass(frozen=True, kw_only=True)
class Dense(Layer):
    """`dense(U[,bias=true])`: X10, Z = W^T A + b with W (F, U), b (U,): F features -> U.

    The article's E5 (gradients E10..E13) is dense(1). The bias is on by default.
    """

    kind: ClassVar[str] = "dense"
    equations: ClassVar[tuple[str, ...]] = ("X10",)
    positional: ClassVar[tuple[str, ...]] = ("units",)
    keywords: ClassVar[dict[str, type]] = {"bias": bool}

    units: int
    bias: bool = True

    def __post_init__(self):
        _check_int("units", self.units, 1)
        _check_bool("bias", self.bias)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:  # parse_spec inserts the flatten first
            raise ValueError(f"dense needs a feature vector but would get {_what(shape)}")
        return (self.units,)


@dataclass(frozen=True, kw_only=True)
class _Norm(Layer):
    """Shared by the normalisations: any input shape (an image or a feature vector), kept."""

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) not in (1, 3):
            raise ValueError(f"{self.kind} needs an image or a feature vector, got {_what(shape)}")
        if self._values_per_statistic(shape) == 1:
            raise ValueError(
                f"{self.kind} would normalise single values of {_what(shape)}: a variance over "
                "one value is 0 and the output beta whatever the input"
            )
        return shape

    def _values_per_statistic(self, shape: Shape) -> int:
        return 0  # batch norm: it depends on the batch (refused at run time when 1)


@dataclass(frozen=True, kw_only=True)
class BatchNorm(_Norm):
    """`batchnorm`: X13, X14 in training mode (the batch's own mean and biased variance),
    per feature after a dense layer, per channel (over images and positions) after a conv;
    then gamma xhat + beta. eps = 1e-5 inside the square root. Same shape out."""

    kind: ClassVar[str] = "batchnorm"
    equations: ClassVar[tuple[str, ...]] = ("X13", "X14")


@dataclass(frozen=True, kw_only=True)
class LayerNorm(_Norm):
    """`layernorm`: X16, each image normalised over all its own values; gamma and beta of
    the per-image shape. Same shape out."""

    kind: ClassVar[str] = "layernorm"
    equations: ClassVar[tuple[str, ...]] = ("X16", "X14")

    def _values_per_statistic(self, shape: Shape) -> int:
        return math.prod(shape)


@dataclass(frozen=True, kw_only=True)
class GroupNorm(_Norm):
    """`groupnorm(G)`: X17, each image normalised per group of C / G consecutive channels
    (over the group's channels and positions); gamma, beta per channel. G must divide C."""

    kind: ClassVar[str] = "groupnorm"
    equations: ClassVar[tuple[str, ...]] = ("X17", "X14")
    positional: ClassVar[tuple[str, ...]] = ("groups",)

    groups: int

    def __post_init__(self):
        _check_int("groups", self.groups, 1)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) in (1, 3) and shape[0] % self.groups:
            what = "channels" if len(shape) == 3 else "features"
            raise ValueError(f"{self.groups} groups do not divide the {shape[0]} {what} it would get")
        return super().output_shape(shape)

    def _values_per_statistic(self, shape: Shape) -> int:
        return shape[0] // self.groups * math.prod(shape[1:])


@dataclass(frozen=True, kw_only=True)
class Dropout(Layer):
    """`dropout(p[,train=true])`: X18, inverted dropout in training: each value kept with
    probability 1 - p (the mask drawn from the run's seed, the same for every framework) and
    scaled by 1 / (1 - p). 0 <= p < 1. `train=false`: the layer in evaluation mode (torch's
    model.eval(), Keras's training=False): nothing dropped, nothing scaled, A = X. Same
    shape out."""

    kind: ClassVar[str] = "dropout"
    equations: ClassVar[tuple[str, ...]] = ("X18",)
    positional: ClassVar[tuple[str, ...]] = ("p",)
    keywords: ClassVar[dict[str, type]] = {"train": bool}
    floats: ClassVar[tuple[str, ...]] = ("p",)

    p: float
    train: bool = True

    def __post_init__(self):
        _check_bool("train", self.train)
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)):
            raise TypeError(f"p must be a number, got {type(self.p).__name__}")
        if not 0 <= self.p < 1:
            raise ValueError(f"p (the probability of dropping a value) must be in [0, 1), got {self.p}")
        object.__setattr__(self, "p", float(self.p))

    def text(self) -> str:
        return f"dropout({self.p:g}" + ("" if self.train else ",train=false") + ")"


@dataclass(frozen=True, kw_only=True)
class GlobalAvgPool(Layer):
    """`gap`: X19, global average pooling, the mean of each channel's H x W plane:
    (C, H, W) -> (C,), a feature vector (no flatten is implied after it)."""

    kind: ClassVar[str] = "gap"
    equations: ClassVar[tuple[str, ...]] = ("X19",)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ValueError(
                f"gap needs an image (channels x height x width) but would get {_what(shape)}"
            )
        return shape[:1]


@dataclass(frozen=True, kw_only=True)
class _Loss(Layer):
    @property
    def is_loss(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class Mse(_Loss):
    """`mse`: the article's loss E = sum (y - O)^2 / 2 (E7, derivative E8), binary labels.

    y is 1 for a digit > 4, else 0, so the model must give one value O per image.
    """

    kind: ClassVar[str] = "mse"
    equations: ClassVar[tuple[str, ...]] = ("E7", "E8")

    def output_shape(self, shape: Shape) -> Shape:
        if shape != (1,):
            raise ValueError(
                "mse compares one output per image with a binary label (digit > 4), so it "
                f"needs 1 feature (a dense(1) before it), but would get {_what(shape)}"
            )
        return ()


@dataclass(frozen=True, kw_only=True)
class SoftmaxCE(_Loss):
    """`softmax_ce`: X11 softmax over the last dense layer's units, X12 cross-entropy.

    Labels are the digits 0..9, so it must follow a dense(10) directly: the softmax is
    taken of that layer's Z. dE/dZ = p - onehot(y).
    """

    kind: ClassVar[str] = "softmax_ce"
    equations: ClassVar[tuple[str, ...]] = ("X11", "X12")

    def output_shape(self, shape: Shape) -> Shape:
        if shape != (CLASSES,):
            raise ValueError(
                f"softmax_ce needs the {CLASSES} class scores of a dense({CLASSES}) before "
                f"it, but would get {_what(shape)}"
            )
        return ()


KINDS: dict[str, type[Layer]] = {
    cls.kind: cls
    for cls in (
        Conv,
        MaxPool,
        AvgPool,
        Sigmoid,
        Relu,
        Tanh,
        Dense,
        Mse,
        SoftmaxCE,
        BatchNorm,
        LayerNorm,
        GroupNorm,
        Dropout,
        GlobalAvgPool,
    )
}
LOSSES = tuple(kind for kind, cls in KINDS.items() if issubclass(cls, _Loss))


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: `layers` (the implied flatten included), `shapes` (len(layers) + 1).

    shapes[i] is the shape layer i gets, shapes[-1] the loss's (a scalar, ()); an image is
    (C, H, W), a feature vector (F,), per image, without the batch axis. `preset` names the
    preset the layers equal (None for any other network); `presets` is the preset table.
    """

    layers: tuple[Layer, ...]
    shapes: tuple[Shape, ...]
    preset: str | None = None
    presets: ClassVar[Mapping[str, str]] = MappingProxyType(PRESETS)

    @property
    def text(self) -> str:
        """The canonical spec string (defaults and the implied flatten left out)."""
        return "-".join(layer.text() for layer in self.layers if not isinstance(layer, Flatten))

    @property
    def loss(self) -> Layer:
        return self.layers[-1]

    def __str__(self) -> str:
        return self.text


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[+-]?[0-9]+")
_REAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_MAX_DIGITS = 30


def _split(text: str) -> list[str]:
    """Split at every '-' outside parentheses (so 'stride=-1' stays in its token)."""
    tokens, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif ch == "-" and depth == 0:
            tokens.append(text[start:i])
            start = i + 1
    tokens.append(text[start:])
    return [t.strip() for t in tokens]


def _unknown_kind(name: str) -> str:
    known = ", ".join(KINDS)
    if name == "flatten":
        return (
            "unknown layer kind 'flatten': a flatten is implied before the first dense, "
            f"leave it out (known kinds: {known})"
        )
    if name in PRESETS:
        return (
            f"'{name}' is a preset: it stands for a whole spec and must be written alone "
            f"(known kinds: {known})"
        )
    close = difflib.get_close_matches(name.lower(), [*KINDS, *PRESETS], n=1, cutoff=0.5)
    hint = f"closest: '{close[0]}'" if close else "no close match"
    if close and close[0] in PRESETS:
        hint = f"closest: the preset '{close[0]}'"
    return f"unknown layer kind '{name}' ({hint}); known kinds: {known}; presets: {', '.join(PRESETS)}"


def _value(cls: type[Layer], name: str, raw: str):
    if cls.keywords.get(name, int) is bool:
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise ValueError(f"{name} must be true or false, got '{raw}'")
    if name in cls.floats:
        if not _REAL.fullmatch(raw) or len(raw) > _MAX_DIGITS:
            raise ValueError(f"{name} must be a number such as 0.5, got '{raw}'")
        return float(raw)
    if not _INT.fullmatch(raw):
        raise ValueError(f"{name} must be an integer, got '{raw}'")
    if len(raw.lstrip("+-")) > _MAX_DIGITS:
        raise ValueError(f"{name} is too large ({len(raw.lstrip('+-'))} digits)")
    return int(raw)


def _signature(cls: type[Layer]) -> str:
    parts = list(cls.positional) + [f"[{k}=...]" for k in cls.keywords]
    return f"{cls.kind}({','.join(parts)})" if parts else cls.kind


def _layer(token: str) -> Layer:
    """One token -> its layer; ValueError with the problem (without the layer's name)."""
    if not token:
        raise ValueError("empty layer (a '-' at the start or the end, or two in a row)")
    match = _NAME.match(token)
    if match is None:
        raise ValueError(f"cannot read a layer kind; known kinds: {', '.join(KINDS)}")
    name, rest = match.group(), token[match.end() :].strip()
    cls = KINDS.get(name)
    if cls is None:
        raise ValueError(_unknown_kind(name))
    if rest and not (rest.startswith("(") and rest.endswith(")")):
        raise ValueError(f"cannot read its arguments, expected {_signature(cls)}")
    inner = rest[1:-1].strip() if rest else ""
    if "(" in inner or ")" in inner:
        raise ValueError(f"unbalanced parentheses, expected {_signature(cls)}")
    values, seen_keyword = {}, False
    args = [a.strip() for a in inner.split(",")] if inner else []
    for i, arg in enumerate(args):
        if not arg:
            raise ValueError(f"argument {i + 1} is empty, expected {_signature(cls)}")
        key, eq, raw = arg.partition("=")
        if eq:
            key, raw = key.strip(), raw.strip()
            if key not in cls.keywords:
                close = difflib.get_close_matches(key, cls.keywords, n=1)
                hint = f" (closest: '{close[0]}')" if close else ""
                allowed = ", ".join(cls.keywords) or "none"
                raise ValueError(
                    f"unknown option '{key}'{hint}; {cls.kind} takes: {allowed}, "
                    f"expected {_signature(cls)}"
                )
            if key in values:
                raise ValueError(f"option '{key}' is given twice")
            seen_keyword = True
        else:
            if seen_keyword:
                raise ValueError(f"argument '{arg}' without a name comes after a named one")
            position = len(values)
            if position >= len(cls.positional):
                takes = (
                    f"takes {len(cls.positional)} argument(s) without a name, got more"
                    if cls.positional
                    else "takes no arguments"
                )
                raise ValueError(f"{cls.kind} {takes}: expected {_signature(cls)}")
            key = cls.positional[position]
            raw = arg
        values[key] = _value(cls, key, raw)
    missing = [name for name in cls.positional if name not in values]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}: expected {_signature(cls)}")
    try:
        return cls(**values)
    except TypeError as exc:  # not reachable from text: _value gives the right types
        raise ValueError(str(exc)) from None


def _build(text: str) -> tuple[tuple[Layer, ...], tuple[Shape, ...]]:
    if not text.strip():
        raise ValueError(
            "empty spec: write layers joined by '-', e.g. 'conv(4,3)-relu-dense(10)-softmax_ce', "
            f"or a preset ({', '.join(PRESETS)})"
        )
    tokens = _split(text)
    # First every token on its own (syntax and values), then the network (order, shapes):
    # the error raised is the first of the first pass that has one.
    parsed = []
    for position, token in enumerate(tokens, start=1):
        try:
            parsed.append(_layer(token))
        except ValueError as exc:
            raise ValueError(f"layer {position} '{token}': {exc}") from None
    layers: list[Layer] = []
    shapes: list[Shape] = [INPUT_SHAPE]
    for position, (token, layer) in enumerate(zip(tokens, parsed), start=1):
        try:
            if layer.is_loss and position != len(tokens):
                after = len(tokens) - position
                raise ValueError(
                    f"a loss must be the last layer, but {after} layer"
                    f"{'' if after == 1 else 's'} follow{'s' if after == 1 else ''} it"
                )
            if isinstance(layer, Dense) and len(shapes[-1]) == 3:
                layers.append(Flatten())  # the implied flatten
                shapes.append(Flatten().output_shape(shapes[-1]))
            if isinstance(layer, SoftmaxCE) and not (layers and isinstance(layers[-1], Dense)):
                before = f"'{tokens[position - 2]}'" if position > 1 else "the input"
                raise ValueError(
                    f"softmax_ce takes the softmax of a dense({CLASSES}) layer's units, so it "
                    f"must follow one directly, but it would follow {before} "
                    f"({_what(shapes[-1])})"
                )
            shape = layer.output_shape(shapes[-1])
        except ValueError as exc:
            raise ValueError(f"layer {position} '{token}': {exc}") from None
        layers.append(layer)
        shapes.append(shape)
    if not layers[-1].is_loss:
        raise ValueError(
            f"layer {len(tokens)} '{tokens[-1]}': a spec must end with a loss "
            f"({' or '.join(LOSSES)}), but this last layer would give {_what(shapes[-1])}"
        )
    return tuple(layers), tuple(shapes)


@functools.cache
def _preset_layers() -> dict[tuple[Layer, ...], str]:
    return {_build(text)[0]: name for name, text in PRESETS.items()}


def parse_spec(text: str) -> ModelSpec:
    """Parse a spec string or a preset name ('article', 'lenet') into a `ModelSpec`.

    Raises one ValueError naming the first layer that cannot be built ("layer 3
    'maxpool(5)': a 5x5 window does not fit the 4x4 input it would get"), TypeError if
    `text` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"a model spec must be a string, got {type(text).__name__}")
    name = text.strip()
    layers, shapes = _build(PRESETS.get(name, text))
    return ModelSpec(layers=layers, shapes=shapes, preset=_preset_layers().get(layers))


def describe(spec: ModelSpec | str) -> str:
    """One line per layer: position, token, input shape -> output shape, equation ids."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    names = [
        f"{layer.text()} (implied)" if isinstance(layer, Flatten) else layer.text()
        for layer in spec.layers
    ]
    sizes = [format_shape(s) for s in spec.shapes]
    w_name, w_in = max(map(len, names)), max(map(len, sizes[:-1]))
    w_out = max(map(len, sizes[1:]))
    lines = []
    for i, (layer, name) in enumerate(zip(spec.layers, names)):
        lines.append(
            f"{i + 1:>2}  {name:<{w_name}}  {sizes[i]:>{w_in}} -> {sizes[i + 1]:<{w_out}}  "
            f"{','.join(layer.equations)}".rstrip()
        )
    return "\n".join(lines)
