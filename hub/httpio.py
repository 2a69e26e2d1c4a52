"""Reading request bodies on the hub's listeners, bounded before they are held in memory.

A body that does not arrive whole is ``BodyNotRead``: each endpoint answers it in its own form (a
NACK, a SOAP fault, a signed eb:Error), with ``Connection: close`` (``CLOSE``) as every answer
given before the whole body was read: the connection is not kept for the rest of a body nobody
reads, which a sender trickling bytes would otherwise hold open for ever. A client that closed
its connection mid-body gets no answer (there is nobody to read it) and logs no traceback: it is
the client's doing, and nothing was accepted."""

from __future__ import annotations

import itertools
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import anyio
import anyio.to_thread
from starlette.requests import ClientDisconnect, Request

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


CLOSE = {"Connection": "close"}  # the headers of an answer given before the whole body was read


class BodyNotRead(Exception):
    """The request body did not arrive whole: too slowly (HTTP ``status`` 408), or the client
    closed the connection (``gone``: nobody is left to answer). ``sentence`` says which."""

    def __init__(self, status: int, sentence: str, gone: bool = False) -> None:
        super().__init__(sentence)
        self.status, self.sentence, self.gone = status, sentence, gone


async def read_bounded(request: Request, limits: Limits) -> bytes | None:
    """The body, or None as soon as it is known to be larger than ``limits.max_bytes``;
    ``BodyNotRead`` for a body that takes longer than ``limits.body_seconds`` to arrive (a sender
    trickling bytes would otherwise hold its connection and its part of the body for ever) or
    whose client went away before it ended."""
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
        raise BodyNotRead(408, f"the request body did not arrive within {limits.body_seconds:g} s; nothing was accepted: "
                               "send it again") from None
    except ClientDisconnect:
        raise BodyNotRead(400, "the client closed the connection before the whole request body arrived", gone=True) from None
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


class Watchdog:
    """Ends calls that outlive their deadline, through a callback (a socket shut down): a partner
    that drips its answer a byte at a time, each read within the socket's own time-out, holds a
    delivery thread no longer than the deadline. One thread for every call, waking once a
    ``tick`` and only while calls are being watched; a call ends at most a tick after its deadline."""

    def __init__(self, name: str, tick: float = 0.5) -> None:
        self.name, self.tick = name, tick
        self._calls: dict[int, tuple[float, Callable[[], object]]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._watching = False

    @contextmanager
    def deadline(self, seconds: float, end: Callable[[], object]) -> Iterator[None]:
        """Within the block, ``end()`` is called once ``seconds`` have passed; never after the block."""
        key = next(self._ids)
        with self._lock:
            self._calls[key] = (time.monotonic() + seconds, end)
            if not self._watching:
                self._watching = True
                threading.Thread(target=self._watch, name=self.name, daemon=True).start()
        try:
            yield
        finally:
            with self._lock:
                self._calls.pop(key, None)

    def _watch(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self._lock:  # ``end`` under the lock: a call whose block has ended is never ended
                for key in [k for k, (at, _) in self._calls.items() if at <= now]:
                    _, end = self._calls.pop(key)
                    try:
                        end()
                    except Exception:  # noqa: BLE001 (the other calls are still watched)
                        pass
                if not self._calls:
                    self._watching = False
                    return


DEADLINES = Watchdog("deadlines")  # the one the adapters share
