"""Who may open a stream: API keys (header or `api_key` query) for programs, sessions for browsers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from ibkrgw.models import ScopedAPIKey
from ibkrgw.web import ws as ws_module
from tests.ws.conftest import ORIGIN, TIMEOUT, communicator, connected, eventually, sent_before_end

pytestmark = pytest.mark.django_db(transaction=True)

PATHS = ["/ws/quotes/", "/ws/orders/"]


async def _refused(ws) -> dict:
    """An unauthenticated socket is accepted, told why in an error frame, and closed with 4401."""
    ok, _ = await ws.connect(timeout=TIMEOUT)
    assert ok
    error = await ws.receive_json_from(timeout=TIMEOUT)
    closing = await ws.receive_output(timeout=TIMEOUT)
    assert closing["type"] == "websocket.close" and closing["code"] == 4401
    return error


@pytest.mark.parametrize("path", PATHS)
async def test_an_unauthenticated_socket_is_refused_with_4401(path, transactional_db):
    error = await _refused(communicator(path))
    assert error == {
        "type": "error",
        "code": "not_authenticated",
        "message": error["message"],
        "details": {},
    }


@pytest.mark.parametrize("path", PATHS)
async def test_an_unknown_api_key_is_refused_with_4401(path, transactional_db):
    error = await _refused(communicator(path, key="nope.not-a-key"))
    assert error["code"] == "not_authenticated"


@pytest.mark.parametrize("path", ["/ws/nope/", "/ws/quotes", "/", "/api/v1/health/"])
async def test_a_path_with_no_stream_is_told_so_and_closed_with_4404(path, ws_key):
    ws = communicator(path, key=ws_key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    error = await ws.receive_json_from(timeout=TIMEOUT)
    assert (error["type"], error["code"]) == ("error", "not_found")
    assert "/ws/quotes/" in error["message"] and "/ws/orders/" in error["message"]
    closing = await ws.receive_output(timeout=TIMEOUT)
    assert (closing["type"], closing["code"]) == ("websocket.close", 4404)


async def test_the_api_key_may_come_in_the_query_string(ws_key):
    ws = communicator(f"/ws/quotes/?api_key={ws_key}")
    assert (await ws.connect(timeout=TIMEOUT))[0]
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await ws.disconnect()


async def test_a_foreign_origin_is_refused_before_the_handshake(ws_key):
    from channels.testing import WebsocketCommunicator

    from ibkrgw.asgi import application

    ws = WebsocketCommunicator(
        application,
        "/ws/quotes/",
        headers=[(b"origin", b"https://evil.example"), (b"authorization", f"Api-Key {ws_key}".encode())],
    )
    connected_, _ = await ws.connect(timeout=TIMEOUT)
    assert not connected_  # closed before accept: a real server answers the handshake with 403


def _signed_in(username: str = "viewer") -> Client:
    """A browser's session: a Django test client signed in as a new (non-staff) user."""
    user = get_user_model().objects.create_user(username, password="pw-only-for-this-test")
    client = Client()
    client.force_login(user)
    return client


def _with_session(path: str, client: Client):
    return communicator(path, headers=[(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())])


def _checked_at_every_message(monkeypatch) -> None:
    """Credentials read from the database at each message. The re-check of a silent client (its own test
    below) is kept out of the way: with no pause between its checks it could end the stream before the
    message these tests send, and they are about that message."""

    async def never(self) -> None:
        await asyncio.Event().wait()  # cancelled when the stream closes, like the real watch

    monkeypatch.setattr(ws_module, "AUTH_RECHECK_S", 0.0)
    monkeypatch.setattr(ws_module.StreamConsumer, "_watch_credential", never)


def _count_rechecks(monkeypatch) -> list[bool]:
    """Re-check credentials every 50 ms instead of every 30 s; the list records each answer."""
    monkeypatch.setattr(ws_module, "AUTH_RECHECK_S", 0.05)
    checks: list[bool] = []
    credential_valid = ws_module._credential_valid

    def counted(credential):
        checks.append(valid := credential_valid(credential))
        return valid

    monkeypatch.setattr(ws_module, "_credential_valid", counted)
    return checks


