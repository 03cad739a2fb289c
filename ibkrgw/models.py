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
