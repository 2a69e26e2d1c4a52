"""Reading request bodies on the hub's listeners, bounded before they are held in memory."""

from __future__ import annotations

from typing import Any, Callable

import anyio
import anyio.to_thread
from starlette.requests import Request


class Gate:
    """At most ``size`` calls at once in worker threads, for everything the listeners parse and
    submit (``POST /messages``, ``/soap``, ``/as4``): a burst of large bodies waits its turn as
    bytes, not as parsed trees many times their size."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._limiter: anyio.CapacityLimiter | None = None  # made on first use, inside the server's event loop

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.size)
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)


async def read_bounded(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to be larger than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
