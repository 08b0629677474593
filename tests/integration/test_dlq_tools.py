"""``eventgw dlq`` and ``eventgw replay`` against the real broker, run as subprocesses.

DLQ records are written as the orchestrator writes them (tests/fixtures/dlq.py mirrors
``Dispatcher._write_out``), with explicit Kafka timestamps so time filters are exact. Each
test has its own uuid-named topics, created as ``eventgw topics create`` creates them
(the redrive log compacted).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import confluent_kafka
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.tools import topic_specs
from eventgw.config.settings import KafkaClusterSettings
from eventgw.core.envelope import (
    H_ATTEMPT,
    H_LAST_ERROR,
    H_ORIGINAL_TOPIC,
    H_REDRIVEN,
    H_REPLAYED,
    H_RETRY_AT_MS,
    LANE_OF_PRIORITY,
    Priority,
    event_headers,
)
from eventgw.dlq.redrive_log import LogEntry, RedriveLog, encode_entry, log_key
from eventgw.kafka.admin import delete_topics, ensure_topics
from eventgw.kafka.client_config import scanner_config
from eventgw.kafka.scanner import TopicScanner
from tests.fixtures.dlq import dead_letter, make_event, undecodable_dead_letter
from tests.fixtures.procs import component_env
from tests.fixtures.read_path import read_records
from tests.fixtures.stack import unique_topics

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from eventgw.config.settings import TopicSettings
    from eventgw.kafka.local_broker import LocalBroker
    from eventgw.kafka.producer import Record

pytestmark = pytest.mark.kafka

HOUR_MS = 3_600_000
CLASSES = (Priority.P30, Priority.P20, Priority.P10)
COMPANIES = ("acme", "globex", "initech")
ERRORS = ("Timeout calling billing", "ValueError: bad order id", "connection refused")


@pytest.fixture
def topics(kafka_broker: LocalBroker) -> Iterator[TopicSettings]:
    """Fresh topics (3 partitions each), created as ``eventgw topics create`` does."""
    names = unique_topics()
    ensure_topics(kafka_broker.bootstrap, topic_specs(names))
    yield names
    delete_topics(kafka_broker.bootstrap, names.all_topics())


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[Record],
    *,
    partition: int | None = None,
    timestamps_ms: Sequence[int] | None = None,
) -> None:
    """Write ``records`` (blocking), with explicit Kafka timestamps when given."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 2})
    for i, (key, value, headers) in enumerate(records):
        extra: dict[str, int] = {}
        if partition is not None:
            extra["partition"] = partition
        if timestamps_ms is not None:
            extra["timestamp"] = timestamps_ms[i]
        producer.produce(topic, value, key, headers=headers, **extra)  # type: ignore[arg-type]
    assert producer.flush(30) == 0


def seed_dlq(bootstrap: str, topics: TopicSettings, n: int, now_ms: int) -> list[pb.EventData]:
    """``n`` dead letters (classes, companies and errors cycling), written 3 h, 2 h, 1 h ago,
    plus one undecodable record; returns the events as they were before they failed."""
    events: list[pb.EventData] = []
    records: list[Record] = []
    stamps: list[int] = []
    for i in range(n):
        priority = CLASSES[i % 3]
        event = make_event(f"ev-{i:04d}", priority, company=COMPANIES[i % 3], attempt=4)
        origin = topics.offload if i % 10 == 9 else topics.lane_topic(LANE_OF_PRIORITY[priority])
        events.append(event)
        records.append(dead_letter(event, origin_topic=origin, error=ERRORS[i % 3]))
        stamps.append(now_ms - (3 - i % 3) * HOUR_MS)
    records.append(undecodable_dead_letter(b'{"not":"an event"}', origin_topic=topics.p20))
    stamps.append(now_ms - HOUR_MS)
    produce(bootstrap, topics.dlq, records, timestamps_ms=stamps)
    return events


