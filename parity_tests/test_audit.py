"""The derivation audit: the equation registry (reference/equations.py) is complete and
consistent, and reports/audit.py turns registry + records into audit.md (also shown in
summary.html): the article's equations E1..E17 and the layers beyond it, X1..X19."""

import re

import pytest

from parity_tests import mutants
from parity_tests.audit_hook import audit_files, traced_functions
from parity_tests.stages import STAGES
from reference import equations, published
from reports import normalise_record, write_report
from reports.audit import _EQ, audit_markdown

AMBIGUOUS = ("E7", "E11", "E13", "E15", "E16")  # where the text is ambiguous or mistyped
# Beyond the article: the equations whose verdict rests on a fixed convention.
X_CONVENTIONS = {
    "X6": "first maximum in row-major order",
    "X8": "derivative 0 at z = 0",
    "X12": "sum over images",
    "X13": "eps = 1e-5 inside the square root",
    "X15": "torch: momentum 0.1 is 1 - keep",
}
X_IDS = [f"X{i}" for i in range(1, 20)]


def test_registry_covers_every_equation_in_order():
    assert [e.id for e in equations.EQUATIONS] == [f"E{i}" for i in range(1, 18)]


def test_extensions_cover_x1_to_x19_in_order():
    assert [e.id for e in equations.EXTENSIONS] == X_IDS
    assert [d["id"] for d in equations.as_dicts()] == [f"E{i}" for i in range(1, 18)] + X_IDS


@pytest.mark.parametrize("eq", equations.EXTENSIONS, ids=[e.id for e in equations.EXTENSIONS])
def test_extension_entry_states_its_verdict(eq):
    if eq.id in X_CONVENTIONS:
        assert eq.verdict == equations.CONVENTION and X_CONVENTIONS[eq.id] in eq.convention
    else:
        assert eq.verdict == equations.HOLDS
    assert not eq.variants  # no published code
    assert bool(eq.via_setting) == (eq.id in ("X1", "X2"))


@pytest.mark.parametrize(
    "eq", equations.ALL + equations.OPTIMISERS, ids=[e.id for e in equations.ALL + equations.OPTIMISERS]
)
def test_registry_entry_is_complete(eq):
    assert eq.statement and eq.verdict in equations.VERDICTS
    assert bool(eq.convention) == (eq.verdict == equations.CONVENTION)
    assert bool(eq.correction) == (eq.verdict == equations.CORRECTED)
    assert bool(eq.note) or eq.id not in AMBIGUOUS
    assert set(eq.variants) <= set(published.VARIANTS)
    assert set(eq.via) <= set(equations.BY_ID) - {eq.id}


def test_every_variant_is_attached_to_an_equation():
    attached = {v for e in equations.EQUATIONS for v in e.variants}
    assert attached == set(published.VARIANTS)


def _rec(**fields):
    base = dict(
        check="t::x",
        impl="reference",
        against="torch",
        mode="stage",
        dtype="float64",
        status="pass",
        passed=True,
        budget_used=0.5,
        seed=0,
        equation="E1",
        tensor="Z1",
    )
    return normalise_record({**base, **fields})


def _detection(impl, tensor, passed=True):
    return _rec(
        impl=impl,
        mode="detection",
        tensor=tensor,
        equation="E16",
        budget_used=3e-13,
        max_rel_err=0.9,
        passed=passed,
        status="pass" if passed else "fail",
        note=f"caught at {tensor}, the tensor it changes",
        first_diverging=tensor,
        disagreeing=tensor,
        disagreeing_budgets="3.2e+12",
        explanation="torch's x is 200 x ours",
        suspect="factor",
        mismatch_kind="value",
    )


def _audit(records, **meta):
    return audit_markdown(
        records,
        equations=equations.as_dicts(
            functions=traced_functions(meta.get("impl", "reference"), meta.get("model") or ""),
            model=meta.get("model"),
        ),
        variants=published.as_dicts(),
        mutants=mutants.as_dicts(),
        order=[s.tensor for s in STAGES],
        meta={"impl": "reference", **meta},
    )


