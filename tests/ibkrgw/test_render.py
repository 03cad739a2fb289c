"""REST JSON is rendered by orjson with the same bytes DRF's own renderer produces."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

from ibkrgw.web.render import JSONRenderer

PAYLOAD = {
    "price": "189.5",
    "raw_decimal": Decimal("1.25"),
    "time": datetime(2026, 3, 2, 14, 30, 5, 123456, tzinfo=UTC),
    "day": date(2026, 3, 2),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "label": gettext_lazy("Orders"),
    "tags": {"b"},
    "nested": [{"name": "Société Générale \u2028 line", "n": 3, "ok": True, "none": None}],
}


def test_same_bytes_as_drf():
    assert JSONRenderer().render(PAYLOAD) == DRFJSONRenderer().render(PAYLOAD)


def test_indented_and_unusual_values_fall_back_to_drf():
    assert JSONRenderer().render(PAYLOAD, "application/json; indent=2") == DRFJSONRenderer().render(
        PAYLOAD, "application/json; indent=2"
    )
    odd = {1: "int key", "big": 2**70}
    assert JSONRenderer().render(odd) == DRFJSONRenderer().render(odd)


def test_api_answers_use_it(client, db):
    response = client.get("/api/v1/health/")
    assert response.accepted_renderer.__class__ is JSONRenderer


def test_same_bytes_with_unicode_output_turned_on():
    ours, drf = JSONRenderer(), DRFJSONRenderer()
    ours.ensure_ascii = drf.ensure_ascii = False
    assert ours.render(PAYLOAD) == drf.render(PAYLOAD)


def test_text_orjson_refuses_is_rendered_by_drf():
    lone_surrogate = {"text": "bad \ud800 text"}  # as a hostile client might send it back to us
    expected = b'{"text":"bad \\ud800 text"}'
    assert JSONRenderer().render(lone_surrogate) == DRFJSONRenderer().render(lone_surrogate) == expected
