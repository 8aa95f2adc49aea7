"""Test-wide settings: in CI (CI=true) hypothesis is derandomized, so a run is reproducible and
a red build always means the same thing; locally every run explores new examples."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
