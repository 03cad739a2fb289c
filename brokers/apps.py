from django.apps import AppConfig


class BrokersConfig(AppConfig):
    name = "brokers"
    verbose_name = "Broker connection"

    def ready(self) -> None:
        # Registers system checks only; the IB worker is started by asgi.py and commands.
        from django.db.models.signals import post_save

        from brokers import checks  # noqa: F401
        from brokers.selectors import health_probe_changed

        # Health shows a halt or resume made in this process at once, not after the probe's age.
        post_save.connect(health_probe_changed, sender="orders.TradingSwitchEvent", dispatch_uid="health-probe")
