"""How values look in JSON, the same for REST, websockets and MCP."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal


def decimal_str(value: Decimal | None) -> str | None:
    """Plain, unpadded decimal strings: "189.5", "1000", "0" (never "1E+3", "0E-8" or "10.00000000")."""
    return None if value is None else format(value.normalize(), "f")


def iso_utc(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z, as DRF renders datetimes."""
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")
