"""Reading request bodies on the hub's listeners, bounded before they are held in memory."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import anyio
import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .xml import Limits


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


async def read_bounded(request: Request, limits: Limits) -> bytes | None:
    """The body, or None as soon as it is known to be larger than ``limits.max_bytes``; a body
    that takes longer than ``limits.body_seconds`` to arrive is answered 408 (a sender trickling
    bytes would otherwise hold its connection and its part of the body for ever)."""
    limit = limits.max_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    try:
        with anyio.fail_after(limits.body_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(408, f"the request body did not arrive within {limits.body_seconds:g} s") from None
    return b"".join(chunks)


class TooLarge(OSError):
    """An answer from a partner or a CRL server larger than the hub reads, or slower than it waits."""


def read_capped(chunks: Iterable[bytes], limit: int, what: str, seconds: float) -> bytes:
    """``chunks`` (a response body as it arrives, decoded) joined, or ``TooLarge`` as soon as they
    pass ``limit`` bytes or take more than ``seconds`` in all: an answer is held only up to a bound
    the hub chose, and a server dripping bytes (each read within the client's time-out) holds the
    caller no longer than that, whatever the other side sends."""
    parts, size = [], 0
    deadline = time.monotonic() + seconds
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"{what} is larger than {limit:,} bytes; the hub reads no more")
        if time.monotonic() > deadline:
            raise TooLarge(f"{what} took more than {seconds:g} s to arrive; the hub waits no longer")
        parts.append(chunk)
    return b"".join(parts)
