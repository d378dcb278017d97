"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from crmify.backends import locmem


def service_required(name: str, reason: str) -> None:
    """Skip (on a developer's machine) or fail (in CI, where ``CI`` is set) when a service is missing."""
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} not available: {reason}")


@pytest.fixture(autouse=True)
def _clean_locmem() -> Iterator[None]:
    locmem.reset()
    yield
    locmem.reset()
