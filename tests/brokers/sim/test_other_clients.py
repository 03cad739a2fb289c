"""Clients the gateway's authors did not write, against the simulated gateway over TCP.

ib_insync (ib_async's predecessor) negotiates an older server version (176) and decodes with its own
code; it runs in a child process so its event-loop handling stays out of this one. IB's own `ibapi`
is exercised in test_fidelity.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SESSION = Path(__file__).with_name("insync_session.py")


def test_an_ib_insync_session_quotes_trades_cancels_and_reads_the_account(sim_gateway_factory):
    gateway = sim_gateway_factory(tick_interval=0.05)
    done = subprocess.run(
        [sys.executable, str(SESSION), str(gateway.port)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["server_version"] == 176  # ib_insync's newest, accepted by the gateway
    assert seen["accounts"] == [gateway.account_code]
    assert seen["con_id"] == 265598
    bid, ask = seen["quote"]
    assert 0 < bid < ask
    assert seen["market_order"] == {"status": "Filled", "filled": 5.0, "shares": 5.0, "commission": 1.0}
    assert (seen["limit_status"], seen["cancelled_status"]) == ("Submitted", "Cancelled")
    assert seen["positions"] == {"AAPL": 5.0}
    assert {"NetLiquidation", "TotalCashValue", "BuyingPower"} <= set(seen["summary_tags"])
    assert seen["bars"] > 0 and seen["bar_minutes"] == [0]
    # No decoding error on either side: ib_insync logs them to stderr, the gateway to its log.
    assert "Error" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
