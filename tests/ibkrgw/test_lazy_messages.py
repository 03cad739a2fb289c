"""Messages (the console's notices) are built only when a view uses them, and still show exactly once."""

from __future__ import annotations

import pytest
from django.contrib import messages
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.functional import empty

from ibkrgw.middleware import LazyMessageMiddleware


def _chain(view):
    return SessionMiddleware(LazyMessageMiddleware(view))


def _adding(request):
    messages.info(request, "Trading halted.")
    return HttpResponse("added")


def _showing(request):
    return HttpResponse(" | ".join(str(m) for m in messages.get_messages(request)))


def _silent(request):
    return HttpResponse("nothing to say")


@pytest.mark.django_db
def test_a_message_added_shows_on_the_next_page_and_only_there():
    rf = RequestFactory()
    added = _chain(_adding)(rf.get("/"))
    cookie = added.cookies["messages"].value
    assert cookie

    request = rf.get("/")
    request.COOKIES["messages"] = cookie
    shown = _chain(_showing)(request)
    assert shown.content == b"Trading halted."
    assert shown.cookies["messages"]["max-age"] == 0  # shown once: the store is emptied

    assert _chain(_showing)(rf.get("/")).content == b""


@pytest.mark.django_db
def test_a_request_that_never_uses_messages_builds_no_store_and_sets_no_cookie():
    request = RequestFactory().get("/api/v1/health/")
    response = _chain(_silent)(request)
    assert "messages" not in response.cookies
    assert request._messages._wrapped is empty  # never built


@pytest.mark.django_db
def test_messages_left_unread_are_kept_for_the_next_page():
    rf = RequestFactory()
    cookie = _chain(_adding)(rf.get("/")).cookies["messages"].value
    request = rf.get("/")
    request.COOKIES["messages"] = cookie
    kept = _chain(_silent)(request)
    assert "messages" not in kept.cookies  # untouched: the browser keeps the cookie it has
    request = rf.get("/")
    request.COOKIES["messages"] = cookie
    assert _chain(_showing)(request).content == b"Trading halted."
