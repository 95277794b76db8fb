"""Model spec strings (reference/spec.py, docs/extensions.md): the presets and the issue's
example parse to the layers and shapes written out here by hand; every invalid spec is one
ValueError naming the layer (position and text) and the problem; and any spec built from
valid parts either parses with positive shapes or raises ValueError, never anything else."""

import re

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from reference.spec import (
    PRESETS,
    AvgPool,
    Conv,
    Dense,
    Dropout,
    Flatten,
    MaxPool,
    ModelSpec,
    Mse,
    Relu,
    Sigmoid,
    SoftmaxCE,
    Tanh,
    describe,
    parse_spec,
)

# name or spec -> (layers, shapes), every shape worked out by hand:
# side after a window = floor((n + 2p - k) / s) + 1 (X2).
VALID = {
    # 28 - 5 + 1 = 24; 3 * 24 * 24 = 1728 features (the article's W is 1728 x 1).
    "article": (
        (
            Conv(channels=3, kernel=5, bias=False),
            Sigmoid(),
            Flatten(),
            Dense(units=1),
            Sigmoid(),
            Mse(),
        ),
        ((1, 28, 28), (3, 24, 24), (3, 24, 24), (1728,), (1,), (1,), ()),
    ),
    # 28 + 4 - 5 + 1 = 28; /2 = 14; 14 - 5 + 1 = 10; /2 = 5; 16 * 5 * 5 = 400.
    "lenet": (
        (
            Conv(channels=6, kernel=5, pad=2),
            Relu(),
            MaxPool(size=2),
            Conv(channels=16, kernel=5),
            Relu(),
            MaxPool(size=2),
            Flatten(),
            Dense(units=120),
            Relu(),
            Dense(units=84),
            Relu(),
            Dense(units=10),
            SoftmaxCE(),
        ),
        (
            (1, 28, 28),
            (6, 28, 28),
            (6, 28, 28),
            (6, 14, 14),
            (16, 10, 10),
            (16, 10, 10),
            (16, 5, 5),
            (400,),
            (120,),
            (120,),
            (84,),
            (84,),
            (10,),
            (),
        ),
    ),
    # The example: (28 + 2 - 3) // 2 + 1 = 14; 14 // 2 = 7; 4 * 7 * 7 = 196.
    "conv(4,3,stride=2,pad=1)-tanh-avgpool(2)-dense(10)-softmax_ce": (
        (
            Conv(channels=4, kernel=3, stride=2, pad=1),
            Tanh(),
            AvgPool(size=2),
            Flatten(),
            Dense(units=10),
            SoftmaxCE(),
        ),
        ((1, 28, 28), (4, 14, 14), (4, 14, 14), (4, 7, 7), (196,), (10,), ()),
    ),
    # Remainders floor (X2): (28 - 4) // 3 + 1 = 9; overlapping pool (9 - 3) // 1 + 1 = 7;
    # (7 - 2) // 2 + 1 = 3; no bias in the dense layer.
    "conv(2,4,stride=3)-maxpool(3,stride=1)-avgpool(2)-dense(1,bias=false)-sigmoid-mse": (
        (
            Conv(channels=2, kernel=4, stride=3),
            MaxPool(size=3, stride=1),
            AvgPool(size=2),
            Flatten(),
            Dense(units=1, bias=False),
            Sigmoid(),
            Mse(),
        ),
        ((1, 28, 28), (2, 9, 9), (2, 7, 7), (2, 3, 3), (18,), (1,), (1,), ()),
    ),
    # No convolution at all: 28 * 28 = 784 features; a dense after a dense needs no flatten.
    "dense(32)-relu-dense(10)-softmax_ce": (
        (Flatten(), Dense(units=32), Relu(), Dense(units=10), SoftmaxCE()),
        ((1, 28, 28), (784,), (32,), (32,), (10,), ()),
    ),
    # Spaces around tokens and arguments, TRUE/False in any case; a 28x28 window fits exactly.
    " conv( 8 , 28 , bias = FALSE ) - relu - dense( 1 , bias=True ) - mse ": (
        (Conv(channels=8, kernel=28, bias=False), Relu(), Flatten(), Dense(units=1), Mse()),
        ((1, 28, 28), (8, 1, 1), (8, 1, 1), (8,), (1,), ()),
    ),
    # Dropout in evaluation mode: the identity, written with train=false.
    "dense(32)-relu-dropout(0.5,train=False)-dense(10)-softmax_ce": (
        (
            Flatten(),
            Dense(units=32),
            Relu(),
            Dropout(p=0.5, train=False),
            Dense(units=10),
            SoftmaxCE(),
        ),
        ((1, 28, 28), (784,), (32,), (32,), (32,), (10,), ()),
    ),
}

