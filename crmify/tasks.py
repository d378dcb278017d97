"""Every crmify task, where Tasks backends find them: ``crmify.tasks.process_lead_task`` and the rest.

Each task is declared beside the code it runs (``crmify.queue.crmify_task`` keeps this module's path on
it, the path stored with every task queued by 1.x and since) and is enqueued through ``crmify.queue`` with
``.using(backend=TASK_BACKEND, queue_name=TASK_QUEUE)``, so they run on any ``django.tasks`` backend: the
database worker, RQ, Celery, or the immediate backend. Schedule ``sweep_task`` and ``pull_task`` from here
(cron) if the Tasks backend cannot run a task later.
"""

from __future__ import annotations

from crmify.backfill import backfill_chunk_task
from crmify.poller import pull_task
from crmify.sweeper import sweep_task
from crmify.webhook_worker import apply_webhook_task
from crmify.worker import probe_crm_task, process_lead_task, process_leads_task

__all__ = [
    "apply_webhook_task",
    "backfill_chunk_task",
    "probe_crm_task",
    "process_lead_task",
    "process_leads_task",
    "pull_task",
    "sweep_task",
]
