"""Hands crmify's tasks to Django's Tasks framework, on the backend and queue ``CRMIFY`` names.

Knows no task of its own: each task is declared with :func:`crmify_task` beside the code it runs (the
worker's, the sweeper's, the backfill's) and queued through :func:`enqueue_task` or :func:`enqueue_on_commit`.
An enqueue that fails (a broker down) is logged and left to the sweeper: the ``Lead`` row is the outbox, so
nothing is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, router, transaction

from crmify.compat import InvalidTaskBackend, task, task_backends
from crmify.conf import crmify_settings

if TYPE_CHECKING:
    from django.tasks import Task

logger = logging.getLogger("crmify")

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Where every crmify task is importable from, and the path Tasks backends store for it.
TASKS_MODULE = "crmify.tasks"


def crmify_task(function: Callable[_P, _R]) -> Task[_P, _R]:
    """Declare a crmify task beside the code it runs, under the path ``crmify.tasks.<name>``.

    A Tasks backend stores a task by its function's module path (django-tasks-db's ``task_path``, an RQ
    job's function) and imports it again to run it. Every task queued so far, on sites' databases and
    brokers, was stored under ``crmify.tasks``, which re-exports each task: keeping that path here lets
    the task live with its code (no import circle through ``crmify.tasks``) while old and new rows run.
    """
    function.__module__ = TASKS_MODULE
    return task(function)


def backend_supports_defer() -> bool:
    """Whether the configured Tasks backend can run a task later (``run_after``)."""
    return bool(task_backends[crmify_settings.TASK_BACKEND].supports_defer)


def enqueue_task(
    task: Task[..., Any],
    *args: Any,
    run_after: datetime | None = None,
    reraise: bool = False,
    what: str = "a task",
) -> bool:
    """Queue ``task(*args)`` on crmify's Tasks backend and queue, now or at ``run_after``.

    Returns False when nothing was queued: the backend cannot defer, or the enqueue failed (logged as
    "could not enqueue ``what``", unless ``reraise``).
    """
    try:
        configured = task.using(
            backend=crmify_settings.TASK_BACKEND, queue_name=crmify_settings.TASK_QUEUE
        )
        if run_after is not None:
            if not backend_supports_defer():
                return False
            configured = configured.using(run_after=run_after)
        configured.enqueue(*args)
    except Exception:
        if reraise:
            raise
        logger.exception("crmify: could not enqueue %s", what)
        return False
    return True


def waiting_in_queue(lead_ids: Collection[int], tasks: Collection[Task[..., Any]]) -> set[int]:
    """The leads among ``lead_ids`` that have one of ``tasks`` waiting in crmify's queue (due or deferred);
    each of ``tasks`` takes a lead id, or a list of them, as its first argument.

    Called by the sweeper, which leaves them alone: queueing a lead again because it waited longer than
    ``SWEEP_PENDING_AFTER`` behind a long backlog only makes the backlog longer, pass after pass. Known for
    the database Tasks backend, whose task rows crmify can read; for any other backend the answer is "none"
    and the sweeper queues them all, as before. A task a worker took and never finished (the worker died)
    is not waiting: its lead is queued again.
    """
    if not lead_ids or not stores_tasks_in(None):
        return set()
    from django_tasks_db.models import DBTaskResult

    wanted = set(lead_ids)
    waiting: set[int] = set()
    rows = DBTaskResult.objects.filter(
        status="READY",
        backend_name=crmify_settings.TASK_BACKEND,
        task_path__in=[queued.module_path for queued in tasks],
    ).values_list("args_kwargs", flat=True)
    for args_kwargs in rows.iterator():
        args = args_kwargs.get("args") or [None]
        ids = args[0] if isinstance(args[0], list) else [args[0]]
        waiting.update(wanted.intersection(ids))
    return waiting


def higher_priority_waiting(priority: int) -> bool:
    """Whether a task of a priority above ``priority`` is due in crmify's queue.

    Called between leads by the backfill's send task (``crmify.worker``), which then hands its worker
    back so a live sign-up is not stuck behind a chunk. Known for the database Tasks backend, whose rows
    crmify can read (one indexed ``EXISTS``); for any other backend the answer is "no", and a site runs a
    worker of its own for ``TASK_QUEUE`` (README, "Production").
    """
    if not stores_tasks_in(None):
        return False
    from django_tasks_db.models import DBTaskResult

    return (
        DBTaskResult.objects.ready()
        .filter(
            backend_name=crmify_settings.TASK_BACKEND,
            queue_name=crmify_settings.TASK_QUEUE,
            priority__gt=priority,
        )
        .exists()
    )


def stores_tasks_in(using: str | None) -> bool:
    """Whether the configured Tasks backend keeps its tasks in the database ``using``.

    True for django-tasks-db's ``DatabaseBackend`` on the same database as the leads: a task row written
    in the site's transaction commits or rolls back with the lead's row, so it needs no ``on_commit``.
    """
    try:
        from django_tasks_db.backend import DatabaseBackend
    except ImportError:  # pragma: no cover - a site on another Tasks backend only
        return False
    try:
        backend = task_backends[crmify_settings.TASK_BACKEND]
    except InvalidTaskBackend:
        return False  # crmify.E040 says so; enqueue_lead logs it and the lead waits for the sweeper
    if not isinstance(backend, DatabaseBackend):
        return False
    from django_tasks_db.models import DBTaskResult

    return router.db_for_write(DBTaskResult) == (using or DEFAULT_DB_ALIAS)


def enqueue_on_commit(
    task: Task[..., Any], *args: Any, using: str | None = None, what: str = "a task"
) -> None:
    """Queue ``task(*args)`` with the current transaction: a rollback queues nothing.

    On the database Tasks backend the task row is written now, inside the transaction (in a savepoint,
    so a failed enqueue leaves the caller's transaction usable): one commit covers the caller's rows and
    its task, and no enqueue can be lost between commit and ``on_commit``. Any other backend (a broker
    outside the database, the immediate backend) is called on commit.
    """
    if stores_tasks_in(using) and connections[using or DEFAULT_DB_ALIAS].in_atomic_block:
        try:
            with transaction.atomic(using=using):
                enqueue_task(task, *args, reraise=True)
        except Exception:
            logger.exception("crmify: could not enqueue %s", what)
        return
    transaction.on_commit(partial(enqueue_task, task, *args, what=what), using=using)