def test_audit_has_a_row_per_equation_variant_and_mutant():
    text = _audit(
        [
            _rec(),
            _rec(against="hand", mode="hand", budget_used=0.1),
            _rec(equation="E8*E9", tensor="dE_dZ2", budget_used=2.0, status="fail", passed=False),
            _detection("published:D12", "dE_df"),
            _detection("mutant:flipped_dE_df", "dE_df"),
        ]
    )
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert sum(bool(re.match(r"\| E\d+ \|", r)) for r in rows) == 17
    assert sum(bool(re.match(r"\| D\d+ \|", r)) for r in rows) == len(published.VARIANTS)
    assert sum(any(r.startswith(f"| {m} |") for m in mutants.MUTANTS) for r in rows) == len(
        mutants.MUTANTS
    )
    e1 = next(r for r in rows if r.startswith("| E1 |"))
    assert "torch stage (1)" in e1 and "hand (1)" in e1 and "torch stage 0.5" in e1
    assert "1 fail" in next(r for r in rows if r.startswith("| E9 |"))
    assert "through E1: hand (1), torch stage (1)" in next(r for r in rows if r.startswith("| E2 |"))
    d12 = next(r for r in rows if r.startswith("| D12 |"))
    assert "caught at dE_df" in d12 and "200 x ours" in d12 and "3.2e+12 x tolerance" in d12
    assert "1 / 1 variants detected" in text and "1 / 1 mutants detected" in text
    assert "| D3 |" in text and "not run" in next(r for r in rows if r.startswith("| D3 |"))


def test_audit_without_detection_runs_says_none_ran_and_what_runs_them():
    # Plain pytest (the gate) runs no variant or mutant: the audit must not look complete.
    text = _audit([_rec()])
    for what in ("variant", "mutant"):
        assert f"No {what} was run in this session" in text
    assert text.count("`./parity report` runs them") == 2
    rows = [line for line in text.splitlines() if re.match(r"\| D\d+ \|", line)]
    assert rows and all("not run" in r for r in rows)


def test_audit_reads_a_whole_run_of_a_variant():
    # `pytest --parity-impl published:D3`: the run's own records say what disagrees.
    recs = [
        _rec(
            impl="published:D3",
            tensor=t,
            equation=e,
            status=s,
            passed=s == "pass",
            budget_used=b,
            note="explainer: no simple fit" if s == "fail" else "",
            explanation="no simple fit" if s == "fail" else "",
        )
        for t, e, s, b in (
            ("Z1", "E1", "pass", 0.3),
            ("dE_df", "E16", "fail", 5e10),
            ("f_new", "E17", "pass", 0.2),
        )
    ]
    row = next(r for r in _audit(recs, impl="published:D3").splitlines() if r.startswith("| D3 |"))
    assert "dE_df" in row and "5e+10" in row and "no simple fit" in row


def test_undetected_mutant_shows_as_not_detected():
    rec = _detection("mutant:sign_dE_dO", "dE_dO", passed=False)
    rec.update(
        note="not detected: expected at dE_dO",
        first_diverging="",
        disagreeing="",
        disagreeing_budgets="",
        explanation="",
        suspect="",
        mismatch_kind="",
    )
    text = _audit([rec])
    assert "0 / 1 mutants detected" in text
    row = next(r for r in text.splitlines() if r.startswith("| sign_dE_dO |"))
    assert "NO (torch float64 stage: NOT detected)" in row
    assert row.endswith("| none |  |  | none | none |")  # first, check, how much, disagree, explainer


def test_detection_is_read_from_fields_not_from_the_note():
    # The note is for people: text in it that looks like a finding changes nothing.
    rec = _detection("published:D13", "patches")
    rec.update(
        note="first: Z1 | disagree: Z1 (shape) | explainer: a decoy",
        disagreeing="patches, Z1, dE_df",
        disagreeing_budgets="inf, 4.58e+16, 1.3e+14",
    )
    row = next(r for r in _audit([rec]).splitlines() if r.startswith("| D13 |"))
    assert "caught at patches" in row and "decoy" not in row
    assert "| patches | any difference fails (exact rule, tolerance 0), max rel err 0.9 |" in row
    assert "| patches (inf), Z1 (4.58e+16), dE_df (1.3e+14) | torch's x is 200 x ours |" in row


