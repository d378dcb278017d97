"""Wires crmify's receivers to exactly the models ``CRMIFY`` names, and re-wires when the settings change;
declares the signals crmify sends to the site (:data:`lead_changed_in_crm`, :data:`lead_deleted_in_crm`).

Connected from ``CrmifyConfig.ready()``: ``LEAD_MODEL`` (save and delete), ``LEAD_STATUS_MODEL`` (save) and
every model the mapper's ``__`` paths reach (a ``UserProfile`` lead whose name comes from
``user__first_name`` is re-mapped when its ``User`` is saved). No other model's saves reach crmify.
Receivers never do network I/O: they record on the lead and queue after commit.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.db.models import Q
from django.db.models.signals import post_delete, post_migrate, post_save
from django.dispatch import Signal

from crmify.compat import task_started
from crmify.conf import crmify_settings
from crmify.loading import get_lead_model, get_mapper, get_status_model, walk_path
from crmify.queue import TASKS_MODULE
from crmify.sweeper import start_sweeping
from crmify.tracking import source_deleted, track, track_saved

logger = logging.getLogger("crmify")

_connected: list[tuple[Any, Callable[..., None], type[models.Model]]] = []

# -- what crmify tells the site ----------------------------------------------------------------------

lead_changed_in_crm = Signal()
"""Sent when a change made in the CRM (a salesperson's) was applied to a lead: ``sender`` is ``Lead``,
``lead`` the lead with its new values, ``changes`` ``{field: (old, new)}`` by ``CRM_OWNED_FIELDS`` name
(``"status"``, ``"custom_fields__plan"``), ``via`` ``"poll"`` or ``"webhook"``.

Sent by ``crmify.inbound.apply_changes`` once per lead per applied change, after the transaction that
applied it commits, with ``send_robust``: a receiver's exception is logged and does not stop the others.
Nothing is pushed back to the CRM, even when a receiver saves the lead's source row to match (the demo
turns off its ``sales_contact`` when a lead is disqualified in the CRM)."""

lead_deleted_in_crm = Signal()
"""Sent when a lead's record was deleted in the CRM (a poll, a webhook): ``sender`` is ``Lead``, ``lead``
the lead (now a tombstone marked deleted in the CRM, which saves do not re-create until staff re-sync it),
``via`` ``"poll"``, ``"webhook"``, or ``"push"`` (the CRM answered 404 to an update). Sent after commit,
with ``send_robust``, by ``crmify.inbound`` (and the worker, for ``"push"``)."""


def on_lead_model_saved(
    sender: type[models.Model],
    instance: models.Model,
    created: bool = False,
    raw: bool = False,
    **kwargs: Any,
) -> None:
    if raw or not crmify_settings.AUTO_SYNC:
        return
    track_saved(instance, created=created)


def on_lead_model_deleted(
    sender: type[models.Model], instance: models.Model, **kwargs: Any
) -> None:
    if crmify_settings.AUTO_SYNC:
        source_deleted(instance)


def on_status_model_saved(
    sender: type[models.Model], instance: Any, raw: bool = False, **kwargs: Any
) -> None:
    if raw or not crmify_settings.AUTO_SYNC:
        return
    result = instance.lead_status()
    if result:
        lead_instance, status = result
        track(lead_instance, status=status)


def related_receiver(lookups: list[str], lookups_to_new: list[str]) -> Callable[..., None]:
    """A receiver that re-maps the ``LEAD_MODEL`` rows reaching the saved instance through ``lookups``.

    A newly created instance is looked for only through ``lookups_to_new`` (see
    :func:`reaches_new_rows`): a ``UserProfile`` lead mapped from ``user__first_name`` has no profile
    pointing at a ``User`` being created, so that create runs no query at all.
    """

    def on_related_saved(
        sender: type[models.Model],
        instance: models.Model,
        created: bool = False,
        raw: bool = False,
        **kwargs: Any,
    ) -> None:
        if raw or not crmify_settings.AUTO_SYNC:
            return
        condition = Q()
        for lookup in lookups_to_new if created else lookups:
            condition |= Q(**{lookup: instance})
        if not condition:
            return
        for row in get_lead_model()._default_manager.filter(condition).distinct():
            track_saved(row)

    return on_related_saved


def reaches_new_rows(lead_model: type[models.Model], lookup: str) -> bool:
    """Whether a ``LEAD_MODEL`` row can reach, through ``lookup``, a row that was just created.

    Not when the lookup's last step is a foreign key, one-to-one or many-to-many field declared on the
    model before it (``user`` of a profile): no row can point at a row that did not exist, and the
    many-to-many rows of a new row are added after its save. A reverse step (a ``Profile`` created
    for an existing ``User`` lead, ``profile__company``) can.
    """
    model: Any = lead_model
    field: Any = None
    for part in lookup.split("__"):
        field = model._meta.get_field(part)
        model = field.related_model
    return not (field is not None and (field.concrete or field.many_to_many))


def _connect(signal: Any, receiver: Callable[..., None], sender: type[models.Model]) -> None:
    signal.connect(
        receiver,
        sender=sender,
        weak=False,
        dispatch_uid=f"crmify:{id(receiver)}:{sender._meta.label}",
    )
    _connected.append((signal, receiver, sender))


def disconnect_receivers() -> None:
    while _connected:
        signal, receiver, sender = _connected.pop()
        signal.disconnect(
            receiver, sender=sender, dispatch_uid=f"crmify:{id(receiver)}:{sender._meta.label}"
        )


def connect_receivers() -> None:
    """(Re)connect the receivers for the current settings; a broken setting connects nothing (the system
    checks report it)."""
    disconnect_receivers()
    try:
        lead_model = get_lead_model()
        mapper = get_mapper()
        status_model = get_status_model()
        related: dict[type[models.Model], list[str]] = defaultdict(list)
        for source, _, _ in mapper.mappings():
            if isinstance(source, str):
                for prefix, model in walk_path(lead_model, source):
                    if prefix not in related[model]:
                        related[model].append(prefix)
    except ImproperlyConfigured as exc:
        logger.warning("crmify: not syncing, the configuration is broken: %s", exc)
        return
    _connect(post_save, on_lead_model_saved, lead_model)
    _connect(post_delete, on_lead_model_deleted, lead_model)
    if status_model is not None:
        _connect(post_save, on_status_model_saved, status_model)
    for model, lookups in related.items():
        if model is not lead_model:
            to_new = [lookup for lookup in lookups if reaches_new_rows(lead_model, lookup)]
            _connect(post_save, related_receiver(lookups, to_new), model)


def on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting == "CRMIFY":
        connect_receivers()


setting_changed.connect(on_setting_changed, dispatch_uid="crmify:setting_changed")


def connect_sweep_schedule(app_config: Any) -> None:
    """Start the sweeps' own schedule (``crmify.sweeper.start_sweeping``) after ``migrate`` and whenever a
    worker starts a crmify task: no cron needed. Connected once from ``CrmifyConfig.ready()``."""
    post_migrate.connect(on_migrated, sender=app_config, dispatch_uid="crmify:post_migrate")
    task_started.connect(on_task_started, dispatch_uid="crmify:task_started")


def on_migrated(**kwargs: Any) -> None:
    _start_sweeping()


#: A worker looks for the sweep schedule at most this often (seconds): a look is a cache write.
SCHEDULE_LOOK_EVERY = 60.0
_next_look = 0.0


def on_task_started(task_result: Any = None, **kwargs: Any) -> None:
    global _next_look
    task_path = getattr(getattr(task_result, "task", None), "module_path", "")
    if str(task_path).startswith(TASKS_MODULE + ".") and time.monotonic() >= _next_look:
        _next_look = time.monotonic() + SCHEDULE_LOOK_EVERY
        _start_sweeping()


def _start_sweeping() -> None:
    # The site's migrate and the worker's task go on whatever happens here; the next task tries again.
    try:
        start_sweeping()
    except Exception:
        logger.exception("crmify: could not start the sweep schedule")
