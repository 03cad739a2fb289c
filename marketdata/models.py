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
    # HMAC under the ledger's seal key of the query's key and every contract it resolved to, as stored: the
    # gates trust a contract's tick, size steps and multiplier, so an entry changed in the database is not used.
    mac = models.CharField(max_length=64, blank=True, default="")

    def __str__(self) -> str:
        return str(self.query)


class AccountSnapshot(models.Model):
    """The account's value and P&L at one moment, for the console's P&L chart.

    A bounded time series, not a ledger: one row per account every ACCOUNT_SNAPSHOT_INTERVAL_S
    (default 60 s) while the broker is connected, rows older than ACCOUNT_SNAPSHOT_KEEP_DAYS
    (default 30) pruned by the same chore; at most about 43,200 rows per account. Nothing reads
    it to decide anything: orders, fills and the audit log stay the record. Net liquidation and
    cash (total cash value) are the broker's account values in the account's currency, as the
    connection streams them (empty while the broker has not sent them); daily_pnl stays empty from
    the periodic chore: the broker's daily P&L is a subscription the chore does not open by itself.
    """

    account = models.CharField(max_length=32)
    taken_at = models.DateTimeField(default=timezone.now)
    net_liquidation = models.DecimalField(max_digits=20, decimal_places=4, null=True)
    cash = models.DecimalField(max_digits=20, decimal_places=4, null=True)
    unrealized_pnl = models.DecimalField(max_digits=20, decimal_places=4, null=True)
    realized_pnl = models.DecimalField(max_digits=20, decimal_places=4, null=True)
    daily_pnl = models.DecimalField(max_digits=20, decimal_places=4, null=True)

    class Meta:
        indexes = [models.Index(fields=["account", "taken_at"])]
        ordering = ("taken_at",)

    def __str__(self) -> str:
        return f"{self.account} {self.taken_at:%Y-%m-%d %H:%M:%S} {self.net_liquidation}"