VALID_IDS = {
    "article": "preset-article",
    "lenet": "preset-lenet",
    "conv(4,3,stride=2,pad=1)-tanh-avgpool(2)-dense(10)-softmax_ce": "issue-example",
    "conv(2,4,stride=3)-maxpool(3,stride=1)-avgpool(2)-dense(1,bias=false)-sigmoid-mse": (
        "stride-remainder-floors"
    ),
    "dense(32)-relu-dense(10)-softmax_ce": "dense-only",
    " conv( 8 , 28 , bias = FALSE ) - relu - dense( 1 , bias=True ) - mse ": "spaces-and-case",
    "dense(32)-relu-dropout(0.5,train=False)-dense(10)-softmax_ce": "dropout-evaluation-mode",
}


@pytest.mark.parametrize("text", list(VALID), ids=[VALID_IDS[t] for t in VALID])
def test_valid_spec_layers_and_shapes(text):
    layers, shapes = VALID[text]
    spec = parse_spec(text)
    assert spec.layers == layers
    assert spec.shapes == shapes
    assert len(spec.shapes) == len(spec.layers) + 1
    # The canonical text parses back to the same network.
    assert parse_spec(spec.text).layers == layers


def test_presets_table():
    assert set(PRESETS) == {"article", "lenet"}
    assert ModelSpec.presets == PRESETS
    assert PRESETS["article"] == "conv(3,5,bias=false)-sigmoid-dense(1)-sigmoid-mse"
    assert PRESETS["lenet"] == (
        "conv(6,5,pad=2)-relu-maxpool(2)-conv(16,5)-relu-maxpool(2)"
        "-dense(120)-relu-dense(84)-relu-dense(10)-softmax_ce"
    )


@pytest.mark.parametrize("name", sorted(PRESETS), ids=lambda n: f"preset-{n}")
def test_preset_name_and_its_spec_string_agree(name):
    by_name, by_text = parse_spec(name), parse_spec(PRESETS[name])
    assert by_name == by_text
    assert by_name.preset == by_text.preset == name
    assert by_name.text == PRESETS[name]
    assert parse_spec(f"  {name}\n").preset == name


def test_other_networks_are_no_preset():
    assert parse_spec("conv(3,5)-sigmoid-dense(1)-sigmoid-mse").preset is None  # conv bias


def test_pool_stride_defaults_to_its_size():
    assert MaxPool(size=3) == MaxPool(size=3, stride=3)
    assert parse_spec("maxpool(3,stride=3)-dense(1)-mse").text == "maxpool(3)-dense(1)-mse"


def test_describe_one_line_per_layer_with_shapes():
    lines = describe("article").splitlines()
    assert [line.split()[:5] for line in lines] == [
        ["1", "conv(3,5,bias=false)", "1x28x28", "->", "3x24x24"],
        ["2", "sigmoid", "3x24x24", "->", "3x24x24"],
        ["3", "flatten", "(implied)", "3x24x24", "->"],
        ["4", "dense(1)", "1728", "->", "1"],
        ["5", "sigmoid", "1", "->", "1"],
        ["6", "mse", "1", "->", "scalar"],
    ]
    assert lines[2].split()[5] == "1728"
    assert lines[0].endswith("X1,X2,X3,X4,X5") and lines[-1].endswith("E7,E8")
    assert describe(parse_spec("lenet")) == describe("lenet")
    assert len(describe("lenet").splitlines()) == 13


def test_layer_docstrings_name_their_equations():
    for cls in (Conv, MaxPool, AvgPool, Sigmoid, Relu, Tanh, Flatten, Dense, Mse, SoftmaxCE):
        assert cls.equations and all(eq in cls.__doc__ for eq in cls.equations), cls.__name__


