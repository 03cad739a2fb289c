"""Which requests a stdio server waits for once the client has closed stdin (`ibkrgw.mcp_transport._Unanswered`)."""

from __future__ import annotations

from mcp_types import JSONRPCError, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

from ibkrgw.mcp_transport import _Unanswered


def _request(request_id: int | str, method: str = "tools/call") -> JSONRPCRequest:
    return JSONRPCRequest(jsonrpc="2.0", id=request_id, method=method, params={})


def test_settled_once_every_request_is_answered_a_reused_id_counting_twice():
    unanswered = _Unanswered()
    assert unanswered.settled.is_set()
    for request_id in (1, 2, "2"):
        unanswered.asked(_request(request_id))
    assert not unanswered.settled.is_set()
    unanswered.answered(JSONRPCResponse(jsonrpc="2.0", id=1, result={}))
    unanswered.answered(JSONRPCError(jsonrpc="2.0", id=2, error={"code": -32602, "message": "bad"}))
    assert not unanswered.settled.is_set()  # the second request with id 2 ("2") is still in flight
    unanswered.answered(JSONRPCResponse(jsonrpc="2.0", id=7, result={}))  # not ours: changes nothing
    assert not unanswered.settled.is_set()
    unanswered.answered(JSONRPCResponse(jsonrpc="2.0", id="2", result={}))
    assert unanswered.settled.is_set()


def test_a_cancelled_request_and_a_listen_stream_are_not_waited_for():
    unanswered = _Unanswered()
    unanswered.asked(_request(5))
    cancelled = {"requestId": 5, "reason": "the user stopped it"}
    unanswered.asked(JSONRPCNotification(jsonrpc="2.0", method="notifications/cancelled", params=cancelled))
    assert unanswered.settled.is_set()
    unanswered.asked(_request(6, method="subscriptions/listen"))  # lasts until the client ends it
    assert unanswered.settled.is_set()
