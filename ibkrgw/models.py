"""API keys for programs: hashed at rest (djangorestframework-api-key), each with one scope."""

from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class Scope(models.TextChoices):
    READ = "read", "read: market data, account and order history"
    TRADE = "trade", "trade: read, plus place, modify and cancel orders"


class ScopedAPIKey(AbstractAPIKey):
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def allows(self, scope: str) -> bool:
        return self.scope == Scope.TRADE or scope == Scope.READ


def api_key_usable(key_id: str) -> bool:
    """Whether the key `key_id` (primary key) is usable as the database has it now: there, not revoked,
    not expired. No cache: for decisions that must follow a revocation at once."""
    key = ScopedAPIKey.objects.filter(pk=key_id).only("revoked", "expiry_date").first()
    return key is not None and not key.revoked and not key.has_expired
