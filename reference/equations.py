"""The audit registry: every article equation (E1..E17) and the verdict on the equation as
the article writes it; then the layers the suite checks beyond the article (X1..X19,
docs/extensions.md), each stated with its verdict by its own layer module beside its maths
(reference/layers/, `EQUATIONS`) and collected here in order.

Which functions compute an equation is not written here: each function says so itself
(`@implements("E5")`, reference/trace.py), and the audit names the ones a traced run of
the checked step called.

Verdict classes:

- HOLDS: true as written, with the article's names and shapes.
- CONVENTION: true once a convention the text leaves implicit is fixed; `convention` says
  which one the reference adopts (and every framework mirror follows).
- CORRECTED: false as written; `correction` gives the form the reference implements.

`note` records where the text itself is ambiguous or mistyped. The parity records say how
each equation was checked (which framework, which mode, finite differences, hand examples);
`reports/audit.py` joins both into audit.md. `as_dicts()` gives plain data for reports/,
which may not import reference/.

X1 (padding) and X2 (stride) have no records of their own in a model's checks: they act
inside the convolutions and pools. Their `via` checks count only on the layers of the
checked model that use them (`via_setting`: pad > 0, stride > 1), which `as_dicts(model=)`
names.
"""

from __future__ import annotations

from reference import layers

# The record and its verdict classes live beside the layer kinds that state X1..X19.
from reference.layers.registry import CONVENTION, CORRECTED, HOLDS, VERDICTS, Equation  # noqa: F401

EQUATIONS = (
    Equation(
        "E1",
        "Z1 = X * f: each window is multiplied elementwise by the filter and summed",
        CONVENTION,
        convention="a cross-correlation (the filter is not flipped), stride 1, no padding; "
        "on the article's transposed images and filters it equals the transpose "
        "of the frameworks' convolution (reference.layout maps it)",
        note="'*' is called a convolution but computed as a cross-correlation, as the frameworks do",
        variants=("D13",),
    ),
    Equation(
        "E2",
        "an (n, n) image and an (f, f) filter give an (n - f + 1, n - f + 1) output",
        HOLDS,
        via=("E1",),
    ),
    Equation(
        "E3",
        "A1 = sigmoid(Z1), sigmoid(x) = 1 / (1 + e^-x)",
        HOLDS,
    ),
    Equation(
        "E4",
        "flatten: the dense layer takes (n - f + 1)^2 * filters 1-D features per image",
        CONVENTION,
        convention="feature index k * P + (i * m + j): filter-major, then window row and "
        "column; not NCHW's order, so W's rows follow the article's order",
        variants=("D4",),
        via=("E5", "E13"),
    ),
    Equation(
        "E5",
        "Z2 = W^T . A1 + b, W of shape (features, neurons)",
        HOLDS,
        variants=("D1", "D8"),
    ),
    Equation("E6", "O = sigmoid(Z2)", HOLDS, variants=("D1",)),
    Equation(
        "E7",
        "E = (y - O)^2 / 2 per image",
        CONVENTION,
        convention="the batch reduction is a named choice: sum over the images (default) "
        "or mean (reduction='mean'), applied to E and to every gradient alike",
        note="ambiguous: the text never says how the per-image losses combine; the "
        "published code sums for W and divides by N for f (D12)",
        variants=("D12",),
    ),
    Equation(
        "E8",
        "dE/dO = -(y - O)",
        HOLDS,
        note="per image; divided by N under reduction='mean'",
    ),
    Equation("E9", "dO/dZ2 = O (1 - O)", HOLDS),
    Equation("E10", "dZ2/dW = A1", HOLDS, via=("E11",)),
    Equation(
        "E11",
        "dE/dW = dE/dO . dO/dZ2 . dZ2/dW, same shape as W",
        CONVENTION,
        convention="the product over the batch is A1 . (dE/dZ2)^T, a sum over images, "
        "giving W's shape (F, 1)",
        note="the text abbreviates the middle factor as 'sigmoid'; it means the "
        "derivative O (1 - O) of E9, not sigmoid(Z2)",
    ),
    Equation(
        "E12",
        "dE/db = dE/dO . dO/dZ2 summed over the batch",
        HOLDS,
        note="left to the reader as an exercise; supplied here",
        variants=("D8",),
    ),
    Equation(
        "E13",
        "dZ2/dA1 = W^T",
        CONVENTION,
        convention="W^T is the Jacobian dZ2/dA1 (one row per image); backprop applies its "
        "transpose: dE/dA1 = W . dE/dZ2, (F, 1) @ (1, N)",
        note="W^T in the text vs W . delta as a matrix product",
        variants=("D4", "D5"),
    ),
    Equation(
        "E14",
        "dA1/dZ1 = A1 (1 - A1)",
        HOLDS,
        variants=("D2",),
    ),
    Equation(
        "E15",
        "dZ1/df = X",
        CONVENTION,
        convention="X stands for the input window under each output position: "
        "dZ1[n, k, i, j] / df[u, v, k] = X[i + u, j + v, n] (the patches)",
        note="mistyped in the text as 'differentiating Z with respect to X'; the "
        "derivative is with respect to f",
        via=("E16",),
    ),
    Equation(
        "E16",
        "dE/df = (dE/dO . dO/dZ2 . dZ2/dA1 . dA1/dZ1) * X",
        CORRECTED,
        correction="dE/df[u, v, k] = sum over images n and positions (i, j) of "
        "delta1[n, k, i, j] * X[i + u, j + v, n], delta1 = dE/dZ1: the delta is "
        "cross-correlated with the input, per image, and summed",
        note="'*' is a convolution, not an elementwise or matrix product",
        variants=("D3", "D7", "D12"),
    ),
    Equation("E17", "new = old - lr * gradient, for W, b and f", HOLDS, variants=("D6",)),
)

