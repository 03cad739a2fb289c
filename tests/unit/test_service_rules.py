"""Service-layer rules that need the ledger but no broker: who may resume trading, who may approve,
the approval window, and which principals hold which scope."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Permission

from audit.models import AuditEntry
from ibkrgw import auth
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import ErrorCode, GatewayError
from ibkrgw.models import Scope
from orders import services
from orders.models import OrderEvent, TradingSwitchEvent
from orders.models import OrderStatus as S
from orders.selectors import trading_halted
from tests.factories import OrderEventFactory, api_key

pytestmark = pytest.mark.django_db

ADMIN = Actor(kind=ActorKind.USER, label="root", source=Source.ADMIN, is_admin=True)
REFUSED_RESUMERS = {
    "staff user who is not admin": Actor(kind=ActorKind.USER, label="staff", source=Source.ADMIN),
    "api key": Actor(kind=ActorKind.API_KEY, label="bot (abcd)", source=Source.REST, is_admin=True),
    "agent": Actor(kind=ActorKind.MCP, label="mcp:agent", source=Source.MCP, is_admin=True),
    "admin through an agent": Actor(kind=ActorKind.USER, label="root", source=Source.MCP, is_admin=True),
    "system": Actor(kind=ActorKind.SYSTEM, label="worker", source=Source.WORKER, is_admin=True),
}


# -- kill switch ------------------------------------------------------------------------------------
def test_halting_without_a_broker_still_blocks_trading_and_is_audited():
    row = services.trading_halt(actor=ADMIN, reason="incident")
    assert row.halted is True
    assert trading_halted() is True
    entry = AuditEntry.objects.get(event="trading.halted")
    assert entry.actor_label == "root"
    assert entry.data == {"reason": "incident"}


@pytest.mark.parametrize("who", sorted(REFUSED_RESUMERS))
def test_only_an_admin_user_may_resume_at_the_service_layer(who):
    services.trading_halt(actor=ADMIN, reason="incident")
    with pytest.raises(GatewayError) as excinfo:
        services.trading_resume(actor=REFUSED_RESUMERS[who], reason="let me")
    assert excinfo.value.code == ErrorCode.PERMISSION_DENIED
    assert excinfo.value.http_status == 403
    assert trading_halted() is True
    assert not AuditEntry.objects.filter(event="trading.resumed").exists()


def test_an_admin_user_resumes_and_the_resume_is_recorded():
    services.trading_halt(actor=ADMIN, reason="incident")
    row = services.trading_resume(actor=ADMIN, reason="fixed")
    assert (row.halted, row.reason, row.actor_kind, row.actor_label, row.source) == (
        False,
        "fixed",
        "user",
        "root",
        "admin",
    )
    assert trading_halted() is False
    assert AuditEntry.objects.get(event="trading.resumed").data == {"reason": "fixed"}


def test_the_kill_switch_follows_its_latest_row():
    assert trading_halted() is False
    services.trading_halt(actor=ADMIN)
    services.trading_resume(actor=ADMIN)
    services.trading_halt(actor=ADMIN)
    assert trading_halted() is True
    assert list(TradingSwitchEvent.objects.order_by("id").values_list("halted", flat=True)) == [True, False, True]


def test_a_sweep_that_cannot_reach_the_broker_says_why_and_answers_only_while_halted():
    not_started = "The broker connection is not started in this process."
    assert services.trading_halt_sweep() is None  # trading: nothing to sweep
    assert services.halt_progress().error == not_started
    services.trading_halt(actor=ADMIN, reason="incident")
    fresh = services.halt_progress()  # a halt starts over: nothing checked yet
    assert (fresh.working_orders, fresh.checked_at, fresh.error) == (None, None, "")
    progress = services.trading_halt_sweep()
    assert progress == services.halt_progress()
    assert (progress.working_orders, progress.checked_at, progress.error) == (None, None, not_started)


# -- approval -----------------------------------------------------------------------------------
def held(**fields) -> OrderEvent:
    return OrderEventFactory(status=S.PENDING_APPROVAL, **fields)


NOT_OPERATORS = {
    "api key": Actor(kind=ActorKind.API_KEY, label="bot", source=Source.REST),
    "agent": Actor(kind=ActorKind.MCP, label="mcp:agent", source=Source.MCP),
    "user through an agent": Actor(kind=ActorKind.USER, label="root", source=Source.MCP, is_admin=True),
    "system": Actor.system(),
}


@pytest.mark.parametrize("who", sorted(NOT_OPERATORS))
def test_only_an_operator_may_approve_or_reject(who):
    event = held()
    for decide in (services.order_approve, services.order_reject_approval):
        with pytest.raises(GatewayError) as excinfo:
            decide(order_id=event.order.pk, actor=NOT_OPERATORS[who])
        assert excinfo.value.code == ErrorCode.PERMISSION_DENIED
        assert excinfo.value.http_status == 403
        assert excinfo.value.message == "Only an operator can approve or reject orders."
    assert list(event.order.events.values_list("status", flat=True)) == [S.PENDING_APPROVAL]


def test_an_operator_rejects_a_held_order():
    event = held()
    services.order_reject_approval(order_id=event.order.pk, actor=ADMIN)
    latest = event.order.events.order_by("-id").first()
    assert (latest.status, latest.code, latest.reason, latest.source) == (
        S.REJECTED,
        "approval_rejected",
        "rejected by root",
        "admin",
    )
    assert AuditEntry.objects.filter(event="order.approval_rejected", actor_label="root").count() == 1


def test_an_order_that_is_not_held_cannot_be_approved_or_rejected():
    event = OrderEventFactory(status=S.SUBMITTED)
    for decide in (services.order_approve, services.order_reject_approval):
        with pytest.raises(GatewayError) as excinfo:
            decide(order_id=event.order.pk, actor=ADMIN)
        assert excinfo.value.code == ErrorCode.ORDER_STATE_CONFLICT
        assert excinfo.value.http_status == 409
        assert excinfo.value.details == {"status": S.SUBMITTED}
        assert excinfo.value.message == "The order is submitted, not waiting for approval."


def test_approving_after_the_window_expires_the_order_instead(settings, frozen_clock):
    settings.APPROVAL_TTL_S = 300
    event = held()
    frozen_clock.shift(timedelta(seconds=300, microseconds=1))
    with pytest.raises(GatewayError) as excinfo:
        services.order_approve(order_id=event.order.pk, actor=ADMIN)
    assert excinfo.value.code == ErrorCode.ORDER_STATE_CONFLICT
    assert excinfo.value.http_status == 409
    assert excinfo.value.details == {"status": S.EXPIRED}
    assert excinfo.value.message == "The approval window has passed; the order expired."
    assert list(event.order.events.order_by("id").values_list("status", flat=True)) == [S.PENDING_APPROVAL, S.EXPIRED]
    assert not AuditEntry.objects.filter(event="order.approved").exists()


def test_approving_within_the_window_goes_on_to_the_pre_trade_checks(settings, frozen_clock):
    settings.APPROVAL_TTL_S = 300
    event = held()
    frozen_clock.shift(timedelta(seconds=300))
    with pytest.raises(GatewayError) as excinfo:
        services.order_approve(order_id=event.order.pk, actor=ADMIN)
    # Not expired: it reached the checks that need the broker, which is not connected here.
    assert excinfo.value.code == ErrorCode.BROKER_UNAVAILABLE
    assert list(event.order.events.values_list("status", flat=True)) == [S.PENDING_APPROVAL]
    blocked = AuditEntry.objects.get(event="gate.blocked", actor_label="root")
    assert (blocked.data["account"], blocked.data["code"]) == (event.order.account, "broker_unavailable")
    assert blocked.target_id == event.order.client_order_id


def test_held_orders_expire_one_microsecond_after_the_window(settings, frozen_clock):
    settings.APPROVAL_TTL_S = 300
    event = held()
    frozen_clock.shift(timedelta(seconds=300))
    assert services.orders_expire_pending() == 0
    frozen_clock.shift(timedelta(microseconds=1))
    assert services.orders_expire_pending() == 1
    latest = event.order.events.order_by("-id").first()
    assert (latest.status, latest.source) == (S.EXPIRED, "worker")
    assert latest.reason == "not approved within 300s"
    assert services.orders_expire_pending() == 0
    assert AuditEntry.objects.filter(event="order.expired").count() == 1


def test_every_held_order_past_its_window_expires_in_one_sweep(settings, frozen_clock):
    settings.APPROVAL_TTL_S = 300
    frozen_clock.shift(timedelta(seconds=200))
    recent = held()  # recorded first, held last: still within its window below
    frozen_clock.shift(timedelta(seconds=-200))
    old = [held(), held()]
    frozen_clock.shift(timedelta(seconds=301))
    assert services.orders_expire_pending() == 2
    assert [o.order.events.order_by("-id").first().status for o in old] == [S.EXPIRED, S.EXPIRED]
    assert recent.order.events.order_by("-id").first().status == S.PENDING_APPROVAL


def test_only_held_orders_expire(settings, frozen_clock):
    settings.APPROVAL_TTL_S = 300
    OrderEventFactory(status=S.SUBMITTED)
    frozen_clock.shift(timedelta(hours=1))
    assert services.orders_expire_pending() == 0


# -- scopes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key_scope", "wanted", "allowed"),
    [
        (Scope.READ, Scope.READ, True),
        (Scope.READ, Scope.TRADE, False),
        (Scope.TRADE, Scope.READ, True),
        (Scope.TRADE, Scope.TRADE, True),
    ],
)
def test_a_key_allows_its_scope_and_trade_includes_read(key_scope, wanted, allowed):
    key, _ = api_key(scope=key_scope)
    assert key.allows(wanted) is allowed
    assert auth.principal_allows(AnonymousUser(), key, wanted) is allowed


def _user(may_trade: bool = False, **flags):
    user = get_user_model().objects.create_user(f"u{may_trade}{sorted(flags.items())}", password="x", **flags)
    if may_trade:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="orders", codename="trade"))
        user = get_user_model().objects.get(pk=user.pk)  # permissions are cached on the instance
    return user


@pytest.mark.parametrize(
    ("flags", "read", "trade"),
    [
        ({}, True, False),
        ({"may_trade": True}, True, False),
        ({"is_staff": True}, True, False),
        ({"is_staff": True, "may_trade": True}, True, True),
        ({"is_staff": True, "is_superuser": True}, True, True),
        ({"is_staff": True, "may_trade": True, "is_active": False}, False, False),
        ({"is_active": False}, False, False),
    ],
    ids=["user", "user with the permission", "staff", "staff who may trade", "superuser", "inactive", "inactive user"],
)
def test_signed_in_users_read_and_only_staff_with_the_trade_permission_trade(flags, read, trade):
    user = _user(**flags)
    assert auth.principal_allows(user, None, Scope.READ) is read
    assert auth.principal_allows(user, None, Scope.TRADE) is trade


def test_nobody_signed_in_has_no_scope():
    assert auth.principal_allows(AnonymousUser(), None, Scope.READ) is False
    assert auth.principal_allows(None, None, Scope.READ) is False


def test_a_usable_key_is_found_from_its_secret_and_others_are_not(settings):
    key, secret = api_key(name="bot", scope=Scope.TRADE)
    assert auth.api_key_from_string(secret) == key
    assert auth.api_key_from_string("") is None
    assert auth.api_key_from_string("no-dot-here") is None
    assert auth.api_key_from_string(secret + "x" * 200) is None
    assert auth.api_key_from_string(secret[:-1] + ("a" if secret[-1] != "a" else "b")) is None
    assert auth.api_key_from_string("unknown.secret") is None
    revoked, revoked_secret = api_key(name="old", revoked=True)
    assert auth.api_key_from_string(revoked_secret) is None


def test_a_verified_key_is_served_from_memory_for_exactly_the_cache_time(
    settings, monkeypatch, django_assert_num_queries
):
    from types import SimpleNamespace

    auth.api_key_cache_clear()
    settings.API_KEY_CACHE_S = 1
    clock = SimpleNamespace(now=500.0)
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=lambda: clock.now))
    key, secret = api_key(name="bot")
    assert auth.api_key_from_string(secret) == key  # verified at 500.0
    clock.now = 500.999
    with django_assert_num_queries(0):
        assert auth.api_key_from_string(secret) == key
    clock.now = 501.0
    with django_assert_num_queries(2):  # the key's row, and whether the audit log holds its revocation
        assert auth.api_key_from_string(secret) == key


def test_an_expired_key_is_not_usable(frozen_clock):
    from django.utils import timezone

    _, secret = api_key(name="short", expiry_date=timezone.now() - timedelta(seconds=1))
    assert auth.api_key_from_string(secret) is None


def test_the_actor_names_the_key_or_the_user():
    key, _ = api_key(name="bot", scope=Scope.TRADE)
    actor = auth.actor_for(AnonymousUser(), key, Source.WS)
    assert (actor.kind, actor.label, actor.source, actor.is_admin) == (
        ActorKind.API_KEY,
        f"bot ({key.prefix})",
        Source.WS,
        False,
    )
    root = get_user_model().objects.create_superuser("root", "", "x")
    actor = auth.actor_for(root, None, Source.REST)
    assert (actor.kind, actor.label, actor.source, actor.is_admin) == (ActorKind.USER, "root", Source.REST, True)
    staff = _user(is_staff=True)
    assert auth.actor_for(staff, None, Source.REST).is_admin is False


def test_admin_only_endpoints_take_a_superuser_session_and_never_a_key():
    class Request:
        def __init__(self, user, key=None):
            self.user, self.auth = user, key

    permission = auth.IsAdminUser()
    root = get_user_model().objects.create_superuser("root", "", "x")
    key, _ = api_key(scope=Scope.TRADE)
    assert permission.has_permission(Request(root), None) is True
    assert permission.has_permission(Request(root, key), None) is False
    assert permission.has_permission(Request(_user(is_staff=True)), None) is False
    assert permission.has_permission(Request(AnonymousUser()), None) is False


# -- exact records and refusals -------------------------------------------------------------------
def test_a_refused_resume_says_who_may_resume():
    with pytest.raises(GatewayError) as excinfo:
        services.trading_resume(actor=REFUSED_RESUMERS["api key"])
    assert excinfo.value.message == "Only an admin user can resume trading."


def test_the_kill_switch_row_and_its_audit_entry_record_who_when_and_why():
    actor = Actor(kind=ActorKind.USER, label="r" * 151, source=Source.ADMIN, correlation_id="cid-9", is_admin=True)
    halted = services.trading_halt(actor=actor, reason="x" * 2001)
    assert (len(halted.reason), halted.actor_label, halted.correlation_id) == (2000, "r" * 150, "cid-9")
    resumed = services.trading_resume(actor=actor)
    assert resumed.reason == ""
    entries = list(AuditEntry.objects.filter(target_type="trading").order_by("seq"))
    assert [e.event for e in entries] == ["trading.halted", "trading.resumed"]
    assert entries[1].data == {"reason": ""}
    assert {e.correlation_id for e in entries} == {"cid-9"}
    assert services.trading_halt(actor=actor).reason == ""


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda row: type(row).objects.get(pk=row.pk).save(), "updating a saved row"),
        (lambda row: row.delete(), "delete()"),
        (lambda row: type(row).objects.filter(pk=row.pk).update(reason="x"), "update()"),
        (lambda row: type(row).objects.filter(pk=row.pk).delete(), "delete()"),
        (lambda row: type(row).objects.bulk_update([row], ["reason"]), "bulk_update()"),
        (lambda row: type(row).objects.update_or_create(pk=row.pk, defaults={"reason": "x"}), "update_or_create()"),
    ],
    ids=["save", "delete", "queryset update", "queryset delete", "bulk_update", "update_or_create"],
)
def test_each_append_only_refusal_names_the_table_and_the_operation(make, what):
    from ibkrgw.errors import AppendOnlyViolation

    row = OrderEventFactory()
    with pytest.raises(AppendOnlyViolation) as excinfo:
        make(row)
    assert excinfo.value.message == f"orders.OrderEvent is append-only: {what} is not allowed."
    assert excinfo.value.code == ErrorCode.LEDGER_APPEND_ONLY


def test_the_api_key_header_is_read_only_when_it_names_an_api_key():
    from rest_framework import exceptions

    class Request:
        def __init__(self, **meta):
            self.META = meta

    authentication = auth.ApiKeyAuthentication()
    key, secret = api_key(scope=Scope.TRADE)
    assert authentication.authenticate(Request()) is None
    assert authentication.authenticate(Request(HTTP_AUTHORIZATION=f"Bearer {secret}")) is None
    user, found = authentication.authenticate(Request(HTTP_AUTHORIZATION=f"Api-Key {secret} "))
    assert (user.is_authenticated, found) == (False, key)
    with pytest.raises(exceptions.AuthenticationFailed):
        authentication.authenticate(Request(HTTP_AUTHORIZATION="Api-Key nope.nope"))
    assert authentication.authenticate_header(Request()) == "Api-Key"


class _Request:
    def __init__(self, user=None, key=None, method="GET", **meta):
        self.user, self.auth, self.method, self.META = user or AnonymousUser(), key, method, meta
        self.headers: dict = {}


def test_the_actor_carries_the_requests_correlation_id():
    from ibkrgw.actors import correlation_id_var

    root = get_user_model().objects.create_superuser("root", "", "x")
    token = correlation_id_var.set("cid-from-request")
    try:
        actor = auth.request_actor(_Request(user=root))
    finally:
        correlation_id_var.reset(token)
    assert (actor.label, actor.source, actor.correlation_id, actor.is_admin) == (
        "root",
        "rest",
        "cid-from-request",
        True,
    )
    key, _ = api_key(name="bot", scope=Scope.TRADE)
    token = correlation_id_var.set("cid-2")
    try:
        assert auth.actor_for(AnonymousUser(), key, Source.MCP).correlation_id == "cid-2"
    finally:
        correlation_id_var.reset(token)


def test_scope_permissions_read_the_signed_in_user_and_the_key():
    staff, plain = _user(is_staff=True, may_trade=True), _user()
    read_key, _ = api_key(name="r", scope=Scope.READ)
    assert auth.HasTradeScope().has_permission(_Request(user=staff), None) is True
    assert auth.HasTradeScope().has_permission(_Request(user=_user(is_staff=True)), None) is False
    assert auth.HasTradeScope().has_permission(_Request(user=plain), None) is False
    assert auth.HasReadScope().has_permission(_Request(user=plain), None) is True
    assert auth.HasReadScope().has_permission(_Request(), None) is False
    assert auth.HasTradeScope().has_permission(_Request(key=read_key), None) is False
    assert auth.HasReadScope().has_permission(_Request(key=read_key), None) is True


def test_a_bad_key_is_refused_with_a_clear_message():
    from rest_framework import exceptions

    with pytest.raises(exceptions.AuthenticationFailed) as excinfo:
        auth.ApiKeyAuthentication().authenticate(_Request(HTTP_AUTHORIZATION="Api-Key nope.nope"))
    assert str(excinfo.value.detail) == "Invalid, expired or revoked API key."


def test_a_revoked_key_stops_working_at_once_even_when_it_was_just_used(settings):
    settings.API_KEY_CACHE_S = 60
    key, secret = api_key(name="bot", scope=Scope.TRADE)
    assert auth.api_key_from_string(secret) == key  # verified and remembered
    key.revoked = True
    key.save()
    assert auth.api_key_from_string(secret) is None


def test_without_a_cache_every_use_is_checked_against_the_database(settings):
    settings.API_KEY_CACHE_S = 0
    key, secret = api_key(name="bot", scope=Scope.TRADE)
    assert auth.api_key_from_string(secret) == key
    assert auth.api_key_cached(secret) is None


def test_the_read_throttle_counts_per_key_per_user_and_per_address():
    key, _ = api_key(name="bot")
    user = _user()
    throttle = auth.ReadRateThrottle()
    assert throttle.get_cache_key(_Request(key=key), None) == f"throttle_read_key:{key.prefix}"
    assert throttle.get_cache_key(_Request(user=user), None) == f"throttle_read_user:{user.pk}"
    assert throttle.get_cache_key(_Request(REMOTE_ADDR="10.0.0.9"), None) == "throttle_read_ip:10.0.0.9"
    assert throttle.get_cache_key(_Request(key=key, method="POST"), None) is None  # orders have their own limit


@pytest.mark.django_db(transaction=True)
def test_the_ledger_write_lock_needs_a_transaction():
    from django.db.transaction import TransactionManagementError

    from audit.services import ledger_write_lock

    with pytest.raises(TransactionManagementError) as excinfo:
        ledger_write_lock()
    assert str(excinfo.value) == "ledger_write_lock must run inside a transaction"


@pytest.mark.parametrize("conflicts", ["update_conflicts", "ignore_conflicts"])
def test_bulk_inserts_that_would_skip_or_overwrite_ledger_rows_are_refused(conflicts):
    from ibkrgw.errors import AppendOnlyViolation
    from orders.models import OrderEvent

    event = OrderEventFactory()
    extra = {"update_fields": ["reason"], "unique_fields": ["id"]} if conflicts == "update_conflicts" else {}
    with pytest.raises(AppendOnlyViolation) as excinfo:
        OrderEvent.objects.bulk_create(
            [OrderEvent(order=event.order, status=S.SUBMITTED)], **{conflicts: True}, **extra
        )
    assert excinfo.value.message == f"orders.OrderEvent is append-only: bulk_create({conflicts}=True) is not allowed."
    assert OrderEvent.objects.count() == 1


def test_a_key_that_expires_while_remembered_stops_working(settings, frozen_clock):
    from django.utils import timezone

    settings.API_KEY_CACHE_S = 3600
    key, secret = api_key(name="short", expiry_date=timezone.now() + timedelta(minutes=1))
    assert auth.api_key_from_string(secret) == key
    frozen_clock.shift(timedelta(minutes=2))
    assert auth.api_key_cached(secret) is None
    assert auth.api_key_from_string(secret) is None


def test_a_key_used_again_soon_is_not_looked_up_again(settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.API_KEY_CACHE_S = 3600
    key, secret = api_key(name="bot", scope=Scope.TRADE)
    assert auth.api_key_from_string(secret) == key
    with CaptureQueriesContext(connection) as queries:
        assert auth.api_key_from_string(secret) == key
        assert auth.api_key_cached(secret) == key
    assert len(queries) == 0
    assert auth.api_key_cached(secret + "x") is None
    settings.API_KEY_CACHE_S = 0  # a cache that keeps nothing: every use asks the database
    auth.api_key_cache_clear()
    assert auth.api_key_from_string(secret) == key
    with CaptureQueriesContext(connection) as queries:
        assert auth.api_key_from_string(secret) == key
    assert len(queries) >= 1


def test_a_request_made_with_a_key_acts_as_the_key():
    key, _ = api_key(name="bot", scope=Scope.TRADE)
    assert auth.request_actor(_Request(key=key)).kind == ActorKind.API_KEY


@pytest.mark.parametrize("how", [{"force_update": True}, {"update_fields": ["reason"]}])
def test_a_new_ledger_row_cannot_be_saved_as_an_update(how):
    from ibkrgw.errors import AppendOnlyViolation

    event = OrderEventFactory.build(order=OrderEventFactory().order)
    with pytest.raises(AppendOnlyViolation):
        event.save(**how)


def test_a_ledger_row_with_a_taken_primary_key_is_an_insert_that_fails():
    from django.db import IntegrityError, transaction

    from orders.models import OrderEvent

    existing = OrderEventFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderEvent(pk=existing.pk, order=existing.order, status=S.SUBMITTED).save()
    assert OrderEvent.objects.get(pk=existing.pk).status == existing.status


def test_the_audit_writer_fills_defaults_and_cuts_long_fields():
    from django.db import transaction

    from audit.services import audit_record

    actor = Actor(kind=ActorKind.USER, label="l" * 151, source=Source.ADMIN, correlation_id="c" * 65)
    with transaction.atomic():
        plain = audit_record(event="trading.halted", actor=actor)
        long = audit_record(event="trading.halted", actor=actor, target_type="t" * 33, target_id="i" * 65)
    assert (plain.target_type, plain.target_id) == ("", "")
    assert (len(long.actor_label), len(long.correlation_id), len(long.target_type), len(long.target_id)) == (
        150,
        64,
        32,
        64,
    )


@pytest.mark.django_db(transaction=True)
def test_the_audit_writer_refuses_to_run_outside_a_transaction():
    from django.db.transaction import TransactionManagementError

    from audit.services import audit_record

    with pytest.raises(TransactionManagementError) as excinfo:
        audit_record(event="trading.halted", actor=ADMIN)
    assert str(excinfo.value) == "audit_record must run inside the transaction of the change it records"


@pytest.mark.parametrize(
    "missing",
    [{"entry_hash": ""}, {"prev_hash": ""}, {"seq": None}],
    ids=["no entry hash", "no previous hash", "no seq"],
)
def test_an_audit_entry_without_its_chain_fields_is_refused(missing):
    from audit.models import AuditEntry

    fields = {"seq": 99, "prev_hash": "p" * 64, "entry_hash": "e" * 64, **missing}
    entry = AuditEntry(event="trading.halted", actor_kind="user", actor_label="x", source="admin", **fields)
    with pytest.raises(ValueError) as excinfo:
        entry.save()
    assert str(excinfo.value) == "AuditEntry rows are written by audit.services.audit_record only"
