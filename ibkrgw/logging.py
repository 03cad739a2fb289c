"""Log record helpers: every record carries the correlation id of the request that caused it, and no
line carries a secret (API keys in URLs or headers, tokens, passwords) in any log we write."""

from __future__ import annotations

import logging
import re

from pythonjsonlogger.json import JsonFormatter

from ibkrgw.actors import correlation_id_var

REDACTED = "[REDACTED]"
# `name=value` in a query string or form (`?api_key=...`, `&token=...`), and `"name": "value"` in JSON.
_SECRET_NAMES = r"api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|password|passwd|secret|metrics[_-]?token"  # noqa: S105 - names, not a secret
_PARAM = re.compile(rf"(?i)((?:{_SECRET_NAMES})=)[^&\s\"'#<>]+")
_JSON_FIELD = re.compile(rf"(?i)(\"(?:{_SECRET_NAMES})\"\s*:\s*\")[^\"]*")
# `Authorization: Api-Key <key>` / `Bearer <token>` / `Basic <credentials>` anywhere in a line.
_SCHEME = re.compile(r"(?i)\b(Api-Key|Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{6,}")


def redact(text: str) -> str:
    """`text` with every secret value replaced by [REDACTED]."""
    text = _PARAM.sub(rf"\1{REDACTED}", text)
    text = _JSON_FIELD.sub(rf"\1{REDACTED}", text)
    return _SCHEME.sub(rf"\1\2{REDACTED}", text)


class CorrelationIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Django logs a 4xx/5xx answer once the middleware that set the contextvar has returned: its record
        # carries the request, which carries the id.
        request = getattr(record, "request", None)
        record.correlation_id = correlation_id_var.get() or getattr(request, "correlation_id", None) or "-"
        return True


class AnsweredRequestErrorFilter(logging.Filter):
    """ib_async logs IB's error 200 ("No security definition has been found") at ERROR. For the gateway it is
    an answer (`contract_not_found`, to the client that asked), and any client could fill the log with it:
    it is logged as INFO, which the `ib_async` loggers leave out unless their level is lowered."""

    ANSWERED = re.compile(r"Error 200, reqId -?\d+: ")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and self.ANSWERED.match(record.getMessage()):
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines; extra attributes (e.g. the `request` Django attaches, whose repr holds the full
    URL) are redacted with the message."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def redact_daphne_access_log() -> None:
    """daphne writes its access log (full request paths, query strings included) straight to a stream,
    not through logging: redact its lines too."""
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:  # not served by daphne
        return
    original = AccessLogGenerator.write_entry
    if getattr(original, "redacting", False):
        return

    def write_entry(self, host, date, request, *args, **kwargs):
        return original(self, host, date, redact(request), *args, **kwargs)

    write_entry.redacting = True  # type: ignore[attr-defined]
    AccessLogGenerator.write_entry = write_entry
