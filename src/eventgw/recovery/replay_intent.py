"""The replay intent: what a restart needs to find the failed writes already in a lane.

The failed-writes processor commits each partition of the failed-writes topic up to its
first unsettled record (`eventgw.recovery.settled_prefix`). Events Kafka confirmed and the
commit has not recorded yet would be replayed again by the next owner of the partition.
Two marks let that owner find them instead (docs/delivery-semantics.md, "Replayed failed
writes"):

- every record the processor writes (lane, retry topic, DLQ) carries the header
  ``eventgw-recovery-source`` = ``<failed-writes topic>:<partition>:<offset>`` of its
  captured copy (`source_of`);
- every commit stores, in Kafka's commit metadata of the partition, the *intent*: a wall
  time no later than the first send of any record at or after the committed position
  (`encode_intent`). The next owner reads the lanes from that time on (Kafka's time index)
  and skips the records it finds there.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

__all__ = ["INTENT_PREFIX", "decode_intent", "encode_intent", "parse_source", "source_of"]

INTENT_PREFIX: Final = "eventgw-replay-intent/1 sent_from_ms="
"""Commit metadata of a failed-writes partition, followed by a wall time in Unix ms."""

_MAX_MS: Final = 10**15  # a wall-clock ms value has 13 digits


def encode_intent(sent_from_ms: int) -> str:
    """The commit metadata saying nothing after the position was sent before ``sent_from_ms``.

    Raises:
        ValueError: ``sent_from_ms`` is not a wall-clock time in ms.
    """
    if not 0 <= sent_from_ms < _MAX_MS:
        raise ValueError(f"sent_from_ms: {sent_from_ms} is not a wall-clock time in ms")
    return f"{INTENT_PREFIX}{sent_from_ms}"


def decode_intent(metadata: str) -> int | None:
    """The ``sent_from_ms`` of a commit's metadata; None if it holds no intent.

    None for an empty value (a commit made before intents existed, or by another tool) and
    for anything else that is not exactly an `encode_intent` value: the caller then
    replays as without one (duplicates, never loss).
    """
    if not metadata.startswith(INTENT_PREFIX):
        return None
    digits = metadata[len(INTENT_PREFIX) :]
    if not digits.isascii() or not digits.isdigit() or len(digits) > 15:
        return None
    value = int(digits)
    return value if value < _MAX_MS else None


def source_of(topic: str, partition: int, offset: int) -> str:
    """``<topic>:<partition>:<offset>``: the ``eventgw-recovery-source`` of a captured record."""
    return f"{topic}:{partition}:{offset}"


def parse_source(value: bytes, topic: str) -> tuple[int, int] | None:
    """``(partition, offset)`` of a ``eventgw-recovery-source`` value naming ``topic``.

    None for a value naming another topic or a backup object (``spool:<key>``), or one
    that is malformed.
    """
    prefix = f"{topic}:".encode()
    if not value.startswith(prefix):
        return None
    partition, sep, offset = value[len(prefix) :].partition(b":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        return None
    if len(partition) > 9 or len(offset) > 19:
        return None
    return int(partition), int(offset)
