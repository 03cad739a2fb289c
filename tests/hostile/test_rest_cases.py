"""Each hostile request found against the REST API answers a shaped 4xx, and nothing reaches the broker."""

from __future__ import annotations

import json

import pytest

from brokers.adapter import ContractSpec
from ibkrgw.errors import GatewayError
from orders.models import Order
from tests.hostile.conftest import assert_shaped

ORDER = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT", "client_order_id": "h-1"}


def post_raw(client, path: str, body: str | bytes, method: str = "post", content_type: str = "application/json"):
    return getattr(client, method)(path, data=body, content_type=content_type)


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


# -- TWS protocol injection through a path parameter -------------------------------------------------
@pytest.mark.parametrize("path", ["/api/v1/quotes/AAPL%00STK%00SMART%00USD/", "/api/v1/bars/AAPL%00STK%00SMART/"])
def test_nul_in_a_path_symbol_is_400_and_never_reaches_the_broker(broker_tap, read_client, path):
    error = assert_shaped(read_client.get(path), 400, "invalid_request")
    assert "control character" in error["message"]
    broker_tap.assert_untouched()


@pytest.mark.parametrize("symbol", ["AAPL$", "A" * 33, "AAPL;"])
def test_path_symbols_follow_the_symbol_alphabet(broker_tap, read_client, symbol):
    error = assert_shaped(read_client.get(f"/api/v1/quotes/{symbol}/"), 400, "invalid_request")
    assert "symbol" in error["details"]["fields"]
    broker_tap.assert_untouched()


def test_valid_path_symbols_still_answer(ib_runtime, read_client):
    assert read_client.get("/api/v1/quotes/AAPL/").status_code == 200
    assert read_client.get("/api/v1/contracts/", {"symbol": "BRK B"}).status_code in (200, 404)


@pytest.mark.parametrize("field", ["symbol", "exchange", "currency", "primary_exchange", "expiry", "multiplier"])
@pytest.mark.parametrize("bad", ["AAPL\x00STK", "US\x1bD", "SMART\x7f", "X\x85Y"])
def test_control_characters_in_query_parameters_are_400(broker_tap, read_client, field, bad):
    assert_shaped(read_client.get("/api/v1/contracts/", {"symbol": "AAPL", field: bad}), 400, "invalid_request")
    broker_tap.assert_untouched()


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("symbol", "ＡＡＰＬ"),
        ("symbol", "A;B"),
        ("exchange", "SMART ISLAND"),
        ("currency", "US"),
        ("currency", "ＵＳＤ"),
        ("expiry", "٢٠٢٥٠١"),
        ("multiplier", "１00"),
        ("primary_exchange", "NASDAQ/X"),
    ],
)
def test_query_parameters_that_reach_the_broker_follow_their_alphabet(broker_tap, read_client, field, bad):
    query = {"symbol": "AAPL", field: bad}
    for path in ("/api/v1/contracts/", "/api/v1/quotes/AAPL/", "/api/v1/bars/AAPL/"):
        params = query if path == "/api/v1/contracts/" or field != "symbol" else {}
        if not params:
            continue
        if path != "/api/v1/contracts/":
            params = {k: v for k, v in params.items() if k != "symbol"}
        error = assert_shaped(read_client.get(path, params), 400, "invalid_request")
        assert field in error["details"]["fields"]
    response = read_client.get("/api/v1/account/summary/", {"account": "DU1;X"})
    assert_shaped(response, 400, "invalid_request")
    broker_tap.assert_untouched()


@pytest.mark.parametrize(
    ("field", "bad"), [("symbol", "ＡＡＰＬ"), ("account", "DU 1"), ("exchange", "SM\tART"), ("currency", "usd1")]
)
def test_order_fields_that_reach_the_broker_follow_their_alphabet(broker_tap, api_client, orders_enabled, field, bad):
    response = api_client.post("/api/v1/orders/", {**ORDER, field: bad}, format="json")
    assert field in assert_shaped(response, 400, "invalid_request")["details"]["fields"]
    assert Order.objects.count() == 0
    broker_tap.assert_untouched()


def test_the_broker_adapter_refuses_control_characters_itself(broker_tap, ib_runtime):
    """A door that forgot to validate still cannot corrupt the TWS stream."""
    adapter = ib_runtime.adapter
    for spec in (ContractSpec(symbol="AAPL\x00STK"), ContractSpec(symbol="AAPL", exchange="SMART\n")):
        with pytest.raises(GatewayError) as caught:
            adapter.resolve_contracts(spec=spec)
        assert caught.value.code == "invalid_request"
        assert "nothing was sent to the broker" in caught.value.message
    with pytest.raises(GatewayError):
        adapter.account_summary(account="DU1234567\x00")
    broker_tap.assert_untouched()


