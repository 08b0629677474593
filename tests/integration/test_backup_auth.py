"""Authenticated backup objects: the failed-writes processor replays only what eventgw signed.

Anyone who can write the spool directory (or the S3 bucket) could, before signing, put any
event into any lane: the failed-writes processor replayed every object whose CRCs were right,
and CRCs are no secret. Here, on the real broker, a running failed-writes processor with
``backup.hmac_key`` finds a forged object (CRCs right, signed with another key), an unsigned
one and a genuine one: only the genuine events reach their lane; the others stay in the
store, are logged at ERROR and counted by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.backup.factory import open_backup_store
from eventgw.backup.spool import SpoolStore
from eventgw.core.backup_codec import MAGIC, MAGIC_SIGNED, BackupAuth, encode_batch
from eventgw.core.lifecycle import run_services
from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics
from eventgw.recovery.service import RecoveryService
from tests.fixtures.stack import make_settings, read_topic, unique_topics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from eventgw.config.settings import EventGwSettings, TopicSettings
    from eventgw.kafka.local_broker import LocalBroker

KEY = "k3y-for-the-integration-test-0123456789"
OTHER_KEY = b"someone else's key, 32 chars ok!"


def capture(event_id: str, topics: TopicSettings) -> bytes:
    """A publisher capture of an event meant for the p20 lane."""
    raw: bytes = pb.EventData(
        event_id=event_id,
        company_id="acme",
        source_name="api",
        priority=pb.P20,
        intended_topic=topics.p20,
        intended_cluster="primary",
    ).SerializeToString()
    return raw


@contextlib.asynccontextmanager
async def fresh_topics(bootstrap: str) -> AsyncIterator[TopicSettings]:
    topics = unique_topics()
    await asyncio.to_thread(
        ensure_topics, bootstrap, [TopicSpec(n, 3) for n in topics.all_topics()]
    )
    try:
        yield topics
    finally:
        await asyncio.to_thread(delete_topics, bootstrap, topics.all_topics())


@contextlib.asynccontextmanager
async def running_recovery(settings: EventGwSettings) -> AsyncIterator[RecoveryService]:
    recovery = RecoveryService(settings)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_services([recovery], stop, ready))
    try:
        async with asyncio.timeout(60):
            await ready.wait()
        yield recovery
    finally:
        stop.set()
        async with asyncio.timeout(60):
            await task


def rejected(recovery: RecoveryService, reason: str) -> float:
    value = recovery.metrics.registry.get_sample_value(
        "eventgw_recovery_backup_rejected_total", {"reason": reason}
    )
    return value or 0.0


@pytest.mark.kafka
async def test_only_signed_objects_are_replayed_forged_and_unsigned_ones_are_kept(
    kafka_broker: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = kafka_broker.bootstrap
    spool_dir = tmp_path / "spool"
    async with fresh_topics(bootstrap) as topics:
        settings = make_settings(
            primary=bootstrap, topics=topics, spool_dir=spool_dir, backup={"hmac_key": KEY}
        )
        spool_dir.mkdir()
        forged = "00000000000000000001-aaaaaaaaaaaa"
        unsigned = "00000000000000000002-bbbbbbbbbbbb"
        (spool_dir / f"{forged}.egwbak").write_bytes(
            encode_batch([capture(f"forged-{i}", topics) for i in range(3)], OTHER_KEY)
        )
        (spool_dir / f"{unsigned}.egwbak").write_bytes(
            encode_batch([capture("unsigned-0", topics)])
        )
        async with SpoolStore(
            spool_dir, max_bytes=1 << 30, auth=BackupAuth(key=KEY.encode())
        ) as spool:
            genuine = await spool.put([capture(f"genuine-{i}", topics) for i in range(5)])
        with caplog.at_level(logging.ERROR, logger="eventgw.recovery.service"):
            async with running_recovery(settings) as recovery:
                records = await asyncio.to_thread(
                    read_topic, bootstrap, topics.p20, expect=5, timeout_s=60, idle_s=1.0
                )
                async with asyncio.timeout(30):
                    # Counted on the first scan of each; the service has no event to await.
                    while not (  # noqa: ASYNC110
                        rejected(recovery, "bad_signature") and rejected(recovery, "unsigned")
                    ):
                        await asyncio.sleep(0.1)
        ids = sorted(pb.EventData.FromString(r.value).event_id for r in records)
        assert ids == [f"genuine-{i}" for i in range(5)], "nothing forged or unsigned replayed"
        left = sorted(p.name.removesuffix(".egwbak") for p in spool_dir.glob("*.egwbak"))
        assert left == [forged, unsigned], "kept for an operator; the genuine one deleted"
        assert genuine not in left
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(f"recovery.untrusted_backup key={forged}" in m for m in messages)
        assert any(f"recovery.untrusted_backup key={unsigned}" in m for m in messages)


async def test_the_configured_key_signs_what_every_service_writes(tmp_path: Path) -> None:
    """Publisher, client library and failed-writes processor open the store the same way."""
    for backup, magic in (({"hmac_key": KEY}, MAGIC_SIGNED), ({}, MAGIC)):
        settings = make_settings(
            primary="127.0.0.1:1", topics=unique_topics(), spool_dir=tmp_path / magic.hex(),
            backup=backup,
        )  # fmt: skip
        store = await open_backup_store(settings.backup)
        try:
            key = await store.put([b"event"])
            assert (settings.backup.spool_dir / f"{key}.egwbak").read_bytes().startswith(magic)
        finally:
            await store.close()
