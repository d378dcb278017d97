"""crmify's URLs for the site's URLconf: ``path("crm/", include("crmify.urls"))``.

The inbound webhook endpoints (:mod:`crmify.webhooks`), one per CRM; the one whose CRM is not the
configured backend answers 404.
"""

from __future__ import annotations

from django.urls import path

from crmify import webhooks

app_name = "crmify"

urlpatterns = [
    path("webhooks/hubspot/", webhooks.hubspot_webhook, name="webhook-hubspot"),
    path("webhooks/insightly/", webhooks.insightly_webhook, name="webhook-insightly"),
]
