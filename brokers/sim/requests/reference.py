"""Reference and account-service requests answered with small fixed data, or with IB's error where the
simulator offers no such service (fundamentals, news articles, Wall Street Horizon, FA, exercise)."""

from __future__ import annotations

from decimal import Decimal

from .. import messages as M
from ..protocol import Cursor
from ..session import Session

# Market rules: id -> [(low edge, increment)]; rule 26 is US stocks' one-cent tick.
MARKET_RULES = {
    26: [(Decimal(0), Decimal("0.01"))],
    32: [(Decimal(0), Decimal("0.01")), (Decimal(3), Decimal("0.05"))],
    67: [(Decimal(0), Decimal("0.25"))],
    239: [(Decimal(0), Decimal("0.00005"))],
}
SCAN_CODES = ("TOP_PERC_GAIN", "TOP_PERC_LOSE", "MOST_ACTIVE", "HOT_BY_VOLUME")
SCANNER_XML = (
    '<?xml version="1.0" encoding="UTF-8"?><ScanParameterResponse><InstrumentList><Instrument><name>US Stocks'
    "</name><type>STK</type></Instrument></InstrumentList><LocationTree><Location><displayName>US Stocks"
    "</displayName><locationCode>STK.US.MAJOR</locationCode></Location></LocationTree><ScanTypeList>"
    + "".join(f"<ScanType><displayName>{c}</displayName><scanCode>{c}</scanCode></ScanType>" for c in SCAN_CODES)
    + "</ScanTypeList></ScanParameterResponse>"
)


def _not_available(s: Session, req_id: int, code: int, text: str) -> None:
    s.send(M.error(s.version, req_id, code, text))


class ReferenceRequests:
    def _req_family_codes(self, s: Session, c: Cursor) -> None:
        s.send([78, 1, self.account_code, ""])

    def _req_news_providers(self, s: Session, c: Cursor) -> None:
        s.send([85, 0])  # a paper account with no news subscriptions

    def _req_market_rule(self, s: Session, c: Cursor) -> None:
        rule_id = c.int()
        rows = MARKET_RULES.get(rule_id)
        if rows is None:
            _not_available(s, -1, 321, f"Error validating request.-'cl' : cause - Invalid market rule id {rule_id}")
            return
        fields: list = [93, rule_id, len(rows)]
        for low, inc in rows:
            fields += [low, inc]
        s.send(fields)

    def _req_smart_components(self, s: Session, c: Cursor) -> None:
        req_id = c.int()
        venues = (("NASDAQ", "Q"), ("NYSE", "N"), ("ARCA", "P"), ("BATS", "Z"), ("IEX", "V"))
        fields: list = [82, req_id, len(venues)]
        for bit, (exchange, letter) in enumerate(venues, start=1):
            fields += [bit, exchange, letter]
        s.send(fields)

    def _req_user_info(self, s: Session, c: Cursor) -> None:
        s.send([107, c.int(), ""])

    def _req_soft_dollar_tiers(self, s: Session, c: Cursor) -> None:
        s.send([77, c.int(), 0])

    def _req_scanner_parameters(self, s: Session, c: Cursor) -> None:
        s.send([19, 1, SCANNER_XML])

    def _req_scanner_subscription(self, s: Session, c: Cursor) -> None:
        req_id, rows = c.int(), c.int()
        c.skip(2)  # instrument, locationCode
        scan_code = c.str()
        if scan_code not in SCAN_CODES:
            _not_available(
                s, req_id, 165, f"Historical Market Data Service query message:Scan code {scan_code} invalid"
            )
            return
        stocks = [i for i in self.market.instruments.values() if i.sec_type == "STK" and i.currency == "USD"]
        if scan_code in ("TOP_PERC_GAIN", "TOP_PERC_LOSE"):

            def change(i):
                q = self.market.quote(i.con_id)
                return (q.last - q.close) / q.close

            stocks.sort(key=change, reverse=scan_code == "TOP_PERC_GAIN")
        else:
            stocks.sort(key=lambda i: self.market.quote(i.con_id).volume, reverse=True)
        stocks = stocks[: max(1, min(rows if rows > 0 else 50, 50))]
        fields: list = [20, 3, req_id, len(stocks)]
        for rank, i in enumerate(stocks):
            fields += [rank, i.con_id, i.symbol, i.sec_type, "", 0, "", "SMART", i.currency, i.local_symbol]
            fields += [i.primary_exchange, i.trading_class, "", "", "", ""]
        s.send(fields)

    def _cancel_scanner_subscription(self, s: Session, c: Cursor) -> None:
        """The scan is answered once; nothing keeps streaming."""

    def _query_display_groups(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.send([67, 1, c.int(), "1|2|3|4|5|6|7"])

    def _subscribe_group_events(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.send([68, 1, c.int(), ""])  # the group shows no contract

    def _update_display_group(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id, info = c.int(), c.str()
        s.send([68, 1, req_id, info])

    def _ignore(self, s: Session, c: Cursor) -> None:
        """Requests IB acknowledges with silence (log level, cancels of one-shot requests, bulletins)."""

    # -- services the simulator does not offer: IB's own errors
    def _req_fundamental_data(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        # IB error list, 430: no fundamentals for the security (paper accounts carry no Reuters subscription).
        _not_available(
            s, c.int(), 430, "We are sorry, but fundamentals data for the security specified is not available."
        )

    def _req_news_article(self, s: Session, c: Cursor) -> None:
        _not_available(s, c.int(), 10276, "News feed is not allowed.")

    def _req_historical_news(self, s: Session, c: Cursor) -> None:
        _not_available(s, c.int(), 10276, "News feed is not allowed.")

    def _req_wsh_meta_data(self, s: Session, c: Cursor) -> None:
        _not_available(s, c.int(), 10279, "Failed to request WSH metadata: no Wall Street Horizon subscription.")

    def _req_wsh_event_data(self, s: Session, c: Cursor) -> None:
        _not_available(s, c.int(), 10280, "Failed to request WSH event data: no Wall Street Horizon subscription.")

    def _request_fa(self, s: Session, c: Cursor) -> None:
        _not_available(
            s, -1, 321, "Error validating request.-'bA' : cause - FA data operations ignored for non FA customers."
        )

    def _exercise_options(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        _not_available(
            s,
            c.int(),
            321,
            "Error validating request.-'bP' : cause - Option exercise is not available in this paper account.",
        )

    def _verify(self, s: Session, c: Cursor) -> None:
        _not_available(s, -1, 321, "Error validating request.-'bV' : cause - API verification is not required.")
