"""The eventgw exception tree, classified by what the caller does next.

Every error the product raises on purpose is a class of this tree. Those defined next to the
one adapter that raises them name their module; the rest are defined here.
tests/unit/core/test_errors.py checks this drawing against the classes.

EventGwError
├── InvalidEvent              permanent: reject (400 / INVALID_ARGUMENT), never retry
│   ├── PayloadTooLarge       413 / INVALID_ARGUMENT
│   └── UnsupportedMediaType  415: the body is not application/json
├── Unauthenticated           401 / UNAUTHENTICATED: no valid API key
├── PermissionDenied          403 / PERMISSION_DENIED: the key may not write this; never retry
├── CorruptBackup (core.backup_codec)  a backup object is damaged or unsigned: keep it, alert
├── BackupNotFound (backup.store)  no object with that key (already deleted)
├── ScanError (kafka.scanner)  an operator tool cannot read a topic: report it and stop
├── RetriableError            retried with bounded backoff (retriable = True)
│   ├── NotDurable            no store took the event: the sender must retry
│   ├── OrchestratorUnavailable  an orchestrator's Work stream or Stats call failed
│   ├── PublisherUnavailable (ingest.publisher_client)  the publisher did not answer
│   ├── BackupUnavailable (backup.store)  the backup store failed an operation
│   └── ConsumerError (kafka.consumer)  a Kafka consumer call failed
├── Backpressure              slow down: 429 / RESOURCE_EXHAUSTED (retriable = True)
│   └── BackupFull (backup.store)  the backup spool is at its size bound
└── ConfigError               raised only at start-up or on a refused dynamic update
    └── UsageError (cli.options)  a bad command-line option: exit 2

Backpressure at ingest's door is an answer, not an exception: events are answered DEFERRED
with a retry hint (docs/flow-control.md, "The door").
"""

from __future__ import annotations


class EventGwError(Exception):
    """Root of every error eventgw raises on purpose."""

    retriable = False


class InvalidEvent(EventGwError):
    """The input is wrong and will stay wrong: reject it, never retry.

    Attributes:
        field: the JSON path of the offending field (e.g. ``events[3].company_id``).
        message: what is wrong with it, for humans.
        index: position of the event in its request, when known.
    """

    status = 400

    def __init__(self, field: str, message: str, *, index: int | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.index = index


class PayloadTooLarge(InvalidEvent):
    """A body, event or payload is over its configured limit."""

    status = 413


class UnsupportedMediaType(InvalidEvent):
    """The request body is not in a content type we accept."""

    status = 415


class Unauthenticated(EventGwError):
    """The request carries no valid API key.

    Attributes:
        message: what is missing, for humans.
        field: where the key was looked for (the header or metadata name).
    """

    def __init__(self, message: str, *, field: str = "authorization") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class PermissionDenied(EventGwError):
    """The API key is valid but its grant does not cover an event of the request.

    Permanent for that key: the whole request is refused and nothing is written.

    Attributes:
        field: the offending field of the event, e.g. ``events[3].company_id``,
            ``events[0].source_name``, or ``events[2].class`` (the class the event's
            identity is classified into).
        message: what is not granted, for humans.
        index: position of the event in its request.
    """

    def __init__(self, field: str, message: str, *, index: int) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.index = index


class RetriableError(EventGwError):
    """A transient failure: the same call may succeed later."""

    retriable = True


class NotDurable(RetriableError):
    """An event could not be written to Kafka, failed-writes, or the backup store."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"event {event_id} is not durable: {reason}")
        self.event_id = event_id
        self.reason = reason


class Backpressure(EventGwError):
    """The callee is at capacity: the caller must slow down and retry."""

    retriable = True


class OrchestratorUnavailable(RetriableError):
    """An orchestrator could not be reached, or its stream or call failed.

    Attributes:
        target: the orchestrator's ``host:port``.
        code: the gRPC status name.
        detail: the server's or transport's explanation.
    """

    def __init__(self, target: str, code: str, detail: str) -> None:
        super().__init__(f"orchestrator {target}: {code} {detail}".rstrip())
        self.target = target
        self.code = code
        self.detail = detail


class ConfigError(EventGwError):
    """Settings or dynamic config are invalid; names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
