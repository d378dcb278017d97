"""Reading a site's ``LEAD_MODEL`` rows in bulk, the way the mapper needs them.

Called by the sweeper's drift scan and the backfill: primary-key chunks with the relations the mapper
reads joined in, so memory and queries stay flat however many rows there are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.exceptions import FieldError
from django.db import models

from crmify.loading import get_lead_model, walk_path
from crmify.mappers import LeadModelFieldMapper


def source_queryset(
    mapper: LeadModelFieldMapper, queryset: models.QuerySet[Any] | None = None
) -> models.QuerySet[Any]:
    """``LEAD_MODEL`` rows (``queryset``, else all) with the relations the mapper reads joined in."""
    model = get_lead_model()
    queryset = model._default_manager.all() if queryset is None else queryset
    related = sorted(
        {
            prefix
            for source, _, _ in mapper.mappings()
            if isinstance(source, str)
            for prefix, _ in walk_path(model, source)
        }
    )
    if related:
        try:
            str(queryset.select_related(*related).query)
            queryset = queryset.select_related(*related)
        except FieldError:
            pass  # a reverse or many relation: the mapper reads it row by row
    return queryset


def iterate_source_rows(
    mapper: LeadModelFieldMapper,
    queryset: models.QuerySet[Any] | None = None,
    chunk_size: int = 1000,
    *,
    after: Any = None,
) -> Iterator[list[Any]]:
    """``LEAD_MODEL`` rows in primary-key chunks, with the relations the mapper reads joined in.

    Used by the drift scan and the backfill (which starts ``after`` its checkpoint and reads one chunk per
    task): memory stays flat however many rows there are.
    """
    queryset = source_queryset(mapper, queryset)
    last_pk: Any = after
    while True:
        page = queryset.order_by("pk")
        if last_pk is not None:
            page = page.filter(pk__gt=last_pk)
        rows = list(page[:chunk_size])
        if not rows:
            return
        yield rows
        last_pk = rows[-1].pk
