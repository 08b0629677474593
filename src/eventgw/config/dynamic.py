"""Dynamic config: a watched JSON file, hot-reloaded; an invalid update is refused.

The file holds runtime decisions that operators change without a restart: the rollout
share, gating rules, AIMD parameters and hot-tenant isolation. Readers call
`DynamicConfigWatcher.current`, which always returns the last *valid* config.

What is valid (`parse_dynamic_config`): at most `MAX_DYNAMIC_CONFIG_BYTES`, UTF-8, one JSON
object, no duplicate keys, no number out of range (``1e400``) and no NaN or Infinity, nested
no deeper than JSON needs, every value of its field's exact type (``"5"`` is not a number,
``1`` is not a boolean). An empty file is refused too: an editor that truncates and then
writes leaves one for a moment, and taking it as "the defaults" would drop every gating
rule. ``{}`` is the explicit way to ask for the defaults.

Replica-index lists: besides the fields of `DynamicConfig`, the document may hold the keys
its reader names in ``index_keys`` (``orchestrator.rollout_orchestrator_config_key``, by
default `ROLLOUT_ORCHESTRATOR_KEY`), each a JSON array of distinct orchestrator replica
indexes (`DynamicConfig.replica_indexes`). Any other unknown key is refused as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import watchfiles
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from eventgw.config.admission import AimdConfig, HotTenantConfig
from eventgw.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Collection

    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)

MAX_DYNAMIC_CONFIG_BYTES: Final = 1 << 20
"""A dynamic config file larger than this (1 MiB) is refused unread."""

_MAX_DEPTH: Final = 32  # the document nests 5 levels deep; JSON deeper than this is refused
_FIELD: Final = "dynamic_config"

ROLLOUT_ORCHESTRATOR_KEY: Final = "rollout_orchestrator_indexes"
"""The default name of the key listing the orchestrator replicas of the rollout fleet
(``orchestrator.rollout_orchestrator_config_key``)."""

MAX_REPLICA_INDEX: Final = 9_999
"""A replica index in an index list is at most this (a list holds at most as many)."""


class GateRule(BaseModel):
    """Block or allow publishing for matching events; first matching rule wins.

    Fields that are set must all match (glob patterns allowed). Allow rules placed before
    a broader block rule carve out exceptions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    action: Literal["block", "allow"]
    source_name: str | None = None
    company_id: str | None = None
    reason: str = Field(default="blocked by gating rule", max_length=200)


