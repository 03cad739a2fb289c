from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class IbkrgwConfig(AppConfig):
    name = "ibkrgw"
    verbose_name = "ibkr-gateway"

    def ready(self) -> None:
        from ibkrgw import users, wiring
        from ibkrgw.logging import redact_daphne_access_log
        from ibkrgw.metrics import register_collectors
        from ibkrgw.servers import daphne_websockets_like_production

        register_collectors()
        wiring.connect()
        users.connect()
        redact_daphne_access_log()
        daphne_websockets_like_production()


class OperatorAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the operator console as its default site (so `admin.site` is ours)."""

    # Not the default config of the `ibkrgw` package: INSTALLED_APPS names this class explicitly.
    default = False
    default_site = "ibkrgw.admin_site.OperatorAdminSite"
