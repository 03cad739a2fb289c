"""Template filters of the operator console."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def plain(value):
    """A decimal as people write it: 10, 190.5, 0.25 (never 10.00000000 or 1E+2); None stays None."""
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return value
