"""The suite's fixtures: how a test reaches the run's validated settings and state.

Registered by the plugin (plugin.py names this module in `pytest_plugins`), so every test
of the project sees them: `parity_settings`, `run_config`, `article_data`, `article_batch`,
`harness`, `model_network`, `model_harness` (session-scoped), `parity` (per test: the
comparison helper that records and asserts) and `model_parity` (the same for test_model.py's
checks of the spec network). The detection tests' own cache fixture is in
parity_tests/conftest.py.
"""

import dataclasses
import warnings

import pytest

from parity_tests.compare import ParityRecorder
from parity_tests.harness import Harness, RunConfig
from parity_tests.records import run_context
from parity_tests.settings import SETTINGS, STATE, Settings
from reference.data import ARTICLE_IMAGES, load_article_data


@pytest.fixture(scope="session")
def parity_settings(pytestconfig) -> Settings:
    return pytestconfig.stash[SETTINGS]


@pytest.fixture(scope="session")
def run_config(parity_settings) -> RunConfig:
    return parity_settings.run_config


@pytest.fixture(scope="session")
def article_data(pytestconfig):
    state = pytestconfig.stash[STATE]
    for message in state.data_warnings:  # loaded at start-up; warned where pytest sees it
        warnings.warn(message, stacklevel=1)
    return state.data


@pytest.fixture(scope="session")
def article_batch(pytestconfig, article_data):
    """The article's own 200 images, for tests about them whatever --parity-n-images says:
    the run's batch when it is those, else the same source's first 200."""
    if article_data.X.shape[2] == ARTICLE_IMAGES:
        return article_data
    return load_article_data(ARTICLE_IMAGES, source=pytestconfig.getoption("--parity-data"))


@pytest.fixture(scope="session")
def harness(pytestconfig, run_config, article_data) -> Harness:
    return Harness(run_config, article_data, pytestconfig.stash[STATE].impl)


@pytest.fixture(scope="session")
def model_network(parity_settings):
    """The spec-built network test_model.py checks (reference.network.Network), built once
    when the options were validated."""
    return parity_settings.network


@pytest.fixture(scope="session")
def model_harness(parity_settings, run_config, article_data, model_network):
    from parity_tests.model_harness import ModelHarness
    from parity_tests.own_layers import used_layers, user_ops
    from reference.fast_layers import fast_network
    from reference.network import Network

    # The network under test: the reference's fast kernels (reference/fast_layers.py, proven
    # equal to the readable layers by test_fast_layers.py), as the article's checks run its
    # fast path; with --parity-layer, the readable network with those of the user's layers
    # it has. The readable network (model_network) stays the reference.
    used = used_layers(parity_settings.user_layers, model_network)
    if used:
        impl = Network(model_network.spec, ops=user_ops(used))
    else:
        impl = fast_network(model_network.spec, keep=0)  # the harness keeps every step
    return ModelHarness(model_network, run_config, article_data, impl=impl)


@pytest.fixture
def parity(request, article_data) -> ParityRecorder:
    """The comparison helper bound to this test: `parity.check(...)` records and asserts."""
    return ParityRecorder(request.node, run_context(request.config, article_data))


@pytest.fixture
def model_parity(parity, parity_settings) -> ParityRecorder:
    """`parity` for the spec network's checks (test_model.py): --parity-impl names an
    implementation of the article's train_step, not of this network, which is the
    reference's or built with the --parity-layer kinds it has (Settings.model_impl)."""
    context = dataclasses.replace(parity.context, impl=parity_settings.model_impl)
    return ParityRecorder(parity.node, context)
