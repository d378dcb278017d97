"""crmify's tables: the ``Lead`` (the outbox of what the CRM should hold), the ledger of CRM calls and the
record of each backfill run.

A ``Lead`` points at its source row through a content type and the row's primary key as text, so any
``LEAD_MODEL`` works with crmify's own migrations alone: ``makemigrations`` in a site writes nothing here.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crmify.transitions import LeadQuerySet, SyncState

__all__ = [
    "CUSTOM_FIELD_PREFIX",
    "MAPPABLE_FIELDS",
    "BackfillRun",
    "Lead",
    "LedgerEntry",
    "PullCursor",
    "SyncState",
]

#: Lead fields a mapper may fill, in the order the admin shows them.
MAPPABLE_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "mobile_phone",
    "title",
    "company",
    "website",
    "street_address",
    "city",
    "state",
    "postcode",
    "country",
    "lead_source",
    "description",
    "status",
)

#: The prefix a mapping target takes to land in ``custom_fields``: ``"custom_fields__Signup_Source"``.
CUSTOM_FIELD_PREFIX = "custom_fields__"


class Lead(models.Model):
    """One person as the CRM should know them, with the state of getting them there.

    Its state moves only through the operations of :class:`crmify.transitions.LeadQuerySet`.
    """

    # No index of its own: the unique (source_type, source_id) index below starts with it.
    source_type = models.ForeignKey(
        ContentType,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    source_id = models.CharField(_("source id"), max_length=64, blank=True, default="")

    first_name = models.CharField(_("first name"), max_length=255, blank=True, default="")
    last_name = models.CharField(_("last name"), max_length=255, blank=True, default="")
    email = models.CharField(_("email"), max_length=254, blank=True, default="", db_index=True)
    phone = models.CharField(_("phone"), max_length=100, blank=True, default="")
    mobile_phone = models.CharField(_("mobile phone"), max_length=100, blank=True, default="")
    title = models.CharField(_("title"), max_length=255, blank=True, default="")
    company = models.CharField(_("company"), max_length=255, blank=True, default="")
    website = models.CharField(_("website"), max_length=255, blank=True, default="")
    street_address = models.CharField(_("street address"), max_length=255, blank=True, default="")
    city = models.CharField(_("city"), max_length=255, blank=True, default="")
    state = models.CharField(_("state"), max_length=255, blank=True, default="")
    postcode = models.CharField(_("postcode"), max_length=64, blank=True, default="")
    country = models.CharField(_("country"), max_length=255, blank=True, default="")
    lead_source = models.CharField(_("lead source"), max_length=255, blank=True, default="")
    description = models.TextField(_("description"), blank=True, default="")
    custom_fields = models.JSONField(_("custom fields"), default=dict, blank=True)
    status = models.CharField(_("status"), max_length=100, blank=True, default="")

    external_id = models.CharField(
        _("CRM id"), max_length=100, blank=True, default="", db_index=True
    )
    sync_state = models.CharField(
        _("sync state"), max_length=16, choices=SyncState.choices, default=SyncState.PENDING
    )
    tombstone = models.BooleanField(
        _("deleted from CRM"),
        default=False,
        help_text=_("Deleted from the CRM: saves do not re-create it until staff re-sync it."),
    )
    # Set when the CRM's record was deleted there (a poll, a webhook, a 404 on update): the lead is a
    # tombstone that saves and backfills do not re-create until staff re-sync it.
    deleted_in_crm_at = models.DateTimeField(
        _("deleted in the CRM"), null=True, blank=True, editable=False
    )
    # The CRM's own modification time of the record as last read back (crmify.inbound): a change read
    # again (a poll's overlap, a repeated webhook) is not applied twice.
    crm_modified_at = models.DateTimeField(
        _("changed in the CRM"), null=True, blank=True, editable=False
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True)
    # Set while the CRM as a whole does not answer (crmify.crm_state): the lead is sent when it answers
    # again, without using an attempt.
    waiting_for_crm = models.BooleanField(_("waiting for the CRM"), default=False, db_index=True)
    last_error = models.TextField(_("last error"), blank=True, default="")
    last_synced_at = models.DateTimeField(_("last synced"), null=True, blank=True)
    queued_at = models.DateTimeField(_("queued"), null=True, blank=True)
    fingerprint = models.CharField(_("fingerprint"), max_length=64, blank=True, default="")
    synced_fingerprint = models.CharField(
        _("fingerprint last synced"), max_length=64, blank=True, default=""
    )
    # The mapper's last output for the source row: a save that maps to the same output is a no-op,
    # checked with one narrow read (crmify.tracking.track_saved).
    source_fingerprint = models.CharField(
        _("fingerprint of the mapped source"), max_length=64, blank=True, default=""
    )
    synced_values = models.JSONField(_("values last synced"), default=dict, blank=True)
    # Set by the backfill when its listing of the CRM showed no lead with this e-mail: the first create
    # may skip the backend's lookup by e-mail (see crmify.backends.base.listing_says_absent).
    absent_from_crm_at = models.DateTimeField(
        _("not in the CRM as of"), null=True, blank=True, editable=False
    )
    # Values a django-crmify 1.3 lead held that this model has no field for (secondary_email, dob),
    # kept by the upgrade migration (crmify.upgrade). Never sent: 1.3 never sent them either.
    legacy_values = models.JSONField(
        _("kept from django-crmify 1.3"), default=dict, blank=True, editable=False
    )
    # An automatic status change the funnel refused (it would have moved the lead back; see
    # crmify.transitions.moves_back): staff see it on the lead and may force it.
    status_refused = models.CharField(
        _("status change refused"), max_length=100, blank=True, default="", editable=False
    )
    status_refused_at = models.DateTimeField(
        _("status change refused at"), null=True, blank=True, editable=False
    )
    # The backfill run that last queued this lead: the run's progress page counts its delivered leads.
    backfill_run = models.ForeignKey(
        "BackfillRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="leads",
        editable=False,
        verbose_name=_("last queued by backfill run"),
    )
    claim_token = models.CharField(max_length=32, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    # Every change of sync_state and its companion fields goes through these operations.
    objects = LeadQuerySet.as_manager()

    class Meta:
        verbose_name = _("lead")
        verbose_name_plural = _("leads")
        permissions = (
            ("sync_lead", _("Can sync leads to the CRM")),
            ("delete_from_crm", _("Can delete leads from the CRM")),
            ("change_lead_status", _("Can mark leads converted or dead")),
            ("preview_mapping", _("Can use the mapper preview")),
            ("force_lead_status", _("Can move a lead's status back in the funnel")),
        )
        ordering = ("-updated_at",)
        constraints = (
            # One lead per source row, and the index every save looks its lead up by. Not partial: SQLite
            # does not use a partial index for ``source_id = %s`` and would scan every lead instead. Leads
            # without a source (source_type NULL) do not collide: NULLs are distinct in a unique index.
            models.UniqueConstraint(
                fields=("source_type", "source_id"), name="crmify_lead_unique_source"
            ),
        )
        indexes = (
            models.Index(fields=("sync_state", "next_attempt_at")),
            # The health page's latency chart reads the leads synced in the last day.
            models.Index(fields=("last_synced_at",), name="crmify_lead_last_synced"),
        )

    def __str__(self) -> str:
        name = f"{self.first_name} {self.last_name}".strip()
        return name or self.email or f"Lead {self.pk}"

    # django-crmify 1.3's names, read by backends written against it (``lead.external_status``).
    @property
    def external_status(self) -> str:
        """1.3's name of :attr:`status`, kept for backends written against 1.3."""
        return self.status

    @property
    def last_synced(self) -> Any:
        """1.3's name of :attr:`last_synced_at`, kept for backends written against 1.3."""
        return self.last_synced_at

    def crm_values(self) -> dict[str, Any]:
        """The values the CRM should hold: mappable fields and custom fields. Backends build from this."""
        values: dict[str, Any] = {name: getattr(self, name) for name in MAPPABLE_FIELDS}
        values["custom_fields"] = dict(self.custom_fields or {})
        return values