async def eventgw(env: dict[str, str], *args: str, timeout_s: float = 60) -> tuple[int, str, str]:
    """Run ``eventgw <args>`` to completion; return (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventgw.cli.main",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout_s):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def lane_records(bootstrap: str, topics: TopicSettings) -> dict[str, list[pb.EventData]]:
    """Per ``eventgw-redriven`` marker, the events written to any lane with it."""
    out: dict[str, list[pb.EventData]] = {}
    for lane in ("p30", "p20", "p10", "offload"):
        for r in read_records(bootstrap, topics.lane_topic(lane), timeout_s=5):
            marker = r.headers.get(H_REDRIVEN)
            assert marker is not None, "only redrives write to these lanes"
            event = pb.EventData.FromString(r.value)
            assert r.headers[H_ATTEMPT] == b"0"
            assert event.attempt == 0
            out.setdefault(marker.decode(), []).append(event)
    return out


def dlq_keys(bootstrap: str, topics: TopicSettings) -> dict[str, bytes]:
    """``{log key: value}`` of every DLQ record."""
    return {
        log_key(topics.dlq, r.partition, r.offset): r.value
        for r in read_records(bootstrap, topics.dlq, timeout_s=5)
    }


async def log_entries(bootstrap: str, topics: TopicSettings) -> dict[str, LogEntry]:
    cluster = KafkaClusterSettings(bootstrap_servers=bootstrap)
    async with TopicScanner(scanner_config(cluster, "test")) as scanner:
        return await RedriveLog(topics.dlq_redrive_log, scanner).load(topics.dlq)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


# -- list and show ----------------------------------------------------------------------


async def test_list_filters_and_show(kafka_broker: LocalBroker, topics: TopicSettings) -> None:
    bootstrap = kafka_broker.bootstrap
    now_ms = time.time_ns() // 1_000_000
    await asyncio.to_thread(seed_dlq, bootstrap, topics, 30, now_ms)
    env = component_env(bootstrap, topics)

    code, out, err = await eventgw(env, "dlq", "list", "--json")
    assert code == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert len(docs) == 31
    assert "31 records listed" in err
    undecodable = [d for d in docs if not d["decodable"]]
    assert len(undecodable) == 1
    assert undecodable[0]["company"] == "acme"
    assert undecodable[0]["last_error"] == "undecodable: not an eventgw EventData"
    first = next(d for d in docs if d["event_id"] == "ev-0000")
    assert (first["class"], first["company"], first["attempt"]) == ("P30", "acme", 5)
    assert first["origin_topic"] == topics.p30
    assert first["redrive"] is None
    assert [(d["partition"], d["offset"]) for d in docs] == sorted(
        (d["partition"], d["offset"]) for d in docs
    )

    async def count(*filters: str) -> int:
        code, out, err = await eventgw(env, "dlq", "list", "--json", *filters)
        assert code == 0, err
        return len(out.splitlines())

    assert await count("--company", "globex") == 10
    assert await count("--company", "globex", "--company", "initech") == 20
    assert await count("--class", "P10") == 10
    assert await count("--class", "p30,P20", "--company", "acme") == 10
    assert await count("--error", "TIMEOUT") == 10
    assert await count("--since", "150m", "--until", "90m") == 10  # the records of 2 h ago
    assert await count("--since", iso(now_ms - 90 * 60_000)) == 11  # 1 h ago, undecodable too
    assert await count("--until", iso(now_ms - 150 * 60_000)) == 10
    assert await count("--limit", "7") == 7

    code, table, _ = await eventgw(env, "dlq", "list", "--class", "P20")
    assert code == 0
    lines = table.splitlines()
    assert lines[0].startswith("PART:OFFSET")
    assert len(lines) == 1 + 10
    assert all(" P20 " in line and "globex" in line for line in lines[1:])

    target = f"{first['partition']}:{first['offset']}"
    code, out, err = await eventgw(env, "dlq", "show", target, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["event"]["event_id"] == "ev-0000"
    assert shown["event"]["priority"] == "P30"
    assert shown["payload"] == {"bytes": 12, "kind": "JSON", "preview": '{\n  "order": 42\n}'}
    assert [H_LAST_ERROR, "Timeout calling billing"] in shown["headers"]

    code, out, _ = await eventgw(env, "dlq", "show", target)
    assert code == 0
    assert "event_id         ev-0000" in out
    assert '"order": 42' in out

    code, _, err = await eventgw(env, "dlq", "show", "0:9999")
    assert code == 1
    assert "holds no record at 0:9999" in err


async def test_the_parking_lot_is_listed_on_its_own(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    bootstrap = kafka_broker.bootstrap
    event = make_event("ev-parked", Priority.P20, attempt=4)
    marker = f"{topics.dlq}:1:17".encode()
    parked = dead_letter(event, origin_topic=topics.p20, redriven_from=marker)
    await asyncio.to_thread(produce, bootstrap, topics.parking_lot, [parked])
    env = component_env(bootstrap, topics)
    code, out, err = await eventgw(env, "dlq", "list", "--parking-lot", "--json")
    assert code == 0, err
    (doc,) = [json.loads(line) for line in out.splitlines()]
    assert doc["topic"] == topics.parking_lot
    assert doc["redriven_from"] == marker.decode()
    code, out, _ = await eventgw(env, "dlq", "list", "--json")
    assert (code, out) == (0, "")  # the DLQ itself is empty


# -- redrive ----------------------------------------------------------------------------


async def test_dry_run_then_redrive_then_again(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    bootstrap = kafka_broker.bootstrap
    events = await asyncio.to_thread(seed_dlq, bootstrap, topics, 30, time.time_ns() // 1_000_000)
    env = component_env(bootstrap, topics)

    code, out, err = await eventgw(env, "dlq", "redrive", "--all", "--dry-run")
    assert code == 0, err
    assert "would redrive 30 of 31 selected" in out
    assert "skipped 1 undecodable" in out
    assert sum(line.startswith("would redrive ") for line in out.splitlines()) == 30 + 1
    assert await asyncio.to_thread(lane_records, bootstrap, topics) == {}
    assert await log_entries(bootstrap, topics) == {}

    code, out, err = await eventgw(env, "dlq", "redrive", "--company", "acme", "--rate", "500")
    assert code == 0, err
    assert "redriven: 10 of 11 selected" in out  # acme's undecodable record is skipped
    lanes = await asyncio.to_thread(lane_records, bootstrap, topics)
    assert len(lanes) == 10
    assert {e.company_id for copies in lanes.values() for e in copies} == {"acme"}

    code, out, err = await eventgw(env, "dlq", "redrive", "--all", "--rate", "500")
    assert code == 0, err
    assert "redriven: 20 of 31 selected" in out
    assert "skipped 10 already redriven" in out

    code, out, err = await eventgw(env, "dlq", "redrive", "--all")
    assert code == 0, err
    assert "redriven: 0 of 31 selected" in out
    assert "skipped 30 already redriven" in out

    lanes = await asyncio.to_thread(lane_records, bootstrap, topics)
    dlq = await asyncio.to_thread(dlq_keys, bootstrap, topics)
    assert len(lanes) == 30
    assert all(len(copies) == 1 for copies in lanes.values())
    by_id = {e.event_id: e for e in events}
    for key, (copy,) in lanes.items():
        original = pb.EventData.FromString(dlq[key])
        assert copy.event_id == original.event_id
        assert copy.priority == by_id[copy.event_id].priority  # class kept
        assert copy.slo_deadline_ms == by_id[copy.event_id].slo_deadline_ms  # deadline kept
        assert copy.payload == original.payload
    offloaded = [e for e in events if int(e.event_id[3:]) % 10 == 9]
    offload_lane = read_records(bootstrap, topics.offload, timeout_s=5)
    assert {pb.EventData.FromString(r.value).event_id for r in offload_lane} == {
        e.event_id for e in offloaded
    }
    entries = await log_entries(bootstrap, topics)
    assert {key for key, e in entries.items() if e.state == "done"} == set(lanes)

    code, table, _ = await eventgw(env, "dlq", "list", "--company", "acme")
    assert sum(" done " in line for line in table.splitlines()) == 10


async def test_explicit_records_and_unknown_ones(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    bootstrap = kafka_broker.bootstrap
    await asyncio.to_thread(seed_dlq, bootstrap, topics, 6, time.time_ns() // 1_000_000)
    env = component_env(bootstrap, topics)
    keys = sorted(await asyncio.to_thread(dlq_keys, bootstrap, topics))
    picked = [key.rsplit(":", 2) for key in keys[:2]]
    records = ",".join(f"{p}:{o}" for _, p, o in picked)
    code, out, err = await eventgw(env, "dlq", "redrive", "--records", records)
    assert code == 0, err
    assert "redriven: 2 of 2 selected" in out
    assert set(await asyncio.to_thread(lane_records, bootstrap, topics)) == set(keys[:2])

    code, out, err = await eventgw(env, "dlq", "redrive", "--records", "0:9999")
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"eventgw dlq redrive: --records: 0:9999 is not in {topics.dlq} (")


async def test_an_unfinished_redrive_is_found_in_its_lane_and_not_written_again(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    """The Kafka state a crash between the lane write and the ``done`` entry leaves."""
    bootstrap = kafka_broker.bootstrap
    await asyncio.to_thread(seed_dlq, bootstrap, topics, 3, time.time_ns() // 1_000_000)
    env = component_env(bootstrap, topics)
    dlq = await asyncio.to_thread(read_records, bootstrap, topics.dlq)
    first = next(r for r in dlq if pb.EventData.FromString(r.value).event_id == "ev-0000")
    key = log_key(topics.dlq, first.partition, first.offset)
    # The crashed run: intent logged, lane record written and confirmed, then kill -9.
    from_marks = {0: 0, 1: 0, 2: 0}
    intent = LogEntry("intent", "ev-0000", topics.p30, 1, target_from=from_marks)
    await asyncio.to_thread(produce, bootstrap, topics.dlq_redrive_log, [encode_entry(key, intent)])
    copy = pb.EventData.FromString(first.value)
    copy.attempt = 0
    headers = [*event_headers(copy), (H_REDRIVEN, key.encode())]
    lane_record = (b"acme", copy.SerializeToString(), headers)
    await asyncio.to_thread(produce, bootstrap, topics.p30, [lane_record])

    code, out, err = await eventgw(env, "dlq", "redrive", "--all")
    assert code == 0, err
    assert "redriven: 2 of 4 selected" in out
    assert "found 1 records an interrupted earlier run had already written" in out
    assert "skipped 1 already redriven" in out
    lanes = await asyncio.to_thread(lane_records, bootstrap, topics)
    assert sorted(len(copies) for copies in lanes.values()) == [1, 1, 1]
    entries = await log_entries(bootstrap, topics)
    assert entries[key].state == "done"
    assert entries[key].target == topics.p30


async def test_kill_9_mid_redrive_then_rerun_loses_nothing(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    """kill -9 during a rate-limited redrive; the rerun completes it: every record in its
    lane at least once, duplicates at most one batch (``--rate 40``: batches of 40)."""
    bootstrap = kafka_broker.bootstrap
    await asyncio.to_thread(seed_dlq, bootstrap, topics, 300, time.time_ns() // 1_000_000)
    env = component_env(bootstrap, topics)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventgw.cli.main",
        "--log-level",
        "INFO",
        "dlq",
        "redrive",
        "--all",
        "--rate",
        "40",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    batches = 0
    async with asyncio.timeout(60):
        while batches < 2:  # the redriver logs each batch once Kafka confirmed it
            line = await proc.stderr.readline()
            assert line, "the redrive ended before it was killed"
            batches += b"dlq.redrive.batch" in line
    proc.kill()
    assert await proc.wait() == -9
    killed_with = sum(
        len(c) for c in (await asyncio.to_thread(lane_records, bootstrap, topics)).values()
    )
    assert 80 <= killed_with < 300

    code, out, err = await eventgw(env, "dlq", "redrive", "--all", "--rate", "1000")
    assert code == 0, err
    lanes = await asyncio.to_thread(lane_records, bootstrap, topics)
    dlq = await asyncio.to_thread(dlq_keys, bootstrap, topics)
    decodable = {key for key, value in dlq.items() if value != b'{"not":"an event"}'}
    assert set(lanes) == decodable  # none lost
    duplicates = sum(len(copies) - 1 for copies in lanes.values())
    assert duplicates <= 40, Counter(len(c) for c in lanes.values())
    entries = await log_entries(bootstrap, topics)
    assert {key for key, e in entries.items() if e.state == "done"} == decodable

    code, out, _ = await eventgw(env, "dlq", "redrive", "--all")
    assert "redriven: 0 of 301 selected" in out


# -- replay -----------------------------------------------------------------------------


async def test_replay_offset_and_time_ranges(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    bootstrap = kafka_broker.bootstrap
    now_ms = time.time_ns() // 1_000_000
    records: list[Record] = []
    for i in range(5):
        event = make_event(f"rt-{i}", Priority.P20, attempt=1)
        headers = event_headers(event)
        headers += [
            (H_ORIGINAL_TOPIC, topics.p20.encode()),
            (H_LAST_ERROR, b"busy"),
            (H_RETRY_AT_MS, b"%d" % (now_ms - 1000)),
        ]
        records.append((b"acme", event.SerializeToString(), headers))
    stamps = [now_ms - (5 - i) * HOUR_MS for i in range(5)]  # 5 h ago ... 1 h ago
    await asyncio.to_thread(
        produce, bootstrap, topics.retry_60s, records, partition=0, timestamps_ms=stamps
    )
    env = component_env(bootstrap, topics)

    code, out, err = await eventgw(
        env, "replay", "--retry", "60s", "--offsets", "0:1-2", "--dry-run"
    )
    assert code == 0, err
    assert "would replay 2 of 2 selected" in out
    assert len(read_records(bootstrap, topics.retry_60s, timeout_s=5)) == 5

    code, out, err = await eventgw(env, "replay", "--retry", "1m", "--offsets", "0:1-2")
    assert code == 0, err
    assert "replayed: 2 of 2 selected" in out
    after = read_records(bootstrap, topics.retry_60s, timeout_s=5)
    assert len(after) == 7
    for original, copy in zip(after[1:3], after[5:7], strict=True):
        assert copy.value == original.value  # attempt 1 kept: the ladder goes on
        assert copy.headers[H_ORIGINAL_TOPIC] == topics.p20.encode()
        assert copy.headers[H_RETRY_AT_MS] == original.headers[H_RETRY_AT_MS]
        assert copy.headers[H_REPLAYED] == f"{topics.retry_60s}:0:{original.offset}".encode()

    code, out, err = await eventgw(
        env, "replay", "--topic", topics.retry_60s, "--since", "4h30m", "--until", "3h30m"
    )
    assert code == 0, err
    assert "replayed: 1 of 1 selected" in out
    last = read_records(bootstrap, topics.retry_60s, timeout_s=5)[-1]
    assert pb.EventData.FromString(last.value).event_id == "rt-1"

    code, _, err = await eventgw(env, "replay", "--retry", "90s", "--since", "1h")
    assert code == 2
    assert err.startswith("eventgw replay: --retry: no retry topic for '90s'")