# (id, spec, position and token the message must start with, fragments it must contain)
INVALID = [
    (
        "pool-too-big",
        "conv(4,5,stride=6)-relu-maxpool(5)-dense(10)-softmax_ce",
        (3, "maxpool(5)"),
        ["a 5x5 window does not fit the 4x4 input it would get"],
    ),
    ("conv-too-big", "conv(2,29)-dense(1)-mse", (1, "conv(2,29)"), ["29x29", "28x28 input"]),
    (
        "conv-too-big-padded",
        "conv(2,31,pad=1)-dense(1)-mse",
        (1, "conv(2,31,pad=1)"),
        ["31x31", "28x28 input (30x30 with pad=1)"],
    ),
    (
        "second-conv-too-big",
        "conv(6,5)-maxpool(2)-conv(8,13)-dense(1)-mse",
        (3, "conv(8,13)"),
        ["13x13 window", "12x12 input"],
    ),
    (
        "stride-0",
        "conv(4,3,stride=0)-dense(1)-mse",
        (1, "conv(4,3,stride=0)"),
        ["stride must be >= 1"],
    ),
    ("stride-negative", "conv(4,3,stride=-1)", (1, "conv(4,3,stride=-1)"), ["stride must be >= 1"]),
    ("pad-negative", "conv(4,3,pad=-1)", (1, "conv(4,3,pad=-1)"), ["pad must be >= 0"]),
    ("channels-0", "conv(0,3)-dense(1)-mse", (1, "conv(0,3)"), ["channels must be >= 1"]),
    ("kernel-0", "conv(2,0)-dense(1)-mse", (1, "conv(2,0)"), ["kernel must be >= 1"]),
    ("pool-size-0", "relu-avgpool(0)", (2, "avgpool(0)"), ["size must be >= 1"]),
    ("pool-stride-0", "maxpool(2,stride=0)", (1, "maxpool(2,stride=0)"), ["stride must be >= 1"]),
    ("units-0", "dense(0)-mse", (1, "dense(0)"), ["units must be >= 1"]),
    (
        "unknown-kind",
        "conv(2,3)-rleu-dense(1)-mse",
        (2, "rleu"),
        ["unknown layer kind 'rleu'", "closest: 'relu'", "known kinds: conv, maxpool"],
    ),
    (
        "unknown-kind-no-match",
        "lstm(4)-dense(1)-mse",
        (1, "lstm(4)"),
        ["unknown layer kind 'lstm'", "no close match", "softmax_ce"],
    ),
    ("unknown-kind-case", "ReLU-dense(1)-mse", (1, "ReLU"), ["closest: 'relu'"]),
    ("flatten-written", "flatten-dense(1)-mse", (1, "flatten"), ["implied before the first dense"]),
    ("preset-inside-spec", "lenet-mse", (1, "lenet"), ["is a preset", "alone"]),
    ("loss-not-last", "dense(1)-mse-sigmoid", (2, "mse"), ["a loss must be the last layer"]),
    (
        "two-losses",
        "dense(10)-softmax_ce-mse",
        (2, "softmax_ce"),
        ["a loss must be the last layer, but 1 layer follows it"],
    ),
    ("no-loss", "conv(2,3)-relu-dense(1)", (3, "dense(1)"), ["must end with a loss", "1 feature"]),
    (
        "softmax-units",
        "dense(84)-softmax_ce",
        (2, "softmax_ce"),
        ["10 class scores", "84 features"],
    ),
    (
        "softmax-after-activation",
        "dense(10)-relu-softmax_ce",
        (3, "softmax_ce"),
        ["must follow one directly", "'relu'"],
    ),
    ("softmax-first", "softmax_ce", (1, "softmax_ce"), ["must follow", "1x28x28"]),
    ("mse-units", "dense(10)-sigmoid-mse", (3, "mse"), ["needs 1 feature", "10 features"]),
    ("mse-on-image", "conv(1,28)-mse", (2, "mse"), ["needs 1 feature", "1x1x1 image"]),
    (
        "conv-after-dense",
        "dense(10)-conv(2,3)-dense(1)-mse",
        (2, "conv(2,3)"),
        ["needs an image", "10 features", "before the first dense"],
    ),
    ("pool-after-dense", "dense(16)-maxpool(2)", (2, "maxpool(2)"), ["needs an image", "16 features"]),
    ("empty-layer", "conv(2,3)--dense(1)-mse", (2, ""), ["empty layer"]),
    ("trailing-dash", "dense(1)-mse-", (3, ""), ["empty layer"]),
    # Every token is read before the network is built: the syntax error wins.
    ("syntax-before-shapes", "conv(2,29)-dense(1)-mse-rleu", (4, "rleu"), ["unknown layer kind"]),
    ("unclosed-paren", "conv(2,3-dense(1)-mse", (1, "conv(2,3-dense(1)-mse"), ["cannot read"]),
    ("stray-paren", "dense(1))-mse", (1, "dense(1))"), ["parentheses"]),
    (
        "unknown-option",
        "conv(2,3,strid=2)",
        (1, "conv(2,3,strid=2)"),
        ["unknown option 'strid'", "closest: 'stride'"],
    ),
    ("duplicate-option", "maxpool(2,stride=1,stride=2)", (1, "maxpool(2,stride=1,stride=2)"), ["twice"]),
    ("not-an-integer", "dense(1.5)-mse", (1, "dense(1.5)"), ["units must be an integer, got '1.5'"]),
    ("not-a-bool", "conv(2,3,bias=yes)", (1, "conv(2,3,bias=yes)"), ["bias must be true or false"]),
    ("missing-argument", "conv(4)-dense(1)-mse", (1, "conv(4)"), ["missing kernel"]),
    ("extra-argument", "dense(1,2)-mse", (1, "dense(1,2)"), ["takes 1 argument"]),
    ("arguments-to-activation", "relu(2)-dense(1)-mse", (1, "relu(2)"), ["takes no arguments"]),
    ("empty-argument", "conv(2,,3)", (1, "conv(2,,3)"), ["argument 2 is empty"]),
    (
        "positional-after-keyword",
        "conv(2,stride=2,3)",
        (1, "conv(2,stride=2,3)"),
        ["without a name comes after a named one"],
    ),
]


