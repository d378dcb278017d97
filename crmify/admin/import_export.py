"""Import and export on the Lead changelist, with django-import-export's two steps: a dry run that
previews every row, then confirm.

``LeadImportExportMixin`` is mixed into ``crmify.admin.lead.LeadAdmin``; the rows themselves are the
business of ``crmify.resources.LeadResource``. This module adds what the admin needs around it:
permissions (import needs add and change, export needs view), a size limit, readable messages for a file
that cannot be read, a preview that lists every row (new, update, unchanged, skipped, invalid) with its
errors, and a confirm step that applies all rows or none.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from import_export.admin import ImportExportMixin
from import_export.formats.base_formats import CSV, JSON, XLSX
from import_export.forms import ImportForm

from crmify.admin.display import admin_url
from crmify.conf import crmify_settings
from crmify.resources import LeadResource, LeadRowResult, escape_formula

#: Largest file an import accepts unless the admin says otherwise (``import_max_bytes``).
DEFAULT_IMPORT_MAX_BYTES = 5 * 1024 * 1024


def import_help() -> str:
    """The import page's explanation of how rows become leads, shown above the form."""
    return _(
        "Rows are matched to leads by e-mail (ignoring case and spaces); a row with a new e-mail adds "
        "a lead. Only the columns in the file are changed. A status must be %(new)s, %(converted)s, "
        "%(dead)s or one some lead already has; a blank status keeps the lead's, and a new lead starts "
        "at %(new)s. Leads deleted from the CRM are skipped, not brought back. On a lead that has a "
        "source row, a column the mapper fills from that row is refused (change it there) unless the "
        "mapper writes it back to the row; the preview says which. Nothing is imported until you confirm the "
        "preview; when some rows are invalid you may import the valid ones and download the others."
    ) % {
        "new": crmify_settings.LEAD_NEW_STATUS,
        "converted": crmify_settings.LEAD_CONVERTED_STATUS,
        "dead": crmify_settings.LEAD_DEAD_STATUS,
    }


class LeadImportForm(ImportForm):  # type: ignore[misc]
    """django-import-export's first-step form, refusing a file over ``max_bytes`` before it is read."""

    def __init__(self, formats: Any, resources: Any, *, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(formats, resources, **kwargs)
        self.max_bytes = max_bytes

    def clean_import_file(self) -> Any:
        upload = self.cleaned_data["import_file"]
        if upload.size > self.max_bytes:
            raise ValidationError(
                _(
                    "This file is %(size)s; an import takes at most %(limit)s. "
                    "Split it into smaller files."
                )
                % {"size": filesizeformat(upload.size), "limit": filesizeformat(self.max_bytes)},
                code="too_large",
            )
        return upload


def read_error_message(error: Exception, format_title: str) -> str:
    """What to tell staff when the chosen format cannot read the file (called for the import form)."""
    if isinstance(error, UnicodeError):
        return _(
            "This file is not UTF-8 text, so it cannot be read as %(format)s. Save it as "
            "“CSV UTF-8” (or choose the format it really is) and upload it again."
        ) % {"format": format_title}
    if isinstance(error, zipfile.BadZipFile) or type(error).__name__ == "InvalidFileException":
        return _(
            "This file is not an Excel workbook (.xlsx). Choose the format it really is, or save it "
            "from your spreadsheet as .xlsx."
        )
    if isinstance(error, json.JSONDecodeError):
        return _("This file is not valid JSON (line %(line)s): %(reason)s.") % {
            "line": error.lineno,
            "reason": error.msg,
        }
    return _(
        "This file could not be read as %(format)s (%(error)s). Check that the format matches the file."
    ) % {"format": format_title, "error": type(error).__name__}


@dataclass(frozen=True, slots=True)
class PreviewRow:
    """One line of the import preview: what will happen to a row of the file, and why not if invalid;
    ``notes`` what else it does (a value written to the lead's source row), ``warnings`` what to know."""

    number: int
    kind: str  # new | update | skip | deleted | invalid: the row's CSS class and label
    label: str
    errors: list[str] = field(default_factory=list)
    cells: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ImportPreview:
    """The preview of a dry run: every row in file order and the count of each kind; ``skipped_file`` a
    ``data:`` URL of a CSV of the invalid rows with their errors (empty when every row is valid)."""

    rows: list[PreviewRow]
    counts: list[tuple[str, str, int]]  # (kind, label, count) for the summary line
    skipped_file: str = ""

    @property
    def invalid(self) -> int:
        return sum(1 for row in self.rows if row.kind == "invalid")

    @property
    def importable(self) -> int:
        """Rows a "skip the invalid rows" import would write (new and updated leads)."""
        return sum(1 for row in self.rows if row.kind in ("new", "update"))


def skipped_rows_file(result: Any) -> str:
    """The invalid rows of ``result`` as a CSV ``data:`` URL (the file's own columns as it gave them,
    then ``row`` and ``errors``), so staff can correct them and import them alone; "" when there are
    none. No storage: the file lives in the preview page. Reads django-import-export's
    ``failed_dataset`` (the import runs with ``collect_failed_rows``)."""
    failed = result.failed_dataset
    if not result.invalid_rows or len(failed) != len(result.invalid_rows):
        return ""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*failed.headers[:-1], "row", "errors"])
    for values, row in zip(failed, result.invalid_rows, strict=True):
        cells = [escape_formula(value) for value in values[:-1]]
        writer.writerow([*cells, row.number, "; ".join(_row_errors(row.error_dict))])
    encoded = base64.b64encode(("\ufeff" + out.getvalue()).encode()).decode()
    return f"data:text/csv;charset=utf-8;base64,{encoded}"


