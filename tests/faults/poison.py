"""Hostile records for every topic an eventgw loop consumes, and what must become of them.

Written straight to Kafka, as anything with write access to a topic could:

- lanes (p30, p20, p10, offload): bytes that are not an ``EventData``, and a tombstone (null
  value): both must go to the DLQ and never reach a handler;
- retry topics: bytes that are not an ``EventData`` (to the DLQ), and two events whose
  ``eventgw-retry-at-ms`` is not a time (letters; 5,000 digits): "due now", served once;
- response topic: bytes that are not ``TaskResults``, and a tombstone: skipped;
- flow control: JSON (what earlier versions wrote), 100,000 nested brackets, bytes that are
  not a ``FlowControlSignal``: skipped;
- failed-writes: bytes that are not an ``EventData``, an event whose intended topic is not
  one of ours, and a tombstone: all parked in the DLQ.

Every component must stay up, and the load's events must all be processed (the test).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import confluent_kafka

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import H_ORIGINAL_TOPIC, H_RETRY_AT_MS, event_headers
from tests.fixtures.read_path import LANE_KEYS
from tests.fixtures.stack import read_topic

if TYPE_CHECKING:
    from tests.faults.stack import FaultStack

NOT_PROTOBUF = b"\xff" * 12  # field 31 with wire type 7: no protobuf message parses it
RETRY_KEYS = ("retry_60s", "retry_120s", "retry_240s", "retry_480s")
RawRecord = tuple[str, int, bytes | None, list[tuple[str, bytes]]]
"""topic, partition, value (None: a tombstone), headers."""


def _event(event_id: str, **fields: Any) -> pb.EventData:
    now_ms = time.time_ns() // 1_000_000
    return pb.EventData(
        event_id=event_id,
        company_id="poison",
        source_name="p20",
        payload=b"{}",
        priority=pb.P20,
        ingested_at_ms=now_ms,
        slo_deadline_ms=now_ms + 60_000,
        **fields,
    )


def poison_records(stack: FaultStack) -> tuple[list[RawRecord], list[str]]:
    """The records to write, and the ids of the valid events among them (to be served)."""
    t = stack.topics
    tag = uuid.uuid4().hex[:8]
    records: list[RawRecord] = []
    served: list[str] = []
    for key in LANE_KEYS:
        lane = t.lane_topic(key)
        records += [(lane, 0, NOT_PROTOBUF, []), (lane, 1, None, [])]
    for retry_key in RETRY_KEYS:
        retry = getattr(t, retry_key)
        origin = [(H_ORIGINAL_TOPIC, t.p20.encode())]
        records.append((retry, 0, NOT_PROTOBUF, [(H_RETRY_AT_MS, b"1"), *origin]))
        for partition, retry_at in ((1, b"not-a-time"), (2, b"9" * 5000)):
            event = _event(f"poison-{tag}-{retry_key}-{partition}", attempt=1)
            headers = [*event_headers(event), (H_RETRY_AT_MS, retry_at), *origin]
            records.append((retry, partition, event.SerializeToString(), headers))
            served.append(event.event_id)
    records += [(t.response, 0, NOT_PROTOBUF, []), (t.response, 1, None, [])]
    for value in (b'{"class":"P30","signal":1e400}', b"[" * 100_000, b"\xff\xfe\x00"):
        records.append((t.flow_control, 0, value, []))
    stray = _event(f"poison-{tag}-stray", intended_topic=f"{t.p20}-not-ours")
    records += [
        (t.failed_writes, 0, NOT_PROTOBUF, []),
        (t.failed_writes, 1, stray.SerializeToString(), event_headers(stray)),
        (t.failed_writes, 2, None, []),
    ]
    return records, served


def produce_raw(bootstrap: str, records: list[RawRecord]) -> None:
    """Write ``records`` as they are and wait for every ack (blocking)."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 2})
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for topic, partition, value, headers in records:
        kafka_headers: list[tuple[str, str | bytes | None]] = [*headers]
        producer.produce(
            topic, value, b"poison", partition, headers=kafka_headers, on_delivery=on_delivery
        )
    left = producer.flush(30)
    if left or errors:
        raise RuntimeError(f"poison: {left} undelivered, errors={errors[:3]}")


async def inject_poison(stack: FaultStack) -> dict[str, Any]:
    """Write the poison (the failed-writes ones to that topic's cluster); return notes."""
    records, served = poison_records(stack)
    fw = [r for r in records if r[0] == stack.topics.failed_writes]
    rest = [r for r in records if r[0] != stack.topics.failed_writes]
    await asyncio.to_thread(produce_raw, stack.primary, rest)
    await asyncio.to_thread(produce_raw, stack.failed_writes_bootstrap, fw)
    return {"poison_records": len(records), "poison_served": served}


async def check_poison(stack: FaultStack, notes: dict[str, Any]) -> dict[str, Any]:
    """Where the poison went: the DLQ, skipped, served once; never a handler call without id."""
    t = stack.topics
    handled = stack.handled()
    assert "" not in handled, (
        f"a handler was called {handled['']} times with an event without id "
        "(a tombstone or an empty record taken for an event)"
    )
    served = notes["poison_served"]
    assert all(handled[i] == 1 for i in served), {i: handled[i] for i in served}
    dead_lanes = {getattr(t, k) for k in RETRY_KEYS} | {t.lane_topic(k) for k in LANE_KEYS}
    expect = len(LANE_KEYS) * 2 + len(RETRY_KEYS) + 3  # + the failed-writes three, parked
    records = await asyncio.to_thread(
        read_topic, stack.primary, t.dlq, expect=expect, timeout_s=60, idle_s=1.0
    )
    origins: dict[str, int] = {}
    for r in records:
        origin = r.headers.get(H_ORIGINAL_TOPIC, b"?").decode(errors="replace")
        origins[origin] = origins.get(origin, 0) + 1
    missing = sorted(dead_lanes - set(origins))
    assert not missing, f"no DLQ record from {missing}; DLQ holds {origins}"
    parked = await stack.metric("failed-writes", "eventgw_recovery_parked_total")
    assert parked >= 3, f"failed-writes parked {parked} of the 3 poison records"
    flow_invalid = await stack.metric("ingest", "eventgw_ingest_flow_control_invalid_total")
    assert flow_invalid >= 3, f"ingest counted {flow_invalid} of 3 invalid flow-control records"
    skipped = await stack.metric(
        "orchestrator",
        "eventgw_orchestrator_invalid_records_total",
        source="response",
        action="skipped",
    )
    assert skipped >= 1, "the orchestrator did not count the bad response record"
    return {
        "dlq_records": len(records),
        "dlq_by_origin": origins,
        "failed_writes_parked": parked,
        "flow_control_skipped": flow_invalid,
        "response_skipped": skipped,
    }
