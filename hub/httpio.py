"""Reading request bodies on the hub's listeners, bounded before they are held in memory."""

from __future__ import annotations

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
    """An answer from a partner or a CRL server larger than the hub reads."""


def read_capped(chunks: Iterable[bytes], limit: int, what: str) -> bytes:
    """``chunks`` (a response body as it arrives, decoded) joined, or ``TooLarge`` as soon as they
    pass ``limit`` bytes: an answer is held in memory only up to a bound the hub chose, whatever
    the other side sends."""
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"{what} is larger than {limit:,} bytes; the hub reads no more")
        parts.append(chunk)
    return b"".join(parts)
