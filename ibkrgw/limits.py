"""Limits on what a client may send, the same at every door (REST, websockets, MCP).

A request body or frame is refused before any of it is used when it is too big
(`request_too_large`, 413), not UTF-8 or not JSON, nested deeper than the limit, when an object names
one key twice (JSON parsers disagree on which value counts: a proxy could check one quantity and the
gateway place the other), or when any string in it (keys included) holds a lone surrogate or a control
character other than tab, CR and LF (`invalid_request`, 400). Fields that reach the broker are held to
stricter alphabets by their serializers, and the broker adapter refuses any control character as a last
line of defence.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from django.conf import settings

from ibkrgw.errors import ErrorCode, GatewayError

# C0 controls except TAB/LF/CR, DEL, C1 controls, and lone UTF-16 surrogates (a valid str never pairs them).
_FORBIDDEN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Any control character at all: for values that go on the broker's wire.
_FORBIDDEN_WIRE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def max_body_bytes() -> int:
    return settings.REQUEST_MAX_BODY_BYTES


def max_json_depth() -> int:
    return settings.REQUEST_MAX_JSON_DEPTH


def too_large(size: int | None, limit: int) -> GatewayError:
    details: dict[str, Any] = {"max_bytes": limit}
    if size is not None:
        details["bytes"] = size
    return GatewayError(
        ErrorCode.REQUEST_TOO_LARGE, f"The request body is larger than {limit} bytes.", http_status=413, details=details
    )


def invalid(message: str, **details: Any) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, message, details=details)


def bad_text_reason(text: str) -> str | None:
    """Why `text` may not be used, or None: a lone surrogate or a control character."""
    found = _FORBIDDEN_TEXT.search(text)
    if found is None:
        return None
    char = found.group()
    return "lone surrogate" if "\ud800" <= char <= "\udfff" else f"control character U+{ord(char):04X}"


def wire_unsafe_reason(text: str) -> str | None:
    """Why `text` may not go to the broker, or None (any control character, NUL included)."""
    found = _FORBIDDEN_WIRE.search(text)
    if found is None:
        return None
    char = found.group()
    return "lone surrogate" if "\ud800" <= char <= "\udfff" else f"control character U+{ord(char):04X}"


def check_json(value: Any, *, max_depth: int | None = None) -> None:
    """Refuse a parsed JSON value nested deeper than `max_depth`, or holding a bad string anywhere."""
    limit = max_json_depth() if max_depth is None else max_depth
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            reason = bad_text_reason(item)
            if reason:
                raise invalid(f"A string contains a {reason}.", path=where, reason="bad_string")
        elif isinstance(item, float | Decimal) and not math.isfinite(item):
            # 1e999 is infinity to a float: no number the gateway takes, and no JSON to echo back.
            raise invalid("A number is out of range (it is not finite).", path=where, reason="bad_number")
        elif isinstance(item, dict | list):
            if depth >= limit:
                raise invalid(f"JSON is nested deeper than {limit} levels.", max_depth=limit, reason="too_deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    reason = bad_text_reason(key) if isinstance(key, str) else None
                    if reason:
                        raise invalid(f"A key contains a {reason}.", path=where, reason="bad_string")
                    stack.append((child, f"{where}.{key[:40]}", depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class KeysOnce:
    """A `json.loads` object hook that builds each object as json does (the last value of a key) and keeps
    the first key an object named twice in `duplicate`, so one parse gives both."""

    def __init__(self) -> None:
        self.duplicate: str | None = None

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        if self.duplicate is None and len(found) < len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.duplicate = key
                    break
                seen.add(key)
        return found


def duplicate_key(raw: str | bytes) -> str | None:
    """The first key an object of the JSON document `raw` names twice, or None (also when `raw` is not JSON:
    its reader refuses that). For doors whose JSON another library parses (MCP over stdio)."""
    keys = KeysOnce()
    try:
        json.loads(raw, object_pairs_hook=keys)
    except (ValueError, RecursionError):
        return None
    return keys.duplicate


def duplicate_key_error(key: str) -> GatewayError:
    # The key is named only when it is text the answer can carry (check_json refuses the others anyway).
    named = key[:40] if bad_text_reason(key) is None else None
    where = f"the key {named!r}" if named is not None else "a key"
    return invalid(f"An object names {where} twice; give each key once.", key=named, reason="duplicate_key")


def loads(raw: bytes | str, *, max_bytes: int | None = None, max_depth: int | None = None) -> Any:
    """Parse one JSON document within the limits, or raise GatewayError (400, or 413 for size)."""
    limit = max_body_bytes() if max_bytes is None else max_bytes
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    if size > limit:
        raise too_large(size, limit)
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("The body is not valid UTF-8.", reason="not_utf8") from None
    keys = KeysOnce()
    try:
        # Numbers with a fraction or exponent as Decimal: a float would round 0.99999999999999999999 to 1.
        value = json.loads(raw, parse_float=Decimal, parse_constant=_no_constants, object_pairs_hook=keys)
    except (ValueError, RecursionError) as exc:
        if keys.duplicate is not None:  # named twice before the parse failed: that refusal comes first
            raise duplicate_key_error(keys.duplicate) from None
        raise _parse_error(exc, max_depth) from None
    if keys.duplicate is not None:
        raise duplicate_key_error(keys.duplicate)
    check_json(value, max_depth=max_depth)
    return value


def _parse_error(exc: ValueError | RecursionError, max_depth: int | None) -> GatewayError:
    if isinstance(exc, RecursionError):
        limit_depth = max_json_depth() if max_depth is None else max_depth
        return invalid(f"JSON is nested deeper than {limit_depth} levels.", max_depth=limit_depth, reason="too_deep")
    # ValueError covers JSONDecodeError and Python's cap on very long integers (whose text names Python's own knob).
    if "integer string conversion" in str(exc):
        return invalid(f"An integer has more than {sys.get_int_max_str_digits()} digits.", reason="bad_number")
    return invalid(f"The body is not valid JSON: {str(exc)[:120]}", reason="not_json")


# -- bodies of undeclared size (chunked transfer encoding) -------------------------------------
Receive = Callable[[], Awaitable[dict[str, Any]]]


async def bounded_body(receive: Receive, limit: int) -> tuple[Receive, int] | None:
    """Read an ASGI request body up to `limit` bytes: a `receive` that replays it and its size, or None
    when it is larger (the rest is never read). For bodies that declare no Content-Length."""
    messages: list[dict[str, Any]] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # the client went away: the application sees the disconnect
        size += len(message.get("body", b""))
        if size > limit:
            return None
        if not message.get("more_body", False):
            break

    async def replay() -> dict[str, Any]:
        return messages.pop(0) if messages else await receive()

    return replay, size


class ChunkedBodyLimit:
    """ASGI wrapper: a request body of undeclared size (Transfer-Encoding: chunked) is read here, bounded by
    REQUEST_MAX_BODY_BYTES, before the application buffers it: 413 in the error shape when larger,
    else the application gets it with the Content-Length it now has (Django and DRF read a body
    by its declared length). Bodies that declare their size are refused by it further in."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        # HTTP/1.1: a body of undeclared size comes chunked; without that header there is no body at all.
        if scope["type"] != "http" or not any(name == b"transfer-encoding" for name, _ in scope["headers"]):
            return await self.app(scope, receive, send)
        limit = max_body_bytes()
        read = await bounded_body(receive, limit)
        if read is not None:
            replay, size = read
            headers = [(n, v) for n, v in scope["headers"] if n not in (b"transfer-encoding", b"content-length")]
            headers.append((b"content-length", str(size).encode()))
            return await self.app({**scope, "headers": headers}, replay, send)
        body = json.dumps(too_large(None, limit).as_dict()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        # The unread rest of the body would be taken for the next request: end this connection.
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
