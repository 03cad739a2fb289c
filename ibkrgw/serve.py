"""The production web server: uvicorn with uvloop and httptools, HTTP and websockets on one port.

    python -m ibkrgw.serve [--host 127.0.0.1] [--port 8000]

Why not daphne (still installed: `manage.py runserver` and the tests use it): on the read paths
daphne's Twisted reactor cost more per request than everything the gateway does itself; uvicorn's
httptools parser on a uvloop loop serves the same ASGI application, websockets included (the
`websockets` sans-I/O protocol), with a fraction of the overhead.
"""

from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ibkrgw.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)

    import uvicorn

    from ibkrgw.servers import WS_MAX_MESSAGE_BYTES

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ibkrgw.settings")
    os.environ["IBKRGW_SERVER"] = "uvicorn"  # settings: no daphne app (Twisted) in this process
    uvicorn.run(
        "ibkrgw.asgi:application",
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=WS_MAX_MESSAGE_BYTES,  # larger: close 1009; daphne is held to the same (ibkrgw.servers)
        lifespan="off",  # Django has no lifespan events; the broker runtime starts with the application
        log_config=None,  # keep Django's logging (JSON lines with correlation ids)
        access_log=False,  # one line per request would cost more than a quote; errors are still logged
        proxy_headers=False,  # as before: the client address is the peer's unless a proxy is configured
        server_header=False,
        timeout_keep_alive=75,  # polling clients keep their connection between polls (uvicorn's default: 5 s)
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
