"""Authentication and scopes shared by REST, websockets and MCP.

People use Django sessions; programs send `Authorization: Api-Key <key>`. A key has scope
`read` or `trade`. Session users may read; trading needs a staff user.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from importlib import import_module
from typing import Any, TypeGuard

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils.crypto import constant_time_compare
from rest_framework import authentication, exceptions, permissions, throttling

from audit.stored import UNREADABLE_ERRORS
from ibkrgw.actors import Actor, ActorKind, Source, current_correlation_id
from ibkrgw.apikeys import apikey_distrust, apikey_revocation_seq, unreadable_key_problem
from ibkrgw.errors import ErrorCode, GatewayError
from ibkrgw.models import Scope, ScopedAPIKey

KEYWORD = "Api-Key"
logger = logging.getLogger(__name__)

# Verified keys, by the SHA-256 of the secret: checking a key's password hash costs more than a whole
# read, so a key verified less than API_KEY_CACHE_S ago is trusted without the database. A revocation
# or change made in this process clears the cache at once; one made elsewhere (`manage.py apikey
# revoke`, another web process) takes effect within API_KEY_CACHE_S.
_verified: dict[str, tuple[float, ScopedAPIKey]] = {}
# Bumped by every clear: a key read from the database before a clear is not cached after it (a revocation
# that commits while a request is reading the key must not leave the key it read in the cache).
_generation = 0
_cache_lock = threading.Lock()


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_cache_clear(**_kwargs) -> None:
    global _generation
    with _cache_lock:
        _generation += 1
        _verified.clear()


def _key_changed(sender, **kwargs) -> None:
    api_key_cache_clear()
    # Also after the commit: a request may have cached the row as it was before this transaction.
    transaction.on_commit(api_key_cache_clear)


post_save.connect(_key_changed, sender=ScopedAPIKey, dispatch_uid="api-key-cache")
post_delete.connect(_key_changed, sender=ScopedAPIKey, dispatch_uid="api-key-cache")


def api_key_changes() -> int:
    """A number that moves whenever a key changes in this process (revoked, created...): whoever holds a key
    verified earlier (an open websocket) reads it again when this has moved since."""
    return _generation


def api_key_cached(raw: str) -> ScopedAPIKey | None:
    """The key matching `raw` if it was verified recently and has not expired since; no database."""
    hit = _verified.get(_digest(raw))
    if hit is None or time.monotonic() - hit[0] >= settings.API_KEY_CACHE_S:
        return None
    key = hit[1]
    return None if key.has_expired else key


def api_key_in_header_cached(authorization: bytes) -> ScopedAPIKey | None:
    """The recently verified key an `Authorization: Api-Key <key>` header value names, without the
    database (the lanes before Django); None for any other header or a key not verified lately."""
    prefix = KEYWORD.encode() + b" "
    if not authorization.startswith(prefix):
        return None
    return api_key_cached(authorization[len(prefix) :].strip().decode("latin-1"))


def api_key_from_string(raw: str) -> ScopedAPIKey | None:
    """The usable key matching `raw`, or None (revoked, expired or unknown keys are None, and so is a key
    whose row was changed outside the gateway)."""
    if not raw or "." not in raw or len(raw) > 200:
        return None
    key = api_key_cached(raw)
    if key is not None:
        return key
    verified_at, generation = time.monotonic(), _generation
    prefix = raw.partition(".")[0]
    try:
        key = ScopedAPIKey.objects.get_usable_keys().filter(prefix=prefix).first()
        # The row's MAC first: checking the secret may re-save the row (a newer hasher), with a fresh MAC.
        usable = key is not None and _row_trusted(key) and key.is_valid(raw) and not key.has_expired
    except UNREADABLE_ERRORS as exc:  # a value the gateway never writes (text in a date column)
        _log_distrusted(prefix, unreadable_key_problem(exc))
        usable = False
    if not usable or key is None:
        _verified.pop(_digest(raw), None)
        return None
    if settings.API_KEY_CACHE_S > 0:
        with _cache_lock:
            if generation == _generation:  # no change to any key since the read began
                _verified[_digest(raw)] = (verified_at, key)
    return key


_distrusted_logged: set[str] = set()  # prefixes already logged as distrusted (one line each per process)


def _row_trusted(key: ScopedAPIKey) -> bool:
    """Whether the key's row is as the gateway wrote it (`apikey_distrust`)."""
    problem = apikey_distrust(key, apikey_revocation_seq(key.prefix))
    if problem is None:
        return True
    if key.row_intact() and ScopedAPIKey.objects.filter(pk=key.pk, revoked=True).exists():
        return False  # revoked since its row was read: a revocation, not a tampered row
    _log_distrusted(key.prefix, problem)
    return False


