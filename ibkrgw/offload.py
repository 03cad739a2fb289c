"""Views that wait on the order pipeline run in a thread pool, not on Django's one thread for sync views.

Under ASGI, Django runs every sync view on a single shared thread. A view that waits for its order
to pass the pipeline would then make every other request wait too, and the pipeline could never
group concurrent orders into one commit. These views are thread-safe (the ledger is written by
the pipeline; each thread has its own database connection), so they run concurrently instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections


def _call_and_close(view: Callable[..., Any], request, *args, **kwargs):
    try:
        response = view(request, *args, **kwargs)
        if hasattr(response, "render") and callable(response.render):
            response = response.render()
        return response
    finally:
        # This pool thread's connection follows CONN_MAX_AGE like a request thread's would.
        close_old_connections()


def concurrent_view(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    async def wrapper(request, *args, **kwargs):
        return await sync_to_async(_call_and_close, thread_sensitive=False)(view, request, *args, **kwargs)

    return wrapper
