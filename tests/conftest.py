"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from crmify.backends import locmem
from tests.doubles import Enqueued
from tests.factories import PROFILE_SETTINGS


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


@pytest.fixture
def configure(settings: Any) -> Callable[..., None]:
    """Merge keys into ``settings.CRMIFY`` for one test; crmify re-wires its receivers at once."""

    def apply(**overrides: Any) -> None:
        settings.CRMIFY = {**settings.CRMIFY, **overrides}

    return apply


@pytest.fixture
def profile_leads(configure: Callable[..., None]) -> None:
    """Leads are ``UserProfile`` rows mapped by the test app's mapper; ``Subscription`` moves status."""
    configure(**PROFILE_SETTINGS)


@pytest.fixture
def enqueued(configure: Callable[..., None]) -> Iterator[Enqueued]:
    """Switch crmify to the dummy Tasks backend and hand back what it recorded."""
    configure(TASK_BACKEND="dummy")
    recorder = Enqueued()
    recorder.clear()
    yield recorder
    recorder.clear()
