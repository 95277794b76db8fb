"""Whether a run was complete, partial or interrupted: what run.json, the top of
summary.md/summary.html and the last line of the terminal output say.

Relative to what the command asked for: complete: every collected test ran and nothing
narrowed the run; partial: something asked for did not run, with the reasons (-k, -m,
--deselect, fewer frameworks or dtypes, test_parity.py or test_model.py named, by its file,
a folder holding it or pyproject's testpaths, but fewer of its tests ran than these
settings make, a --parity-layer kind nothing checked); interrupted: Ctrl-C, -x, --maxfail
or tests that never ran. A run that names other files only (`pytest
parity_tests/test_own_layers.py`) is complete when all of them ran. A partial run's
report is written; an interrupted run's is not (session_report.py), and the gate (gate.py)
reads a partial run's missing checks as "not run" rather than "vanished".
"""

from pathlib import Path

import pytest

from parity_tests.impl_call import INPUT_NAMES
from parity_tests.settings import SETTINGS, STATE, Settings
from parity_tests.stages import END_TO_END, STAGES

PARITY_TEST_FILE = "test_parity.py"
MODEL_TEST_FILE = "test_model.py"  # the spec-built network's checks (--parity-model)
OWN_LAYERS_TEST_FILE = "test_own_layers.py"  # each --parity-layer kind checked alone
TESTS_DIR = Path(__file__).resolve().parent
# -m expressions that select the whole suite: pyproject's default and ./parity test's.
FULL_MARK_EXPRESSIONS = ("not slow", "slow or not slow", "")


def expected_parity_tests(s: Settings) -> int:
    """The tests of test_parity.py for these frameworks and dtypes: the stage and end-to-end
    checks per framework and dtype, then per dtype the contract and one check per input."""
    stage_checks = len(STAGES) + len(END_TO_END)
    per_dtype = 1 + len(INPUT_NAMES)
    return (stage_checks * len(s.frameworks) + per_dtype) * len(s.dtypes)


def expected_model_tests(s: Settings) -> int:
    """The tests of test_model.py: every tensor of the network, stage and end to end, per
    framework and dtype."""
    return 2 * len(model_order(s)) * len(s.frameworks) * len(s.dtypes)


def completeness(session, exitstatus) -> dict:
    """complete | partial (deselected or restricted, with counts) | interrupted."""
    from parity_tests.gate import GATE_NODEID, gate_state  # (gate.py imports this module)

    config = session.config
    s, state = config.stash[SETTINGS], config.stash[STATE]
    # The regression gate judges the run; it is not one of its tests.
    ran = len(state.ran - {GATE_NODEID})
    collected = int(session.testscollected) - gate_state(config).added
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        return dict(status="interrupted", detail=f"interrupted after {ran} of {collected} tests")
    if session.shouldstop or session.shouldfail or ran < collected:
        why = session.shouldstop or session.shouldfail or "stopped early"
        return dict(status="interrupted", detail=f"{why}: {ran} of {collected} tests ran")
    why = list(s.restricted)
    o = config.option
    if getattr(o, "keyword", ""):
        why.append(f"selected with -k {o.keyword!r}")
    if getattr(o, "markexpr", "") not in FULL_MARK_EXPRESSIONS:
        why.append(f"selected with -m {o.markexpr!r}")
    if getattr(o, "deselect", None):
        why.append(f"{len(o.deselect)} --deselect option(s)")
    if asked_for(config, PARITY_TEST_FILE):
        expected = expected_parity_tests(s)
        got = _ran_in(state.ran, PARITY_TEST_FILE)
        if got < expected:
            why.append(f"{got} of the {expected} parity tests ({PARITY_TEST_FILE}) ran")
    if asked_for(config, MODEL_TEST_FILE):
        expected = expected_model_tests(s)
        got = _ran_in(state.ran, MODEL_TEST_FILE)
        if got < expected:
            why.append(f"{got} of the {expected} tests of {s.model_checked} ({MODEL_TEST_FILE}) ran")
    why += unchecked_layers(s, state.ran)
    if why:
        return dict(status="partial", detail="; ".join(why))
    return dict(status="complete", detail=f"{ran} of {collected} tests ran")


def _ran_in(ran, name: str) -> int:
    return sum(1 for n in ran if n.split("::")[0].endswith(name))


def asked_for(config, name: str) -> bool:
    """Whether the command asked for parity_tests/NAME: a path it named (a node id's file
    included) is that file or a folder holding it; with no paths named, pyproject's
    testpaths are what pytest ran (config.args holds them). True when unknown."""
    args = getattr(config, "args", None)
    if args is None:
        return True
    here = Path(getattr(getattr(config, "invocation_params", None), "dir", None) or Path.cwd())
    target = TESTS_DIR / name
    for arg in args:
        named = Path(here, str(arg).split("::", 1)[0]).resolve()
        if named == target or named in target.parents:
            return True
    return False


def unchecked_layers(s: Settings, ran) -> list[str]:
    """The --parity-layer kinds this run never checked: the network test_model.py checks has
    no layer of that kind (its pair never runs there) and test_own_layers.py did not check it
    alone (test_own_layer[KIND-DTYPE] did not run)."""
    from parity_tests.own_layers import not_in_network, used_layers

    used = used_layers(s.user_layers, s.network)
    own = [n.split("::", 1)[1] for n in ran if n.split("::")[0].endswith(OWN_LAYERS_TEST_FILE)]
    alone = {n.partition("[")[2].partition("-")[0] for n in own}
    how = "did not run" if not own else "did not check it"
    # In the network only if test_model.py ran (`pytest test_parity.py --parity-layer conv=...`
    # never calls the pair).
    in_network = _ran_in(ran, MODEL_TEST_FILE) > 0
    return [
        (
            f"--parity-layer {kind} was not checked: "
            f"{not_in_network(kind, s.network, s.model_checked)} and "
            if kind not in used
            else f"--parity-layer {kind} was not checked: {MODEL_TEST_FILE} did not run and "
        )
        + f"{OWN_LAYERS_TEST_FILE} {how}"
        for kind in s.user_layers
        if (kind not in used or not in_network) and kind not in alone
    ]


def model_order(s: Settings) -> tuple:
    """The spec network's tensors in forward/backward order (the heat map's later rows)."""
    return s.network.order
