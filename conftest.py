"""Project-wide pytest configuration: the Hypothesis profiles (dev, ci, nightly) of
qmodel.profiles, selectable with ``--hypothesis-profile``; ``dev`` unless told otherwise."""

from hypothesis import settings

from qmodel.profiles import register

register()
settings.load_profile("dev")
