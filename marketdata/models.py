"""A database cache of resolved contracts, so repeated lookups don't hit IB (and conIds are stable)."""

from django.db import models
from django.utils import timezone


class CachedContract(models.Model):
    con_id = models.BigIntegerField(primary_key=True)
    symbol = models.CharField(max_length=32, db_index=True)
    sec_type = models.CharField(max_length=8)
    exchange = models.CharField(max_length=16, blank=True)
    currency = models.CharField(max_length=8, blank=True)
    expiry = models.CharField(max_length=16, blank=True)
    data = models.JSONField(help_text="The full resolved contract.")
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.symbol} {self.sec_type} {self.expiry} ({self.con_id})".replace("  ", " ")


class ContractLookup(models.Model):
    """Which conIds a normalised contract query resolved to, and when."""

    key = models.CharField(max_length=64, unique=True)
    query = models.JSONField()
    contracts = models.ManyToManyField(CachedContract, related_name="lookups")
    resolved_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return str(self.query)
