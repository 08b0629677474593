"""Dynamic config: a watched JSON file, hot-reloaded; an invalid update is refused.

The file holds runtime decisions that operators change without a restart: the rollout
share, gating rules, and (later) classifier overrides and AIMD parameters. Readers call
`DynamicConfigWatcher.current`, which always returns the last *valid* config.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import watchfiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eventgw.config.admission import AimdConfig, HotTenantConfig
from eventgw.core.errors import ConfigError

if TYPE_CHECKING:
    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)


class GateRule(BaseModel):
    """Block or allow publishing for matching events; first matching rule wins.

    Fields that are set must all match (glob patterns allowed). Allow rules placed before
    a broader block rule carve out exceptions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["block", "allow"]
    source_name: str | None = None
    company_id: str | None = None
    reason: str = Field(default="blocked by gating rule", max_length=200)


class DynamicConfig(BaseModel):
    """The whole dynamic config document."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_gateway_cluster_rollout: float = Field(
        default=0.0, ge=0.0, le=100.0, description="percent of companies on the rollout cluster"
    )
    gating: tuple[GateRule, ...] = ()
    aimd: AimdConfig = Field(default_factory=AimdConfig)
    hot_tenants: HotTenantConfig = Field(default_factory=HotTenantConfig)

    @property
    def rollout_buckets(self) -> int:
        """Rollout share as a bucket threshold out of 10000 (``CRC32 mod 10000 < this``)."""
        return round(self.event_gateway_cluster_rollout * 100)


def parse_dynamic_config(text: str) -> DynamicConfig:
    """Parse and validate a dynamic config document; raises ConfigError naming the field."""
    try:
        raw = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError("dynamic_config", f"not valid JSON: {exc}") from exc
    try:
        return DynamicConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "dynamic_config"
        raise ConfigError(field, err["msg"]) from exc


class DynamicConfigWatcher:
    """Holds the last good dynamic config and reloads it when the file changes.

    State: ``current`` is always a valid config (defaults if the file is absent at start).
    A reload that fails to parse or validate is logged at ERROR, counted in ``refused``,
    and leaves ``current`` unchanged. A missing file at start is allowed; a file that is
    present but invalid at start raises ConfigError (refuse to start on bad config).
    """

    def __init__(self, path: Path | None, metrics: Metrics | None = None) -> None:
        self.path = path
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
            self.current = parse_dynamic_config(path.read_text())
            self.version = 1

    async def _reload(self, path: Path) -> None:
        try:
            text = await asyncio.to_thread(path.read_text)
            new = parse_dynamic_config(text)
        except (OSError, ConfigError) as exc:
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
