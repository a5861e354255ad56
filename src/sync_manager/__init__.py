"""sync_manager: leases on shared storage, compatible with sanlock 3.8."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
