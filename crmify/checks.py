"""System checks for every mistake a site can make in ``CRMIFY``; each message has an id and a hint.

Registered by ``CrmifyConfig.ready()``; run by ``manage.py check`` and before ``runserver``/``migrate``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management.commands.migrate import Command as MigrateCommand
from django.db import connections, router

from crmify.backends import build_backend, load_backend_class
from crmify.backends.base import BaseBackend
from crmify.compat import InvalidTaskBackend, task_backends
from crmify.conf import CONFLICT_WINNER_CHOICES, DEFAULTS, ON_DELETE_CHOICES, crmify_settings
from crmify.loading import get_lead_model, get_mapper_class, get_status_model, walk_path
from crmify.mappers import LeadModelFieldMapper
from crmify.mixins import LeadStatusMixin
from crmify.models import CUSTOM_FIELD_PREFIX, MAPPABLE_FIELDS, Lead
from crmify.poller import HEAVY_SHARE, PullCost
from crmify.transitions import status_key
from crmify.upgrade import foreign_migration_files, pending_migrations, schema_problems
from crmify.webhook_auth import SIGNATURE_VERSIONS, UNTIMED_VERSIONS

SEED_EXAMPLE = "see the settings table in django-crmify's README"


def _error(msg: str, hint: str, code: int) -> checks.Error:
    return checks.Error(msg, hint=hint, id=f"crmify.E{code:03d}")


@checks.register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    raw = getattr(settings, "CRMIFY", {})
    if not isinstance(raw, Mapping):
        return [
            _error("CRMIFY must be a dict.", f"Set CRMIFY = {{'BACKEND': ...}}; {SEED_EXAMPLE}.", 1)
        ]
    messages: list[checks.CheckMessage] = [
        checks.Warning(
            f"CRMIFY has an unknown key {key!r}; it is ignored.",
            hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
            id="crmify.W001",
        )
        for key in raw
        if key not in DEFAULTS
    ]
    messages += _check_values()
    messages += _check_quota_values()
    messages += _check_pull_values()
    messages += _check_inbound_values()
    messages += _check_webhooks()
    # A backend is built from BACKEND_OPTIONS and BACKEND_AUTH: not when E005 (or E106) says they are broken.
    messages += _check_backend(
        build=not any(m.id in ("crmify.E005", "crmify.E106") for m in messages)
    )
    messages += _check_models_and_mapper()
    messages += _check_tasks()
    messages += _check_apps()
    return messages


#: Settings read with ``int()``: a fraction would be cut short (0.5 attempts is 0), so only an int passes.
INTEGER_SETTINGS = ("MAX_ATTEMPTS", "LEDGER_RETENTION_DAYS")
#: Settings in seconds, where a fraction means what it says.
SECONDS_SETTINGS = (
    "RETRY_BACKOFF_BASE",
    "RETRY_BACKOFF_MAX",
    "SWEEP_PENDING_AFTER",
    "SWEEP_INTERVAL",
    "CLAIM_TIMEOUT",
)
#: Settings that may be None, and what None means.
NONE_ALLOWED = {
    "LEDGER_RETENTION_DAYS": "None keeps everything.",
    "SWEEP_INTERVAL": "None leaves sweeping to cron (manage.py crmify_sync).",
}


def _check_values() -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for key in (*INTEGER_SETTINGS, *SECONDS_SETTINGS):
        value = crmify_settings.get(key)
        if value is None and key in NONE_ALLOWED:
            continue
        whole = key in INTEGER_SETTINGS
        kind = int if whole else int | float
        if isinstance(value, kind) and not isinstance(value, bool) and value > 0:
            continue
        if whole:
            msg = f"CRMIFY[{key!r}] must be a positive whole number (an int), not {value!r}."
            hint = f"Give an int above 0, without a fraction or quotes; the default is {DEFAULTS[key]}."
        else:
            msg = f"CRMIFY[{key!r}] must be a positive number, not {value!r}."
            hint = f"The default is {DEFAULTS[key]}."
        if key in NONE_ALLOWED:
            hint += " " + NONE_ALLOWED[key]
        messages.append(_error(msg, hint, 2))
    if crmify_settings.get("ON_DELETE") not in ON_DELETE_CHOICES:
        messages.append(
            _error(
                f"CRMIFY['ON_DELETE'] is {crmify_settings.get('ON_DELETE')!r}.",
                'Use "delete" (delete the CRM lead, keep a tombstone) or "keep".',
                3,
            )
        )
    for key in ("LEAD_NEW_STATUS", "LEAD_CONVERTED_STATUS", "LEAD_DEAD_STATUS"):
        value = crmify_settings.get(key)
        if not isinstance(value, str) or not value.strip():
            messages.append(
                _error(
                    f"CRMIFY[{key!r}] must be a status name.",
                    f"The default is {DEFAULTS[key]!r}.",
                    4,
                )
            )
    messages += _check_status_order()
    for key in ("BACKEND_OPTIONS", "BACKEND_AUTH"):
        if not isinstance(crmify_settings.get(key) or {}, Mapping):
            messages.append(
                _error(f"CRMIFY[{key!r}] must be a dict.", "Give a dict or leave it out.", 5)
            )
    return messages


#: ``BACKEND_OPTIONS`` of the HTTP backends that pace and count calls, and what each must be.
PACING_OPTIONS = {
    "BURST": "a whole number of calls, 1 or more (2 lets a lookup and its create go out together)",
    "QUOTA_WINDOW_SECONDS": "a number of seconds above 0 (86400: a day)",
}


def _check_quota_values() -> list[checks.CheckMessage]:
    """``LIVE_QUOTA_SHARE`` (E105) and the pacing options of ``BACKEND_OPTIONS`` (E106)."""
    messages: list[checks.CheckMessage] = []
    share = crmify_settings.get("LIVE_QUOTA_SHARE")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
        messages.append(
            _error(
                f"CRMIFY['LIVE_QUOTA_SHARE'] must be a fraction from 0 up to (not including) 1, "
                f"not {share!r}.",
                f"It is the share of each day's CRM quota a backfill leaves to live sign-ups and "
                f"changes; the default is {DEFAULTS['LIVE_QUOTA_SHARE']} (0 lets a backfill spend it all).",
                105,
            )
        )
    options = crmify_settings.get("BACKEND_OPTIONS") or {}
    if not isinstance(options, Mapping):
        return messages  # E005
    for key, expected in PACING_OPTIONS.items():
        value = options.get(key)
        if value is None:
            continue
        whole = key == "BURST"
        kind = int if whole else int | float
        if (
            isinstance(value, bool)
            or not isinstance(value, kind)
            or not (value >= 1 if whole else value > 0)
        ):
            messages.append(
                _error(
                    f"CRMIFY['BACKEND_OPTIONS'][{key!r}] is {value!r}.",
                    f"Give {expected}, or leave it out.",
                    106,
                )
            )
    return messages


#: The polling settings (``crmify.poller``): seconds, or None; their check ids and what None means.
PULL_SETTINGS = {
    "PULL_INTERVAL": (
        115,
        "None turns polling off (webhooks alone, or manage.py crmify_pull from cron).",
    ),
    "PULL_DELETES_INTERVAL": (
        116,
        "None turns the scan for records deleted in the CRM off (webhooks that announce deletes).",
    ),
}


def _check_pull_values() -> list[checks.CheckMessage]:
    """``PULL_INTERVAL`` (E115) and ``PULL_DELETES_INTERVAL`` (E116): a positive number of seconds or None."""
    messages: list[checks.CheckMessage] = []
    for key, (code, none_means) in PULL_SETTINGS.items():
        value = crmify_settings.get(key)
        if value is None or (
            isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        ):
            continue
        messages.append(
            _error(
                f"CRMIFY[{key!r}] must be a positive number of seconds or None, not {value!r}.",
                f"The default is {DEFAULTS[key]}. {none_means}",
                code,
            )
        )
    return messages


def _check_inbound_values() -> list[checks.CheckMessage]:
    """What changes from the CRM may do: ``CRM_OWNED_FIELDS`` names lead fields (E110) and
    ``CONFLICT_WINNER`` is one of its choices (E111)."""
    messages: list[checks.CheckMessage] = []
    owned = crmify_settings.get("CRM_OWNED_FIELDS")
    fields_hint = (
        f"Name lead fields ({', '.join(MAPPABLE_FIELDS)}) or {CUSTOM_FIELD_PREFIX}<key> for a custom "
        f"field; the default is {DEFAULTS['CRM_OWNED_FIELDS']!r}."
    )
    if isinstance(owned, str) or not isinstance(owned, list | tuple):
        messages.append(
            _error(
                f"CRMIFY['CRM_OWNED_FIELDS'] must be a list of lead field names, not {owned!r}.",
                fields_hint,
                110,
            )
        )
    else:
        messages += [
            _error(
                f"CRMIFY['CRM_OWNED_FIELDS'] names {name!r}, which is not a lead field.",
                fields_hint,
                110,
            )
            for name in owned
            if not isinstance(name, str)
            or not (
                name in MAPPABLE_FIELDS
                or (name.startswith(CUSTOM_FIELD_PREFIX) and len(name) > len(CUSTOM_FIELD_PREFIX))
            )
        ]
    winner = crmify_settings.get("CONFLICT_WINNER")
    if winner not in CONFLICT_WINNER_CHOICES:
        messages.append(
            _error(
                f"CRMIFY['CONFLICT_WINNER'] is {winner!r}.",
                'Use "crm" (the default: the CRM wins for CRM_OWNED_FIELDS, the app for the rest) '
                'or "app" (the app wins for every field).',
                111,
            )
        )
    return messages


def _check_pull_cost(backend: BaseBackend) -> list[checks.CheckMessage]:
    """W116: polling with no change alone takes more than ``crmify.poller.HEAVY_SHARE`` of the daily quota
    the site configured (``DAILY_QUOTA``; ``crmify_check`` says the full cost with the CRM's own figure)."""
    interval = crmify_settings.get("PULL_INTERVAL")
    if not backend.supports_pull or any(m.id == "crmify.E115" for m in _check_pull_values()):
        return []
    cost = PullCost(
        interval=interval,
        deletes_interval=None,
        leads=0,
        listing_page_size=backend.listing_page_size,
        quota=backend.daily_quota(),
    )
    if not cost.heavy:
        return []
    return [
        checks.Warning(
            f"Polling the CRM every {interval:g} s costs {cost.calls_per_day:,} calls a day, "
            f"{cost.share:.0%} of the daily quota of {cost.quota:,}.",
            hint=f"Raise PULL_INTERVAL to {math.ceil(86400 / (cost.quota or 1) / HEAVY_SHARE):,} "
            "s or more, or set it to None and let webhooks bring the changes.",
            id="crmify.W116",
        )
    ]


def _check_webhooks() -> list[checks.CheckMessage]:
    """``WEBHOOK_SIGNATURE_VERSIONS``: known versions (E120), the replayable ones warned of (W121);
    ``WEBHOOK_AUTH`` a dict (E122). See ``crmify.webhook_auth``."""
    messages: list[checks.CheckMessage] = []
    versions = crmify_settings.get("WEBHOOK_SIGNATURE_VERSIONS")
    if isinstance(versions, str) or not isinstance(versions, list | tuple):
        unknown = [versions]
    else:
        unknown = [name for name in versions if name not in SIGNATURE_VERSIONS]
    if unknown:
        messages.append(
            _error(
                f"CRMIFY['WEBHOOK_SIGNATURE_VERSIONS'] must list HubSpot signature versions; "
                f"{unknown[0]!r} is not one.",
                f"List some of {', '.join(SIGNATURE_VERSIONS)}; the default is "
                f"{DEFAULTS['WEBHOOK_SIGNATURE_VERSIONS']!r}.",
                120,
            )
        )
    else:
        messages += [
            checks.Warning(
                f"CRMIFY['WEBHOOK_SIGNATURE_VERSIONS'] accepts {name}, which has no timestamp: a "
                "captured HubSpot webhook can be sent again later and is taken.",
                hint='Accept "v3" only (the default), unless your HubSpot app sends no v3 signature.',
                id="crmify.W121",
            )
            for name in versions
            if name in UNTIMED_VERSIONS
        ]
    if not isinstance(crmify_settings.get("WEBHOOK_AUTH") or {}, Mapping):
        messages.append(
            _error(
                "CRMIFY['WEBHOOK_AUTH'] must be a dict.",
                "Give {'SECRET': ...} (HubSpot) or {'USERNAME': ..., 'PASSWORD': ...} (Insightly), "
                "or leave it out and set CRMIFY_WEBHOOK_SECRET, or CRMIFY_WEBHOOK_USERNAME and "
                "CRMIFY_WEBHOOK_PASSWORD, in the environment.",
                122,
            )
        )
    return messages


def _check_status_order() -> list[checks.CheckMessage]:
    """``LEAD_STATUS_ORDER``: a list of status names (E090), none of them the new, converted or dead status,
    which have their places at the ends of the funnel already (E091)."""
    value = crmify_settings.get("LEAD_STATUS_ORDER")
    default = DEFAULTS["LEAD_STATUS_ORDER"]
    if (
        isinstance(value, str)
        or not isinstance(value, list | tuple)
        or not all(isinstance(name, str) and name.strip() for name in value)
    ):
        return [
            _error(
                f"CRMIFY['LEAD_STATUS_ORDER'] must be a list of status names, not {value!r}.",
                f"List the stages between the new and the converted status, first to last; "
                f"the default is {default!r}.",
                90,
            )
        ]
    ends = {
        status_key(crmify_settings.get(key)): key
        for key in ("LEAD_NEW_STATUS", "LEAD_CONVERTED_STATUS", "LEAD_DEAD_STATUS")
        if isinstance(crmify_settings.get(key), str)
    }
    return [
        _error(
            f"CRMIFY['LEAD_STATUS_ORDER'] lists {name!r}, which is {ends[status_key(name)]}.",
            "Leave it out: the new status comes first and the converted and dead ones last already.",
            91,
        )
        for name in value
        if status_key(name) in ends
    ]


def _check_backend(*, build: bool = True) -> list[checks.CheckMessage]:
    try:
        backend_class = load_backend_class()
    except ImproperlyConfigured as exc:
        return [
            _error(
                str(exc), "Give the dotted path of a class with sync_lead() and delete_lead().", 10
            )
        ]
    # E011 inspects the class the setting names, before it is built: user input, not the engine's backend.
    missing = [
        name
        for name in ("sync_lead", "delete_lead")
        if not callable(getattr(backend_class, name, None))
    ]
    if missing:
        return [
            _error(
                f"CRMIFY['BACKEND'] {crmify_settings.BACKEND!r} has no {' or '.join(missing)} method.",
                "A backend implements sync_lead(lead) -> str and delete_lead(lead_id) -> bool.",
                11,
            )
        ]
    if not build:
        return []
    try:
        backend = build_backend()
    except Exception as exc:  # a site's constructor may raise anything; a check must not crash
        return [
            _error(
                f"CRMIFY['BACKEND'] {crmify_settings.BACKEND!r} could not be built: {exc}",
                "Fix BACKEND_OPTIONS or BACKEND_AUTH; a plain backend class is built with no "
                "arguments, or with BACKEND_AUTH as keyword arguments if its constructor takes "
                "**kwargs.",
                12,
            )
        ]
    return [*backend.check(), *_check_pull_cost(backend)]


def _check_models_and_mapper() -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    try:
        lead_model = get_lead_model()
    except ImproperlyConfigured as exc:
        messages.append(
            _error(
                str(exc),
                "Give a model's dotted path (myapp.models.UserProfile) or app_label.ModelName.",
                20,
            )
        )
        lead_model = None
    try:
        status_model = get_status_model()
    except ImproperlyConfigured as exc:
        messages.append(
            _error(str(exc), "Give the model that mixes in crmify.mixins.LeadStatusMixin.", 21)
        )
    else:
        lead_status = getattr(status_model, "lead_status", None)
        # The mixin's own lead_status() raises NotImplementedError: every save of the model would fail.
        if status_model is not None and (
            not callable(lead_status) or lead_status is LeadStatusMixin.lead_status
        ):
            messages.append(
                _error(
                    f"LEAD_STATUS_MODEL {status_model._meta.label} does not implement lead_status().",
                    "Mix in crmify.mixins.LeadStatusMixin and implement lead_status().",
                    22,
                )
            )
    try:
        mapper = get_mapper_class()()
    except ImproperlyConfigured as exc:
        return [*messages, _error(str(exc), "Subclass crmify.mappers.LeadModelFieldMapper.", 30)]
    messages += _check_retired_mapper_methods(type(mapper))
    for source, target, _ in mapper.mappings():
        if target not in MAPPABLE_FIELDS and not target.startswith(CUSTOM_FIELD_PREFIX):
            messages.append(
                _error(
                    f"{type(mapper).__name__} maps to {target!r}, which is not a lead field.",
                    f"Lead fields: {', '.join(MAPPABLE_FIELDS)}, or {CUSTOM_FIELD_PREFIX}<name>.",
                    31,
                )
            )
        if lead_model is not None and isinstance(source, str):
            try:
                walk_path(lead_model, source)
            except ImproperlyConfigured as exc:
                messages.append(
                    _error(
                        f"{type(mapper).__name__} reads {source!r}: {exc}",
                        f"Use a field, property or method of {lead_model._meta.label}; cross relations with __.",
                        32,
                    )
                )
    return messages


#: Mapper methods 1.3.0 called and crmify does not (none is a method of ``LeadModelFieldMapper``, whose
#: methods are the hooks crmify calls), with what to override instead.
RETIRED_MAPPER_METHODS = {
    "apply_field_mapping": "crmify calls map(instance), which returns a MappedLead: override map() "
    "(call super().map() and change its values) or give a callable taking the row as a source.",
    "lookup_value": "crmify reads source paths itself: name a method or property of the model as the "
    "source, give a callable taking the row as a source, or override map(instance).",
    "create_lead": "crmify writes the Lead itself, and only when the mapped values changed: override "
    "map(instance) to change what it writes.",
    "update_lead": "crmify writes the Lead itself, and only when the mapped values changed: override "
    "map(instance) to change what it writes.",
}


def _check_retired_mapper_methods(
    mapper_class: type[LeadModelFieldMapper],
) -> list[checks.CheckMessage]:
    """``crmify.W030`` for each 1.3.0 mapper method the site's mapper defines: its code no longer runs."""
    own = [klass for klass in mapper_class.__mro__ if klass not in LeadModelFieldMapper.__mro__]
    return [
        checks.Warning(
            f"{mapper_class.__name__} overrides {name}(), which crmify no longer calls: "
            "that code does not run.",
            hint=hint,
            id="crmify.W030",
        )
        for name, hint in RETIRED_MAPPER_METHODS.items()
        if not hasattr(LeadModelFieldMapper, name) and any(name in vars(klass) for klass in own)
    ]


def _check_apps() -> list[checks.CheckMessage]:
    """crmify's admin renders django-import-export's templates: without its app the Lead list is a 500."""
    if apps.is_installed("django.contrib.admin") and not apps.is_installed("import_export"):
        return [
            _error(
                "crmify's admin needs 'import_export' in INSTALLED_APPS.",
                "Add 'import_export' to INSTALLED_APPS (django-import-export is installed with crmify).",
                6,
            )
        ]
    return []


def _check_tasks() -> list[checks.CheckMessage]:
    alias = crmify_settings.TASK_BACKEND
    try:
        backend = task_backends[alias]
    except InvalidTaskBackend:
        return [
            _error(
                f"CRMIFY['TASK_BACKEND'] is {alias!r}, but TASKS has no backend by that name.",
                "Add it to TASKS, e.g. {'default': {'BACKEND': 'django_tasks_db.DatabaseBackend'}}.",
                40,
            )
        ]
    messages: list[checks.CheckMessage] = []
    queue = crmify_settings.TASK_QUEUE
    if backend.queues and queue not in backend.queues:
        messages.append(
            _error(
                f"CRMIFY['TASK_QUEUE'] {queue!r} is not one of the QUEUES of task backend {alias!r}.",
                f"Add {queue!r} to its QUEUES or set TASK_QUEUE to one of {sorted(backend.queues)}.",
                41,
            )
        )
    if type(backend).__name__ == "ImmediateBackend":
        messages.append(
            checks.Warning(
                f"Task backend {alias!r} is the immediate backend: CRM calls run inside the request.",
                "Use django_tasks_db.DatabaseBackend with its db_worker (or another queue) in production.",
                id="crmify.W002",
            )
        )
    elif not backend.supports_defer:
        if crmify_settings.get("SWEEP_INTERVAL") is not None:
            messages.append(
                checks.Warning(
                    f"Task backend {alias!r} cannot run a task later, so the sweeps crmify schedules "
                    "itself (SWEEP_INTERVAL) never run.",
                    "Run manage.py crmify_sync from cron every few minutes and set SWEEP_INTERVAL to None.",
                    id="crmify.W065",
                )
            )
        if crmify_settings.get("PULL_INTERVAL") is not None and _backend_pulls():
            messages.append(
                checks.Warning(
                    f"Task backend {alias!r} cannot run a task later, so the polls of the CRM crmify "
                    "schedules itself (PULL_INTERVAL) never run.",
                    "Run manage.py crmify_pull from cron every minute and set PULL_INTERVAL to None.",
                    id="crmify.W115",
                )
            )
    return messages


def _backend_pulls() -> bool:
    """Whether the configured backend class reads changes back (``supports_pull``); False when it cannot
    be loaded (E010 says why)."""
    try:
        backend_class = load_backend_class()
    except ImproperlyConfigured:
        return False
    return issubclass(backend_class, BaseBackend) and backend_class.supports_pull


@checks.register()
def check_tables(
    app_configs: Any = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E061 for a migration file crmify does not ship; E060 when crmify's tables lack what the code reads.

    Not tagged ``database``, which plain ``check`` would leave out: a half-upgraded site must fail at
    ``check`` and ``runserver``, not in a user's request. It costs one introspection per database, and
    says nothing when a database cannot be reached or has no crmify table yet (before the first
    ``migrate``). ``migrate`` runs every check before it applies anything, and it is the fix: while
    crmify has migrations to apply, E060 is left out of its run.
    """
    leftovers = foreign_migration_files()
    if leftovers:
        # Django cannot even build its migration graph: say so before migrate fails on it.
        return [
            _error(
                f"{path} is not one of django-crmify's migrations.",
                "Delete it. django-crmify 1.3 sites generated it with makemigrations (the lead's "
                "anchor) and pip leaves it behind on upgrade; crmify 2 needs no migration of a "
                "site's own, and its migrate converts the 1.3 table.",
                61,
            )
            for path in leftovers
        ]
    messages: list[checks.CheckMessage] = []
    for alias in databases or list(connections):
        if not router.allow_migrate_model(alias, Lead):
            continue
        connection = connections[alias]
        problems = schema_problems(connection)
        if not problems:
            continue
        pending = pending_migrations(connection)
        if pending and _migrate_is_running():
            continue
        hint = (
            f"Run manage.py migrate (crmify's {', '.join(pending)} is not applied)."
            if pending
            else "Run manage.py migrate. crmify's migrations are all recorded as applied, so the "
            "table was changed outside them: compare it with manage.py sqlmigrate crmify."
        )
        messages.append(
            _error(
                f"crmify's tables on database {alias!r} are not in the shape this version needs: "
                f"{', '.join(problems)}.",
                hint,
                60,
            )
        )
    return messages


def _migrate_is_running() -> bool:
    """Whether these checks are ``migrate``'s own, run before it applies anything."""
    frame = sys._getframe(1)
    while frame is not None:
        if isinstance(frame.f_locals.get("self"), MigrateCommand):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False