def _row_errors(error_dict: dict[str, list[str]]) -> list[str]:
    return [
        message if name == NON_FIELD_ERRORS else f"{name}: {message}"
        for name, messages_ in error_dict.items()
        for message in messages_
    ]


def import_preview(result: Any) -> ImportPreview:
    """Every row of a dry run's ``Result``, in file order, with its errors.

    ``LeadResource`` reports skipped rows too, so ``result.rows`` holds one entry per data row.
    """
    labels = {
        "new": _("New"),
        "update": _("Update"),
        "skip": _("Unchanged"),
        "deleted": _("Skipped: deleted from the CRM"),
        "invalid": _("Invalid"),
    }
    invalid = {row.number: row for row in result.invalid_rows}
    rows = []
    for number, row_result in enumerate(result.rows, 1):
        kind = _kind(row_result)
        if number in invalid:
            rows.append(
                PreviewRow(
                    number,
                    kind,
                    labels[kind],
                    _row_errors(invalid[number].error_dict),
                    list(invalid[number].values),
                )
            )
        else:
            rows.append(
                PreviewRow(
                    number,
                    kind,
                    labels[kind],
                    cells=list(row_result.diff or ()),
                    notes=list(getattr(row_result, "notes", ())),
                    warnings=list(getattr(row_result, "warnings", ())),
                )
            )
    tally = kind_counts(result)
    return ImportPreview(
        rows=rows,
        counts=[(kind, label, tally[kind]) for kind, label in labels.items()],
        skipped_file=skipped_rows_file(result),
    )


def kind_counts(result: Any) -> Counter[str]:
    """How many rows of ``result`` are of each kind (``new``, ``update``, ``skip``, ``deleted``,
    ``invalid``; 0 for a kind not there): the preview's summary line and the success message."""
    return Counter(_kind(row_result) for row_result in result.rows)


def _kind(row_result: LeadRowResult) -> str:
    if row_result.is_invalid():
        return "invalid"
    if getattr(row_result, "deleted_from_crm", False):
        return "deleted"
    return str(row_result.import_type)


#: The confirm form's field saying staff chose to import the valid rows and skip the invalid ones.
SKIP_INVALID_FIELD = "crmify_skip_invalid"


def skip_invalid_requested(request: HttpRequest) -> bool:
    """Whether this confirm is the "import the valid rows, skip the invalid ones" one."""
    return request.method == "POST" and request.POST.get(SKIP_INVALID_FIELD) == "1"


