"""Log record helpers: every record carries the correlation id of the request that caused it, and no
line carries a secret (API keys in URLs or headers, tokens, passwords) in any log we write."""

from __future__ import annotations

import logging
import re
import threading
import time

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


class BrokerOutageResponseFilter(logging.Filter):
    """On `django.request`. While the broker is away every request that needs it answers 503
    (`broker_unavailable`) or 504 (`broker_timeout`), and Django logs each answer at ERROR: a busy client
    writes thousands of lines a minute saying one thing. Such lines are kept at one per status and
    `interval_s`, the next one counting those left out. The outage itself is logged by the broker runtime
    and shown by health; every other record passes unchanged."""

    STATUSES = frozenset({503, 504})

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._next_at: dict[int, float] = {}
        self._left_out: dict[int, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if status not in self.STATUSES:
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._next_at.get(status, 0.0):
                self._left_out[status] = self._left_out.get(status, 0) + 1
                return False
            left_out = self._left_out.pop(status, 0)
            self._next_at[status] = now + self.interval_s
        if left_out:
            record.msg = f"{record.msg} ({left_out} more {status} answers since the last such line)"
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
