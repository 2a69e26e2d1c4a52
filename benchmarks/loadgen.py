"""Senders: HTTP/1.1 keep-alive connections posting pre-signed envelopes to ``POST /messages``.

A deliberately small client (asyncio streams, no HTTP library) so that the benchmark's own CPU
stays small next to the hub's on the same machine. Two shapes:

* closed loop: ``concurrency`` senders, each posting its next message as soon as the previous
  one is answered: the hub's sustained maximum;
* open loop: messages scheduled at a fixed rate whatever the answers; latency counts from the
  scheduled time, so a hub that falls behind cannot hide it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

_MESSAGE_ID = re.compile(rb"<messageId>([^<]+)</messageId>")


def message_id(data: bytes) -> str:
    found = _MESSAGE_ID.search(data)
    return found.group(1).decode().strip().lower() if found else ""


@dataclass
class Sample:
    message_id: str
    sent: float  # unix time the message was (or was scheduled to be) sent
    answered: float
    status: int


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, body: bytes) -> int:
        if self.writer is None:
            await self.open()
        head = (
            f"POST /messages HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        assert self.writer is not None and self.reader is not None
        self.writer.write(head)
        self.writer.write(body)
        await self.writer.drain()
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        close = False
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        self.reader = self.writer = None


async def closed_loop(host: str, port: int, messages: list[bytes], concurrency: int, duration: float,
                      targets: list[tuple[str, int]] | None = None) -> list[Sample]:
    """``targets``: several hub nodes, sender k posting to node k mod n (default: host:port only)."""
    samples: list[Sample] = []
    feed = iter(messages)
    deadline = time.monotonic() + duration
    nodes = targets or [(host, port)]

    async def sender(k: int) -> None:
        conn = _Connection(*nodes[k % len(nodes)])
        try:
            for data in feed:
                if time.monotonic() >= deadline:
                    break
                sent = time.time()
                try:
                    status = await conn.post(data)
                except (ConnectionError, OSError, asyncio.IncompleteReadError):
                    await conn.close()
                    status = 0
                samples.append(Sample(message_id(data), sent, time.time(), status))
        finally:
            await conn.close()

    await asyncio.gather(*(sender(k) for k in range(concurrency)))
    return samples


async def open_loop(host: str, port: int, messages: list[bytes], rate: float, duration: float, connections: int) -> list[Sample]:
    samples: list[Sample] = []
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(_Connection(host, port))
    count = min(len(messages), int(rate * duration))
    start = time.time() + 0.05
    tasks = []

    async def one(data: bytes, scheduled: float) -> None:
        conn = await pool.get()
        try:
            status = await conn.post(data)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            await conn.close()
            status = 0
        finally:
            pool.put_nowait(conn)
        samples.append(Sample(message_id(data), scheduled, time.time(), status))

    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(messages[i], scheduled)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        await pool.get_nowait().close()
    return samples


def run_closed(host: str, port: int, messages: list[bytes], concurrency: int, duration: float,
               targets: list[tuple[str, int]] | None = None) -> list[Sample]:
    return asyncio.run(closed_loop(host, port, messages, concurrency, duration, targets))


def run_open(host: str, port: int, messages: list[bytes], rate: float, duration: float, connections: int = 64) -> list[Sample]:
    return asyncio.run(open_loop(host, port, messages, rate, duration, connections))