@pytest.mark.parametrize(("kind", "words"), [("shape", "shape mismatch"), ("error", "raised")])
def test_how_much_names_a_mismatch_without_a_budget(kind, words):
    rec = _detection("mutant:dE_dW_transposed", "dE_dW")
    rec.update(disagreeing="dE_dW, f_new", disagreeing_budgets=f"{kind}, error", mismatch_kind=kind)
    row = next(r for r in _audit([rec]).splitlines() if r.startswith("| dE_dW_transposed |"))
    assert words in row and f"| dE_dW ({kind}), f_new (error) |" in row


def test_audit_files_never_raises():
    assert "Derivation audit" in audit_files([], {})["audit.md"]
    broken = audit_files([{"no such field": 1}], {})["audit.md"]
    assert "could not be built" in broken and "no such field" in broken


def test_audit_is_written_and_shown_in_summary_html(tmp_path):
    records = [_rec(), _detection("published:D12", "dE_df")]
    paths = write_report(
        records,
        tmp_path / "r",
        {"impl": "reference"},
        extra_files=audit_files(records, {"impl": "reference"}),
        heat_map=False,
    )
    assert paths["audit.md"].read_text().startswith("# Derivation audit")
    assert "Derivation audit" in paths["summary.html"].read_text()


# --- beyond the article (X1..X12) ---------------------------------------------------------

LENET_LAYER = {  # a layer of lenet for each equation test_model.py writes
    "X3": "conv1",
    "X4": "conv2",
    "X5": "conv2",
    "X6": "pool1",
    "X8": "relu1",
    "X10": "dense3",
    "X11": "softmax_ce",
    "X12": "softmax_ce",
}
MODEL_KINDS = ("tensorflow end_to_end", "tensorflow stage", "torch end_to_end", "torch stage")


def _model_recs(eq, step, tensor="Z", budget=0.25):
    """What test_model.py writes for one tensor: torch and tensorflow, stage and end_to_end."""
    return [
        _rec(
            check=f"test_model[{step}.{tensor}-{mode}-{fw}]",
            equation=eq,
            step=step,
            tensor=f"{step}.{tensor}",
            against=fw,
            mode=mode,
            model="lenet",
            budget_used=budget,
        )
        for fw in FRAMEWORKS
        for mode in ("stage", "end_to_end")
    ]


def _layer_recs(eq):
    """What test_layers.py writes: a hand example, finite differences, torch (no model)."""
    return [
        _rec(equation=eq, step="layer", against="hand", mode="hand", budget_used=0.0),
        _rec(equation=eq, step="layer", against="finite_difference", mode="finite_difference"),
        _rec(equation=eq, step="layer", against="torch", mode="stage", budget_used=0.001),
    ]


FRAMEWORKS = ("torch", "tensorflow")


def _rows(text):
    return {r.split(" | ")[0][2:]: r for r in text.splitlines() if re.match(r"\| [EXD]\d+ \|", r)}


def test_equation_ids_are_read_whole():
    assert _EQ.findall("X1,X2,X3,X4") == ["X1", "X2", "X3", "X4"]
    assert _EQ.findall("E8*E9, X10") == ["E8", "E9", "X10"]
    assert _EQ.findall("X, Xp, max, EX1, X1a, relu X") == []
    # a record of X10 is no check of X1, nor one of X1 of X10
    rows = _rows(_audit([*_layer_recs("X10")]))
    assert "none recorded" in rows["X1"] and "hand (1)" in rows["X10"]
    rows = _rows(_audit([*_layer_recs("X1")]))
    assert "none recorded" in rows["X10"] and "hand (1)" in rows["X1"]


def test_every_x_id_has_a_row_with_the_model_checks():
    recs = [r for eq in X_IDS for r in _layer_recs(eq)]
    recs += [r for eq, step in LENET_LAYER.items() for r in _model_recs(eq, step)]
    recs += _model_recs("X4", "conv1") + _model_recs("X6", "pool2", "dX")
    text = _audit(recs, model="lenet")
    article, beyond = text.split("## Beyond the article (X1..X19)")
    assert "| X" not in article and "| E1 |" in article
    rows = _rows(beyond.split("## Published-code variants")[0])
    assert list(rows) == X_IDS
    for eq in X_IDS:
        assert all(k in rows[eq] for k in ("hand (1)", "finite_difference (1)")), rows[eq]
        assert "none recorded" not in rows[eq]
    for eq in LENET_LAYER:  # test_model's four kinds, beside test_layers' torch stage
        counts = dict(re.findall(r"(\w+ \w+) \((\d+)\)", rows[eq].split(" | ")[3]))
        assert set(MODEL_KINDS) <= set(counts), rows[eq]
        assert int(counts["torch stage"]) == int(counts["tensorflow stage"]) + 1
    assert "tensorflow end_to_end 0.25" in rows["X10"]
    for eq, words in X_CONVENTIONS.items():
        assert "holds under a stated convention: " in rows[eq] and words in rows[eq]
    assert all(rows[eq].split(" | ")[6] == "holds" for eq in X_IDS if eq not in X_CONVENTIONS)
    assert "reference.layers.pool.max_pool_backward" in rows["X6"]


