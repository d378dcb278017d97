"""The Tasks framework's entry points; thin on purpose, the work lives in the engine modules.

Enqueued through ``crmify.queue`` with ``.using(backend=TASK_BACKEND, queue_name=TASK_QUEUE)``, so they run
on any ``django.tasks`` backend: the database worker, RQ, Celery, or the immediate backend.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from crmify.compat import task


@task
def process_lead_task(lead_id: int) -> str:
    """Sync or delete one lead, whichever it is waiting for."""
    from crmify.worker import process_lead

    return process_lead(lead_id)


@task
def sweep_task(drift: bool = False) -> dict[str, Any]:
    """One sweep (see ``crmify.sweeper``); schedule it every few minutes."""
    from crmify.sweeper import sweep

    return asdict(sweep(drift=drift))
