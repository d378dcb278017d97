"""django-crmify: keep a Django site's people in step with a third-party CRM."""

__version__ = "0.2.0"
