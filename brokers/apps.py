from django.apps import AppConfig


class BrokersConfig(AppConfig):
    name = "brokers"
    verbose_name = "Broker connection"

    def ready(self) -> None:
        # Registers system checks only; the IB worker is started by asgi.py and commands.
        from brokers import checks  # noqa: F401
