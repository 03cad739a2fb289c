"""Serializer fields for values that reach the broker: strict alphabets, ASCII digits only.

DRF's DecimalField and IntegerField accept whatever Python's `Decimal()` / `int()` accept: Unicode
digits ("٣", "４"), underscores ("1_0") and exponents. An order quantity must mean exactly what it
says, so these fields take plain ASCII decimal strings or JSON numbers only.
"""

from __future__ import annotations

import re
from decimal import Decimal

from django.core.validators import RegexValidator
from rest_framework import serializers

PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
PLAIN_INTEGER = re.compile(r"[+-]?[0-9]+")

# IB symbols: letters and digits, with . - / & + or a space inside ("BRK B", "BF.B", "US-T", "BTC.USD").
SYMBOL_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9 ./&+-]{0,30}[A-Za-z0-9.])?$"
EXCHANGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$"
CURRENCY_PATTERN = r"^[A-Za-z]{3}$"
ACCOUNT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
EXPIRY_PATTERN = r"^[0-9]{6}(?:[0-9]{2})?$"
MULTIPLIER_PATTERN = r"^[0-9]+(?:\.[0-9]+)?$"


class StrictDecimalField(serializers.DecimalField):
    """A decimal from a JSON number or a plain ASCII decimal string ("189.50", "-3", ".5"): no Unicode
    digits, underscores, exponents, spaces or booleans. Nor a blank string: DRF reads "" as null for a
    nullable decimal, so a `stop_loss` of "" placed the entry without its stop. Null is given as null (in a
    query string, a parameter given empty is still left out, as DRF reads form data)."""

    def validate_empty_values(self, data):
        if isinstance(data, str) and not data.strip():
            self.fail("invalid")
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, str):
            if len(data) > self.MAX_STRING_LENGTH:
                self.fail("max_string_length")
            if not PLAIN_DECIMAL.fullmatch(data):
                self.fail("invalid")
        elif not isinstance(data, int | float | Decimal):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An integer from a JSON integer or a plain ASCII digit string: no "٣", "1_0" or "1.0"."""

    default_error_messages = {"invalid": "A valid integer is required (ASCII digits only)."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or isinstance(data, float):
            self.fail("invalid")
        if isinstance(data, str):
            if len(data) > self.MAX_STRING_LENGTH or not PLAIN_INTEGER.fullmatch(data):
                self.fail("invalid")
        elif not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date and time in ASCII: DRF (Django's parser) also reads "٢٠٢٦-01-01T00:00:00Z"."""

    default_error_messages = {"ascii": "A valid ISO 8601 datetime is required (ASCII digits only)."}

    def to_internal_value(self, value):
        if isinstance(value, str) and not value.isascii():
            self.fail("ascii")
        return super().to_internal_value(value)


ASCII_WHITESPACE = " \t\r\n"


class AsciiTrimmedCharField(serializers.CharField):
    """A CharField that trims only ASCII spaces, tabs and line ends around the value. DRF trims with
    `str.strip()`, which also removes Unicode separators: a symbol "\u2028AAPL" (or "AAPL\u3000") became
    "AAPL" and went to the broker, a client_order_id lost characters and named another key. Here anything
    else stays, and the field's alphabet refuses it."""

    def __init__(self, **kwargs):
        kwargs["trim_whitespace"] = False
        super().__init__(**kwargs)

    def run_validation(self, data=serializers.empty):
        if isinstance(data, str):
            data = data.strip(ASCII_WHITESPACE)
        return super().run_validation(data)


def pattern_field(pattern: str, message: str, **kwargs) -> serializers.CharField:
    """A text field held to `pattern` (a regular expression), surrounding ASCII whitespace trimmed."""
    # Validators go in through kwargs: DRF rebuilds declared fields from their kwargs on every use.
    # `$` is safe here: surrounding ASCII whitespace (a trailing newline) is trimmed before validating.
    return AsciiTrimmedCharField(validators=[RegexValidator(pattern, message)], **kwargs)


def symbol_field(**kwargs) -> serializers.CharField:
    kwargs.setdefault("max_length", 32)
    return pattern_field(SYMBOL_PATTERN, "Letters, digits and . - / & + or inner spaces only.", **kwargs)


def exchange_field(**kwargs) -> serializers.CharField:
    kwargs.setdefault("max_length", 16)
    return pattern_field(EXCHANGE_PATTERN, "Letters, digits, '.', '_' or '-' only.", **kwargs)


def currency_field(**kwargs) -> serializers.CharField:
    kwargs.setdefault("max_length", 3)
    return pattern_field(CURRENCY_PATTERN, "A three-letter currency code, e.g. USD.", **kwargs)


def account_field(**kwargs) -> serializers.CharField:
    kwargs.setdefault("max_length", 32)
    return pattern_field(ACCOUNT_PATTERN, "An account id: letters, digits, '.', '_' or '-'.", **kwargs)


def expiry_field(**kwargs) -> serializers.CharField:
    return pattern_field(EXPIRY_PATTERN, "YYYYMM or YYYYMMDD.", **kwargs)


def multiplier_field(**kwargs) -> serializers.CharField:
    return pattern_field(MULTIPLIER_PATTERN, "A plain number, e.g. 100.", **kwargs)


def validate_symbol(value: str) -> str:
    """A symbol from a URL path, held to the same rules as the body field."""
    try:
        return symbol_field().run_validation(value)
    except serializers.ValidationError as exc:
        raise serializers.ValidationError({"symbol": exc.detail}) from None