class LedgerEntry(models.Model):
    """One CRM call made for a lead: what was asked, what came back, how long it took.

    Summaries are written by backends without secrets and truncated; the ledger outlives its lead.
    """

    class Outcome(models.TextChoices):
        OK = "ok", _("OK")
        TRANSIENT = "transient", _("Transient error")
        PERMANENT = "permanent", _("Permanent error")
        #: Not a CRM call: an automatic status change the funnel refused (nothing was sent).
        REFUSED = "refused", _("Refused, not sent")
        #: Not a CRM call: both sides changed a field since the last sync; the conflict rule chose one.
        CONFLICT = "conflict", _("Conflict, resolved")

    class Direction(models.TextChoices):
        #: A call crmify made to change the CRM (or to read it for a push).
        OUT = "out", _("To the CRM")
        #: A change read back from the CRM (a poll, a webhook) and what crmify did with it.
        IN = "in", _("From the CRM")

    lead = models.ForeignKey(
        Lead, null=True, blank=True, on_delete=models.SET_NULL, related_name="ledger"
    )
    operation = models.CharField(_("operation"), max_length=32)
    started_at = models.DateTimeField(_("time"), db_index=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    direction = models.CharField(
        _("direction"), max_length=3, choices=Direction.choices, default=Direction.OUT
    )
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True, default="")
    request_summary = models.TextField(_("request"), blank=True, default="")
    response_summary = models.TextField(_("response"), blank=True, default="")
    #: The batch call this row is one lead's share of (its other leads' rows carry the same id); None for a
    #: call made for one lead alone.
    batch = models.UUIDField(_("batch"), null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        ordering = ("-started_at", "-id")
        indexes = (models.Index(fields=("lead", "-started_at")),)

    def __str__(self) -> str:
        return f"{self.operation} {self.outcome} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class BackfillRun(models.Model):
    """One backfill of existing ``LEAD_MODEL`` rows: its options, progress, counts and checkpoint.

    Written by :mod:`crmify.backfill` (``start``, each chunk, ``cancel``, ``resume``); read by the
    ``crmify_backfill`` command's progress bar and the admin's progress page.
    """

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        CANCELLED = "cancelled", _("Cancelled")
        FINISHED = "finished", _("Finished")
        FAILED = "failed", _("Failed")

    #: Counts a run keeps, in the order the command and the admin show them.
    COUNTS: tuple[str, ...] = (
        "scanned",
        "created",
        "updated",
        "unchanged",
        "skipped_tombstones",
        "failed",
    )

    options = models.JSONField(_("options"), default=dict, blank=True)
    state = models.CharField(
        _("state"), max_length=16, choices=State.choices, default=State.PENDING
    )
    scanned = models.PositiveIntegerField(_("scanned"), default=0)
    created = models.PositiveIntegerField(_("created"), default=0)
    updated = models.PositiveIntegerField(_("updated"), default=0)
    unchanged = models.PositiveIntegerField(_("unchanged"), default=0)
    skipped_tombstones = models.PositiveIntegerField(_("skipped (deleted from CRM)"), default=0)
    failed = models.PositiveIntegerField(_("failed"), default=0)
    total_estimate = models.PositiveIntegerField(_("rows to scan (estimate)"), default=0)
    # The last source primary key whose chunk committed, as text (any primary key type): a resumed
    # run reads the rows after it.
    checkpoint = models.CharField(_("last checkpoint"), max_length=64, blank=True, default="")
    last_error = models.TextField(_("last error"), blank=True, default="")
    report = models.JSONField(_("dry-run report"), null=True, blank=True)
    # Normalised e-mail -> CRM id from listing the CRM once per run; None until listed (or when the
    # backend cannot list). Kept on the run so every chunk, in any worker process, adopts the same ids.
    crm_matches = models.JSONField(_("CRM leads by e-mail"), null=True, blank=True, editable=False)
    listing_calls = models.PositiveIntegerField(_("listing calls"), default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("started by"),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("backfill run")
        verbose_name_plural = _("backfill runs")
        ordering = ("-created_at", "-id")
        permissions = (("run_backfill", _("Can run a backfill into the CRM")),)

    def __str__(self) -> str:
        return f"Backfill {self.pk} ({self.get_state_display()})"

    @property
    def is_active(self) -> bool:
        """Pending or running: a chunk task is (or should be) on its way."""
        return self.state in (self.State.PENDING, self.State.RUNNING)

    @property
    def percent(self) -> int:
        """Share of the estimated rows scanned, 0-100 (100 once finished)."""
        if self.state == self.State.FINISHED:
            return 100
        if not self.total_estimate:
            return 0
        return min(100, int(100 * self.scanned / self.total_estimate))

    def eta_seconds(self, now: Any = None) -> float | None:
        """Seconds left at the pace so far, or None before there is a pace."""
        if self.started_at is None or not self.scanned or self.state != self.State.RUNNING:
            return None
        elapsed = ((now or timezone.now()) - self.started_at).total_seconds()
        left = max(self.total_estimate - self.scanned, 0)
        return elapsed / self.scanned * left


class PullCursor(models.Model):
    """How far crmify has read the CRM's changes back: one row per CRM (``BACKEND`` and its URL).

    Written by :mod:`crmify.poller` after each poll; read by the next poll (its watermark), ``manage.py
    crmify_check`` and the sync health page.
    """

    name = models.CharField(_("CRM"), max_length=255, unique=True)
    #: The newest CRM modification time every change up to which was applied; the next poll reads
    #: from a second before it (records changed in the same second are read again and de-duplicated).
    watermark = models.DateTimeField(_("read up to"), null=True, blank=True)
    last_started_at = models.DateTimeField(_("last poll started"), null=True, blank=True)
    last_finished_at = models.DateTimeField(_("last poll finished"), null=True, blank=True)
    last_calls = models.PositiveIntegerField(_("calls in the last poll"), default=0)
    last_changes = models.PositiveIntegerField(_("changes in the last poll"), default=0)
    last_error = models.TextField(_("last error"), blank=True, default="")
    #: When the CRM was last listed whole to find records deleted there (a CRM with no delete events).
    deletes_scanned_at = models.DateTimeField(_("last scan for deletes"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("pull cursor")
        verbose_name_plural = _("pull cursors")

    def __str__(self) -> str:
        return f"{self.name} read up to {self.watermark or 'nothing yet'}"
