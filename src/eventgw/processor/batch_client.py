"""gRPC client of the orchestrators: ``GetBatch`` (long-poll) and ``Ack``, one channel each."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.core.errors import RetriableError

if TYPE_CHECKING:
    from collections.abc import Sequence

GRPC_OPTIONS: Final = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 10_000),
    # gRPC's default reconnect backoff grows to 120 s: a restarted orchestrator would sit idle
    # that long. The worker backs off on its own (with jitter), so keep the channel's short.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]

RPC_SLACK_S: Final = 10.0
"""Deadline of an ``Ack``, and what a ``GetBatch`` may take beyond its long-poll ``wait_ms``."""


class OrchestratorUnavailable(RetriableError):
    """An orchestrator did not answer in time, refused the call or is down.

    Attributes:
        target: the orchestrator's ``host:port``.
        code: the gRPC status name, or ``DEADLINE`` when our own deadline passed.
        detail: the server's or transport's explanation.
    """

    def __init__(self, target: str, code: str, detail: str) -> None:
        super().__init__(f"orchestrator {target}: {code} {detail}".rstrip())
        self.target = target
        self.code = code
        self.detail = detail


class BatchClient:
    """One gRPC channel per orchestrator address; calls name the orchestrator by position.

    Which orchestrator to ask is the caller's policy (the worker round-robins); results
    must go back to the orchestrator that served the batch, hence the explicit ``target``.

    Lifecycle: ``open()`` (channels connect lazily) → calls → ``close()`` (cancels calls
    still running). Every call runs under ``asyncio.timeout``: ``GetBatch`` gets
    ``wait_ms`` plus ``rpc_slack_s``, ``Ack`` gets ``rpc_slack_s``. Every gRPC failure,
    including our own deadline, is raised as `OrchestratorUnavailable`; callers never see
    ``grpc`` errors.
    """

    def __init__(
        self, targets: Sequence[str], worker_id: str, rpc_slack_s: float = RPC_SLACK_S
    ) -> None:
        if not targets:
            raise ValueError("targets: at least one orchestrator address is needed")
        if rpc_slack_s <= 0:
            raise ValueError(f"rpc_slack_s: must be > 0, got {rpc_slack_s}")
        self.targets: tuple[str, ...] = tuple(targets)
        self.worker_id = worker_id
        self._rpc_slack_s = rpc_slack_s
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[pb_grpc.OrchestratorStub] = []

    async def open(self) -> None:
        """Create one channel per target (no connection is made until the first call)."""
        if self._channels:
            raise RuntimeError("BatchClient is already open")
        for target in self.targets:
            channel = grpc.aio.insecure_channel(target, options=GRPC_OPTIONS)
            self._channels.append(channel)
            self._stubs.append(pb_grpc.OrchestratorStub(channel))  # type: ignore[no-untyped-call]  # generated gRPC stub is untyped

    async def close(self) -> None:
        """Close every channel, cancelling calls still running."""
        channels, self._channels, self._stubs = self._channels, [], []
        for channel in channels:
            await channel.close()

    def _stub(self, target: int) -> pb_grpc.OrchestratorStub:
        if not self._stubs:
            raise RuntimeError("BatchClient is not open")
        return self._stubs[target]

    async def get_batch(self, target: int, max_tasks: int, wait_ms: int) -> pb.GetBatchResponse:
        """Lease up to ``max_tasks`` tasks from orchestrator ``target``, waiting up to ``wait_ms``.

        Returns the batch (possibly empty when nothing arrived within ``wait_ms``).
        Cancellation abandons the call; tasks the orchestrator had already leased for it
        come back when their lease expires.

        Raises:
            OrchestratorUnavailable: the call failed or missed its deadline.
        """
        stub = self._stub(target)
        request = pb.GetBatchRequest(worker_id=self.worker_id, max_tasks=max_tasks, wait_ms=wait_ms)
        try:
            async with asyncio.timeout(wait_ms / 1000 + self._rpc_slack_s):
                response: pb.GetBatchResponse = await stub.GetBatch(request)
        except TimeoutError as exc:
            raise OrchestratorUnavailable(
                self.targets[target], "DEADLINE", "GetBatch timed out"
            ) from exc
        except grpc.aio.AioRpcError as exc:
            raise self._unavailable(target, exc) from exc
        if response is None:  # grpc.aio answers None for a response it could not parse
            raise OrchestratorUnavailable(
                self.targets[target], "INTERNAL", "GetBatch answer could not be parsed"
            )
        return response

    async def ack(self, target: int, results: Sequence[pb.TaskResult]) -> pb.AckResponse:
        """Send ``results`` to orchestrator ``target`` in one ``Ack`` call.

        Returns how many results matched a live lease (``accepted``) and how many were
        late or unknown (``stale``).

        Raises:
            OrchestratorUnavailable: the call failed or missed its deadline; the
                orchestrator may or may not have applied the results (re-sending is safe:
                a result for a finished lease only counts as stale).
        """
        stub = self._stub(target)
        try:
            async with asyncio.timeout(self._rpc_slack_s):
                response: pb.AckResponse = await stub.Ack(pb.TaskResults(results=results))
        except TimeoutError as exc:
            raise OrchestratorUnavailable(
                self.targets[target], "DEADLINE", "Ack timed out"
            ) from exc
        except grpc.aio.AioRpcError as exc:
            raise self._unavailable(target, exc) from exc
        return response

    def _unavailable(self, target: int, exc: grpc.aio.AioRpcError) -> OrchestratorUnavailable:
        return OrchestratorUnavailable(self.targets[target], exc.code().name, exc.details() or "")
