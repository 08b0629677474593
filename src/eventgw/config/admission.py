"""Dynamic-config models of admission control: the AIMD SLO service and hot-tenant isolation.

They live in `config` (not next to the services that use them) because the dynamic config
document (`eventgw.config.dynamic.DynamicConfig`) holds them and config must not import
services. Behaviour is documented where it is implemented: `eventgw.ingest.slo_service`
and `eventgw.ingest.hot_tenants`.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from collections.abc import Mapping

ClassName = Literal["P10", "P20", "P30"]
HotAction = Literal["demote", "offload"]

# Decrement timestamps the SLO service keeps per class (bounded memory); the alert
# threshold must stay below it.
MAX_DECREMENTS_TRACKED: Final = 1024


class AimdParams(BaseModel):
    """AIMD parameters of one SLO class; rates are in events/s."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    initial: float = Field(gt=0, description="capacity at start-up (events/s)")
    floor: float = Field(gt=0, description="capacity never goes below this (events/s)")
    ceiling: float = Field(gt=0, description="capacity never goes above this (events/s)")
    increase_step: float = Field(gt=0, description="events/s added per applied INCREASE")
    decrease_factor: float = Field(
        gt=0, lt=1, description="capacity is multiplied by this per applied DECREASE"
    )
    cooldown_s: float = Field(
        ge=0, description="at most one DECREASE applied per window of this many seconds"
    )
    burst_s: float = Field(gt=0, description="token bucket depth, in seconds of capacity")

    @model_validator(mode="after")
    def _ordered(self) -> AimdParams:
        if not self.floor <= self.initial <= self.ceiling:
            raise ValueError(
                f"need floor <= initial <= ceiling, got floor={self.floor} "
                f"initial={self.initial} ceiling={self.ceiling}"
            )
        return self


# Sized for the design peak of ~170,000 events/s across all classes (docs/design.md, "Scale
# model").
# Every class starts at its ceiling: an uncongested gateway must not offload anything.
# The first DECREASE anchors capacity to the rate actually admitted (see SloService).
DEFAULT_AIMD_PARAMS: Final[Mapping[ClassName, AimdParams]] = MappingProxyType(
    {
        # Bulk: give way fast (halve), and keep P10 cool-down under 6 s so the ">10 decrements
        # per minute" alert is reachable.
        "P10": AimdParams(
            initial=200_000,
            floor=50,
            ceiling=200_000,
            increase_step=500,
            decrease_factor=0.5,
            cooldown_s=5,
            burst_s=2,
        ),
        "P20": AimdParams(
            initial=200_000,
            floor=200,
            ceiling=200_000,
            increase_step=1_000,
            decrease_factor=0.7,
            cooldown_s=5,
            burst_s=1,
        ),
        # Only shed with offload_p30; gentler, so a short hiccup does not offload waiting users.
        "P30": AimdParams(
            initial=200_000,
            floor=1_000,
            ceiling=200_000,
            increase_step=2_000,
            decrease_factor=0.8,
            cooldown_s=5,
            burst_s=1,
        ),
    }
)


class AimdConfig(BaseModel):
    """The AIMD section of the dynamic config; hot-applied with `SloService.apply_config`.

    A class missing from ``classes`` takes its `DEFAULT_AIMD_PARAMS` entry, so after
    validation ``classes`` always holds P10, P20 and P30.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(default=True, description="False admits every event (no shedding)")
    classes: dict[ClassName, AimdParams] = Field(
        default_factory=lambda: dict(DEFAULT_AIMD_PARAMS),
        description="per-class AIMD parameters; missing classes take the defaults",
    )
    offload_p30: bool = Field(default=False, description="allow shedding P30 to the offload lane")
    alert_decrements_per_minute: int = Field(
        default=10,
        ge=0,
        lt=MAX_DECREMENTS_TRACKED,
        description="more P10 decrements than this in 60 s is serious congestion",
    )
    max_signal_age_s: float = Field(
        default=30.0,
        gt=0,
        description="flow-control signals emitted longer ago than this are ignored",
    )

    @field_validator("classes", mode="after")
    @classmethod
    def _fill_defaults(cls, value: dict[ClassName, AimdParams]) -> dict[ClassName, AimdParams]:
        return {**DEFAULT_AIMD_PARAMS, **value}


class HotTenantConfig(BaseModel):
    """Hot-tenant isolation settings (the dynamic-config section of the dynamic classifier)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(default=True, description="False turns rate tracking and isolation off")
    window_s: float = Field(default=10.0, gt=0, description="rate averaging window (seconds)")
    max_rate_per_company: float = Field(
        default=2000.0, gt=0, description="a company at or above this rate (events/s) is hot"
    )
    action: HotAction = Field(
        default="offload", description="what happens to a hot company's events"
    )
    exempt_companies: tuple[str, ...] = Field(
        default=(), description="never demoted or offloaded for their rate"
    )
    force_offload_companies: tuple[str, ...] = Field(
        default=(), description="kill switch: every event of these companies is offloaded"
    )
    max_tracked: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,  # a bound on memory must itself be bounded
        description="companies tracked at once (bounds memory)",
    )
