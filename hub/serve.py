"""``hub serve``: the HTTP listener, inbound sources and the dispatcher in one process.

SIGTERM or SIGINT stops the listener (requests in progress finish), then the inbound sources,
then the dispatcher (deliveries in flight finish, held leases are given back). Every accepted
message is already in the store, so stopping at any point loses nothing.
"""

from __future__ import annotations

import logging
import signal

import uvicorn

from .runtime import Runtime
from .server import create_app

log = logging.getLogger("hub.serve")


def serve(config_path: str, dispatch: bool = True) -> int:
    runtime = Runtime.load(config_path)
    h = runtime.config.hub
    dispatcher = runtime.dispatcher() if dispatch else None
    runtime.start_jobs()  # CRL refresh and the daily expiry warning
    sources = [s for s in (a.inbound(runtime.pipeline.submit) for a in runtime.create_adapters().values()) if s]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime.pipeline, runtime.store, runtime.listener_routes()),
            host=h.listen_host,
            port=h.listen_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
        )
    )
    # uvicorn re-raises the signal it caught once it has stopped; with these handlers in place the
    # re-raised signal lands here instead of killing the process before the dispatcher stops.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    if dispatcher:
        dispatcher.start()
    for source in sources:
        source.start()
    log.info("hub %s listening on http://%s:%s (dispatcher %s)", h.party_id, h.listen_host, h.listen_port, dispatcher.owner if dispatcher else "off")
    try:
        server.run()
    finally:
        for source in sources:
            source.stop()
        if dispatcher:
            dispatcher.stop()
        runtime.close()
        log.info("hub %s stopped cleanly", h.party_id)
    return 0
