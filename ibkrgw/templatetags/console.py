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


@register.filter
def terms_in_force(order):
    """An order's quantity and prices as they stand now (after any modification), not as first placed."""
    from orders.selectors import order_terms_shown

    return order_terms_shown(order)
