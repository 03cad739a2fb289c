"""Django's HTTP handler with one thread hop per request instead of one per middleware.

Django's own ASGI handler runs the middleware chain in async mode: every sync middleware (most of
Django's, the prometheus pair, the project's own) is adapted with a hop to a thread and back, about
twenty per request, and every sync view runs on one shared thread, so a view that waits (an order
waiting on the pipeline, a snapshot waiting on IB) makes every other request wait behind it.

Here the body is read on the event loop, then the whole request (request_started, the sync
middleware chain and view, rendering, request_finished) runs in one thread of a pool, and the
answer is sent from the loop. Requests run side by side, each thread with its own database
connection (CONN_MAX_AGE applies per thread as under a threaded WSGI server). A streaming response
(a CSV export, a static file) is iterated in that thread and sent chunk by chunk, so a large export
is never held in memory whole; one with an async iterator is sent from the loop as Django sends it.

The kill switch (`POST …/trading/halt/`, the console's halt) has two threads of its own: a halt never
waits for a thread behind the order requests it is meant to stop, so it reaches the order pipeline
ahead of any order that arrived after it.

A client that disconnects mid-request does not stop its view: a sync view cannot be interrupted
anyway, and an order already on its way is recorded either way.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
HALT_PATHS = ("/trading/halt/", "/dashboard/halt/")


def response_headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    """The ASGI header list of `response`, cookies included (as Django's ASGI handler builds it)."""
    headers = []
    for name, value in response.items():
        headers.append(
            (
                name.encode("ascii") if isinstance(name, str) else bytes(name),
                value.encode("latin1") if isinstance(value, str) else bytes(value),
            )
        )
    for cookie in response.cookies.values():
        headers.append((b"Set-Cookie", cookie.output(header="").encode("ascii").strip()))
    return headers


class DatabaseThreadPool(ThreadPoolExecutor):
    """A thread pool whose threads' database connections are closed when it shuts down.

    Each thread keeps its connection between tasks (CONN_MAX_AGE) and nothing closes it when the thread
    ends: a process that builds pools and drops them (the tests do) would keep a PostgreSQL session open
    for every thread they ever had.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        opened: list = []  # each thread's connection objects; the threads must not hold the pool itself
        self._thread_connections = opened
        super().__init__(max_workers, thread_name_prefix, initializer=lambda: opened.extend(connections.all()))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        if not wait:
            return  # the threads may still be using them
        while self._thread_connections:
            conn = self._thread_connections.pop()
            conn.inc_thread_sharing()  # its thread has ended: closing it from here is safe
            conn.close()


class PooledASGIHandler(ASGIHandler):
    def __init__(self, threads: int | None = None) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)  # the chain runs in the request's thread, no adaptation
        self.executor = DatabaseThreadPool(
            max_workers=threads or settings.WEB_THREADS, thread_name_prefix="http-request"
        )
        self.halt_executor = DatabaseThreadPool(max_workers=2, thread_name_prefix="http-halt")

    def shutdown(self) -> None:
        """Stop the request threads (after the requests in progress) and close their database connections.
        A server keeps its application for the life of the process; tests that build one call this."""
        self.executor.shutdown()
        self.halt_executor.shutdown()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        loop = asyncio.get_running_loop()
        halt = scope["method"] == "POST" and scope["path"].endswith(HALT_PATHS)
        executor = self.halt_executor if halt else self.executor
        try:
            # One hop, with the caller's context variables; lighter than asgiref's sync_to_async.
            answer = await loop.run_in_executor(
                executor, contextvars.copy_context().run, self._answer, scope, body_file, loop, send
            )
            if isinstance(answer, HttpResponseBase):  # an async iterator: Django's own way
                await self.send_response(answer, send)
                await loop.run_in_executor(self.executor, answer.close)
            elif answer is not None:
                status, headers, body = answer
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
        finally:
            body_file.close()

    def _answer(self, scope, body_file, loop, send) -> Answer | HttpResponseBase | None:
        """Everything Django does for one request, in this thread. Returns the answer to send, or None
        once a streamed answer has been sent from here."""
        # As asgiref's sync_to_async does: async_to_sync in this thread then runs on the server's loop.
        SyncToAsync.threadlocal.main_event_loop = loop
        SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        created: tuple[Any, Any] = self.create_request(scope, body_file)
        request, response = created
        if request is not None:
            answered: Any = self.get_response(request)
            answered._handler_class = self.__class__  # as Django's ASGI handler marks it
            response = answered
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # as Django's ASGI handler: the server chunks the wire
        assert response is not None  # noqa: S101 - create_request gives a request or a response
        if not response.streaming:
            answer = (response.status_code, response_headers(response), response.content)
            response.close()  # request_finished: this thread's connection follows CONN_MAX_AGE
            return answer
        if getattr(response, "is_async", False):
            return response

        def sending(message: dict) -> None:  # on the server's loop; this thread waits for each chunk
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        try:
            sending(
                {"type": "http.response.start", "status": response.status_code, "headers": response_headers(response)}
            )
            for part in response:
                for chunk, _last in self.chunk_bytes(part):
                    if chunk:
                        sending({"type": "http.response.body", "body": chunk, "more_body": True})
            sending({"type": "http.response.body", "body": b""})
        finally:
            response.close()
        return None


def get_pooled_asgi_application() -> PooledASGIHandler:
    """Like `django.core.asgi.get_asgi_application`, with the pooled handler."""
    import django

    django.setup(set_prefix=False)
    return PooledASGIHandler()
