"""Fixtures of the detection tests (test_variants.py, test_mutants.py). The suite's plugin is
parity_tests/plugin.py; its other fixtures live in parity_tests/fixtures.py."""

import pytest

from parity_tests.detection import HarnessCache


@pytest.fixture(scope="module")
def detection_harness_for() -> HarnessCache:
    """(run_config, data, step) -> the step's detection Harness, one per configuration and
    step label for the test module; it also holds the unmodified step's stage records, which
    `detection.localise` reuses (pass it as `harnesses`). Module-scoped: each harness holds
    every tensor of its step and the frameworks' runs (~70 MB at 200 images), and a session
    cache kept test_variants.py's and test_mutants.py's ~30 alive together (~2.2 GB of
    ./parity report's 4.7 GB peak); a module's tests are its only users."""
    return HarnessCache()


# The optimiser and trajectory checks (docs/optimisers.md): in the default run's testpaths
# (pyproject.toml), but run there only when asked for, by --parity-steps K > 1 or
# --parity-optim: a plain `pytest` (one step of SGD) keeps its content and its time. Named
# on the command line, or under `pytest parity_tests` (./parity test), they always run.
OPTIM_FILES = ("test_optim.py", "test_trajectory.py")


def pytest_collection_modifyitems(config, items):
    _keras_runs_of_a_users_optimiser(config, items)
    # Deselected, not ignored: pytest never ignores a path it was given, and testpaths are.
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return
    from parity_tests.settings import SETTINGS

    s = config.stash.get(SETTINGS, None)
    if s is not None and s.trajectories:
        return
    keep, drop = [], []
    for item in items:
        (drop if item.path.name in OPTIM_FILES else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _keras_runs_of_a_users_optimiser(config, items) -> None:
    """A user's CS231n optimiser (--parity-optim-impl) trains against torch alone: CS231n's
    rules are torch's equations, not Keras' (test_trajectory.py); its Keras runs are
    deselected, and the terminal's deselected count says so."""
    if not config.getoption("--parity-optim-impl"):
        return
    from parity_tests.test_trajectory import user_optimiser

    if user_optimiser(config) is None:
        return
    drop = [
        item
        for item in items
        if item.path.name == "test_trajectory.py"
        and getattr(getattr(item, "callspec", None), "params", {}).get("framework") == "tensorflow"
    ]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [item for item in items if item not in drop]
