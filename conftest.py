"""Project-wide pytest configuration: the harness's own tests run under qmodel's ``qmodel-dev``
profile unless ``--hypothesis-profile`` names another (``.ci/run`` passes ``qmodel-ci``).

The qmodel plugin registers the profiles before Hypothesis's plugin loads the one named on the
command line; this file only changes the default.
"""

from __future__ import annotations

import pytest
from hypothesis import settings


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_profile", default=None) is None:
        settings.load_profile("qmodel-dev")
