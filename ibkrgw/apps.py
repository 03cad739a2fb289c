from django.apps import AppConfig


class IbkrgwConfig(AppConfig):
    name = "ibkrgw"
    verbose_name = "ibkr-gateway"

    def ready(self) -> None:
        from ibkrgw.metrics import register_collectors

        register_collectors()
