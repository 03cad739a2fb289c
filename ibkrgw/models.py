"""API keys for programs: hashed at rest (djangorestframework-api-key), each with one scope.

Each key row carries a MAC under the seal key (`audit.seal.seal_keys`, kept outside the database) over
what decides whether and for what it authenticates: its id, prefix and hashed secret, name, scope,
expiry and revocation. Every save through the gateway writes it; a row written any other way (a key
inserted with a known hash, a scope raised from `read` to `trade`, an expiry moved, a revoked key
un-revoked) no longer matches it and is refused when the key is used (`ibkrgw.auth`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey

from audit.chain import canonical_json
from audit.seal import mac_valid, seal_keys, seal_mac
from audit.stored import UNREADABLE_ERRORS
from ibkrgw.prepared import PreparedRead


class Scope(models.TextChoices):
    READ = "read", "read: market data, account and order history"
    TRADE = "trade", "trade: read, plus place, modify and cancel orders"


# What a key's MAC covers. Not `created` (set by the database layer while saving, and it grants nothing).
APIKEY_MAC_FIELDS = ("id", "prefix", "hashed_key", "name", "scope", "revoked", "expiry_date")


def apikey_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 of a key row's MAC'd fields (`values` keyed by field name), tagged so that no other
    MAC made with the seal key (seals, contract lookups) can ever stand for it."""
    payload = {"kind": "apikey", **{name: values[name] for name in APIKEY_MAC_FIELDS}}
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def apikey_mac(values: Mapping[str, Any]) -> str:
    return seal_mac(apikey_hash(values), seal_keys()[0])


def apikey_row_intact(values: Mapping[str, Any]) -> bool:
    """Whether a key row (`values`: the MAC'd fields and `mac`) is as the gateway last wrote it."""
    mac = values.get("mac")
    if not isinstance(mac, str) or not mac:
        return False
    try:
        return mac_valid(apikey_hash(values), mac, seal_keys())
    except (TypeError, ValueError):  # not even what the gateway writes (a naive or unreadable date)
        return False


class ScopedAPIKey(AbstractAPIKey):
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    mac = models.CharField(
        max_length=64,
        blank=True,
        default="",
        editable=False,
        help_text="HMAC under the seal key of the fields that decide what the key may do; written by every save",
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def allows(self, scope: str) -> bool:
        return self.scope == Scope.TRADE or scope == Scope.READ

    def mac_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (*APIKEY_MAC_FIELDS, "mac")}

    def row_intact(self) -> bool:
        """Whether this key, as loaded, matches its MAC (nothing changed it outside the gateway)."""
        return apikey_row_intact(self.mac_values())

    def _refuse_resealing_a_changed_row(self, using: str | None = None) -> None:
        """Saving writes a fresh MAC: never over a row changed outside the gateway (an admin opening a key
        whose scope was raised in the database and pressing Save would make it look genuine). Revoking it
        is the one change allowed: a revoked key authenticates nothing."""
        if self._state.adding or self.revoked:
            return
        fields = (*APIKEY_MAC_FIELDS, "mac")
        stored = type(self)._base_manager.using(using).filter(pk=self.pk).values(*fields).first()
        if stored is not None and not apikey_row_intact(stored):
            raise ValidationError(
                "This API key's row was changed outside the gateway (it does not match its MAC): "
                "revoke it and create a new key."
            )

    def clean(self) -> None:
        super().clean()
        self._refuse_resealing_a_changed_row()

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._refuse_resealing_a_changed_row(kwargs.get("using"))
        self.mac = apikey_mac(self.mac_values())
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "mac"}
        super().save(*args, **kwargs)


class UserMac(models.Model):
    """A user's MAC under the seal key (`ibkrgw.users`): written by every change the gateway makes to them."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="+")
    mac = models.CharField(max_length=64)

    class Meta:
        verbose_name = "user MAC"

    def __str__(self) -> str:
        return f"MAC of user {self.user_id}"


# Asked once per order admission (the order pipeline's thread): compiled once per connection.
_KEY_STATE = PreparedRead(
    lambda pk: ScopedAPIKey.objects.filter(pk=pk).values_list("revoked", "expiry_date")[:1],
    params=[(ScopedAPIKey._meta.pk, "\x00sample-key-id")],
)


def api_key_usable(key_id: str) -> bool:
    """Whether the key `key_id` (primary key) is usable as the database has it now: there, not revoked,
    not expired. No cache: for decisions that must follow a revocation at once."""
    try:
        state = _KEY_STATE.first(key_id)
        if state is None:
            return False
        revoked, expiry = state
        return revoked is False and (expiry is None or expiry >= timezone.now())
    except UNREADABLE_ERRORS:  # a value the gateway never writes
        return False
