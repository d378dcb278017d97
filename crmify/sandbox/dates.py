"""Date formats of Insightly v3.1, as the sandbox speaks them.

Called by ``state`` (stamping leads), ``validation`` (custom DATE fields), ``api``
(the ``updated_after_utc`` query parameter) and ``server`` (webhook bodies). Bodies carry
``yyyy-MM-dd HH:mm:ss`` in UTC; query strings carry ISO-8601, with or without ``Z`` or an offset;
workflow webhooks carry .NET's ``/Date(<ms since the epoch><offset>)/``.
"""

from __future__ import annotations

from datetime import UTC, datetime

BODY_FORMAT = "%Y-%m-%d %H:%M:%S"


def utc_now() -> datetime:
    """The default clock of the sandbox: aware UTC, to the second (Insightly keeps seconds)."""
    return datetime.now(UTC).replace(microsecond=0)


def format_body_date(moment: datetime) -> str:
    """Render an aware or naive-UTC datetime as a body date (``2024-05-01 13:45:00``)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(BODY_FORMAT)


def parse_body_date(text: str) -> datetime:
    """Parse a body date back into an aware UTC datetime; ValueError when malformed."""
    return datetime.strptime(text, BODY_FORMAT).replace(tzinfo=UTC)


def parse_query_date(text: str) -> datetime:
    """Parse an ISO-8601 query value into aware UTC; a value without an offset is taken as UTC.

    ``datetime.fromisoformat`` accepts ``Z``, offsets, fractions and a space separator on
    Python 3.11+, which covers what clients send. Raises ValueError when it is not ISO-8601.
    """
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_webhook_date(text: str) -> str:
    """A body date as a workflow webhook writes it: ``/Date(1489116850000+0000)/`` (milliseconds
    since the epoch; Insightly's own example carries the account's offset, the sandbox's is UTC)."""
    return f"/Date({int(parse_body_date(text).timestamp() * 1000)}+0000)/"