# The layers beyond the article (docs/extensions.md, "Layers (X1..X19)"), batch-first NCHW:
# each layer module states its own beside its maths and registry entries (reference/layers/).
EXTENSIONS = layers.EQUATIONS

ALL = EQUATIONS + EXTENSIONS

# The optimiser rules (docs/optimisers.md, reference/optim.py). Each framework's form is a
# stated convention; which one a check holds a framework to is its record's `equation`.
# audit.md gives them a section of their own in a run that checked an optimiser.
OPTIMISERS = (
    Equation("O1", "p' = p - lr g", HOLDS),
    Equation(
        "O2", "g' = g + wd p: the L2 penalty wd/2 |p|^2 in the loss", CONVENTION,
        convention="torch's weight_decay= of SGD, RMSprop and Adam",
    ),
    Equation(
        "O3", "p' = p - lr wd p, before the step (decoupled decay)", CONVENTION,
        convention="torch's AdamW and every Keras weight_decay=",
    ),
    Equation(
        "O4", "v' = mu v + g; p' = p - lr v'", CONVENTION,
        convention="torch's momentum: the velocity in gradient units",
    ),
    Equation(
        "O5", "v' = mu v - lr g; p' = p + v'", CONVENTION,
        convention="Keras' (and CS231n's) momentum: the velocity in parameter units; O4's "
        "p' up to rounding while lr is constant",
    ),
    Equation("O6", "v' = mu v + g; p' = p - lr (g + mu v')", CONVENTION,
             convention="torch's Nesterov"),
    Equation("O7", "v' = mu v - lr g; p' = p + mu v' - lr g", CONVENTION,
             convention="Keras' Nesterov"),
    Equation(
        "O8", "c' = rho c + (1-rho) g^2; p' = p - lr g / (sqrt(c') + eps)", CONVENTION,
        convention="torch's (and CS231n's) RMSprop: epsilon outside the root",
    ),
    Equation(
        "O9", "c' = rho c + (1-rho) g^2; p' = p - lr g / sqrt(c' + eps)", CONVENTION,
        convention="Keras' RMSprop: epsilon inside the root",
    ),
    Equation(
        "O10",
        "t' = t+1; m' = m + (1-b1)(g - m); v' = b2 v + (1-b2) g^2; "
        "p' = p - lr/(1-b1^t') m' / (sqrt(v')/sqrt(1-b2^t') + eps)",
        CONVENTION,
        convention="torch's (and CS231n's) Adam: epsilon after the bias correction, "
        "hyper-parameters in float64",
    ),
    Equation(
        "O11",
        "t' = t+1; m' = m + (1-b1)(g - m); v' = v + (1-b2)(g^2 - v); "
        "p' = p - lr sqrt(1-b2^t')/(1-b1^t') m' / (sqrt(v') + eps)",
        CONVENTION,
        convention="Keras' Adam: epsilon before the bias correction; lr and the betas of "
        "b^t in float32",
    ),
)  # fmt: skip
BY_ID = {e.id: e for e in ALL + OPTIMISERS}

