"""Shared fixtures: the simulated gateway over real TCP, the IB runtime connected to it, API clients."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from brokers import runtime
from ibkrgw.models import ScopedAPIKey

pytest_plugins = ["brokers.sim.fixtures"]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll until `predicate()` is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {message}")


def pipeline_queued() -> int:
    """Commands waiting in the order pipeline, not counting the halt sweep (queued every second while
    the pipeline is busy, by the housekeeping thread)."""
    from orders.pipeline import pipeline

    waiting = pipeline()._queue
    with waiting.mutex:
        return sum(
            1
            for command in waiting.queue
            if command is not None
            and not getattr(command.run, "__qualname__", "").endswith("trading_halt_sweep.<locals>.sweep")
        )


def anchor_stock_prices(gateway) -> None:
    """Start every stock at its base price (AAPL 190.00, MSFT 420.00...).

    The simulated market follows a seeded path through the day, which can wander past the 5% price
    collar from the base; tests that price orders near the base would then pass or fail by the hour.
    From here the price follows the path's moves from the base, a few hundredths of a percent a minute.
    """
    for inst in list(gateway.market.instruments.values()):
        if inst.sec_type == "STK":
            gateway.set_price(inst.con_id, inst.base_price)


def web_server_env(**settings: str) -> dict[str, str]:
    """The environment of a web server a test starts in a process of its own: this test's database, no IB
    connection, no Redis; `settings` on top (LOG_LEVEL, LOG_FORMAT...)."""
    env = {k: v for k, v in os.environ.items() if k != "CHANNEL_LAYER_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="ibkrgw.settings",
        DATABASE_URL=subprocess_database_url(),
        IBKRGW_NO_BROKER="1",
        **settings,
    )
    return env


def trade_at_gateway(port: int, contract, action: str, quantity: float) -> None:
    """Trade directly with another TWS API client, as a person at TWS would, until the order is filled."""
    from ib_async import IB, MarketOrder

    ib = IB()
    ib.connect("127.0.0.1", port, clientId=77, timeout=10)
    try:
        (contract,) = ib.qualifyContracts(contract)
        trade = ib.placeOrder(contract, MarketOrder(action, quantity))
        deadline = time.monotonic() + 10
        while not trade.isDone() and time.monotonic() < deadline:
            ib.waitOnUpdate(timeout=0.2)
        assert trade.orderStatus.status == "Filled"
    finally:
        ib.disconnect()


def subprocess_database_url() -> str:
    """DATABASE_URL that points a child process (mcp, a crashed gateway...) at this test's database."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = f"{db['USER']}:{db['PASSWORD']}@" if db.get("PASSWORD") else f"{db['USER']}@"
    return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(autouse=True)
def _no_read_throttling_unless_asked(settings):
    # Tests poll the API in tight loops; the throttle has its own test.
    from django.core.cache import cache

    from brokers.selectors import health_probe_forget
    from ibkrgw.auth import api_key_cache_clear, read_throttle_reset

    health_probe_forget()  # each test has a fresh database
    cache.clear()
    read_throttle_reset()
    api_key_cache_clear()
    settings.API_READ_RATE = "1000000/min"
    # The ledger watch of an in-process runtime would re-read whatever a test does to its ledger (rows
    # rewritten on purpose, tables emptied at teardown) and log it: off, except where tests/audit/test_watch.py
    # runs it.
    settings.LEDGER_WATCH_ROWS = 0
    from audit.watch import ledger_watch_forget

    ledger_watch_forget()


@pytest.fixture(autouse=True)
def _fresh_contract_memory():
    # Each test has a fresh database; the process-local contract cache must not outlive it.
    from marketdata.services import contract_cache_clear
    from orders.selectors import kill_switch_memory_forget
    from orders.services.recording import order_refs_forget

    contract_cache_clear()
    order_refs_forget()
    kill_switch_memory_forget()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, whose drop at the end PostgreSQL refuses while sessions use it: the
    threads that live as long as the process (the order pipeline's, asgiref's for sync_to_async) close
    their connections first."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from orders.pipeline import pipeline

    with django_db_blocker.unblock():  # each thread closes its own (connections are per thread)
        pipeline().run(connections.close_all)  # it would reconnect when next used
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture
def sim_gateway(sim_gateway_factory):
    """A simulated gateway whose stocks start at their base prices (see `anchor_stock_prices`)."""
    gateway = sim_gateway_factory()
    anchor_stock_prices(gateway)
    return gateway


