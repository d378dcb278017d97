"""Command-line options shared by ``python -m crmify.sandbox`` and ``manage.py crmify_sandbox``.

Both entry points call ``add_arguments`` on their parser, then ``build_server`` with the parsed
options and ``run`` to serve until Ctrl-C, so the two stay in step. ``--crm`` picks the API:
``insightly`` (default) or ``hubspot``; options that only one of them has say so in their help.
The ``--webhook-*`` options make the sandbox send its CRM's webhooks (``crmify.sandbox.webhooks``)
from the start; ``PUT /_sandbox/webhooks`` changes them while it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from .core import BaseSandboxServer
from .faults import Faults
from .hubspot import DEFAULT_FAULTS as HUBSPOT_FAULTS
from .hubspot import DEFAULT_TOKEN, HubSpotDialect, HubSpotSandbox, custom_property
from .schema import (
    CUSTOM_FIELD_TYPES,
    DEFAULT_CUSTOM_FIELDS,
    DEFAULT_SOURCE_NAMES,
    DEFAULT_STATUS_NAMES,
    CustomFieldDef,
    Dialect,
)
from .server import DEFAULT_API_KEY, SandboxServer
from .webhooks import SIGNATURE_VERSIONS, WebhookConfig

DEFAULT_PORT = 8765
_DEFAULTS = Faults()
_DIALECT = Dialect()
_HUBSPOT = HubSpotDialect()
_WEBHOOKS = WebhookConfig()
#: The dialect switches as flags: (flag, choices, default, help).
_DIALECT_SWITCHES: tuple[tuple[str, tuple[Any, ...], Any, str], ...] = (
    ("--create-status", (200, 201), _DIALECT.create_status, "status of a successful POST /Leads"),
    (
        "--custom-fields-on-put",
        ("merge", "replace"),
        _DIALECT.custom_fields_on_put,
        "how a PUT's CUSTOMFIELDS apply",
    ),
    (
        "--search-match",
        ("exact", "contains"),
        _DIALECT.search_match,
        "how /Leads/Search matches text",
    ),
    (
        "--converted-leads",
        ("hidden", "listed"),
        _DIALECT.converted_leads,
        "whether /Leads and /Leads/Search hide converted leads unless include_converted=true",
    ),
    (
        "--include-converted",
        ("accepted", "refused"),
        _DIALECT.include_converted,
        "whether /Leads and /Leads/Search take include_converted or answer 400",
    ),
    (
        "--lead-status-values",
        ("codes", "labels"),
        _HUBSPOT.lead_status_values,
        "HubSpot: hs_lead_status option values",
    ),
    (
        "--lifecycle-backwards",
        ("ignored", "rejected", "allowed"),
        _HUBSPOT.lifecycle_backwards,
        "HubSpot: a backwards lifecyclestage move",
    ),
    (
        "--conflict",
        ("legacy", "object_already_exists", "no_id"),
        _HUBSPOT.conflict,
        "HubSpot: the shape of a duplicate e-mail's 409",
    ),
    (
        "--merged-reads",
        ("primary", "not_found"),
        _HUBSPOT.merged_reads,
        "HubSpot: what a read of a merged contact's id answers",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the sandbox options on ``parser`` (an argparse or Django command parser)."""
    parser.add_argument(
        "--crm",
        choices=("insightly", "hubspot"),
        default="insightly",
        help="which CRM's API to serve (default %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the key (Insightly, default {DEFAULT_API_KEY}) or private-app token "
        f"(HubSpot, default {DEFAULT_TOKEN}) clients must send",
    )
    parser.add_argument("--state-file", help="JSON file to keep leads in across restarts")
    parser.add_argument(
        "--rate",
        type=_optional_float,
        default=_DEFAULTS.requests_per_second,
        help="requests per second allowed ('none' for no limit; default %(default)s; "
        "HubSpot allows ten times it in any 10 seconds)",
    )
    parser.add_argument(
        "--daily-quota",
        type=_optional_int,
        default=argparse.SUPPRESS,
        help=f"requests per quota window ('none' for unlimited; default {_DEFAULTS.daily_quota}, "
        f"HubSpot {HUBSPOT_FAULTS.daily_quota})",
    )
    parser.add_argument(
        "--quota-window", type=float, default=_DEFAULTS.quota_window_seconds, help="seconds"
    )
    for name in ("error-rate", "burst-429-rate", "drop-rate", "create-timeout-rate"):
        parser.add_argument(f"--{name}", type=float, default=0.0, help="share of requests, 0..1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each call")
    parser.add_argument("--latency-jitter", type=float, default=0.0, help="extra random seconds")
    parser.add_argument(
        "--create-timeout-delay", type=float, default=_DEFAULTS.create_timeout_delay
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible faults")
    parser.add_argument(
        "--lead-status", action="append", help="a lead status name (repeat; first is default)"
    )
    parser.add_argument("--lead-source", action="append", help="a lead source name (repeat)")
    parser.add_argument(
        "--custom-field",
        action="append",
        type=_custom_field,
        help="NAME[:TYPE[:OPTION|OPTION...]] (repeat); TYPE one of "
        + ", ".join(sorted(CUSTOM_FIELD_TYPES)),
    )
    parser.add_argument(
        "--property",
        action="append",
        type=_property,
        help="HubSpot: a custom contact property NAME[:TYPE[:OPTION|OPTION...]] (repeat)",
    )
    # Where the facts leave a CRM open (crmify.sandbox.Dialect, crmify.sandbox.hubspot.HubSpotDialect):
    # try a client against each reading.
    for flag, choices, default, text in _DIALECT_SWITCHES:
        parser.add_argument(
            flag,
            type=type(choices[0]),
            choices=choices,
            default=default,
            help=f"{text} (default %(default)s)",
        )
    parser.add_argument(
        "--retry-after", action="store_true", help="HubSpot: send Retry-After on a 429"
    )
    parser.add_argument(
        "--batch-max-inputs",
        type=int,
        default=_HUBSPOT.batch_max_inputs,
        help="HubSpot: the most inputs a batch call takes (default %(default)s)",
    )
    parser.add_argument(
        "--conversion-bumps-updated",
        action=argparse.BooleanOptionalAction,
        default=_DIALECT.conversion_bumps_updated,
        help="Insightly: whether converting a lead moves its DATE_UPDATED_UTC (default %(default)s)",
    )
    _add_webhook_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="do not log each request")