def test_max_pool_tie_rule_is_stated():
    text = _audit([], model="lenet")
    x6 = _rows(text)["X6"]
    assert "ties go to the first maximum in row-major order of the window" in x6
    assert "torch and TensorFlow on the CPU" in x6
    assert "first maximum in row-major order" in text.split("| eq |")[2]  # the section's text


def test_padding_and_stride_rows_name_the_checks_that_exercise_them():
    recs = [
        *_model_recs("X4", "conv1", budget=0.5),  # lenet's conv1 pads by 2
        *_model_recs("X4", "conv2", budget=9.0),  # conv2 neither pads nor strides
        *_model_recs("X3", "conv1"),  # the bias: not one of X1's via
        *_model_recs("X6", "pool1", "dX", budget=0.125),  # pools stride 2
        *_layer_recs("X4"),  # no model: no layer of lenet
    ]
    rows = _rows(_audit(recs, model="lenet"))
    x1, x2 = rows["X1"], rows["X2"]
    assert x1.split(" | ")[3] == (
        "through X4 on lenet's conv1 = conv(6,5,pad=2): tensorflow end_to_end (1), "
        "tensorflow stage (1), torch end_to_end (1), torch stage (1)"
    )
    assert "through X4 on conv1: tensorflow end_to_end 0.5;" in x1 and "9" not in x1.split(" | ")[4]
    assert x2.split(" | ")[3] == (
        "through X6 on lenet's pool1 = maxpool(2) (stride 2), pool2 = maxpool(2) (stride 2): "
        "tensorflow end_to_end (1), tensorflow stage (1), torch end_to_end (1), torch stage (1)"
    )
    assert "through X6 on pool1, pool2: " in x2 and "4 pass" in x2
    # Its own checks first, then those it is exercised through.
    rows = _rows(_audit([*recs, *_layer_recs("X1")], model="lenet"))
    assert (
        rows["X1"]
        .split(" | ")[3]
        .startswith("finite_difference (1), hand (1), torch stage (1); through X4 on lenet's conv1")
    )


def test_padding_row_says_when_the_model_has_no_padded_layer():
    spec = "conv(4,3,stride=2)-relu-dense(10)-softmax_ce"
    recs = _model_recs("X4", "conv1")
    for r in recs:
        r["model"] = spec
    rows = _rows(_audit(recs, model=spec))
    none = "through X4, X5: none (the checked network has no layer with padding)"
    assert none in rows["X1"]
    assert "through X4 on the checked network's conv1 = conv(4,3,stride=2): " in rows["X2"]


def test_audit_files_scopes_padding_to_the_checked_model():
    recs = _model_recs("X4", "conv1")
    rows = _rows(audit_files(recs, {"impl": "reference", "model": "lenet"})["audit.md"])
    assert "through X4 on lenet's conv1 = conv(6,5,pad=2): " in rows["X1"]


def test_audit_model_comes_from_the_settings_not_the_records():
    recs = _model_recs("X4", "conv1")  # records of lenet's conv1, in a run that says article
    rows = _rows(audit_files(recs, {"impl": "reference", "model": "article"})["audit.md"])
    assert "none (article has no layer with padding)" in rows["X1"]
    assert rows["X6"].split(" | ")[2].startswith("none")  # the article has no max pooling


# --- what the audit names is what ran -----------------------------------------------------

# The steps a ./parity report run checks: the fast path with lenet (its default), and a
# readable-model run with a network that has the layers lenet lacks (tanh, average pooling,
# padding and stride on a convolution).
TRACED_RUNS = {
    "fast-lenet": ("reference", "lenet"),
    "readable-strided": (
        "published:D1",
        "conv(4,3,stride=2,pad=1)-tanh-avgpool(2)-dense(10)-softmax_ce",
    ),
}


