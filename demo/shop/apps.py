from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Demo shop"

    def ready(self) -> None:
        from shop import receivers  # noqa: F401  (connects the receivers of crmify's signals)
