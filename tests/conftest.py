"""Shared test helpers."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def require_torch() -> ModuleType:
    """The torch module for differential tests.

    Skips, with a visible reason, when torch is not installed; under CI=true a missing torch is a
    failure instead, so the differential tests can never silently stop running there.
    """
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        reason = f"torch is not installed ({exc}); install the 'torch' extra"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
