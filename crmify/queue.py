"""Hands leads to Django's Tasks framework, on the backend and queue ``CRMIFY`` names.

Called by the tracking code (after commit), the worker (follow-ups and retries), the sweeper and the public
API. An enqueue that fails (a broker down) is logged and left to the sweeper: the ``Lead`` row is the outbox,
so nothing is lost.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial

from django.db import transaction

from crmify.compat import task_backends
from crmify.conf import crmify_settings

logger = logging.getLogger("crmify")


def backend_supports_defer() -> bool:
    """Whether the configured Tasks backend can run a task later (``run_after``)."""
    return bool(task_backends[crmify_settings.TASK_BACKEND].supports_defer)


def enqueue_lead(lead_id: int, run_after: datetime | None = None) -> bool:
    """Queue the worker for ``lead_id`` now, or at ``run_after`` when the Tasks backend can defer.

    Returns False when nothing was queued: the backend cannot defer (the sweeper will pick the lead up when
    it is due) or the enqueue failed (logged; the sweeper retries it).
    """
    from crmify.tasks import process_lead_task

    try:
        task = process_lead_task.using(
            backend=crmify_settings.TASK_BACKEND, queue_name=crmify_settings.TASK_QUEUE
        )
        if run_after is not None:
            if not backend_supports_defer():
                return False
            task = task.using(run_after=run_after)
        task.enqueue(lead_id)
    except Exception:
        logger.exception("crmify: could not enqueue lead %s; the sweeper will retry", lead_id)
        return False
    return True


def enqueue_lead_on_commit(lead_id: int, using: str | None = None) -> None:
    """Queue ``lead_id`` once the current transaction commits; a rollback queues nothing."""
    transaction.on_commit(partial(enqueue_lead, lead_id), using=using)
