from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from audit import checks  # noqa: F401
        from audit.readable import strict_sqlite_time_reads

        strict_sqlite_time_reads()
