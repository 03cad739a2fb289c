"""API keys for programs: hashed at rest (djangorestframework-api-key), each with one scope."""

from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey

from ibkrgw.prepared import PreparedRead


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


# Asked once per order admission (the order pipeline's thread): compiled once per connection.
_KEY_STATE = PreparedRead(
    lambda pk: ScopedAPIKey.objects.filter(pk=pk).values_list("revoked", "expiry_date")[:1],
    params=[(ScopedAPIKey._meta.pk, "\x00sample-key-id")],
)


def api_key_usable(key_id: str) -> bool:
    """Whether the key `key_id` (primary key) is usable as the database has it now: there, not revoked,
    not expired. No cache: for decisions that must follow a revocation at once."""
    state = _KEY_STATE.first(key_id)
    if state is None:
        return False
    revoked, expiry = state
    return not revoked and (expiry is None or expiry >= timezone.now())
