"""Bridge to reports/audit.py: hands it the registry (reference.equations, the published
variants, the mutation catalogue) as plain data, since reports/ may not import reference/,
with the functions that computed each equation traced from the run's checked steps.

parity_tests/session_report.py calls `audit_files(records, meta, network)` at session end (with
the run's network, built once when the options were validated) and writes what it returns
into the report directory (the writer also shows it in summary.html); reports/merge.py calls
it with the merged meta alone.
"""

from __future__ import annotations


def checked_model(meta) -> str:
    """The network parity_tests/test_model.py checked: the run's settings (`model`, an
    experiment fact), never guessed from the records."""
    return str(meta.get("model") or "")


def _batch(n_images: int = 3, seed: int = 0):
    """A few random images in the article layout (28, 28, N) and their digits: which
    functions a step calls does not depend on the values, only on the code path."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.random((28, 28, n_images)), np.arange(n_images) % 10


def traced_steps(
    impl: str, model: str, reduction: str = "sum", lr: float = 0.1, network=None, model_fast=True
) -> dict:
    """{"article": Traced, "network": Traced}: the reference functions the run's checked
    steps call, traced (reference/trace.py). The article's step is the fast path when the
    run checked `--parity-impl reference`, else the readable model (the reference every
    other implementation is checked against); the network is `model` (--parity-model's,
    `network` when given: its Network, already built), on the fast kernels test_model.py
    checks it on (reference/fast_layers.py) unless `model_fast` is False (a run with the
    user's own layers in it: the readable layers around them)."""
    import numpy as np

    from reference import fast
    from reference import model as readable
    from reference.network import Network, images_nchw
    from reference.trace import trace

    X, digits = _batch()
    step = fast.train_step if impl == "reference" else readable.train_step
    params = readable.init_params(0, "float64")
    y = (digits > 4).astype(np.float64).reshape(1, -1)
    _, article = trace(step, params, X, y, lr=lr, reduction=reduction)
    out = {"article": article}
    if model:
        net = network if network is not None else Network(model)
        if model_fast:
            from reference.fast_layers import fast_network

            net = fast_network(net.spec)
        args = (net.init_params(0, "float64"), images_nchw(X), digits, lr)
        _, out["network"] = trace(net.train_step, *args, reduction=reduction)
    return out


def traced_functions(
    impl: str, model: str, reduction: str = "sum", lr: float = 0.1, network=None, model_fast=True
) -> dict[str, str]:
    """{equation id: the functions that computed it, comma separated}: E1..E17 from the
    article's traced step, X1..X19 from the network's; a fast kernel carries "(fast path;
    proven equal to ...)"."""
    steps = traced_steps(impl, model, reduction, lr, network, model_fast)
    out: dict[str, str] = {}
    for part, prefix in (("article", "E"), ("network", "X")):
        if part in steps:
            for eq, impls in steps[part].by_equation().items():
                if eq.startswith(prefix):
                    out[eq] = ", ".join(i.label() for i in impls)
    return out


# The frameworks' conventions (parity_tests/optim_stages.py's CONVENTION_OF; a record
# against the reference itself, a user's CS231n rule's check, is in torch's form or O5).
_OPTIM_CONVENTION = {"torch": "torch", "tensorflow": "keras"}


def optimiser_runs(records) -> list[tuple[str, str]]:
    """[(optimiser spec, convention)] that the run's records checked (their `optimiser`
    and `against` fields), sorted; [] in a run without optimiser records."""
    rows = records.to_dict("records") if hasattr(records, "to_dict") else list(records or ())
    runs = set()
    for r in rows:
        spec = str(r.get("optimiser") or "")
        if spec and spec != "nan" and r.get("against") in _OPTIM_CONVENTION:
            runs.add((spec, _OPTIM_CONVENTION[r["against"]]))
    return sorted(runs)


def traced_optimisers(runs) -> dict[str, str]:
    """{O id: the functions that computed it}: each (spec, convention) of `runs` traced
    over two steps of the registry's update (reference/trace.py), as the checks ran it."""
    import numpy as np

    from reference import optim_registry as registry
    from reference.trace import trace

    found: dict[str, list[str]] = {}
    for spec, convention in runs:
        name, h = registry.parse(spec)
        p = np.random.default_rng(0).uniform(-1, 1, (2, 3))
        state = registry.optimiser(name).init_state(p)
        for _ in range(2):
            (p, state), ran = trace(registry.step, name, convention, p, 0.1 * p, state, h)
            for eq, impls in ran.by_equation().items():
                for i in impls:
                    if i.label() not in found.setdefault(eq, []):
                        found[eq].append(i.label())
    return {eq: ", ".join(names) for eq, names in found.items()}


def audit_files(records, meta, network=None) -> dict[str, str]:
    """{"audit.md": text}. Never raises: a broken audit must not cost the run its report.
    `network`: the Network of meta's model when the caller has it (not parsed again)."""
    try:
        from parity_tests import model_mutants, mutants
        from parity_tests.stages import STAGES
        from reference import equations, published
        from reports.audit import audit_markdown

        text = audit_markdown(
            records,
            # The functions that ran, traced from the checked steps; the checked network's
            # padded and strided layers for X1's and X2's rows.
            equations=equations.as_dicts(
                functions=traced_functions(
                    str(meta.get("impl", "reference")),
                    checked_model(meta),
                    str(meta.get("reduction", "sum")),
                    float(meta.get("lr", 0.1)),
                    network,
                    # test_model.py's network: the fast kernels unless the user's layers are in it
                    str(meta.get("model_impl", "reference")) == "reference",
                ),
                model=network if network is not None else checked_model(meta),
            ),
            variants=published.as_dicts(),
            mutants=mutants.as_dicts() + model_mutants.as_dicts(),
            order=[s.tensor for s in STAGES],
            meta=meta,
            # O1..O11 in a run that checked an optimiser: the functions traced from the
            # optimisers and conventions its records name.
            optimiser_equations=(
                equations.optimiser_dicts(traced_optimisers(runs))
                if (runs := optimiser_runs(records))
                else None
            ),
        )
    except Exception as exc:  # reported in the file itself, where the reader looks for it
        text = f"# Derivation audit\n\nThe audit could not be built: {type(exc).__name__}: {exc}\n"
    return {"audit.md": text}