# -- 5xx from client input -----------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["action", "order_type", "tif", "sec_type", "right", "symbol", "account"])
def test_a_lone_surrogate_in_any_order_field_is_400(broker_tap, api_client, orders_enabled, field):
    body = json.dumps({**ORDER, field: "X"}).replace('"X"', '"\\ud800"')
    for path in ("/api/v1/orders/", "/api/v1/orders/preview/"):
        error = assert_shaped(post_raw(api_client, path, body), 400, "invalid_request")
        assert error["details"]["reason"] == "bad_string"
    assert Order.objects.count() == 0
    broker_tap.assert_untouched()


@pytest.mark.parametrize("field", ["client_order_id", "quantity", "limit_price"])
def test_a_number_too_large_to_be_finite_is_400_not_infinity(broker_tap, api_client, orders_enabled, field):
    """1e999 parses as infinity: as a key it would become "inf" (1e999 and 1e1000 one key), as a price nothing."""
    body = json.dumps({**ORDER, field: "X"}).replace('"X"', "1e999")
    for path in ("/api/v1/orders/", "/api/v1/orders/preview/"):
        error = assert_shaped(post_raw(api_client, path, body), 400, "invalid_request")
        assert error["details"]["reason"] == "bad_number"
    assert Order.objects.count() == 0
    broker_tap.assert_untouched()


@pytest.mark.parametrize(
    ("field", "value"),
    [("symbol", "\u2028AAPL"), ("symbol", "AAPL\u3000"), ("exchange", "\u00a0SMART"), ("client_order_id", "k\u2029")],
)
def test_a_unicode_separator_around_a_field_is_refused_not_trimmed(
    broker_tap, api_client, orders_enabled, field, value
):
    """Only ASCII spaces, tabs and line ends are trimmed: "\u2028AAPL" is not quietly the symbol AAPL, nor a
    client_order_id with a separator another key."""
    for path in ("/api/v1/orders/", "/api/v1/orders/preview/"):
        error = assert_shaped(api_client.post(path, {**ORDER, field: value}, format="json"), 400, "invalid_request")
        assert set(error["details"]["fields"]) == {field}
    assert api_client.get("/api/v1/quotes/AAPL/?exchange=%E2%80%A8SMART").status_code == 400
    assert Order.objects.count() == 0
    broker_tap.assert_untouched()
    # ASCII whitespace around a value is still trimmed.
    padded = {**ORDER, "symbol": " AAPL\n", "client_order_id": " k-1 "}
    placed = api_client.post("/api/v1/orders/", padded, format="json")
    assert placed.status_code == 201, placed.content
    assert (placed.json()["symbol"], placed.json()["client_order_id"]) == ("AAPL", "k-1")


def test_a_key_given_twice_is_400_whichever_value_a_reader_would_take(broker_tap, api_client, orders_enabled):
    """JSON parsers disagree on which of two values counts: a proxy checking the first quantity would pass an
    order the gateway placed with the second."""
    body = json.dumps(ORDER)[:-1] + ', "quantity": "1000"}'
    for path in ("/api/v1/orders/", "/api/v1/orders/preview/"):
        error = assert_shaped(post_raw(api_client, path, body), 400, "invalid_request")
        assert error["details"] == {"key": "quantity", "reason": "duplicate_key"}
    nested = '{"reason": "x", "details": {"a": 1, "a": 2}}'
    error = assert_shaped(post_raw(api_client, "/api/v1/trading/halt/", nested), 400, "invalid_request")
    assert error["details"]["reason"] == "duplicate_key"
    assert Order.objects.count() == 0
    broker_tap.assert_untouched()


def test_json_nested_100000_deep_is_400_on_orders_preview_patch_and_halt(broker_tap, api_client):
    placed = api_client.post("/api/v1/orders/", ORDER, format="json")  # orders disabled: recorded as simulated
    assert placed.status_code == 201
    broker_tap.clear()
    body = '{"quantity": ' + deep(100_000) + "}"
    for method, path in (
        ("post", "/api/v1/orders/"),
        ("post", "/api/v1/orders/preview/"),
        ("patch", f"/api/v1/orders/{placed.json()['id']}/"),
        ("post", "/api/v1/trading/halt/"),
    ):
        error = assert_shaped(post_raw(api_client, path, body, method=method), 400, "invalid_request")
        assert error["details"] == {"max_depth": 20, "reason": "too_deep"}
    assert Order.objects.count() == 1
    assert not api_client.get("/api/v1/health/").json()["trading_halted"]
    broker_tap.assert_untouched()


