"""Project-wide pytest configuration: the harness's own tests run under qmodel's ``qmodel-dev``
profile unless ``--hypothesis-profile`` names another (``.ci/run`` passes ``qmodel-ci``).

The qmodel plugin registers the profiles before Hypothesis's plugin loads the one named on the
command line; this file only changes the default.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_profile", default=None) is None:
        settings.load_profile("qmodel-dev")


@pytest.fixture(autouse=True)
def fresh_example_database(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Each test's searches start from an empty local example database and no shared one: a
    failure saved by an earlier test (or an earlier run) would be replayed first and change
    what the test measures. ``qmodel check`` registers its profiles on every run, so the
    variables take effect there."""
    from qmodel.profiles import register

    home = tmp_path_factory.mktemp("hypothesis")
    monkeypatch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(home))
    monkeypatch.delenv("QMODEL_EXAMPLE_DB", raising=False)
    yield home
    # A search registers the profiles again with the variables a test set (a shared database
    # turns qmodel-ci's derandomize off): the next test gets them as the session had them.
    monkeypatch.undo()
    register()