# A layer uses a setting when it is not the neutral one.
_SETTING_USED = {
    "pad": lambda layer: getattr(layer, "pad", 0) > 0,
    "stride": lambda layer: getattr(layer, "stride", 1) > 1,
}


def layers_using(model, setting: str) -> tuple[str, list[tuple[str, str]]]:
    """(the model's label, [(layer name, its spec token and setting), ...]) for the layers
    of `model` (a preset name, a spec string or a built reference.network.Network) whose
    `setting` ("pad", "stride") is not the neutral one, e.g. ("lenet", [("pool1", "maxpool(2)
    (stride 2)")]); ("", []) when no model is given."""
    if not model:
        return "", []
    from reference.network import Network  # network imports the layers, not this module

    net = model if isinstance(model, Network) else Network(model)
    used = []
    for n in net.nodes:
        if _SETTING_USED[setting](n.layer):
            token = n.layer.text()
            if f"{setting}=" not in token:  # a default (a pool's stride is its size)
                token += f" ({setting} {getattr(n.layer, setting)})"
            used.append((n.name, token))
    return net.label, used


def optimiser_dicts(functions: dict[str, str] | None = None) -> list[dict]:
    """Plain data of O1..O11 for reports/audit.py, as as_dicts: `functions` the traced
    functions per id ("" where none ran)."""
    functions = functions or {}
    return [
        dict(
            id=e.id, statement=e.statement, functions=functions.get(e.id, ""),
            verdict=e.verdict, convention=e.convention, correction=e.correction,
            note=e.note, variants="", via="",
        )
        for e in OPTIMISERS
    ]  # fmt: skip


def as_dicts(functions: dict[str, str] | None = None, model=None) -> list[dict]:
    """Plain-data registry for reports/audit.py (strings only, E1..E17 then X1..X19).
    `functions` maps an equation id to the functions that computed it in the run, as traced
    (parity_tests/audit_hook.py, reference/trace.py); an id it lacks gets "" (nothing that
    ran computes it: it acts through the `via` equations, or the checked network has no such
    layer). `model` (the network test_model.py checked: a preset name, a spec or its
    Network) scopes the
    `via` checks of X1/X2 to its layers that pad / stride: `via_setting` says which setting,
    `via_model` the model's label, `via_layers` the layer names (comma separated; "" when
    none uses it) and `via_where` the same in words."""
    functions = functions or {}
    out = []
    for e in ALL:
        d = dict(
            id=e.id,
            statement=e.statement,
            functions=functions.get(e.id, ""),
            verdict=e.verdict,
            convention=e.convention,
            correction=e.correction,
            note=e.note,
            variants=", ".join(e.variants),
            via=", ".join(e.via),
        )
        if e.via_setting:
            label, used = layers_using(model, e.via_setting)
            d.update(
                via_setting=e.via_setting,
                via_model=label,
                via_layers=", ".join(name for name, _ in used),
                via_where=", ".join(f"{name} = {token}" for name, token in used),
            )
        out.append(d)
    return out