@pytest.fixture
def ib_runtime(sim_gateway, transactional_db):
    """The IB worker and recorder of this process, connected to a fresh simulated gateway and reconciled."""
    runtime.start(host="127.0.0.1", port=sim_gateway.port, client_id=1)
    rt = runtime.current()
    wait_for(lambda: rt.worker.reconciled.is_set(), message="connect and reconcile")
    yield rt
    runtime.stop()
    from marketdata.services import rest_stream_holds_forget

    rest_stream_holds_forget()  # they were subscriptions of the runtime just stopped


def _client_with_key(scope: str) -> APIClient:
    _, key = ScopedAPIKey.objects.create_key(name=f"test-{scope}", scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


@pytest.fixture
def pooled_app():
    """Builds the Django application `ibkrgw.asgi` serves (ibkrgw.web.handler), or one with `threads`
    request threads; when the test ends their database connections are closed and the threads stopped."""
    from ibkrgw.web.handler import PooledASGIHandler, get_pooled_asgi_application

    built: list[PooledASGIHandler] = []

    def build(threads: int | None = None) -> PooledASGIHandler:
        app = get_pooled_asgi_application() if threads is None else PooledASGIHandler(threads=threads)
        built.append(app)
        return app

    yield build
    for app in built:
        app.shutdown()


@pytest.fixture
def api_client(transactional_db) -> APIClient:
    """Authenticated with an API key of scope `trade`."""
    return _client_with_key("trade")


@pytest.fixture
def read_client(transactional_db) -> APIClient:
    return _client_with_key("read")


@pytest.fixture
def read_client_in_test_transaction(db) -> APIClient:
    """A `read` key's client for tests that run inside one rolled-back transaction."""
    return _client_with_key("read")


@pytest.fixture
def admin_client(transactional_db) -> APIClient:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("root", "", "pw-not-used-elsewhere")
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def orders_enabled(settings):
    settings.ORDERS_ENABLED = True
    return settings


def _flush_with_ledger_guards_lifted(original):
    """Test-only: resetting the database between transactional tests must empty the append-only tables,
    which their triggers rightly refuse. Lift the triggers for the flush only, then put them back."""

    def teardown(self):
        from django.db import connections

        from audit.triggers import APPEND_ONLY_TABLES, create_triggers, drop_triggers

        for alias in self._databases_names(include_mirrors=False):
            with connections[alias].schema_editor() as editor:
                for table in APPEND_ONLY_TABLES:
                    drop_triggers(editor, table)
        try:
            original(self)
        finally:
            for alias in self._databases_names(include_mirrors=False):
                with connections[alias].schema_editor() as editor:
                    for table in APPEND_ONLY_TABLES:
                        create_triggers(editor, table)

    return teardown


def _mutant_database_files(name: str) -> list[Path]:
    return [Path(name + suffix) for suffix in ("", "-wal", "-shm")]


def _own_test_database_per_mutant():
    """Mutation testing (scripts/mutation.sh) forks one process per mutant from a parent that has run the
    tests once with --reuse-db. Each child starts from a copy of that migrated database, under its own
    name, so parallel children never share a file and none pays for the migrations again."""
    from django.db import connections

    if not os.environ.get("MUTANT_UNDER_TEST"):
        return
    connections.close_all()
    for conn in connections.all(initialized_only=False):
        test = conn.settings_dict.get("TEST", {})
        if conn.vendor != "sqlite" or not test.get("NAME"):
            continue
        own = str(Path(tempfile.gettempdir()) / f"ibkrgw-test-{os.getpid()}.sqlite3")
        if own == test["NAME"]:
            continue  # the parent itself
        for source, target in zip(_mutant_database_files(test["NAME"]), _mutant_database_files(own), strict=True):
            if source.exists():
                shutil.copyfile(source, target)
        test["NAME"] = own
        _MUTANT_DATABASES.append(own)


_MUTANT_DATABASES: list[str] = []


def pytest_collection_modifyitems(config, items):
    """Mutation testing stops at a mutant's first failing test: run its fastest tests first, by the
    durations of the clean run (mutants/mutmut-stats.json). Tests without a database go first, then
    pytest-django's order stays: plain database tests before transactional ones."""
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    import json

    try:
        durations = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        durations = {}

    def rank(item) -> int:
        marker = item.get_closest_marker("django_db")
        if "transactional_db" in item.fixturenames or (marker is not None and marker.kwargs.get("transaction")):
            return 2
        return 1 if marker is not None or "db" in item.fixturenames else 0

    items.sort(key=lambda item: (rank(item), durations.get(item.nodeid, 0.0)))


def pytest_unconfigure(config):
    for name in _MUTANT_DATABASES:
        for path in _mutant_database_files(name):
            path.unlink(missing_ok=True)


def pytest_configure(config):
    from django.test import TransactionTestCase

    TransactionTestCase._fixture_teardown = _flush_with_ledger_guards_lifted(TransactionTestCase._fixture_teardown)
    _own_test_database_per_mutant()
