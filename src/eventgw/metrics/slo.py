"""The labels SLO metrics share across services: class and tier.

- ``class``: the event's original SLO class, ``P30`` | ``P20`` | ``P10`` (an unknown wire
  value counts as ``P10``, the least urgent class, as the orchestrator serves it).
- ``tier``: ``offloaded`` when ingest sent the event to the offload lane
  (``EventData.offloaded``: its company was hot, or its class was over its AIMD capacity),
  else ``normal``. Bounded by construction; per-company labels would not be. Events of a hot
  company that ingest *demoted* instead count under their new class, tier ``normal``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CLASSES", "TIERS", "class_label", "tier_label"]

CLASSES: Final = ("P30", "P20", "P10")
TIERS: Final = ("normal", "offloaded")

_CLASS_OF_WIRE: Final = {30: "P30", 20: "P20", 10: "P10"}


def class_label(priority: int) -> str:
    """``P30`` / ``P20`` / ``P10`` for a wire (or `Priority`) value; ``P10`` if unknown."""
    return _CLASS_OF_WIRE.get(priority, "P10")


def tier_label(offloaded: bool) -> str:
    """``offloaded`` or ``normal``."""
    return "offloaded" if offloaded else "normal"
