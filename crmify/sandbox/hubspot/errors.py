"""HubSpot's error answers, as ``shared/hubspot-api.md`` records them.

``contacts`` and ``api`` raise :class:`HubSpotError`; ``api`` and ``server`` render it with
:func:`error_response`. The shape is ``{status: "error", message, correlationId, category,
subCategory?, errors?: [{message, code?, in?, context?}]}``; a 429 is
``{status, message, errorType: "RATE_LIMIT", policyName, correlationId}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from crmify.sandbox.messages import Response, json_response

JsonDict = dict[str, Any]


class HubSpotError(Exception):
    """An error answer: HTTP ``status``, ``category`` and the body's other fields."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        *,
        errors: Sequence[JsonDict] = (),
        sub_category: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.errors = list(errors)
        self.sub_category = sub_category

    def body(self) -> JsonDict:
        body: JsonDict = {
            "status": "error",
            "message": self.message,
            "correlationId": str(uuid.uuid4()),
            "category": self.category,
        }
        if self.sub_category:
            body["subCategory"] = self.sub_category
        if self.errors:
            body["errors"] = self.errors
        return body


def error_response(error: HubSpotError) -> Response:
    return json_response(error.status, error.body())


def invalid_properties(problems: Sequence[JsonDict]) -> HubSpotError:
    """400 VALIDATION_ERROR "Property values were not valid: [...]" for ``problems`` (each with
    ``error``: PROPERTY_DOESNT_EXIST, INVALID_OPTION, INVALID_EMAIL, READ_ONLY_VALUE, and ``name``)."""
    listed = [{"isValid": False, **problem} for problem in problems]
    return HubSpotError(
        400,
        "VALIDATION_ERROR",
        f"Property values were not valid: {json.dumps(listed)}",
        errors=[
            {
                "message": problem["message"],
                "code": problem["error"],
                "context": {"propertyName": [problem["name"]]},
            }
            for problem in problems
        ],
    )


def bad_request(message: str) -> HubSpotError:
    """400 VALIDATION_ERROR for a malformed request (a bad limit, a bad body)."""
    return HubSpotError(400, "VALIDATION_ERROR", message)


def not_found(message: str = "resource not found") -> HubSpotError:
    return HubSpotError(404, "OBJECT_NOT_FOUND", message)


def rate_limited(policy: str, message: str) -> Response:
    """A 429 body naming the policy (``TEN_SECONDLY_ROLLING``, ``SECONDLY``, ``DAILY``)."""
    return json_response(
        429,
        {
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "groupName": "api-calls",
        },
    )