class DynamicConfig(BaseModel):
    """The whole dynamic config document."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    event_gateway_cluster_rollout: float = Field(
        default=0.0, ge=0.0, le=100.0, description="percent of companies on the rollout cluster"
    )
    gating: tuple[GateRule, ...] = ()
    aimd: AimdConfig = Field(default_factory=AimdConfig)
    hot_tenants: HotTenantConfig = Field(default_factory=HotTenantConfig)
    # The replica-index lists, by key (see the module docstring); set by the parser only.
    _replica_indexes: dict[str, tuple[int, ...]] = PrivateAttr(default_factory=dict)

    def replica_indexes(self, key: str) -> tuple[int, ...] | None:
        """The replica indexes listed under ``key``, ascending; None when the key is absent."""
        return self._replica_indexes.get(key)

    @property
    def rollout_buckets(self) -> int:
        """Rollout share as a bucket threshold out of 10000 (``CRC32 mod 10000 < this``)."""
        return round(self.event_gateway_cluster_rollout * 100)


def parse_dynamic_config(
    data: bytes | str, index_keys: Collection[str] = (ROLLOUT_ORCHESTRATOR_KEY,)
) -> DynamicConfig:
    """Parse and validate a dynamic config document (see the module docstring for the rules).

    Args:
        data: the document.
        index_keys: keys that hold a list of replica indexes (each refused unless it is an
            array of distinct integers from 0 to `MAX_REPLICA_INDEX`).

    Raises:
        ConfigError: naming the field (``dynamic_config`` for the document as a whole).
            Nothing else, whatever the bytes.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_DYNAMIC_CONFIG_BYTES:
        raise ConfigError(
            _FIELD, f"{len(raw)} bytes is over the limit of {MAX_DYNAMIC_CONFIG_BYTES}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(_FIELD, f"not valid UTF-8 at byte {exc.start}") from None
    if not text.strip():
        raise ConfigError(
            _FIELD, "the file is empty (a save in progress?): write {} for the defaults"
        )
    try:
        # Syntax, duplicate keys and depth here; types and ranges (NaN and 1e400 included:
        # the models refuse non-finite numbers) below, where the field can be named.
        doc = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ConfigError(_FIELD, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(_FIELD, f"not valid JSON: nested deeper than {_MAX_DEPTH}") from None
    except ValueError as exc:  # from the hooks, or an integer of more than 4300 digits
        raise ConfigError(_FIELD, f"not valid JSON: {exc}") from None
    if _depth(doc) > _MAX_DEPTH:
        raise ConfigError(_FIELD, f"not valid JSON: nested deeper than {_MAX_DEPTH}")
    lists: dict[str, tuple[int, ...]] = {}
    if isinstance(doc, dict):
        for key in index_keys:
            if key in doc:
                lists[key] = _replica_index_list(key, doc.pop(key))
        if lists:
            # The rest is validated as JSON, as without the lists (a non-finite number
            # comes back as Infinity/NaN, which the models refuse naming the field).
            text = json.dumps(doc)
    try:
        # Strict: a value of the wrong JSON type is refused, not coerced ("5" → 5.0).
        config = DynamicConfig.model_validate_json(text, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or _FIELD
        raise ConfigError(field, err["msg"]) from None
    config._replica_indexes.update(lists)
    return config


def _replica_index_list(key: str, value: object) -> tuple[int, ...]:
    """``value`` as a sorted tuple of distinct replica indexes, or ConfigError naming ``key``."""
    if not isinstance(value, list):
        raise ConfigError(key, "must be a list of replica indexes, e.g. [2, 3]")
    if len(value) > MAX_REPLICA_INDEX + 1:
        raise ConfigError(key, f"lists {len(value)} indexes, more than there can be replicas")
    for item in value:
        # bool is an int in Python; JSON true is not an index.
        if not isinstance(item, int) or isinstance(item, bool):
            raise ConfigError(key, f"{item!r} is not a replica index (an integer)")
        if not 0 <= item <= MAX_REPLICA_INDEX:
            raise ConfigError(key, f"{item} is not a replica index (0 to {MAX_REPLICA_INDEX})")
    if len(set(value)) != len(value):
        raise ConfigError(key, f"lists an index twice: {value}")
    return tuple(sorted(value))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With duplicate keys json keeps the last one silently: two "gating" lists would drop
    # the first. Refuse instead.
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r}")
        doc[key] = value
    return doc


def _depth(doc: object) -> int:
    """Nesting depth of a decoded document (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def read_dynamic_config(
    path: Path, index_keys: Collection[str] = (ROLLOUT_ORCHESTRATOR_KEY,)
) -> DynamicConfig:
    """Read and parse ``path``, reading at most one byte past `MAX_DYNAMIC_CONFIG_BYTES`.

    Raises:
        ConfigError: the file cannot be read, or is refused by `parse_dynamic_config`.
    """
    try:
        with path.open("rb") as file:
            data = file.read(MAX_DYNAMIC_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(_FIELD, f"{path}: {exc.strerror or exc}") from None
    return parse_dynamic_config(data, index_keys)


class DynamicConfigWatcher:
    """Holds the last good dynamic config and reloads it when the file changes.

    State: ``current`` is always a valid config (defaults if the file is absent at start).
    A reload that fails to read, parse or validate (an empty file included) is logged at
    ERROR, counted in ``refused``, and leaves ``current`` unchanged. A missing file at start
    is allowed; a file that is present but unreadable or invalid at start raises
    ConfigError (refuse to start on bad config).

    ``index_keys`` names the keys that hold replica-index lists (`parse_dynamic_config`):
    every reader of one file should be given the same, or a document one accepts another
    refuses.
    """

    def __init__(
        self,
        path: Path | None,
        metrics: Metrics | None = None,
        index_keys: Collection[str] = (ROLLOUT_ORCHESTRATOR_KEY,),
    ) -> None:
        self.path = path
        self._index_keys = tuple(index_keys)
        self._applied = self._refused = None
        if metrics is not None:
            reloads = metrics.counter(
                "eventgw_dynamic_config_reloads_total", "dynamic config reloads", ["result"]
            )
            self._applied, self._refused = reloads.labels("applied"), reloads.labels("refused")
        self.current = DynamicConfig()
        self.version = 0
        self.refused = 0
        self._changed = asyncio.Event()
        self._directory = path.parent if path is not None else Path()
        if path is not None and path.exists():
            self.current = read_dynamic_config(path, self._index_keys)
            self.version = 1

    async def _reload(self, path: Path) -> None:
        try:
            new = await asyncio.to_thread(read_dynamic_config, path, self._index_keys)
        except ConfigError as exc:
            self.refused += 1
            if self._refused is not None:
                self._refused.inc()
            logger.error("dynamic_config.refused path=%s error=%s", path, exc)
        else:
            if new != self.current:
                self.current = new
                self.version += 1
                if self._applied is not None:
                    self._applied.inc()
                logger.info("dynamic_config.applied path=%s version=%d", path, self.version)
        finally:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_changed(self) -> None:
        """Wait until the next reload attempt finishes (applied or not); for tests and tools."""
        await self._changed.wait()

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """Watch the file until ``stop`` is set. Returns at once when no path is configured."""
        ready.set()
        if self.path is None:
            return
        # Watch the directory, not the file: editors and `mv` replace files atomically.
        target = self.path.name
        async for changes in watchfiles.awatch(
            self._directory, stop_event=stop, debounce=50, step=20, recursive=False
        ):
            if any(os.path.basename(p) == target for _, p in changes):
                await self._reload(self.path)
