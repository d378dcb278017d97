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
def process_leads_task(lead_ids: list[int]) -> dict[str, int]:
    """Sync or delete each lead in turn: one task for a backfill chunk's leads (``crmify.backfill``).

    Each lead goes through ``process_lead`` as if queued alone (claim, ledger, retries queued one by
    one); a lead this task never reaches (its worker died) stays pending and the sweeper queues it.
    """
    from collections import Counter

    from crmify.worker import process_lead

    return dict(Counter(process_lead(lead_id) for lead_id in lead_ids))


@task
def sweep_task(drift: bool = False) -> dict[str, Any]:
    """One sweep (see ``crmify.sweeper``); schedule it every few minutes."""
    from crmify.sweeper import sweep

    return asdict(sweep(drift=drift))


@task
def backfill_chunk_task(run_id: int, checkpoint: str | None = None) -> dict[str, Any]:
    """One chunk of a backfill run, starting at ``checkpoint``; queues the next (see ``crmify.backfill``)."""
    from crmify.backfill import run_chunks

    return asdict(run_chunks(run_id, checkpoint))
