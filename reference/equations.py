"""The audit registry: every article equation (E1..E17), the reference function(s) that state
it, and the verdict on the equation as the article writes it.

Verdict classes:

- HOLDS: true as written, with the article's names and shapes.
- CONVENTION: true once a convention the text leaves implicit is fixed; `convention` says
  which one the reference adopts (and every framework mirror follows).
- CORRECTED: false as written; `correction` gives the form the reference implements.

`note` records where the text itself is ambiguous or mistyped. The parity records say how
each equation was checked (which framework, which mode, finite differences, hand examples);
`reports/audit.py` joins both into audit.md. `as_dicts()` gives plain data for reports/,
which may not import reference/.
"""

from __future__ import annotations

from dataclasses import dataclass

from reference import activations, conv, dense, fast, flatten, loss, patches, update

HOLDS = "holds"
CONVENTION = "holds under a stated convention"
CORRECTED = "does not hold as written"
VERDICTS = (HOLDS, CONVENTION, CORRECTED)


@dataclass(frozen=True)
class Equation:
    id: str
    statement: str  # as docs/article.md states it
    functions: tuple  # the reference callables implementing it
    verdict: str  # one of VERDICTS
    convention: str = ""  # CONVENTION: the convention adopted
    correction: str = ""  # CORRECTED: the form that holds
    note: str = ""  # where the text is ambiguous or mistyped
    variants: tuple = ()  # published-code departures (reference.published) that break it
    via: tuple = ()  # equations whose checks exercise this one (no record of its own)
    fast: tuple = ()  # reference.fast kernels that compute it on the fast path instead

    @property
    def function_names(self) -> tuple[str, ...]:
        return _names(self.functions)

    def ran(self, fast_path: bool) -> str:
        """The functions that computed this equation in a run: on the fast path (the default
        `--parity-impl reference`) its kernels, proven equal to the readable functions by
        parity_tests/test_fast_path.py; else the readable model's."""
        if fast_path and self.fast:
            return (
                f"{', '.join(_names(self.fast))} (fast path; proven equal to "
                f"{', '.join(self.function_names)})"
            )
        return ", ".join(self.function_names)


def _names(functions) -> tuple[str, ...]:
    return tuple(f"{fn.__module__}.{fn.__qualname__}" for fn in functions)


EQUATIONS = (
    Equation(
        "E1",
        "Z1 = X * f: each window is multiplied elementwise by the filter and summed",
        (patches.extract_patches, conv.conv_forward),
        CONVENTION,
        convention="a cross-correlation (the filter is not flipped), stride 1, no padding; "
        "on the article's transposed images and filters it equals the transpose "
        "of the frameworks' convolution (reference.layout maps it)",
        note="'*' is called a convolution but computed as a cross-correlation, as the frameworks do",
        variants=("D13",),
        fast=(fast._conv_forward_images,),
    ),
    Equation(
        "E2",
        "an (n, n) image and an (f, f) filter give an (n - f + 1, n - f + 1) output",
        (patches.output_side,),
        HOLDS,
        via=("E1",),
    ),
    Equation(
        "E3",
        "A1 = sigmoid(Z1), sigmoid(x) = 1 / (1 + e^-x)",
        (activations.sigmoid,),
        HOLDS,
        fast=(fast._sigmoid,),
    ),
    Equation(
        "E4",
        "flatten: the dense layer takes (n - f + 1)^2 * filters 1-D features per image",
        (flatten.flatten, flatten.unflatten),
        CONVENTION,
        convention="feature index k * P + (i * m + j): filter-major, then window row and "
        "column; not NCHW's order, so W's rows follow the article's order",
        variants=("D4",),
        via=("E5", "E13"),
    ),
    Equation(
        "E5",
        "Z2 = W^T . A1 + b, W of shape (features, neurons)",
        (dense.dense_forward,),
        HOLDS,
        variants=("D1", "D8"),
    ),
    Equation(
        "E6", "O = sigmoid(Z2)", (activations.sigmoid,), HOLDS, variants=("D1",), fast=(fast._sigmoid,)
    ),
    Equation(
        "E7",
        "E = (y - O)^2 / 2 per image",
        (loss.half_squared_error,),
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
        (loss.loss_grad_output,),
        HOLDS,
        note="per image; divided by N under reduction='mean'",
    ),
    Equation("E9", "dO/dZ2 = O (1 - O)", (activations.sigmoid_grad_from_output,), HOLDS),
    Equation("E10", "dZ2/dW = A1", (dense.dense_grad_weights,), HOLDS, via=("E11",)),
    Equation(
        "E11",
        "dE/dW = dE/dO . dO/dZ2 . dZ2/dW, same shape as W",
        (dense.dense_grad_weights,),
        CONVENTION,
        convention="the product over the batch is A1 . (dE/dZ2)^T, a sum over images, "
        "giving W's shape (F, 1)",
        note="the text abbreviates the middle factor as 'sigmoid'; it means the "
        "derivative O (1 - O) of E9, not sigmoid(Z2)",
    ),
    Equation(
        "E12",
        "dE/db = dE/dO . dO/dZ2 summed over the batch",
        (dense.dense_grad_bias,),
        HOLDS,
        note="left to the reader as an exercise; supplied here",
        variants=("D8",),
    ),
    Equation(
        "E13",
        "dZ2/dA1 = W^T",
        (dense.dense_grad_input,),
        CONVENTION,
        convention="W^T is the Jacobian dZ2/dA1 (one row per image); backprop applies its "
        "transpose: dE/dA1 = W . dE/dZ2, (F, 1) @ (1, N)",
        note="W^T in the text vs W . delta as a matrix product",
        variants=("D4", "D5"),
        fast=(fast._conv_deltas,),
    ),
    Equation(
        "E14",
        "dA1/dZ1 = A1 (1 - A1)",
        (activations.sigmoid_grad_from_output,),
        HOLDS,
        variants=("D2",),
        fast=(fast._conv_deltas,),
    ),
    Equation(
        "E15",
        "dZ1/df = X",
        (conv.conv_local_gradient,),
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
        (conv.conv_grad_filter,),
        CORRECTED,
        correction="dE/df[u, v, k] = sum over images n and positions (i, j) of "
        "delta1[n, k, i, j] * X[i + u, j + v, n], delta1 = dE/dZ1: the delta is "
        "cross-correlated with the input, per image, and summed",
        note="'*' is a convolution, not an elementwise or matrix product",
        variants=("D3", "D7", "D12"),
        fast=(fast._conv_grad_filter_images,),
    ),
    Equation(
        "E17", "new = old - lr * gradient, for W, b and f", (update.sgd_update,), HOLDS, variants=("D6",)
    ),
)

BY_ID = {e.id: e for e in EQUATIONS}


def as_dicts(fast_path: bool = False) -> list[dict]:
    """Plain-data registry for reports/audit.py (strings only, in E1..E17 order); `functions`
    names what computed each equation in a run on the fast path or on the readable model."""
    return [
        dict(
            id=e.id,
            statement=e.statement,
            functions=e.ran(fast_path),
            verdict=e.verdict,
            convention=e.convention,
            correction=e.correction,
            note=e.note,
            variants=", ".join(e.variants),
            via=", ".join(e.via),
        )
        for e in EQUATIONS
    ]