def test_json_one_level_over_the_depth_limit_is_400(broker_tap, api_client):
    error = assert_shaped(post_raw(api_client, "/api/v1/orders/", deep(21)), 400, "invalid_request")
    assert error["details"]["max_depth"] == 20


def test_a_10_mb_body_is_413_with_the_limit(broker_tap, api_client, orders_enabled):
    body = json.dumps({**ORDER, "symbol": "A" * (10 * 1024 * 1024)})
    error = assert_shaped(post_raw(api_client, "/api/v1/orders/", body), 413, "request_too_large")
    assert error["details"]["max_bytes"] == 256 * 1024
    assert Order.objects.count() == 0
    broker_tap.assert_untouched()


def test_bars_over_ibs_duration_limit_answer_at_once_with_the_limit(broker_tap, read_client):
    response = read_client.get("/api/v1/bars/AAPL/", {"bar_size": "1 secs", "duration": "365 D"})
    error = assert_shaped(response, 400, "historical_limit")
    assert error["details"] == {"bar_size": "1 secs", "duration": "365 D", "max_duration": "1800 S"}
    for bar_size, duration, limit in (
        ("1 min", "2 D", "1 D"),
        ("30 mins", "2 M", "1 M"),
        ("5 secs", "3601 S", "3600 S"),
    ):
        error = assert_shaped(read_client.get("/api/v1/bars/AAPL/", {"bar_size": bar_size, "duration": duration}), 400)
        assert error["details"]["max_duration"] == limit
    zero = assert_shaped(read_client.get("/api/v1/bars/AAPL/", {"duration": "0 D"}), 400, "invalid_request")
    assert zero["details"]["fields"] == ["duration"]
    broker_tap.assert_untouched()
    # At the limit it is served.
    assert read_client.get("/api/v1/bars/AAPL/", {"bar_size": "1 secs", "duration": "1800 S"}).status_code == 200


def test_a_bad_multipart_body_is_400_with_the_error_shape(broker_tap, api_client):
    response = post_raw(
        api_client,
        "/api/v1/orders/",
        b"--xx\r\nContent-Disposition: form-data\r\n\r\n",
        content_type="multipart/form-data",
    )
    assert_shaped(response, 400, "invalid_request")
    response = post_raw(
        api_client,
        "/api/v1/orders/",
        b'--b\r\nContent-Disposition: form-data; name="action"\r\n\r\n\x00BUY\r\n--b--\r\n',
        content_type="multipart/form-data; boundary=b",
    )
    assert_shaped(response, 400, "invalid_request")
    broker_tap.assert_untouched()


# -- loose numbers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "quantity", ["٣", "４", "1_0", "1e1", " 3", "0x10", "3.", "Infinity", "NaN", True, [3], {"q": 3}]
)
def test_quantities_accept_plain_ascii_decimals_only(broker_tap, api_client, orders_enabled, quantity):
    if quantity == "3.":
        # A trailing dot is still a plain decimal ("3." == 3): accepted, and means exactly 3.
        response = api_client.post("/api/v1/orders/", {**ORDER, "quantity": quantity}, format="json")
        assert response.status_code == 201 and response.json()["quantity"] == "3"
        return
    response = api_client.post("/api/v1/orders/", {**ORDER, "quantity": quantity}, format="json")
    error = assert_shaped(response, 400, "invalid_request")
    assert "quantity" in error["details"]["fields"]
    assert Order.objects.count() == 0
    broker_tap.assert_untouched()


@pytest.mark.parametrize("field", ["limit_price", "stop_price", "strike", "take_profit", "stop_loss"])
def test_prices_refuse_unicode_digits(broker_tap, api_client, orders_enabled, field):
    response = api_client.post("/api/v1/orders/", {**ORDER, "order_type": "LMT", field: "١٠٠"}, format="json")
    assert field in assert_shaped(response, 400, "invalid_request")["details"]["fields"]
    broker_tap.assert_untouched()


@pytest.mark.parametrize("con_id", ["٣", "1_0", "1.0", True, 2**40])
def test_con_ids_refuse_loose_integers(broker_tap, read_client, con_id):
    response = read_client.get("/api/v1/contracts/", {"con_id": con_id})
    assert "con_id" in assert_shaped(response, 400, "invalid_request")["details"]["fields"]
    broker_tap.assert_untouched()


