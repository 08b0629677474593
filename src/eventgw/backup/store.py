"""Backup stores for failed writes: the :class:`BackupStore` protocol, a local spool and S3.

An object is one batch of records in the :mod:`eventgw.core.backup_codec` format. Keys sort in
write order (a zero-padded wall-clock nanosecond stamp, forced strictly increasing within one
store instance, then a random suffix), so ``list_keys()`` returns the oldest batch first.

Errors (what the caller does next):

- :class:`BackupFull`: the spool is at its size bound. Fail the request so the sender retries;
  never wait for space (only the failed-writes processor frees it).
- :class:`BackupUnavailable`: the store could not be reached or refused the operation. The
  outcome of a failed ``put`` is unknown: fail the request (a retry may store a duplicate,
  which replay tolerates because ``event_id`` is the key).
- :class:`BackupNotFound`: ``get`` of a key that does not exist (already deleted).
- :class:`~eventgw.core.backup_codec.CorruptBackup`: ``get`` found a damaged object. Keep it
  and alert; never delete it.
"""

from __future__ import annotations

import enum
import logging
import re
import uuid
from typing import TYPE_CHECKING, Protocol, Self

from eventgw.core.errors import Backpressure, EventGwError, RetriableError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

__all__ = [
    "BackupFull",
    "BackupNotFound",
    "BackupStore",
    "BackupUnavailable",
]

logger = logging.getLogger(__name__)

SUFFIX = ".egwbak"
TMP_PREFIX = ".tmp-"
TIMEKEY = re.compile(r"[0-9]{20}-[0-9a-f]{12}")
# A `.tmp-` file younger than this may be another process's put in progress (the publisher and
# the failed-writes processor can share one spool directory), so open() leaves it alone.
LEFTOVER_MIN_AGE_S = 60.0


class BackupFull(Backpressure):
    """The spool directory would exceed its size bound; the batch was not stored.

    Attributes:
        used_bytes: Bytes the store counts as used (stored plus being written).
        batch_bytes: Size of the refused batch.
        max_bytes: The configured bound.
    """

    def __init__(self, *, used_bytes: int, batch_bytes: int, max_bytes: int) -> None:
        super().__init__(
            f"backup spool full: used_bytes={used_bytes} batch_bytes={batch_bytes} "
            f"max_bytes={max_bytes}"
        )
        self.used_bytes = used_bytes
        self.batch_bytes = batch_bytes
        self.max_bytes = max_bytes


class BackupUnavailable(RetriableError):
    """The backup store failed an operation (I/O error, unreachable endpoint, refused request).

    Always raised ``from`` the underlying ``OSError`` or botocore exception.

    Attributes:
        store: ``"spool"`` or ``"s3"``.
        operation: ``"open"``, ``"put"``, ``"list"``, ``"get"`` or ``"delete"``.
        key: The object key involved, if any.
    """

    def __init__(self, *, store: str, operation: str, key: str | None, reason: str) -> None:
        super().__init__(f"backup {store} {operation} failed: key={key} reason={reason}")
        self.store = store
        self.operation = operation
        self.key = key


class BackupNotFound(EventGwError, LookupError):
    """``get`` of a key that is not in the store (for example, already deleted).

    Attributes:
        store: ``"spool"`` or ``"s3"``.
        key: The missing key.
    """

    def __init__(self, *, store: str, key: str) -> None:
        super().__init__(f"backup {store} has no object key={key}")
        self.store = store
        self.key = key


class BackupStore(Protocol):
    """Durable storage for batches of failed writes, as the publisher and the processor need it.

    Objects are immutable once stored. Every method may raise :class:`BackupUnavailable`.
    """

    @property
    def name(self) -> str:
        """``"spool"`` or ``"s3"``, for logs and metrics."""
        ...

    async def put(self, records: Sequence[bytes]) -> str:
        """Store ``records`` as one new object and return its key once the object is durable.

        If the call fails or is cancelled, the object may or may not exist.
        """
        ...

    async def list_keys(self) -> list[str]:
        """Return the keys of all stored objects, oldest first."""
        ...

    async def get(self, key: str) -> list[bytes]:
        """Return the records of one object, in ``put`` order.

        Raises ``BackupNotFound`` or ``CorruptBackup`` as well.
        """
        ...

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing key is not an error."""
        ...

    async def close(self) -> None:
        """Release the store's resources; idempotent."""
        ...


class StoreState(enum.Enum):
    NEW = "new"  # constructed; open() not called yet
    OPEN = "open"  # serving calls
    CLOSED = "closed"  # close() called; every call except close() raises RuntimeError


class TimeKeys:
    """Generates ``<20-digit ns>-<12 hex>`` keys, strictly increasing within one instance."""

    def __init__(self, time_ns: Callable[[], int]) -> None:
        self._time_ns = time_ns
        self._last_ns = 0

    def next_key(self) -> str:
        # max(): two puts in the same nanosecond, or a wall clock stepped back, must still sort
        # in put order, because the processor replays the oldest batch first.
        self._last_ns = max(self._time_ns(), self._last_ns + 1)
        return f"{self._last_ns:020d}-{uuid.uuid4().hex[:12]}"


def require_open(state: StoreState, name: str) -> None:
    if state is not StoreState.OPEN:
        raise RuntimeError(f"backup {name} store is {state.value}, not open")


def is_object_file(name: str) -> bool:
    """True for a backup object's file or key name (``<timekey>.egwbak``)."""
    return name.endswith(SUFFIX) and TIMEKEY.fullmatch(name.removesuffix(SUFFIX)) is not None


class OpenCloseContext:
    """``async with store:`` opens the store and closes it, whatever happens inside."""

    async def open(self) -> None:
        """Open the store (each implementation says what that means)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the store."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
