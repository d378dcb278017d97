"""Fixtures for the reliability tests; the worker-process helpers live in ``tests.reliability.processes``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.processes import require_postgres, require_redis


@pytest.fixture
def postgres_only() -> None:
    """Skip outside the PostgreSQL pass (decided by the configured database, not a missing server)."""
    require_postgres()


@pytest.fixture
def redis_db() -> Iterator[Any]:
    """The tests' own Redis database, empty before and after the test (RQ's queues, the shared cache)."""
    client = require_redis()
    yield client
    client.flushdb()
