"""Log record helpers: every record carries the correlation id of the request that caused it."""

import logging

from ibkrgw.actors import correlation_id_var


class CorrelationIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id_var.get() or "-"
        return True
