"""How leads read in the admin: the sync-state badge, relative times, error excerpts and the links out.

Called by ``LeadAdmin``'s columns and read-only fields. Nothing here queries the database per lead or
calls the CRM: links are built from the backend's ``record_url`` (pure) and the content-type cache.
``admin_path`` and ``admin_url`` route and reverse the Lead admin's own pages for ``lead``, ``backfill``,
``views`` and ``import_export``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.exceptions import ImproperlyConfigured
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.timesince import timesince
from django.utils.translation import gettext as _

from crmify import api
from crmify.backends.base import BaseBackend
from crmify.models import Lead, SyncState
from crmify.tracking import source_model

#: How much of the last error the changelist shows closed; one click opens the whole message in place.
ERROR_EXCERPT_LENGTH = 60


def _url_name(model_admin: admin.ModelAdmin[Any], name: str) -> str:
    """``<app>_<model>_<name>``, Django's pattern for a model admin's URL names (without the site)."""
    return f"{model_admin.opts.app_label}_{model_admin.opts.model_name}_{name}"


def admin_path(
    model_admin: admin.ModelAdmin[Any], route: str, view: Callable[..., Any], name: str
) -> URLPattern:
    """For ``get_urls`` of ``LeadAdmin`` and the backfill: ``view(model_admin, request, ...)`` at ``route``
    through the site's ``admin_view`` (staff login, CSRF, no caching), named for :func:`admin_url`."""
    return path(
        route,
        model_admin.admin_site.admin_view(partial(view, model_admin)),
        name=_url_name(model_admin, name),
    )


def admin_url(model_admin: admin.ModelAdmin[Any], name: str, *args: Any) -> str:
    """The URL of ``model_admin``'s page ``name`` (``"change"``, ``"backfill_run"``...) on its site."""
    return reverse(f"{model_admin.admin_site.name}:{_url_name(model_admin, name)}", args=args)


def state_badge(
    state: str, *, waiting_for_crm: bool = False, deleted_in_crm: bool = False
) -> SafeString:
    """A coloured badge that also says the state in words (readable without colour); a lead waiting for
    the CRM to answer again says so, and so does one a salesperson deleted in the CRM."""
    label = SyncState(state).label if state in SyncState.values else state
    if waiting_for_crm:
        label = _("%s, waiting for the CRM") % label
    if deleted_in_crm:
        label = _("Deleted in the CRM")
    return format_html('<span class="crmify-badge crmify-badge--{}">{}</span>', state, label)


def exact_time(value: datetime) -> str:
    return date_format(timezone.localtime(value), "DATETIME_FORMAT")


def relative_time(value: datetime | None) -> SafeString | str:
    """ "3 hours ago", with the exact time on hover; "-" when there is no time."""
    if value is None:
        return "-"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        exact_time(value),
        _("%(delta)s ago") % {"delta": timesince(value)},
    )


def error_details(text: str) -> SafeString | str:
    """The changelist's last-error cell: the start of the first line, and the whole message one click
    away (a ``<details>`` that opens in place and wraps, so it reads at any width without JavaScript)."""
    if not text:
        return ""
    whole = text.strip()
    first_line = whole.splitlines()[0]
    excerpt = Truncator(first_line).chars(ERROR_EXCERPT_LENGTH)
    if excerpt == whole:
        return format_html('<span class="crmify-error">{}</span>', whole)
    return format_html(
        '<details class="crmify-error"><summary>{}</summary><div class="crmify-error-whole">{}</div>'
        "</details>",
        excerpt,
        whole,
    )


def configured_backend() -> BaseBackend | None:
    """The CRM backend for links and the banner, or None when ``BACKEND`` cannot be built (the system
    checks and the banner say why; a page listing leads must still render)."""
    try:
        return api.crm_backend()
    except ImproperlyConfigured:
        return None


def crm_record_url(backend: BaseBackend | None, external_id: str) -> str | None:
    """The CRM's own page for a lead, if the backend offers one (``record_url`` is pure, no I/O)."""
    if backend is None or not external_id:
        return None
    url = backend.record_url(external_id)
    return str(url) if url else None


def crm_id_link(backend: BaseBackend | None, external_id: str) -> SafeString | str:
    """The CRM id, linked to the CRM's page in a new tab when the backend gives one."""
    url = crm_record_url(backend, external_id)
    if url is None:
        return external_id
    return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, external_id)


def deleted_in_crm_text(lead: Lead) -> str:
    """What the lead's page says of a record a salesperson deleted in the CRM: when, and how to bring
    it back."""
    if lead.deleted_in_crm_at is None:
        return "-"
    return _(
        "Deleted in the CRM on %(when)s. Saves and backfills do not create it again; "
        "\u201cRe-sync\u201d creates a new record there."
    ) % {"when": exact_time(lead.deleted_in_crm_at)}


def source_admin_url(admin_site: admin.AdminSite, lead: Lead) -> str | None:
    """The source row's change page in ``admin_site``, when its model is registered there.

    Like Django's own links to related objects, the target page checks the user's permission.
    """
    model = source_model(lead)
    if model is None or not lead.source_id or not admin_site.is_registered(model):
        return None
    opts = model._meta
    try:
        return reverse(
            f"{admin_site.name}:{opts.app_label}_{opts.model_name}_change",
            args=[quote(lead.source_id)],
        )
    except NoReverseMatch:
        return None


def source_link(admin_site: admin.AdminSite, lead: Lead) -> SafeString | str:
    """The source row named by model and id, linked to its admin page when it has one."""
    model = source_model(lead)
    if model is None:
        return "-"
    text = f"{model._meta.verbose_name} {lead.source_id}"
    url = source_admin_url(admin_site, lead)
    return format_html('<a href="{}">{}</a>', url, text) if url else text


def refusal_text(lead: Lead) -> SafeString | str:
    """The lead page's "status change refused": which automatic change the funnel refused, and when."""
    if not lead.status_refused:
        return "—"
    return format_html(
        "{} <span class='crmify-quiet'>({}; {})</span>",
        _("%(refused)s refused: it would have moved the lead back from %(status)s.")
        % {"refused": lead.status_refused, "status": lead.status},
        relative_time(lead.status_refused_at),
        _("staff may force it with the action “Force a status…”"),
    )


def status_with_refusal(lead: Lead) -> SafeString | str:
    """The changelist's status column: the status, marked when an automatic change back was refused."""
    if not lead.status_refused:
        return lead.status
    return format_html(
        "{} <span class='crmify-refused' title='{}'>⚠ {}</span>",
        lead.status,
        _("An automatic change to %(refused)s was refused: it would have moved the lead back.")
        % {"refused": lead.status_refused},
        _("kept; refused %(refused)s") % {"refused": lead.status_refused},
    )