def _traced_here(impl, model, X, digits):
    """The checked steps traced here, on the run's own images: {part: names that ran}."""
    import numpy as np

    from parity_tests import stages
    from reference import fast
    from reference import model as readable
    from reference.fast_layers import fast_network
    from reference.network import Network, images_nchw
    from reference.trace import trace

    y = (digits > 4).astype(np.float64).reshape(1, -1)
    step = fast.train_step if impl == "reference" else readable.train_step
    _, article = trace(step, readable.init_params(0, "float64"), X, y, lr=0.1)
    # The reference the fast path is proven equal to: the article network (parity_tests/stages.py).
    article_net = (stages.network_params(readable.init_params(0, "float64")), images_nchw(X), digits)
    _, truth = trace(stages.NETWORK.train_step, *article_net, 0.1)
    net = Network(model)
    args = (net.init_params(0, "float64"), images_nchw(X), digits, 0.1)
    checked = fast_network(net.spec)  # test_model.py's network, whatever --parity-impl says
    _, network = trace(checked.train_step, *args)
    _, layers = trace(net.train_step, *args)  # the readable layers the kernels are proven equal to
    return {"E": article.names(), "X": network.names(), "readable": truth.names() | layers.names()}


def _functions_column(audit_md: str) -> dict[str, str]:
    """{id: the 'functions' cell} of audit.md's equation table (third column)."""
    out = {}
    for line in audit_md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and re.fullmatch(r"[EX]\d+", cells[0]):
            out[cells[0]] = cells[2]
    return out


# A function name in a cell, and the readable functions a fast kernel is proven equal to.
_NAMED = r"(reference\.[\w.]+)(?: \(fast path; proven equal to ([^)]*)\))?"


@pytest.mark.parametrize("run", TRACED_RUNS, ids=list(TRACED_RUNS))
def test_audit_names_only_functions_that_ran(run, article_data):
    impl, model = TRACED_RUNS[run]
    X, digits = article_data.X[:, :, :8].astype("float64"), article_data.labels[:8]
    ran = _traced_here(impl, model, X, digits)
    meta = {"impl": impl, "model": model, "reduction": "sum", "lr": 0.1}
    cells = _functions_column(audit_files([], meta)["audit.md"])
    assert set(cells) == {e.id for e in equations.ALL}
    named_any = set()
    for eq, cell in cells.items():
        for entry in re.findall(
            r"(reference\.[\w.]+)(?: \(fast path; proven equal to ([^)]*)\))?", cell
        ):
            name, proven = entry
            assert name in ran[eq[0]], f"{eq}: audit.md names {name}, which the checked step did not run"
            named_any.add(eq)
            for readable in filter(None, proven.split(", ")):
                # A fast kernel's proof partner is a readable function the reference ran.
                assert readable in ran["readable"], (
                    f"{eq}: {name} is proven equal to {readable}, not run"
                )
        # The article's fast path under --parity-impl reference; the network's kernels always.
        assert ("fast path" in cell) <= (impl == "reference" or eq.startswith("X"))
    # Every equation with a function of its own that the step computes is named.
    assert {"E1", "E3", "E5", "E7", "E8", "E9", "E16", "E17", "X4", "X10", "X12"} <= named_any


def test_audit_says_when_no_function_of_its_own_ran():
    cells = _functions_column(audit_files([], {"impl": "reference", "model": "lenet"})["audit.md"])
    assert cells["E15"].startswith("none") and cells["X9"].startswith("none")  # via E16; no tanh


def _developers_profiler(kind: str):
    if kind == "cProfile":  # C-level: sys.getprofile() gives the Profile object, not a function
        import cProfile

        return cProfile.Profile()
    events = []
    return lambda frame, event, arg: events.append(event)


@pytest.mark.parametrize("kind", ["cProfile", "python-function"])
def test_tracing_under_a_developers_profiler_traces_and_puts_it_back(kind):
    import sys

    import numpy as np

    from reference.activations import sigmoid
    from reference.trace import trace

    profiler = _developers_profiler(kind)
    if kind == "cProfile":
        profiler.enable()
    else:
        sys.setprofile(profiler)
    try:
        _, ran = trace(sigmoid, np.zeros(3))
        back = sys.getprofile()
    finally:
        sys.setprofile(None)
    assert ran.names() == {"reference.activations.sigmoid"}
    assert back is profiler


