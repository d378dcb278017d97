"""Tasks that queue themselves again every few seconds: crmify's own schedules, with no cron.

A :class:`Schedule` is one such series (the sweeps of ``crmify.sweeper``, declared there). Its task is
queued with the token of the schedule it belongs to as its last argument; before it works, the task calls
:meth:`Schedule.go_on`, which queues the next run ``interval`` seconds later under a new token, so a
worker that dies mid-run does not end the series. The live token is kept in the shared cache
(``crmify.crm_state.shared_cache``): a run whose token was replaced stops, so there is one series at a
time however many processes start one.

:func:`connect_schedules` (called once from ``CrmifyConfig.ready()``) starts every schedule after
``migrate`` (a fresh site, every deploy) and whenever a worker starts a crmify task, so a schedule starts
with the workers and comes back if its task was lost. A Tasks backend that cannot defer has no schedule:
the site runs the matching command from cron (the system checks say which).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from django.db.models.signals import post_migrate
from django.utils import timezone

from crmify.compat import task_started
from crmify.crm_state import shared_cache
from crmify.queue import TASKS_MODULE, backend_supports_defer, enqueue_task

if TYPE_CHECKING:
    from django.tasks import Task

logger = logging.getLogger("crmify")


@dataclass(frozen=True)
class Schedule:
    """One self-rescheduling series of ``task``: ``task(*args, token)`` every ``interval()`` seconds.

    ``interval`` is read on every use (None: no schedule; the work is left to cron), so a settings change
    takes effect at the next run. ``what`` names one run in log messages ("the sweep").
    """

    name: str
    task: Task[..., Any]
    interval: Callable[[], float | None]
    what: str
    args: tuple[Any, ...] = ()

    @property
    def key(self) -> str:
        """The shared cache's key holding the token of the one live series."""
        return f"crmify:{self.name}:schedule"

    def start(self) -> bool:
        """Start the series unless one is live: True if this call started it (its first run is due now)."""
        if self.interval() is None or not backend_supports_defer():
            return False
        token = uuid.uuid4().hex
        try:
            if not shared_cache().add(self.key, token, timeout=self.lifetime()):
                return False
        except DatabaseError:
            # The database cache's table is made after the first migrate: the first run adopts the series.
            logger.info("crmify: the schedule of %s started without the shared cache", self.what)
        return enqueue_task(self.task, *self.args, token, run_after=timezone.now(), what=self.what)

    def go_on(self, token: str) -> bool:
        """Queue the run after this one of the series ``token``, if it is still the live one (or none
        is): called by the task first. False: another series replaced this one, and this run stops."""
        cache = shared_cache()
        if cache.get(self.key) not in (None, token):
            return False
        interval = self.interval()
        if interval is None:
            return True  # the work was left to cron since the series started: this run is its last
        following = uuid.uuid4().hex
        cache.set(self.key, following, timeout=self.lifetime())
        enqueue_task(
            self.task,
            *self.args,
            following,
            run_after=timezone.now() + timedelta(seconds=interval),
            what=f"the next {self.what.removeprefix('the ')}",
        )
        return True

    def lifetime(self) -> float:
        """How long a series counts as live without a run: a few intervals, so one late run (a worker
        busy with a long task) does not start a second series beside it."""
        return 3 * (self.interval() or 0) + 120


_schedules: list[Schedule] = []


def connect_schedules(app_config: Any, *schedules: Schedule) -> None:
    """Start ``schedules`` after ``migrate`` and whenever a worker starts a crmify task. Called once from
    ``CrmifyConfig.ready()``."""
    _schedules[:] = schedules
    post_migrate.connect(on_migrated, sender=app_config, dispatch_uid="crmify:post_migrate")
    task_started.connect(on_task_started, dispatch_uid="crmify:task_started")


def on_migrated(**kwargs: Any) -> None:
    start_schedules()


#: A worker looks for the schedules at most this often (seconds): a look is a cache write.
SCHEDULE_LOOK_EVERY = 60.0
_next_look = 0.0


def on_task_started(task_result: Any = None, **kwargs: Any) -> None:
    global _next_look
    task_path = getattr(getattr(task_result, "task", None), "module_path", "")
    if str(task_path).startswith(TASKS_MODULE + ".") and time.monotonic() >= _next_look:
        _next_look = time.monotonic() + SCHEDULE_LOOK_EVERY
        start_schedules()


def start_schedules() -> None:
    """Start each connected schedule that is not live. The site's migrate and the worker's task go on
    whatever happens here; the next task tries again."""
    for schedule in _schedules:
        try:
            schedule.start()
        except Exception:
            logger.exception("crmify: could not start the schedule of %s", schedule.what)