def _add_webhook_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--webhook-url", help="send the CRM's webhooks to this URL")
    parser.add_argument("--webhook-secret", help="HubSpot: the app secret webhooks are signed with")
    parser.add_argument(
        "--webhook-signature",
        choices=SIGNATURE_VERSIONS,
        default=_WEBHOOKS.signature_version,
        help="HubSpot: the signature version (default %(default)s)",
    )
    parser.add_argument("--webhook-username", help="Insightly: the webhook's Basic user name")
    parser.add_argument("--webhook-password", help="Insightly: the webhook's Basic password")
    parser.add_argument(
        "--webhook-max-attempts",
        type=int,
        default=_WEBHOOKS.max_attempts,
        help="attempts per delivery, the first included (default %(default)s)",
    )
    parser.add_argument(
        "--webhook-retry-delays",
        type=_seconds_list,
        default=_WEBHOOKS.retry_delays,
        help="seconds before each retry, comma-separated; the last repeats "
        f"(default {','.join(f'{delay:g}' for delay in _WEBHOOKS.retry_delays)})",
    )
    parser.add_argument(
        "--no-webhooks-for-api-changes",
        dest="webhooks_for_api_changes",
        action="store_false",
        help="send webhooks only for what a salesperson does, not for changes made through the API",
    )


