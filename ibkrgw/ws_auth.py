"""Websocket authentication: browsers by session, programs by API key (header or `api_key` query)."""

from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator

from ibkrgw.auth import KEYWORD, api_key_from_string


class ApiKeyOrSessionAuthMiddleware:
    def __init__(self, inner):
        self.inner = AuthMiddlewareStack(inner)

    async def __call__(self, scope, receive, send):
        raw = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.decode(errors="ignore").startswith(KEYWORD + " "):
                raw = value.decode(errors="ignore")[len(KEYWORD) + 1 :].strip()
        if not raw:
            raw = (parse_qs(scope.get("query_string", b"").decode(errors="ignore")).get("api_key") or [""])[0]
        scope = dict(scope)
        scope["api_key"] = await database_sync_to_async(api_key_from_string)(raw) if raw else None
        return await self.inner(scope, receive, send)


class BrowserOriginValidator:
    """Browsers always send an Origin header: it must name one of ALLOWED_HOSTS, which stops other sites
    from opening sockets with a visitor's session. Programs usually send none; they pass on to
    authenticate with their API key like any other client."""

    def __init__(self, inner):
        self.inner = inner
        self.checked = AllowedHostsOriginValidator(inner)

    async def __call__(self, scope, receive, send):
        has_origin = any(name == b"origin" for name, _ in scope.get("headers", []))
        return await (self.checked if has_origin else self.inner)(scope, receive, send)
