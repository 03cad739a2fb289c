"""Request body parsers with the limits of `ibkrgw.limits`: size, depth, strings. Every refusal is a
GatewayError, so it renders in the error shape like any other bad request."""

from __future__ import annotations

from django.core.exceptions import SuspiciousOperation
from django.http.multipartparser import MultiPartParserError
from rest_framework import parsers

from ibkrgw import limits


def _read_limited(stream) -> bytes:
    limit = limits.max_body_bytes()
    raw = stream.read(limit + 1) if stream is not None else b""
    if len(raw) > limit:
        raise limits.too_large(None, limit)
    return raw


def _check_form(data) -> None:
    for key, values in data.lists():
        limits.check_json({key: [v for v in values if isinstance(v, str)]})


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        return limits.loads(_read_limited(stream))


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(_BytesStream(_read_limited(stream)), media_type, parser_context)
        _check_form(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            result = super().parse(stream, media_type, parser_context)
        except (MultiPartParserError, SuspiciousOperation, ValueError) as exc:
            raise limits.invalid(f"The multipart body is not valid: {str(exc)[:120]}", reason="bad_multipart") from None
        except parsers.ParseError as exc:
            raise limits.invalid(str(exc.detail)[:200], reason="bad_multipart") from None
        _check_form(result.data)
        return result


class _BytesStream:
    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    def read(self, *args) -> bytes:
        raw, self._raw = self._raw, b""
        return raw