@pytest.mark.parametrize("spec, where, fragments", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_spec_is_one_value_error_naming_the_layer(spec, where, fragments):
    with pytest.raises(ValueError) as caught:
        parse_spec(spec)
    assert type(caught.value) is ValueError
    # One error: nothing chained to it (no "during handling of the above exception").
    exc = caught.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    message = str(caught.value)
    position, token = where
    assert message.startswith(f"layer {position} '{token}': "), message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("spec", ["", "   ", "\n"], ids=["empty", "spaces", "newline"])
def test_empty_spec(spec):
    with pytest.raises(ValueError, match="empty spec"):
        parse_spec(spec)


def test_not_a_string_is_a_type_error():
    with pytest.raises(TypeError, match="must be a string"):
        parse_spec(None)


# Valid parts: every kind, well-formed arguments with small values (0 included, which no
# size or count accepts), in any order; half the draws follow the usual shape of a network
# (windows, then dense layers, then a matching loss) so that many of them parse.
_SIZE = st.integers(0, 12)
_ACTIVATION = st.sampled_from(["sigmoid", "relu", "tanh"])


@st.composite
def _conv(draw):
    args = [str(draw(_SIZE)), str(draw(_SIZE))]
    for key, value in (("stride", _SIZE), ("pad", st.integers(0, 3)), ("bias", st.booleans())):
        if draw(st.booleans()):
            args.append(f"{key}={str(draw(value)).lower()}")
    return f"conv({','.join(args)})"


@st.composite
def _pool(draw):
    kind = draw(st.sampled_from(["maxpool", "avgpool"]))
    stride = f",stride={draw(_SIZE)}" if draw(st.booleans()) else ""
    return f"{kind}({draw(_SIZE)}{stride})"


@st.composite
def _dense(draw, units=None):
    units = draw(st.integers(0, 20)) if units is None else units
    bias = f",bias={str(draw(st.booleans())).lower()}" if draw(st.booleans()) else ""
    return f"dense({units}{bias})"


_LOSS = st.sampled_from(["mse", "softmax_ce"])
_ANY = st.one_of(_conv(), _pool(), _ACTIVATION, _dense(), _LOSS)


@st.composite
def _spec(draw):
    if draw(st.booleans()):
        return "-".join(draw(st.lists(_ANY, min_size=1, max_size=8)))
    tokens = draw(st.lists(st.one_of(_conv(), _pool(), _ACTIVATION), max_size=5))
    tokens += draw(st.lists(st.one_of(_dense(), _ACTIVATION), max_size=3))
    if draw(st.booleans()):
        tokens += [draw(_dense(units=10)), "softmax_ce"]
    else:
        tokens += [draw(_dense(units=1)), "sigmoid", "mse"]
    return "-".join(tokens)


@given(text=_spec())
def test_any_spec_from_valid_parts_parses_or_raises_value_error(text):
    note(text)
    try:
        spec = parse_spec(text)
    except ValueError as exc:
        assert re.match(r"layer \d+ '[^']*': ", str(exc)), str(exc)
        return
    assert all(d >= 1 for shape in spec.shapes for d in shape)
    assert len(spec.shapes) == len(spec.layers) + 1
    assert spec.shapes[0] == (1, 28, 28) and spec.shapes[-1] == ()
    for layer, before, after in zip(spec.layers, spec.shapes, spec.shapes[1:]):
        assert layer.output_shape(before) == after
    assert parse_spec(spec.text) == spec
    assert len(describe(spec).splitlines()) == len(spec.layers)