def test_json_numbers_and_plain_strings_still_place_orders(ib_runtime, api_client, orders_enabled):
    for n, quantity in enumerate((2, 2.5, "7", "+1", "0.5")):
        response = api_client.post(
            "/api/v1/orders/", {**ORDER, "client_order_id": f"ok-{n}", "quantity": quantity}, format="json"
        )
        assert response.status_code == 201, response.json()


@pytest.mark.parametrize(
    ("field", "number"),
    [
        ("quantity", "0.99999999999999999999"),
        ("quantity", "1.0000000000000000000001"),
        ("limit_price", "190.000000000000000001"),
    ],
)
def test_a_json_number_is_taken_exactly_never_rounded_to_another_order(
    broker_tap, api_client, orders_enabled, field, number
):
    """As a float, 0.99999999999999999999 is 1: the order placed would not be the one written."""
    body = json.dumps({**ORDER, "order_type": "LMT", "limit_price": "190", field: "X"}).replace('"X"', number)
    error = assert_shaped(post_raw(api_client, "/api/v1/orders/", body), 400, "invalid_request")
    assert field in error["details"]["fields"]
    assert Order.objects.count() == 0
    broker_tap.assert_untouched()


def test_a_json_number_modifying_an_order_is_taken_exactly(ib_runtime, api_client, orders_enabled, sim_gateway):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", "190.00")
    body = {**ORDER, "order_type": "LMT", "limit_price": "181.00", "quantity": "10"}
    order = api_client.post("/api/v1/orders/", body, format="json").json()
    assert order["status"] == "submitted", order
    response = post_raw(api_client, f"/api/v1/orders/{order['id']}/", '{"quantity": 10.0000000000000000001}', "patch")
    assert "quantity" in assert_shaped(response, 400, "invalid_request")["details"]["fields"]
    assert api_client.get(f"/api/v1/orders/{order['id']}/").json()["quantity"] == "10"


# -- errors Django answers itself --------------------------------------------------------------------
def test_unknown_paths_and_wrong_methods_have_the_error_shape(read_client, api_client):
    assert_shaped(read_client.get("/api/v1/no-such-thing/"), 404, "not_found")
    assert_shaped(read_client.get("/api/nowhere"), 404, "not_found")
    response = api_client.put("/api/v1/trading/halt/", {}, format="json")
    assert_shaped(response, 405, "method_not_allowed")
    assert "POST" in response["Allow"]


@pytest.mark.parametrize(
    "path", ["/api/v1/orders/?symbol=%FF", "/api/v1/fills/?symbol=A%C3", "/api/v1/audit/?event=%ED%A0%80"]
)
def test_a_query_string_that_is_not_utf8_is_400_not_read_as_a_replacement_character(read_client, path):
    assert assert_shaped(read_client.get(path), 400, "invalid_request")["details"]["reason"] == "not_utf8"
    assert read_client.get("/api/v1/orders/?symbol=%C3%A9").status_code == 200  # é, percent-encoded as UTF-8


def test_an_integer_over_pythons_digit_cap_is_400_in_the_gateways_words(broker_tap, api_client):
    body = '{"symbol": "AAPL", "action": "BUY", "order_type": "MKT", "quantity": ' + "9" * 5000 + "}"
    error = assert_shaped(post_raw(api_client, "/api/v1/orders/", body), 400, "invalid_request")
    assert error["details"]["reason"] == "bad_number"
    assert "sys." not in error["message"] and "4300" in error["message"]
    broker_tap.assert_untouched()


def test_a_bad_content_length_is_400(api_client):
    response = api_client.generic("POST", "/api/v1/orders/", b"{}", content_type="application/json", CONTENT_LENGTH="x")
    assert_shaped(response, 400, "invalid_request")


def test_the_browsable_api_keeps_its_own_error_pages(read_client):
    """A person browsing the API sees DRF's page with the full error (the shape is only enforced on
    errors DRF did not render)."""
    response = read_client.get("/api/v1/contracts/", {"con_id": "٣"}, HTTP_ACCEPT="text/html")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert b"con_id" in response.content


@pytest.mark.parametrize("key", ["a\x01b", "٣٣٣", "k" * 65, "a b", ""])
def test_a_hostile_idempotency_key_header_is_400(broker_tap, api_client, orders_enabled, key):
    body = {k: v for k, v in ORDER.items() if k != "client_order_id"}
    response = api_client.post("/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert_shaped(response, 400, "invalid_request")
    assert Order.objects.count() == 0
    broker_tap.assert_untouched()
