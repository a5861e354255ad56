"""Test-wide settings: Hypothesis profiles (DESIGN.md, "Tests")."""

from __future__ import annotations

import os

from hypothesis import settings

# CI runs the same examples every time; a local run explores new ones. Neither has a deadline:
# timings belong in bench/, not in assertions.
settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI", "").lower() not in ("", "0", "false") else "dev")