def _log_distrusted(prefix: str, problem: str) -> None:
    if prefix not in _distrusted_logged:
        _distrusted_logged.add(prefix)
        logger.error("API key %s refused: %s; see manage.py audit_verify", prefix, problem)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.startswith(KEYWORD + " "):
            return None
        key = api_key_from_string(header[len(KEYWORD) + 1 :].strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API key.")
        return (AnonymousUser(), key)

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to unauthenticated requests.
        return KEYWORD


class SealedUserBackend(ModelBackend):
    """Django's username and password sign-in, for accounts that match their MAC (`ibkrgw.users`) only.

    Checked before the password (a correct password must not re-save a planted row with a rehashed password
    and a fresh MAC) and on every session's request (`get_user`): a user changed in the database since is
    refused like an unknown one, at the login form, the console, the browsable API and websockets."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        from ibkrgw.users import user_trusted

        user_model = get_user_model()
        name = username if username is not None else kwargs.get(user_model.USERNAME_FIELD)
        if name is None or password is None:
            return None
        pk = (
            user_model._default_manager.filter(**{user_model.USERNAME_FIELD: name}).values_list("pk", flat=True).first()
        )
        if pk is not None and not user_trusted(pk):
            user_model().set_password(password)  # as long as a wrong password takes: no timing tells it apart
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)

    def get_user(self, user_id):
        from ibkrgw.users import user_trusted

        user = super().get_user(user_id)
        return user if user is not None and user_trusted(user.pk) else None


def session_signs_in(session_key: str | None, user_pk: Any) -> bool:
    """True while session `session_key` still signs in the user `user_pk` as Django would on a request:
    not logged out, flushed or expired, the user still there and active, the password unchanged (the
    session's auth hash, also under a SECRET_KEY_FALLBACKS key).

    Read-only, unlike `django.contrib.auth.get_user`, which flushes a session it rejects and moves one
    verified by a fallback key to a new session key: a websocket cannot give the browser a new cookie.
    """
    if not session_key:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        signed_in = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:  # no such session (logged out, flushed, expired) or nobody signed in
        return False
    if signed_in != user_pk or backend_path not in settings.AUTHENTICATION_BACKENDS:
        return False
    user = load_backend(backend_path).get_user(user_pk)  # None for an inactive user (ModelBackend)
    if user is None or not user.is_active:
        return False
    session_hash = session.get(HASH_SESSION_KEY)
    if not session_hash:
        return False
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return any(constant_time_compare(session_hash, known) for known in hashes)


# What a signed-in staff member needs to place, modify and cancel orders (console and API), and to decide on
# orders waiting for approval (console): a risk officer may approve without trading, a trader trade without it.
TRADE_PERMISSION = "orders.trade"
APPROVE_PERMISSION = "orders.approve"


def user_is_staff(user: AbstractBaseUser | AnonymousUser | None) -> TypeGuard[PermissionsMixin]:
    """A signed-in, active staff member."""
    return bool(
        isinstance(user, PermissionsMixin)  # people's accounts; the anonymous user is never staff
        and user.is_authenticated
        and user.is_active
        and getattr(user, "is_staff", False)
    )


def _staff_with(user: AbstractBaseUser | AnonymousUser | None, permission: str) -> bool:
    return user_is_staff(user) and user.has_perm(permission)


def user_may_trade(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """A staff member holding the trade permission (a superuser holds every permission)."""
    return _staff_with(user, TRADE_PERMISSION)


def user_may_approve(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """A staff member holding the approve permission."""
    return _staff_with(user, APPROVE_PERMISSION)


def principal_allows(user: AbstractBaseUser | AnonymousUser | None, key: ScopedAPIKey | None, scope: str) -> bool:
    if isinstance(key, ScopedAPIKey):
        return key.allows(scope)
    if user is not None and user.is_authenticated and user.is_active:
        return scope == Scope.READ or user_may_trade(user)
    return False


def actor_for(user, key, source: Source) -> Actor:
    cid = current_correlation_id()
    if isinstance(key, ScopedAPIKey):
        label = f"{key.name} ({key.prefix})"
        return Actor(kind=ActorKind.API_KEY, label=label, source=source, correlation_id=cid, key_id=key.pk)
    if user is None or not user.is_authenticated:
        # Nobody: not an empty user name (DRF makes the user anonymous when authentication itself refused).
        return Actor(kind=ActorKind.ANONYMOUS, label="anonymous", source=source, correlation_id=cid)
    return Actor(
        kind=ActorKind.USER,
        label=user.get_username(),
        source=source,
        correlation_id=cid,
        is_admin=bool(user.is_superuser),
    )


def request_actor(request) -> Actor:
    return actor_for(request.user, request.auth, Source.REST)


class _ScopePermission(permissions.BasePermission):
    scope = Scope.READ

    def has_permission(self, request, view) -> bool:
        return principal_allows(request.user, request.auth, self.scope)


class HasReadScope(_ScopePermission):
    message = "An API key (scope read or trade) or a signed-in user is required."


class HasTradeScope(_ScopePermission):
    scope = Scope.TRADE
    message = "This needs an API key with scope 'trade' or a staff user with the trade permission."


class MayHalt(permissions.BasePermission):
    """The kill switch: an API key with scope trade, or any staff member (stopping is never withheld from staff,
    as on the console's halt page)."""

    message = "This needs an API key with scope 'trade' or a staff user."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ScopedAPIKey):
            return request.auth.allows(Scope.TRADE)
        return user_is_staff(request.user)


class IsAdminUser(permissions.BasePermission):
    """Only a person signed in as a superuser; never an API key or an agent."""

    message = "Only an admin user can do this."

    def has_permission(self, request, view) -> bool:
        return request.auth is None and bool(request.user and request.user.is_superuser)


# Sliding windows of the read throttle, per key/user/address: request times, oldest first.
_windows: dict[str, deque[float]] = {}
_windows_lock = threading.Lock()
_WINDOWS_SWEEP_AT = 10_000


def read_throttle_reset() -> None:
    with _windows_lock:
        _windows.clear()


def _take(ident: str, now: float, duration: float, limit: int, units: int) -> float | None:
    """Record `units` reads of `ident` at `now` if they fit in its window; else (nothing recorded) the time of
    the read whose expiry would make room."""
    with _windows_lock:
        window = _windows.get(ident)
        if window is None:
            if len(_windows) >= _WINDOWS_SWEEP_AT:
                _sweep(now, duration)
            window = _windows[ident] = deque()
        while window and window[0] <= now - duration:
            window.popleft()
        if len(window) + units > limit:  # units <= limit: the `room` oldest must expire first
            room = len(window) + units - limit
            return window[room - 1]
        window.extend([now] * units)
    return None


class ReadRateThrottle(throttling.SimpleRateThrottle):
    """Caps reads per API key (or user, or address) at API_READ_RATE. Orders have their own limit
    (RISK_MAX_ORDERS_PER_MINUTE, counted in the database), so only safe methods are throttled here.
    The websocket and MCP doors count their broker lookups in the same window (`read_budget_spend`).

    DRF's sliding window, kept in process memory (the limit is per process, as with the default
    local-memory cache) as a deque: no copy of the whole history per request."""

    scope = "read"

    def get_rate(self) -> str:
        return settings.API_READ_RATE

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        oldest = _take(self.key, self.now, self.duration, self.num_requests, 1)
        if oldest is not None:
            self.history = [oldest]  # wait() counts from the oldest request in the window
            return False
        return True

    def get_cache_key(self, request, view):
        if request.method not in permissions.SAFE_METHODS:
            return None
        if isinstance(request.auth, ScopedAPIKey):
            ident = read_ident(key=request.auth)
        elif request.user and request.user.is_authenticated:
            ident = read_ident(user=request.user)
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


def read_ident(*, key: ScopedAPIKey | None = None, user: Any = None, name: str = "") -> str:
    """Whose read window: an API key's, a signed-in user's, or a named caller's (the MCP server on stdio)."""
    if key is not None:
        return f"key:{key.prefix}"
    if user is not None:
        return f"user:{user.pk}"
    return name


def read_budget_spend(ident: str, units: int = 1) -> None:
    """Count `units` reads (one per contract a websocket message names, one per MCP read tool call) in the
    window of `ident` (`read_ident`) that REST's reads count in; over API_READ_RATE: 429 `throttled` with
    `retry_after_s`, nothing counted. One client cannot spend the broker's message budget by changing doors."""
    throttle = ReadRateThrottle()
    limit, duration = throttle.parse_rate(settings.API_READ_RATE)
    if limit is None or duration is None:
        return
    if units > limit:
        raise GatewayError(
            ErrorCode.THROTTLED,
            f"{units} reads at once are more than this caller's read rate ({settings.API_READ_RATE}) allows.",
            http_status=429,
            details={"rate": settings.API_READ_RATE, "asked": units},
        )
    now = throttle.timer()
    ident = throttle.cache_format % {"scope": throttle.scope, "ident": ident}
    oldest = _take(ident, now, duration, limit, units)
    if oldest is None:
        return
    wait = max(0.0, oldest + duration - now)
    raise GatewayError(
        ErrorCode.THROTTLED,
        f"Over this caller's read rate ({settings.API_READ_RATE}): {units} more read(s) fit in {wait:.0f} s.",
        http_status=429,
        details={"retry_after_s": round(wait, 3), "rate": settings.API_READ_RATE, "asked": units},
    )


def _sweep(now: float, duration: float) -> None:
    """Forget callers with no request in the last window (bounded memory with many addresses)."""
    for ident in [k for k, w in _windows.items() if not w or w[-1] <= now - duration]:
        del _windows[ident]
