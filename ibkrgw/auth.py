"""Authentication and scopes shared by REST, websockets and MCP.

People use Django sessions; programs send `Authorization: Api-Key <key>`. A key has scope
`read` or `trade`. Session users may read; trading needs a staff user.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from rest_framework import authentication, exceptions, permissions, throttling

from ibkrgw.actors import Actor, ActorKind, Source, current_correlation_id
from ibkrgw.models import Scope, ScopedAPIKey

KEYWORD = "Api-Key"


def api_key_from_string(raw: str) -> ScopedAPIKey | None:
    """The usable key matching `raw`, or None (revoked, expired or unknown keys are None)."""
    if not raw or "." not in raw or len(raw) > 200:
        return None
    try:
        key = ScopedAPIKey.objects.get_from_key(raw)
    except ScopedAPIKey.DoesNotExist:
        return None
    return key if key.is_valid(raw) and not key.revoked and not key.has_expired else None


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


def principal_allows(user: AbstractBaseUser | AnonymousUser | None, key: ScopedAPIKey | None, scope: str) -> bool:
    if isinstance(key, ScopedAPIKey):
        return key.allows(scope)
    if user is not None and user.is_authenticated and user.is_active:
        return scope == Scope.READ or user.is_staff
    return False


def actor_for(user, key, source: Source) -> Actor:
    cid = current_correlation_id()
    if isinstance(key, ScopedAPIKey):
        return Actor(kind=ActorKind.API_KEY, label=f"{key.name} ({key.prefix})", source=source, correlation_id=cid)
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
    message = "This needs an API key with scope 'trade' or a staff user."


class IsAdminUser(permissions.BasePermission):
    """Only a person signed in as a superuser; never an API key or an agent."""

    message = "Only an admin user can do this."

    def has_permission(self, request, view) -> bool:
        return request.auth is None and bool(request.user and request.user.is_superuser)


class ReadRateThrottle(throttling.SimpleRateThrottle):
    """Caps reads per API key (or user, or address) at API_READ_RATE. Orders have their own limit
    (RISK_MAX_ORDERS_PER_MINUTE, counted in the database), so only safe methods are throttled here."""

    scope = "read"

    def get_rate(self) -> str:
        from django.conf import settings

        return settings.API_READ_RATE

    def get_cache_key(self, request, view):
        if request.method not in permissions.SAFE_METHODS:
            return None
        if isinstance(request.auth, ScopedAPIKey):
            ident = f"key:{request.auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