async def test_a_browser_session_is_accepted(transactional_db):
    client = await sync_to_async(_signed_in)()
    ws = _with_session("/ws/orders/", client)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await ws.disconnect()


def _log_out(client: Client) -> None:
    client.logout()


def _deactivate(client: Client) -> None:
    get_user_model().objects.filter(username="viewer").update(is_active=False)


def _change_password(client: Client) -> None:
    user = get_user_model().objects.get(username="viewer")
    user.set_password("another-pw-only-for-this-test")
    user.save()


def _expire(client: Client) -> None:
    Session.objects.filter(session_key=client.session.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )


SESSION_ENDINGS = [_log_out, _deactivate, _change_password, _expire]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("end_session", SESSION_ENDINGS, ids=lambda f: f.__name__.strip("_"))
async def test_a_session_that_ends_while_its_browser_only_listens_ends_the_stream(
    path, end_session, transactional_db, monkeypatch
):
    checks = _count_rechecks(monkeypatch)
    client = await sync_to_async(_signed_in)()
    ws = _with_session(path, client)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    # A session still signed in survives its re-checks.
    await eventually(lambda: len(checks) >= 3, message="three session re-checks")
    assert all(checks)
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}

    await sync_to_async(end_session)(client)
    error = json.loads((await sent_before_end(ws))["text"])
    assert error["code"] == "not_authenticated"
    assert "session has ended" in error["message"]
    closing = await sent_before_end(ws)
    assert closing["type"] == "websocket.close" and closing["code"] == 4401


@pytest.mark.parametrize("end_session", SESSION_ENDINGS, ids=lambda f: f.__name__.strip("_"))
async def test_a_session_that_ended_is_refused_at_its_next_message(end_session, transactional_db, monkeypatch):
    _checked_at_every_message(monkeypatch)
    client = await sync_to_async(_signed_in)()
    ws = _with_session("/ws/quotes/", client)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}

    await sync_to_async(end_session)(client)
    await ws.send_json_to({"action": "ping"})
    error = await ws.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "not_authenticated"
    closing = await ws.receive_output(timeout=TIMEOUT)
    assert closing["code"] == 4401


async def test_another_users_session_ending_does_not_end_a_stream(transactional_db, monkeypatch):
    # Only the socket's own session and user count: others signing in or out change nothing.
    checks = _count_rechecks(monkeypatch)
    client = await sync_to_async(_signed_in)()
    ws = _with_session("/ws/orders/", client)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    other = await sync_to_async(_signed_in)("other")
    await sync_to_async(other.logout)()
    await eventually(lambda: len(checks) >= 3, message="three session re-checks")
    assert all(checks)
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await ws.disconnect()


async def test_a_key_revoked_while_connected_is_refused_at_its_next_message(ws_key, monkeypatch):
    # Auth is re-checked on each message; revocation is read from the database (here: every time).
    _checked_at_every_message(monkeypatch)
    ws = await connected("/ws/quotes/", ws_key)
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}

    await sync_to_async(lambda: ScopedAPIKey.objects.filter(name="ws-read").update(revoked=True))()
    await ws.send_json_to({"action": "ping"})
    error = await ws.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "not_authenticated"
    closing = await ws.receive_output(timeout=TIMEOUT)
    assert closing["code"] == 4401


@pytest.mark.parametrize("path", PATHS)
async def test_a_key_revoked_in_this_process_refuses_the_very_next_message(path, ws_key):
    # As deployed: the database is read at most every AUTH_RECHECK_S (30 s) while the keys do not change.
    from io import StringIO

    from django.core.management import call_command

    ws = await connected(path, ws_key)
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}

    prefix = ws_key.partition(".")[0]
    await sync_to_async(lambda: call_command("apikey", "revoke", prefix, stdout=StringIO()))()
    # Before: pong, and the socket went on for up to 30 s after the revocation had answered.
    await ws.send_json_to({"action": "ping"})
    error = await ws.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "not_authenticated"
    closing = await ws.receive_output(timeout=TIMEOUT)
    assert closing["code"] == 4401


