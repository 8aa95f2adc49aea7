"""Test-wide settings: in CI (CI=true) hypothesis is derandomized, so a run is reproducible and
a red build always means the same thing; locally every run explores new examples."""

from __future__ import annotations

import os

from hypothesis import settings

EXAMPLES = 50
"""Examples of a property test that sets none (hypothesis's default is 100): the suite ran
20.7 min on a 2-core CI machine in session 14, past CI's 20; a test that needs more says so."""

settings.register_profile("ci", derandomize=True, print_blob=True, max_examples=EXAMPLES)
settings.register_profile("dev", print_blob=True, max_examples=EXAMPLES)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
