"""Forms of the operator console. They only shape input; the services decide and the gates apply."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any

from django import forms
from django.core.validators import RegexValidator

from ibkrgw.web.fields import SYMBOL_PATTERN
from marketdata.api import SEC_TYPES
from orders.types import ACTIONS, ORDER_TYPES, TIFS, OrderRequest

CONSOLE_ID_PREFIX = "op-"
# ASCII digits only, as REST takes them: Django's fields read any script's digits ("١" as 1, "２" as 2).
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


class PlainDecimalField(forms.DecimalField):
    """A number written in ASCII digits (with an optional sign and point), as the REST API takes it."""

    def to_python(self, value):
        if isinstance(value, str) and value.strip(" \t") and not _PLAIN_NUMBER.fullmatch(value.strip(" \t")):
            raise forms.ValidationError("Enter a number in the digits 0-9.", code="invalid")
        return super().to_python(value)


class SymbolField(forms.CharField):
    """A symbol held to the REST API's alphabet. Django trims any Unicode space ("\u2028AAPL" became "AAPL");
    only ASCII spaces and tabs are trimmed here, and anything else is refused."""

    default_validators = [RegexValidator(SYMBOL_PATTERN, "Letters, digits and . - / & + or inner spaces only.")]

    def __init__(self, **kwargs):
        super().__init__(strip=False, **kwargs)

    def to_python(self, value):
        text = super().to_python(value)
        return text.strip(" \t") if text else text


PRICE: dict[str, Any] = {"max_digits": 20, "decimal_places": 8, "required": False}


def new_client_order_id() -> str:
    """Made when the confirmation page is shown, so pressing "place" twice places one order."""
    return f"{CONSOLE_ID_PREFIX}{uuid.uuid4().hex[:20]}"


def _choices(values) -> list[tuple[str, str]]:
    return [(v, v) for v in values]


class OrderEntryForm(forms.Form):
    symbol = SymbolField(max_length=32)
    sec_type = forms.ChoiceField(choices=_choices(SEC_TYPES), initial="STK")
    exchange = forms.CharField(max_length=16, required=False, help_text="Blank: SMART routing.")
    currency = forms.CharField(max_length=8, required=False)
    expiry = forms.RegexField(r"^[0-9]{6}([0-9]{2})?$", required=False, help_text="Futures and options: YYYYMM[DD].")
    action = forms.ChoiceField(choices=_choices(ACTIONS))
    quantity = PlainDecimalField(max_digits=20, decimal_places=8, min_value=Decimal("0.00000001"))
    order_type = forms.ChoiceField(choices=_choices(ORDER_TYPES), initial="LMT")
    limit_price = PlainDecimalField(**PRICE)
    stop_price = PlainDecimalField(**PRICE)
    tif = forms.ChoiceField(choices=_choices(TIFS), initial="DAY")
    outside_rth = forms.BooleanField(required=False, label="Outside regular trading hours")
    take_profit = PlainDecimalField(**PRICE, help_text="Bracket: a limit exit at this price (GTC).")
    stop_loss = PlainDecimalField(**PRICE, help_text="Bracket: a stop exit at this price (GTC).")

    def clean_symbol(self) -> str:
        return self.cleaned_data["symbol"].strip().upper()

    def to_request(self, client_order_id: str = "") -> OrderRequest:
        data = self.cleaned_data
        return OrderRequest(
            symbol=data["symbol"],
            sec_type="STK" if data["sec_type"] == "ETF" else data["sec_type"],
            exchange=data["exchange"].strip().upper(),
            currency=data["currency"].strip().upper(),
            expiry=data["expiry"],
            action=data["action"],
            quantity=data["quantity"],
            order_type=data["order_type"],
            limit_price=data["limit_price"],
            stop_price=data["stop_price"],
            tif=data["tif"],
            outside_rth=data["outside_rth"],
            take_profit=data["take_profit"],
            stop_loss=data["stop_loss"],
            client_order_id=client_order_id,
        )


class PlaceOrderForm(OrderEntryForm):
    """The same fields again, hidden on the confirmation page, plus the key and the confirmation."""

    client_order_id = forms.RegexField(r"^[A-Za-z0-9._:-]{1,64}$")
    confirm = forms.BooleanField(required=True, label="I have checked the order above")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            if name != "confirm":
                field.widget = forms.HiddenInput()


class ModifyForm(forms.Form):
    quantity = PlainDecimalField(max_digits=20, decimal_places=8, min_value=Decimal("0.00000001"), required=False)
    limit_price = PlainDecimalField(**PRICE, min_value=Decimal("0.00000001"))
    stop_price = PlainDecimalField(**PRICE, min_value=Decimal("0.00000001"))

    def clean(self):
        data = super().clean()
        if all(data.get(name) is None for name in ("quantity", "limit_price", "stop_price")):
            raise forms.ValidationError("Give a new quantity, limit price or stop price.")
        return data


class ConfirmModifyForm(ModifyForm):
    confirm = forms.BooleanField(required=True, label="I want to change this order")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            if name != "confirm":
                field.widget = forms.HiddenInput()


class ConfirmForm(forms.Form):
    confirm = forms.BooleanField(required=True)


class ClosePositionForm(forms.Form):
    client_order_id = forms.RegexField(r"^[A-Za-z0-9._:-]{1,64}$", widget=forms.HiddenInput())
    quantity = PlainDecimalField(max_digits=20, decimal_places=8, widget=forms.HiddenInput())
    confirm = forms.BooleanField(required=True, label="I want to close this position at market")
