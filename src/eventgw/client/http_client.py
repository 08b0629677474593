"""`IngestHttpClient`: sends events to ingest's HTTP API, over https when given `ClientTls`.

The HTTP twin of `EventIngestPublisher` (gRPC) for callers that reach ingest through an
HTTP load balancer or proxy, without the client-side fallbacks: what ingest could not take
is an error for the caller to retry (`NotDurable`). Event ids are assigned here before the
first attempt, so a retried event keeps its id. The answers are those of
docs/delivery-semantics.md; this is the only module of the client that imports httpx.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from eventgw.client.ingest_client import ClientEvent, ClientResult, Status, permission_denied
from eventgw.core.envelope import new_event_id
from eventgw.core.errors import InvalidEvent, NotDurable, PayloadTooLarge, Unauthenticated
from eventgw.core.retry import Backoff

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventgw.client.tls import ClientTls

__all__ = ["IngestHttpClient"]

_SETTLED: dict[str, Status] = {
    "PUBLISHED": "PUBLISHED",
    "FAILED_WRITES": "FAILED_WRITES",
    "BACKED_UP": "BACKED_UP",
    "REJECTED": "REJECTED",
}
_MAX_RETRY_AFTER_S = 60.0


class _Event(msgspec.Struct, omit_defaults=True):
    company_id: str
    source_name: str
    event_id: str
    payload: msgspec.Raw
    statistic_key: str = ""


class _Batch(msgspec.Struct):
    events: list[_Event]


_encode = msgspec.json.Encoder().encode


class IngestHttpClient:
    """``POST /v1/events`` with durable-or-error for every event.

    Lifecycle: ``await start()`` (or ``async with``) → ``await publish(events)`` any number
    of times → ``await close()``. ``publish`` returns one `ClientResult` per event, in
    order, once each is durable (or REJECTED by a gating rule). It raises InvalidEvent
    (400/413/415, naming the field), Unauthenticated (401), PermissionDenied (403: an event
    is outside the key's grant) — nothing was written for any of these — and NotDurable
    (503, a connection or TLS failure, or deferred past ``timeout_s``): retry later, the
    event ids are kept, so duplicates are recognisable.

    Events ingest defers (429, the door) are sent again after its ``Retry-After``, jittered,
    within ``timeout_s``; the others of the answer are settled as their status says.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        tls: ClientTls | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        """``base_url``: ``https://host:port`` (``tls``, or the system's roots without it)
        or ``http://host:port``. Raises ValueError for another scheme, or ``tls`` with
        ``http://``."""
        if tls is not None and not base_url.startswith("https://"):
            raise ValueError(f"base_url: tls needs an https:// URL, got {base_url!r}")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: not an http(s) URL: {base_url!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._base_url = base_url.rstrip("/")
        self._verify = tls.ssl_context() if tls is not None else True
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["x-api-key"] = api_key
        self._timeout_s = timeout_s
        self._backoff = Backoff(0.05, 2.0)
        self._rng = random.Random()  # noqa: S311  # jitter, not cryptography
        self._client: httpx.AsyncClient | None = None
        self.deferrals = 0  # times ingest deferred some of a batch (then resent)

    async def start(self) -> None:
        """Open the connection pool (connections are made on the first request)."""
        self._client = httpx.AsyncClient(
            base_url=self._base_url, verify=self._verify, timeout=self._timeout_s
        )

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> IngestHttpClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def publish(self, events: Sequence[ClientEvent]) -> list[ClientResult]:
        """Send ``events`` as one request; see the class docstring for the guarantee."""
        if self._client is None:
            raise RuntimeError("IngestHttpClient is not started")
        if not events:
            raise ValueError("events: give at least one")
        ids = [e.event_id or new_event_id() for e in events]
        pending = [
            _Event(
                e.company_id, e.source_name, i, msgspec.Raw(_payload(e.payload)), e.statistic_key
            )
            for e, i in zip(events, ids, strict=True)
        ]
        results: dict[str, ClientResult] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        attempt = 0
        while pending:
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    response = await self._client.post(
                        "/v1/events", content=_encode(_Batch(pending)), headers=self._headers
                    )
            except TimeoutError as exc:
                raise NotDurable(
                    pending[0].event_id, f"not taken within {self._timeout_s}s"
                ) from exc
            except httpx.HTTPError as exc:  # refused, reset, TLS handshake failed, ...
                raise NotDurable(pending[0].event_id, f"ingest: {exc!r}") from exc
            body = _json(response)
            code = response.status_code
            answers = body.get("events") if isinstance(body, dict) else None
            if code in (202, 403, 429) and isinstance(answers, list):
                # 202, 403 (all REJECTED by gating) or 429 (some DEFERRED): per-event answers.
                self._settle(answers, results)
                pending = [e for e in pending if e.event_id not in results]
                if not pending:
                    break
                if code != 429:
                    raise NotDurable(pending[0].event_id, f"HTTP {code} left it unanswered")
            elif code != 429:
                raise _refusal(code, body, pending[0].event_id)
            # 429: the deferred events (or, refused whole, all of them) are sent again.
            self.deferrals += 1
            delay_s = max(_retry_after_s(response), self._backoff.delay_s(attempt))
            delay_s = self._rng.uniform(delay_s, 1.5 * delay_s)  # jitter above the hint
            attempt += 1
            if loop.time() + delay_s >= deadline:
                raise NotDurable(
                    pending[0].event_id,
                    f"{len(pending)} deferred past the {self._timeout_s}s timeout",
                )
            await asyncio.sleep(delay_s)
        return [results[i] for i in ids]

    @staticmethod
    def _settle(answers: list[Any], results: dict[str, ClientResult]) -> None:
        """Record the settled events of an answer (DEFERRED ones stay pending)."""
        for a in answers:
            if not isinstance(a, dict) or a.get("status") == "DEFERRED":
                continue
            event_id, status = str(a.get("event_id", "")), _SETTLED.get(str(a.get("status")))
            if status is None:  # FAILED, or a status this client does not know: never "done"
                raise NotDurable(event_id, f"status {a.get('status')!r}: {a.get('reason', '')}")
            results[event_id] = ClientResult(
                event_id, status, str(a.get("topic", "")), reason=str(a.get("reason", ""))
            )


def _payload(payload: Any) -> msgspec.Raw:
    """The payload as JSON text, spliced into the body as it is (bytes are JSON already)."""
    if isinstance(payload, bytes):
        return msgspec.Raw(payload)
    return msgspec.Raw(json.dumps(payload, separators=(",", ":")).encode())


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # not JSON (a proxy's page, say): the status code alone decides
        return None


def _retry_after_s(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    if not (value.isascii() and value.isdigit()):
        return 1.0
    return min(float(value[:6]), _MAX_RETRY_AFTER_S)


def _refusal(code: int, body: Any, first_id: str) -> Exception:
    """The exception of a refusal: permanent for 400/401/403/413/415, else NotDurable."""
    error = body.get("error") if isinstance(body, dict) else None
    field = str(error.get("field", "")) if isinstance(error, dict) else ""
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    if code == 401:
        return Unauthenticated(message or "missing or invalid API key")
    if code == 403:
        return permission_denied(f"{field}: {message}")
    if code == 413:
        return PayloadTooLarge(field or "body", message or "too large")
    if code in (400, 415):
        return InvalidEvent(field or "body", message or f"refused ({code})")
    return NotDurable(first_id, f"HTTP {code}: {message or 'not durable'}")
