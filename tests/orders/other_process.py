"""What the halt tests' subprocesses share: another gateway process (a `manage.py mcp`, say) with an IB connection
of its own to the simulated gateway, and the resting limit order it places."""

import os


def connect(port: str, *, chores_off: tuple[str, ...]):
    """Set Django up, drop the named chores of this process, connect to the gateway on `port` and wait until
    reconciled (exit 4 if not). Returns the IB worker."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ibkrgw.settings")
    import django

    django.setup()
    from brokers import events, runtime

    for chore in chores_off:
        events._chores.pop(chore, None)
    runtime.start(host="127.0.0.1", port=int(port), client_id=int(os.environ.get("OTHER_CLIENT_ID", "9")), wait=10)
    worker = runtime.current().worker
    if not worker.reconciled.wait(10):
        os._exit(4)
    return worker


def place_limit(client_order_id: str) -> dict[str, str]:
    """A buy limit of 1 AAPL at 181.00 through the services: {"status": its latest status} or {"code": refusal}."""
    from decimal import Decimal

    from ibkrgw.actors import Actor, ActorKind, Source
    from ibkrgw.errors import GatewayError
    from orders import services
    from orders.selectors import order_latest_event
    from orders.types import OrderRequest

    request = OrderRequest(
        symbol="AAPL",
        action="BUY",
        quantity=Decimal(1),
        order_type="LMT",
        limit_price=Decimal("181.00"),
        client_order_id=client_order_id,
    )
    actor = Actor(kind=ActorKind.SYSTEM, label="other process", source=Source.CLI)
    try:
        return {"status": order_latest_event(services.order_submit(request=request, actor=actor).order).status}
    except GatewayError as exc:
        return {"code": str(exc.code)}