def build_server(options: Mapping[str, Any]) -> BaseSandboxServer:
    """Build (not start) a server from parsed options (``vars(namespace)`` or Django's)."""
    hubspot = options.get("crm") == "hubspot"
    defaults = HUBSPOT_FAULTS if hubspot else _DEFAULTS
    faults = Faults(
        error_rate=options["error_rate"],
        latency=options["latency"],
        latency_jitter=options["latency_jitter"],
        burst_429_rate=options["burst_429_rate"],
        drop_rate=options["drop_rate"],
        create_timeout_rate=options["create_timeout_rate"],
        create_timeout_delay=options["create_timeout_delay"],
        daily_quota=options.get("daily_quota", defaults.daily_quota),
        quota_window_seconds=options["quota_window"],
        requests_per_second=options["rate"],
        seed=options["seed"],
    )
    webhooks = _webhook_config(options)
    if hubspot:
        return HubSpotSandbox(
            options["host"],
            options["port"],
            token=options["api_key"] or DEFAULT_TOKEN,
            faults=faults,
            properties=options.get("property") or (),
            state_file=options["state_file"],
            log_requests=not options["quiet"],
            dialect=HubSpotDialect(
                lead_status_values=options["lead_status_values"],
                lifecycle_backwards=options["lifecycle_backwards"],
                conflict=options["conflict"],
                retry_after=options["retry_after"],
                batch_max_inputs=options.get("batch_max_inputs", _HUBSPOT.batch_max_inputs),
                merged_reads=options.get("merged_reads", _HUBSPOT.merged_reads),
            ),
            webhooks=webhooks,
        )
    return SandboxServer(
        options["host"],
        options["port"],
        api_key=options["api_key"] or DEFAULT_API_KEY,
        faults=faults,
        lead_statuses=options["lead_status"] or DEFAULT_STATUS_NAMES,
        lead_sources=options["lead_source"] or DEFAULT_SOURCE_NAMES,
        custom_fields=options["custom_field"] or DEFAULT_CUSTOM_FIELDS,
        state_file=options["state_file"],
        log_requests=not options["quiet"],
        dialect=Dialect(
            create_status=options["create_status"],
            custom_fields_on_put=options["custom_fields_on_put"],
            search_match=options["search_match"],
            converted_leads=options["converted_leads"],
            include_converted=options["include_converted"],
            conversion_bumps_updated=options.get(
                "conversion_bumps_updated", _DIALECT.conversion_bumps_updated
            ),
        ),
        webhooks=webhooks,
    )


def _webhook_config(options: Mapping[str, Any]) -> WebhookConfig:
    """The ``--webhook-*`` options (absent ones, from an older caller, take the defaults)."""
    return WebhookConfig(
        url=options.get("webhook_url"),
        secret=options.get("webhook_secret"),
        signature_version=options.get("webhook_signature", _WEBHOOKS.signature_version),
        username=options.get("webhook_username"),
        password=options.get("webhook_password"),
        max_attempts=options.get("webhook_max_attempts", _WEBHOOKS.max_attempts),
        retry_delays=tuple(options.get("webhook_retry_delays", _WEBHOOKS.retry_delays)),
        webhooks_for_api_changes=options.get(
            "webhooks_for_api_changes", _WEBHOOKS.webhooks_for_api_changes
        ),
    )


def run(server: BaseSandboxServer, write: Callable[[str], object]) -> None:
    """Tell the user where to point their client, then serve until Ctrl-C and stop cleanly."""
    for line in server.banner():
        write(line)
    write(f"Control API: {server.control_url}faults | reset | leads | stats | webhooks")
    webhooks = server.webhooks.config
    if webhooks.url is not None:
        write(f"Webhooks to: {webhooks.url}")
    write("Press Ctrl-C to stop.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        write("Stopping.")
    finally:
        server.stop()


def _optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("none", "unlimited") else int(text)


def _optional_float(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "unlimited") else float(text)


def _seconds_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds separated by commas, not {text!r}"
        ) from None


def _custom_field(text: str) -> CustomFieldDef:
    name, _, rest = text.partition(":")
    field_type, _, options = rest.partition(":")
    try:
        return CustomFieldDef(
            name,
            field_type=(field_type or "TEXT").upper(),
            options=tuple(option for option in options.split("|") if option),
        )
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _property(text: str) -> Any:
    try:
        return custom_property(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