@pytest.mark.parametrize("path", PATHS)
async def test_a_key_revoked_while_its_client_only_listens_ends_the_stream(path, ws_key, monkeypatch):
    # The orders stream is listened to, not talked to: revocation must not wait for a message that never comes.
    checks = _count_rechecks(monkeypatch)
    ws = await connected(path, ws_key)
    # A usable key survives its re-checks.
    await eventually(lambda: len(checks) >= 3, message="three key re-checks")
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}

    await sync_to_async(lambda: ScopedAPIKey.objects.filter(name="ws-read").update(revoked=True))()
    error = json.loads((await sent_before_end(ws))["text"])
    assert error["code"] == "not_authenticated"
    closing = await sent_before_end(ws)
    assert closing["type"] == "websocket.close" and closing["code"] == 4401


async def test_origin_header_constant_matches_allowed_hosts(ws_key, settings):
    # The Origin every other test sends must pass the real origin check, or they would test nothing.
    from ibkrgw.asgi import application

    assert ORIGIN[1].decode().split("//")[1] in settings.ALLOWED_HOSTS
    ws = WebsocketCommunicator(
        application, "/ws/quotes/", headers=[ORIGIN, (b"authorization", f"Api-Key {ws_key}".encode())]
    )
    assert (await ws.connect(timeout=TIMEOUT))[0]
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await ws.disconnect()


async def test_a_program_without_an_origin_header_authenticates_with_its_key(ws_key):
    from ibkrgw.asgi import application

    # Non-browser clients usually send no Origin; the API key is what admits them.
    ws = WebsocketCommunicator(application, "/ws/quotes/", headers=[(b"authorization", f"Api-Key {ws_key}".encode())])
    ok, _ = await ws.connect(timeout=TIMEOUT)
    assert ok
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await ws.disconnect()


async def test_without_origin_or_key_the_socket_is_still_refused(transactional_db):
    from ibkrgw.asgi import application

    error = await _refused(WebsocketCommunicator(application, "/ws/quotes/"))
    assert error["code"] == "not_authenticated"


async def _refused_frame(ws_key: str, text: str) -> dict:
    """The error frame answering `text` on the quotes socket, which then still answers a ping."""
    ws = communicator("/ws/quotes/", key=ws_key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    try:
        await ws.send_to(text_data=text)
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        assert (frame["type"], frame["code"]) == ("error", "invalid_request")
        await ws.send_json_to({"action": "ping"})
        assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    finally:
        await ws.disconnect()
    return frame


async def test_a_symbol_with_a_unicode_separator_is_refused_not_trimmed(ws_key):
    frame = await _refused_frame(ws_key, json.dumps({"action": "subscribe", "symbols": ["\u2028X"]}))
    assert "symbol" in frame["details"]["fields"]["contracts"]["0"]


async def test_a_key_given_twice_gets_an_error_frame_and_the_socket_stays_open(ws_key):
    frame = await _refused_frame(ws_key, '{"action": "subscribe", "symbols": ["AAPL"], "action": "ping"}')
    assert frame["details"] == {"key": "action", "reason": "duplicate_key"}


async def test_a_number_too_large_to_be_finite_gets_an_error_frame_not_infinity(ws_key):
    """A ping's id of 1e999 would be echoed as Infinity, which no strict JSON parser reads."""
    ws = communicator("/ws/quotes/", key=ws_key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    await ws.send_to(text_data='{"action": "ping", "id": 1e999}')
    raw = await ws.receive_from(timeout=TIMEOUT)
    assert "Infinity" not in raw
    frame = json.loads(raw)
    assert (frame["type"], frame["code"], frame["details"]["reason"]) == ("error", "invalid_request", "bad_number")
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}  # still open
    await ws.disconnect()


async def test_a_pings_id_comes_back_as_it_was_sent(ws_key):
    ws = communicator("/ws/quotes/", key=ws_key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    for sent in ('"a"', "7", "1.5", "-0.25", "null"):
        await ws.send_to(text_data='{"action": "ping", "id": ' + sent + "}")
        assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong", "id": json.loads(sent)}
    await ws.disconnect()
