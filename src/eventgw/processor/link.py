"""A worker's ``Work`` stream to one orchestrator: connect, read tasks, write credit and results.

The stream protocol is in docs/dispatch-protocol.md. A `Link` keeps the stream open for as
long as the worker runs: when it ends or fails it reconnects with backoff (`Backoff`, cut
short by stop). Results it could not deliver are carried to the next stream, or handed to the
worker's fallback (the response topic) when the orchestrator cannot be reached. Callers never
see ``grpc`` errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Final

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.errors import OrchestratorUnavailable
from eventgw.core.lifecycle import wait_any
from eventgw.core.retry import Backoff
from eventgw.grpc_options import client_channel_options
from eventgw.processor.credit import LinkCredit
from eventgw.processor.handlers import ACKED
from eventgw.processor.results import work_request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from eventgw.grpc_auth import Metadata
    from eventgw.processor.results import Result

logger = logging.getLogger(__name__)

__all__ = ["GRPC_OPTIONS", "Link", "LinkState", "OrchestratorUnavailable"]

GRPC_OPTIONS: Final = client_channel_options(
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
)
"""The worker's channel to an orchestrator: large task messages; reconnects and keepalive as
every eventgw channel (`eventgw.grpc_options`). The link adds its own backoff between streams."""

FLUSH_TIMEOUT_S: Final = 10.0
"""At the end of a run: how long the last results may take to be written to the stream."""

RECENT_ACKS_S: Final = 10.0
"""ACKs sent on a stream are remembered this long; a new stream to the same orchestrator
starts by sending them again. A replica that crashed before committing them then finishes
those records when it reads them again instead of serving them a second time (its early
ACKs, docs/delivery-semantics.md, "Duplicates"); one that did not crash counts them stale."""

MAX_RECENT_ACKS: Final = 50_000
"""At most this many remembered ACKs per orchestrator (bounded memory)."""

FALLBACK_AFTER_S: Final = 10.0
"""Results wait this long for their orchestrator to come back (a restarted replica takes
them on the new stream and does not serve those tasks again) before they go to the
response topic."""

_METHOD: Final = "/eventgw.v1.Orchestrator/Work"
# What a stream raises when it fails or was ended by the other side.
_STREAM_ERRORS: Final = (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError)


class LinkState(enum.Enum):
    """Where a `Link` is."""

    CONNECTING = "connecting"  # no stream yet, or between two (backing off)
    OPEN = "open"  # the stream is up: tasks flow in, credit and results out
    CLOSED = "closed"  # run() returned: the worker is done with this orchestrator


class Link:
    """One orchestrator, as the worker sees it: its stream, credit and undelivered results.

    The worker decides credit (`grant`, `revoke`) and results (`add_result`); the link only
    carries them. Tasks and hints that arrive go to ``on_batch``; ``on_state`` hears when the
    stream opens or ends (the worker then drops the unstarted tasks of the old stream: the
    orchestrator has returned their leases). ``generation`` grows with each stream, so a task
    can tell whether the stream it came from is still the current one.

    Fleets: the welcome names the Kafka cluster the orchestrator serves (``fleet``). Task
    ids repeat across clusters (``<topic>/<partition>/<offset>``), so when the address
    serves another fleet than on the previous stream (the replica moved), nothing of the
    old fleet is sent on: its undelivered results and remembered ACKs are dropped (counted
    in ``results_lost``; the old fleet serves those tasks again), and so is a result for a
    task of a stream before the move (`add_result` with its ``generation``).

    Args:
        target: ``host:port`` of the orchestrator.
        worker_id: how the orchestrator knows this worker.
        on_batch: called on the loop with each ``TaskBatch`` received.
        on_state: called on the loop when the stream opens or ends.
        fallback: writes results a stream could not take elsewhere (the response topic);
            returns whether they are durable there.
        backoff: delays between reconnects.
        call_metadata: sent when each stream opens: the orchestrator's token
            (`eventgw.grpc_auth.bearer_metadata`).
    """

    def __init__(
        self,
        target: str,
        worker_id: str,
        *,
        on_batch: Callable[[Link, pb.TaskBatch], None],
        on_state: Callable[[Link], None],
        fallback: Callable[[Link, list[Result]], Awaitable[bool]],
        backoff: Backoff | None = None,
        call_metadata: Metadata = (),
    ) -> None:
        self.target = target
        self._metadata = call_metadata
        self.worker_id = worker_id
        self.credit = LinkCredit()
        self.state = LinkState.CONNECTING
        self.generation = 0
        self.orchestrator_index: int | None = None
        self.fleet = ""  # the orchestrator's fleet, from the welcome ("" until then)
        self._fleet_since = 0  # first generation of the current fleet
        self.connect_failures = 0
        self.results_lost = 0
        self.fallbacks = 0
        self._results: list[Result] = []
        self._grant = 0  # decided, not sent yet
        self._revoke = 0
        self._half_closed = False  # done_writing() sent on the current stream
        # (monotonic time sent, task id) of recent ACKs, oldest first; re-sent on a new stream.
        self._recent_acks: deque[tuple[float, str]] = deque(maxlen=MAX_RECENT_ACKS)
        self._replay_acks: list[str] = []
        self._on_batch = on_batch
        self._on_state = on_state
        self._fallback = fallback
        # Capped below 1 s: traffic resumes within a second of the orchestrator's return.
        self._backoff = backoff or Backoff(0.05, 0.8)
        self._wake = asyncio.Event()

    # -- what the worker sends ----------------------------------------------------------

    def grant(self, credit: int) -> None:
        """Give the orchestrator ``credit`` more tasks' worth (sent with the next message)."""
        if credit > 0 and self.state is LinkState.OPEN:
            self.credit.credit += credit
            self._grant += credit
            self._wake.set()

    def revoke(self, credit: int) -> None:
        """Ask for up to ``credit`` unused credit back (the answer comes in a batch)."""
        if credit > 0 and self.state is LinkState.OPEN and not self.credit.revoking:
            self.credit.revoking = True
            self._revoke += credit
            self._wake.set()

    def add_result(self, result: Result, generation: int | None = None) -> None:
        """Queue one task's result for the orchestrator that leased it.

        A RELEASE after the worker ended its half of the stream is not sent: the stream's
        end returns that lease anyway (a task that arrived while the worker was closing).
        Nor is a result of a task from a stream (``generation``) of another fleet.
        """
        if self._half_closed and result[3].kind == pb.RELEASE:
            return
        if generation is not None and generation < self._fleet_since:
            self.results_lost += 1
            return
        self._results.append(result)
        self._wake.set()

    def recent_acks(self) -> list[str]:
        """Task ids ACKed recently on this link — sent, or waiting to be sent."""
        horizon = time.monotonic() - RECENT_ACKS_S
        sent = [t for at, t in self._recent_acks if at >= horizon]
        return sent + [r[0] for r in self._results if r[3] is ACKED]

    def replay(self, task_ids: list[str]) -> None:
        """Send these ACKs again on this stream (another orchestrator's, whose stream ended:
        whoever owns those partitions now finishes the records instead of serving them)."""
        if task_ids and self.state is LinkState.OPEN:
            self._replay_acks.extend(task_ids)
            self._wake.set()

    @property
    def pending_results(self) -> int:
        """Results not yet written to a stream or the fallback."""
        return len(self._results)

    # -- the stream ---------------------------------------------------------------------

    async def run(self, channel: grpc.aio.Channel, closing: asyncio.Event) -> None:
        """Keep a stream open until ``closing``; then flush results and end it."""
        call_factory = channel.stream_stream(
            _METHOD, request_serializer=None, response_deserializer=pb.TaskBatch.FromString
        )
        failures = 0
        down_since = time.monotonic()
        try:
            while True:
                opened = False
                try:
                    opened = await self._one_stream(call_factory, closing)
                except OrchestratorUnavailable as exc:
                    self.connect_failures += 1
                    logger.warning(
                        "processor.stream_failed target=%s generation=%d error=%s",
                        self.target,
                        self.generation,
                        exc,
                    )
                if closing.is_set():
                    await self._fall_back()
                    return
                if opened:
                    down_since = time.monotonic()
                failures = 0 if opened else failures + 1
                if failures and time.monotonic() - down_since >= FALLBACK_AFTER_S:
                    # The orchestrator stays out of reach: results wait no longer for it.
                    await self._fall_back()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._backoff.delay_s(max(0, failures - 1))):
                        await closing.wait()
        finally:
            self.state = LinkState.CLOSED
            if self._results:
                self.results_lost += len(self._results)
                logger.warning(
                    "processor.results_lost target=%s results=%d (served again after their lease)",
                    self.target,
                    len(self._results),
                )
                self._results.clear()

    async def _one_stream(
        self,
        call_factory: grpc.aio.StreamStreamMultiCallable,
        closing: asyncio.Event,
    ) -> bool:
        """Run one stream until it ends; returns whether it opened (the welcome came)."""
        call = call_factory(metadata=self._metadata)
        ended = asyncio.Event()
        errors: list[BaseException] = []
        self._half_closed = False
        generation = self.generation
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read(call, ended, errors))
                try:
                    await call.write(work_request([], worker_id=self.worker_id))
                    await self._send(call, ended, closing)
                except _STREAM_ERRORS as exc:
                    errors.append(exc)
                    call.cancel()
        finally:
            if self.state is LinkState.OPEN:
                self.state = LinkState.CONNECTING
                self.credit = LinkCredit()
                self._grant = self._revoke = 0
                self._on_state(self)
        if errors:
            error = errors[0]
            if isinstance(error, grpc.aio.AioRpcError):
                raise OrchestratorUnavailable(
                    self.target, error.code().name, error.details() or ""
                ) from error
            raise OrchestratorUnavailable(self.target, "ENDED", repr(error)) from error
        return self.generation != generation

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall,
        ended: asyncio.Event,
        errors: list[BaseException],
    ) -> None:
        try:
            async for batch in call:
                if self.state is not LinkState.OPEN:
                    # The welcome: the orchestrator took the stream.
                    fleet = batch.fleet or "primary"
                    if self.generation and fleet != self.fleet:
                        self._forget_fleet(fleet)
                    elif self.generation and self._recent_acks:
                        horizon = time.monotonic() - RECENT_ACKS_S
                        self._replay_acks = [t for at, t in self._recent_acks if at >= horizon]
                        self._wake.set()
                    self.generation += 1
                    self.fleet = fleet
                    self.orchestrator_index = batch.orchestrator_index
                    self.credit = LinkCredit(connected=True)
                    self._grant = self._revoke = 0
                    self.state = LinkState.OPEN
                    self._wake.set()  # _send may write now
                    logger.info(
                        "processor.stream_open target=%s index=%d generation=%d",
                        self.target,
                        batch.orchestrator_index,
                        self.generation,
                    )
                    self._on_state(self)
                self._on_batch(self, batch)
        except grpc.aio.AioRpcError as exc:
            errors.append(exc)
        finally:
            ended.set()
            self._wake.set()

    async def _send(
        self,
        call: grpc.aio.StreamStreamCall,
        ended: asyncio.Event,
        closing: asyncio.Event,
    ) -> None:
        while not ended.is_set():
            # Nothing but the first request before the welcome: it names the fleet, and a
            # result of another fleet's task must not reach this one (task ids repeat across
            # clusters; _read drops them when the fleet changed).
            welcomed = self.state is LinkState.OPEN
            if not welcomed or not (
                self._results or self._grant or self._revoke or self._replay_acks
            ):
                if closing.is_set():
                    # Everything is written (or no welcome came: run() hands what is left
                    # to the fallback): end our half; the server then ends the stream.
                    self._half_closed = True
                    await call.done_writing()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(FLUSH_TIMEOUT_S):
                            await ended.wait()
                    return
                self._wake.clear()
                await wait_any(self._wake, closing, ended)
                continue
            # One loop turn lets the results of handlers finishing together join one message.
            await asyncio.sleep(0)
            results, self._results = self._results, []
            grant, self._grant = self._grant, 0
            revoke, self._revoke = self._revoke, 0
            replay, self._replay_acks = self._replay_acks, []
            try:
                await call.write(work_request(results, credit=grant, revoke=revoke, acked=replay))
            except BaseException:
                self._results[:0] = results  # undelivered: keep them, in order
                raise
            now = time.monotonic()
            recent = self._recent_acks
            for result in results:
                if result[3] is ACKED:
                    recent.append((now, result[0]))

    def _forget_fleet(self, fleet: str) -> None:
        """The address serves another fleet now: drop what belongs to the old one."""
        logger.warning(
            "processor.fleet_changed target=%s from=%s to=%s results_dropped=%d",
            self.target,
            self.fleet,
            fleet,
            len(self._results),
        )
        self.results_lost += len(self._results)
        self._results.clear()
        self._recent_acks.clear()
        self._fleet_since = self.generation + 1

    async def _fall_back(self) -> None:
        """Hand results the stream could not take to the worker's fallback."""
        if not self._results:
            return
        results, self._results = self._results, []
        if await self._fallback(self, results):
            self.fallbacks += 1
        else:
            self._results[:0] = results  # tried again after the next stream, or lost at the end
