"""The failed-writes processor deletes a backup object only once all its events are in Kafka.

SYSTEM.md 2.6. A fake store and replayer script the outcomes; the loop is the real one.
"""

from __future__ import annotations

import asyncio

from eventgw.config.settings import EventGwSettings, RecoverySettings
from eventgw.core.backup_codec import CorruptBackup
from eventgw.recovery.service import RecoveryService


class FakeStore:
    name = "spool"

    def __init__(self, objects: dict[str, list[bytes]], corrupt: set[str]) -> None:
        self.objects = objects
        self.corrupt = corrupt
        self.deleted: list[str] = []

    async def list_keys(self) -> list[str]:
        return sorted(self.objects)

    async def get(self, key: str) -> list[bytes]:
        if key in self.corrupt:
            raise CorruptBackup("record_crc", 0, f"{key}: checksum mismatch")
        return self.objects[key]

    async def delete(self, key: str) -> None:
        self.deleted.append(key)
        del self.objects[key]


class FakeReplayer:
    """Reports the first ``fail_first`` replays of an object's values as incomplete."""

    def __init__(self, fail_first: dict[bytes, int]) -> None:
        self.fail_first = dict(fail_first)
        self.replayed: list[list[bytes]] = []

    async def replay(self, values: list[bytes]) -> int:
        self.replayed.append(list(values))
        left = self.fail_first.get(values[0], 0)
        if left:
            self.fail_first[values[0]] = left - 1
            return len(values)  # none of them confirmed yet
        return 0


async def test_objects_are_deleted_only_after_a_complete_replay_and_corrupt_ones_never() -> None:
    settings = EventGwSettings(
        recovery=RecoverySettings(
            backup_scan_interval_s=0.01, backoff_initial_s=0.01, backoff_max_s=0.02
        )
    )
    service = RecoveryService(settings)
    store = FakeStore({"k1": [b"a"], "k2": [b"b", b"c"], "k3": [b"x"]}, corrupt={"k3"})
    replayer = FakeReplayer({b"b": 2})  # k2's events are not all in Kafka, twice
    stop = asyncio.Event()
    loop = asyncio.create_task(service._backup_loop(store, replayer, stop))  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        while "k2" in store.objects:  # noqa: ASYNC110  (no event to await in the fake)
            await asyncio.sleep(0.01)
    stop.set()
    await loop
    assert store.deleted == ["k1", "k2"]
    assert replayer.replayed.count([b"b", b"c"]) == 3, "k2 kept and replayed until complete"
    assert "k3" in store.objects, "a corrupt object is kept (its events are at risk)"
