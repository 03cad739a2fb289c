"""The API's own pages for people: the browsable API's order form places an order, and the API docs
(Swagger UI, ReDoc) load nothing from another site."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from orders.models import Order
from tests.console.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = "/api/v1/orders/"


@pytest.fixture
def browser_client(superuser) -> Client:
    # CSRF enforced, as for a real browser.
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=superuser.username, password=PASSWORD)
    return client


def _form(html: str) -> str:
    pattern = r'<form action="/api/v1/orders/" method="POST"[^>]*class="form-horizontal"(.*?)</form>'
    match = re.search(pattern, html, re.S)
    assert match, "no HTML order form on the page"
    return match.group(1)


def test_browsable_api_form_has_the_request_fields_and_places_an_order(ib_runtime, browser_client):
    page = browser_client.get(ORDERS, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    form = _form(page.content.decode())
    for field in ("symbol", "quantity", "order_type", "limit_price", "take_profit", "stop_loss", "client_order_id"):
        assert f'name="{field}"' in form, field
    for response_only in ("events", "fills", "broker_order_id", "filled_quantity"):
        assert f'name="{response_only}"' not in form, response_only
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)

    # What the browser sends when the form is submitted: every field, blanks included.
    fields = dict.fromkeys(re.findall(r'name="([a-z_]+)"', form), "")
    fields.pop("csrfmiddlewaretoken")
    body = {
        **fields,
        "csrfmiddlewaretoken": token,
        "symbol": "AAPL",
        "sec_type": "STK",
        "action": "BUY",
        "quantity": "5",
        "order_type": "MKT",
        "tif": "DAY",
        "client_order_id": "from-the-form",
    }
    body.pop("outside_rth", None)  # an unticked checkbox is not sent
    response = browser_client.post(ORDERS, body, HTTP_ACCEPT="text/html")
    assert response.status_code == 201, response.content.decode()[:2000]
    order = Order.objects.get(client_order_id="from-the-form")
    assert (order.symbol, order.quantity, order.source) == ("AAPL", 5, "rest")


def test_browsable_api_form_places_a_bracket(ib_runtime, sim_gateway, browser_client):
    last = sim_gateway.quote("AAPL")["last"]
    form = _form(browser_client.get(ORDERS, HTTP_ACCEPT="text/html").content.decode())
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    body = {
        "csrfmiddlewaretoken": token,
        "symbol": "AAPL",
        "action": "BUY",
        "quantity": "2",
        "order_type": "MKT",
        "take_profit": f"{last * 103 / 100:.2f}",
        "stop_loss": f"{last * 97 / 100:.2f}",
        "limit_price": "",
        "client_order_id": "form-bracket",
    }
    response = browser_client.post(ORDERS, body, HTTP_ACCEPT="application/json")
    assert response.status_code == 201, response.content
    assert sorted(c["role"] for c in response.json()["children"]) == ["stop_loss", "take_profit"]


def test_a_form_post_without_the_csrf_token_is_refused(ib_runtime, browser_client):
    response = browser_client.post(ORDERS, {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"})
    assert response.status_code == 403
    assert not Order.objects.exists()


EXTERNAL = re.compile(r'(?:src|href)\s*=\s*["\'](?:https?:)?//', re.I)


@pytest.mark.parametrize("url", ["/api/docs/", "/api/redoc/"])
def test_api_docs_load_only_local_files(client, url):
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn.jsdelivr" not in html and "fonts.googleapis" not in html
