"""The eventgw exception tree, classified by what the caller does next.

EventGwError
├── InvalidEvent          permanent: reject (400 / INVALID_ARGUMENT), never retry
│   └── PayloadTooLarge   413 / INVALID_ARGUMENT
├── Unauthenticated       401 / UNAUTHENTICATED
├── PermissionDenied      403 / PERMISSION_DENIED: the key may not write this; never retry
├── RetriableError        retried with bounded backoff (retriable = True)
│   └── NotDurable        no store took the event: the sender must retry
├── Backpressure          slow down: 429 / RESOURCE_EXHAUSTED
│   ├── BufferFull
│   └── TooManyInFlight
└── ConfigError           raised only at start-up or on a refused dynamic update
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
    """The request carries no valid API key."""


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


class BufferFull(Backpressure):
    """A bounded buffer has no room left."""


class TooManyInFlight(Backpressure):
    """Too many requests are being processed at once."""


class ConfigError(EventGwError):
    """Settings or dynamic config are invalid; names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