def test_every_tag_names_a_registered_equation():
    import reference.fast  # noqa: F401  (imports every tagged module)
    import reference.network  # noqa: F401
    import reference.optim  # noqa: F401  (O1..O11)
    from reference.trace import implementations

    tagged = {eq for impl in implementations() for eq in impl.ids}
    assert tagged <= set(equations.BY_ID)
    assert tagged == set(equations.BY_ID)  # every equation has a function that computes it


# --- the optimiser rules (O1..O11) ------------------------------------------------------------


def _optim_recs(spec, equation_of):
    """An optimiser run's end-to-end records, one per framework (its convention's ids)."""
    return [
        _rec(against=fw, mode="end_to_end", equation=equation_of[fw], optimiser=spec,
             tensor="dense3.W_new", train_step=1, check=f"t::{fw}")
        for fw in ("torch", "tensorflow")
    ]  # fmt: skip


def _o_rows(text):
    return {r.split(" | ")[0][2:]: r for r in text.splitlines() if re.match(r"\| O\d+ \|", r)}


@pytest.mark.parametrize(
    "spec,equation_of,ran,idle",
    [
        ("adam(lr=0.0009765625,beta1=0.9,beta2=0.999,eps=1e-07,weight_decay=0.0)",
         {"torch": "O10", "tensorflow": "O11"},
         {"O10": "reference.optim.adam_torch", "O11": "reference.optim.adam_keras"},
         ("O2", "O3", "O4", "O8")),
        ("adamw(lr=0.0009765625,beta1=0.9,beta2=0.999,eps=1e-07,weight_decay=0.01)",
         {"torch": "O3,O10", "tensorflow": "O3,O11"},
         {"O3": "reference.optim.decoupled_decay", "O10": "reference.optim.adam_torch"},
         ("O2", "O5")),
        ("momentum(momentum=0.9,lr=0.0009765625,weight_decay=0.0)",
         {"torch": "O4", "tensorflow": "O5"},
         {"O4": "reference.optim.momentum_torch", "O5": "reference.optim.momentum_keras"},
         ("O1", "O10", "O11")),
    ],
    ids=["adam", "adamw", "momentum"],
)  # fmt: skip
def test_an_optimiser_run_has_traced_o_rows(spec, equation_of, ran, idle):
    """O rows appear in a run with optimiser records; each names the function traced from
    the optimiser and convention its records name, counts those records, and a rule that
    did not run names no function and no check."""
    text = audit_files(_optim_recs(spec, equation_of), {"impl": "reference", "optim": spec})["audit.md"]
    assert "## Optimisers (O1..O11)" in text
    rows = _o_rows(text)
    assert list(rows) == [f"O{i}" for i in range(1, 12)]
    for eq, function in ran.items():
        assert function in rows[eq].split(" | ")[2], rows[eq]  # the functions column
        fws = [fw for fw, ids in equation_of.items() if eq in ids.split(",")]
        assert all(f"{fw} end_to_end (1)" in rows[eq] for fw in fws), rows[eq]
    for eq in idle:
        assert "none of its own ran" in rows[eq] and "none recorded in this run" in rows[eq], rows[eq]


def test_no_o_rows_without_optimiser_records():
    assert "## Optimisers" not in audit_files([_rec()], {"impl": "reference"})["audit.md"]


@pytest.mark.parametrize(
    "name,wd,torch_ids,keras_ids",
    [("adam", 0.0, ("O10",), ("O11",)), ("adam", 0.01, ("O10", "O2"), ("O11", "O3")),
     ("adamw", 0.01, ("O3", "O10"), ("O3", "O11")), ("sgd", 0.0, ("O1",), ("O1",))],
    ids=["adam", "adam-decay", "adamw", "sgd"],
)  # fmt: skip
def test_records_claim_the_decay_only_where_it_runs(name, wd, torch_ids, keras_ids):
    from reference import optim_registry as registry

    h = registry.hyper(name, weight_decay=wd)
    entry = registry.optimiser(name)
    assert (entry.equations("torch", h), entry.equations("keras", h)) == (torch_ids, keras_ids)
