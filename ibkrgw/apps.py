from django.apps import AppConfig


class IbkrgwConfig(AppConfig):
    name = "ibkrgw"
    verbose_name = "ibkr-gateway"
