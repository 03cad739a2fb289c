"""How values look in JSON, the same for REST, websockets and MCP."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
from rest_framework import renderers
from rest_framework.utils.encoders import JSONEncoder as _DRFEncoder


def decimal_str(value: Decimal | None) -> str | None:
    """Plain, unpadded decimal strings: "189.5", "1000", "0" (never "1E+3", "0E-8" or "10.00000000")."""
    return None if value is None else format(value.normalize(), "f")


def iso_utc(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z, as DRF renders datetimes."""
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- REST responses --------------------------------------------------------------------------------
# orjson for the types JSON has; everything else (datetimes, lazy strings, sets, ...) the way DRF's
# encoder renders it, so the bytes are the same as DRF's JSONRenderer's.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_drf_default = _DRFEncoder().default


class JSONRenderer(renderers.JSONRenderer):
    """DRF's compact JSON, rendered by orjson (several times faster) with DRF's bytes; indented output,
    non-ASCII text while UNICODE_JSON is off (escaped as \\uXXXX) and anything orjson refuses (integers
    over 64 bits, non-string keys, lone surrogates) are rendered by DRF itself."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        if self.get_indent(accepted_media_type, renderer_context or {}) is not None:
            return super().render(data, accepted_media_type, renderer_context)
        body = _orjson(data, ascii_only=self.ensure_ascii)
        return body if body is not None else super().render(data, accepted_media_type, renderer_context)


def render_json(data) -> bytes:
    """`data` as the REST API's JSON renderer renders it (compact)."""
    return JSONRenderer().render(data)


def _orjson(data, *, ascii_only: bool) -> bytes | None:
    try:
        body = orjson.dumps(data, default=_drf_default, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return None
    if body.isascii():
        return body
    if ascii_only:
        return None  # DRF escapes every non-ASCII character
    return json_script_safe(body)


def json_script_safe(body: bytes) -> bytes:
    """Escape U+2028/U+2029 as DRF does, so the JSON is also valid JavaScript."""
    if b"\xe2\x80\xa8" in body or b"\xe2\x80\xa9" in body:
        body = body.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return body
