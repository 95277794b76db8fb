"""Fixtures of the detection tests (test_variants.py, test_mutants.py). The suite's plugin is
parity_tests/plugin.py; its other fixtures live in parity_tests/fixtures.py."""

import pytest

from parity_tests.detection import HarnessCache


@pytest.fixture(scope="session")
def detection_harness_for() -> HarnessCache:
    """(run_config, data, step) -> the step's detection Harness, one per configuration and
    step label for the session; it also holds the unmodified step's stage records, which
    `detection.localise` reuses (pass it as `harnesses`)."""
    return HarnessCache()
