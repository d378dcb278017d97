"""django-crmify: keep a Django site's people in step with a third-party CRM."""

__version__ = "2.0.0"
