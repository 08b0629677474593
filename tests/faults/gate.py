"""A TCP gate in front of a server: close it and the server is down, open it and it is back.

The S3-compatible test server (moto) keeps its objects in memory, so killing it would lose
what the gateway backed up there — no real S3 does that. The gate makes "S3 down" what a
client sees of an outage (connection refused, open connections cut) while the objects stay.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpGate:
    """Forwards ``127.0.0.1:<port>`` to ``target_port`` while open.

    ``open()`` listens (on the same port every time); ``close()`` stops listening and cuts
    every forwarded connection. Owned by one event loop; ``close()`` before the loop ends.
    """

    def __init__(self, target_port: int, port: int) -> None:
        self._target_port = target_port
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the address clients use."""
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        """Start forwarding (idempotent)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()  # both pipes of the connection see it end and return
        if self._pipes:
            _, stuck = await asyncio.wait(self._pipes, timeout=2)
            for task in stuck:
                task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)  # the server's handler task
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_pipe(reader, up_writer))
                tg.create_task(_pipe(up_reader, writer))
        except* (OSError, asyncio.IncompleteReadError):
            pass  # a side hung up: the other is closed below
        finally:
            self._pipes.discard(task)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(64 << 10):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            writer.close()