class LeadImportExportMixin(ImportExportMixin):  # type: ignore[misc]
    """Import (CSV, XLSX, JSON) and export (CSV, XLSX) of leads for ``LeadAdmin``.

    The buttons are rendered by the Lead changelist template (``import_export_change_list_template``),
    which keeps crmify's summary bar and tools. django-import-export calls the hooks below from its
    ``import_action`` (the dry run), ``process_import`` (confirm) and ``export_action``.
    """

    resource_classes = [LeadResource]
    import_formats = [CSV, XLSX, JSON]
    export_formats = [CSV, XLSX]
    import_form_class = LeadImportForm
    import_template_name = "admin/crmify/lead/import.html"
    import_export_change_list_template = "admin/crmify/lead/change_list.html"
    # Excel opens a CSV as UTF-8 only when it starts with a byte-order mark.
    to_encoding = "utf-8-sig"
    #: Largest file accepted for import, in bytes.
    import_max_bytes = DEFAULT_IMPORT_MAX_BYTES

    # -- permissions --------------------------------------------------------------------------------------

    def has_import_permission(self, request: HttpRequest) -> bool:
        """Add and change leads (an import does both), and ``IMPORT_EXPORT_IMPORT_PERMISSION_CODE``'s
        permission when the site sets one."""
        return bool(
            self.has_add_permission(request)
            and self.has_change_permission(request)
            and super().has_import_permission(request)
        )

    def has_export_permission(self, request: HttpRequest) -> bool:
        """View leads, and ``IMPORT_EXPORT_EXPORT_PERMISSION_CODE``'s permission when the site sets one."""
        return bool(self.has_view_permission(request) and super().has_export_permission(request))

    # -- the dry run --------------------------------------------------------------------------------------

    def get_import_form_kwargs(self, request: HttpRequest) -> dict[str, Any]:
        return {**super().get_import_form_kwargs(request), "max_bytes": self.import_max_bytes}

    def get_import_data_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        # At confirm, a row that became invalid since the preview rolls the whole import back, unless
        # staff chose to import the valid rows and skip the invalid ones. Either way each imported row
        # is whole: an invalid row writes nothing, and an error in any row rolls everything back.
        request = kwargs.get("request")
        skip = request is not None and skip_invalid_requested(request)
        return {
            **super().get_import_data_kwargs(**kwargs),
            "rollback_on_validation_errors": not skip,
            "collect_failed_rows": True,  # the invalid rows, as the file gave them, for their download
        }

    def add_data_read_fail_error_to_form(self, form: Any, error: Exception) -> None:
        formats = self.get_import_formats()
        title = formats[int(form.cleaned_data["format"])]().get_title()
        form.add_error("import_file", read_error_message(error, str(title).upper()))

    def get_import_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {
            **super().get_import_context_data(**kwargs),
            "crmify_import_help": import_help(),
            "crmify_import_max_bytes": self.import_max_bytes,
        }

    def import_action(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        """django-import-export's first step, with every row of its dry run in the preview.

        An upload that cannot be confirmed is deleted from the temporary storage at once: it holds
        people's details, and no confirm step will come to remove it.
        """
        response: HttpResponse = super().import_action(request, **kwargs)
        context = getattr(response, "context_data", None)
        if not context or context.get("result") is None:
            return response
        result = context["result"]
        preview = context["crmify_import"] = import_preview(result)
        if (
            "confirm_form" not in context
            and not result.has_errors()
            and result.has_validation_errors()
            and preview.importable
        ):
            # Staff may import the valid rows and skip the others: the same confirm step, marked.
            context["crmify_skip_form"] = self.create_confirm_form(
                request, import_form=context["form"]
            )
        if "confirm_form" not in context and "crmify_skip_form" not in context:
            self._discard_upload(context["form"])
        return response

    def _discard_upload(self, form: Any) -> None:
        upload = getattr(form, "cleaned_data", {}).get("import_file")
        name = getattr(upload, "tmp_storage_name", None)
        if name is None:
            return
        storage = self.get_tmp_storage_class()(name=os.path.basename(name))
        with contextlib.suppress(OSError):  # already gone: nothing to clean
            storage.remove()

    # -- confirm --------------------------------------------------------------------------------------

    def process_result(self, result: Any, request: HttpRequest) -> HttpResponse:
        """After confirm: report the counts, or that nothing was imported when the run was rolled back."""
        skipping = skip_invalid_requested(request)
        if result.has_errors() or (result.has_validation_errors() and not skipping):
            count = len(result.invalid_rows) + len(result.error_rows)
            messages.error(
                request,
                ngettext(
                    "Nothing was imported: %(count)s row is invalid now (the file or the leads "
                    "changed since the preview). Import the file again to see why.",
                    "Nothing was imported: %(count)s rows are invalid now (the file or the leads "
                    "changed since the preview). Import the file again to see why.",
                    count,
                )
                % {"count": count},
            )
            return HttpResponseRedirect(admin_url(self, "import"))
        response: HttpResponse = super().process_result(result, request)
        return response

    def add_success_message(self, result: Any, request: HttpRequest) -> None:
        counts = kind_counts(result)
        if counts["invalid"]:
            messages.warning(
                request,
                ngettext(
                    "%(count)s invalid row was skipped: nothing of it was imported.",
                    "%(count)s invalid rows were skipped: nothing of them was imported.",
                    counts["invalid"],
                )
                % {"count": counts["invalid"]},
            )
        messages.success(
            request,
            _(
                "Import finished: %(new)s new and %(update)s updated leads queued for the CRM; "
                "%(skip)s unchanged and %(deleted)s deleted from the CRM skipped."
            )
            % counts,
        )
