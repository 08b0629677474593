"""Static classification: ordered rules map an event's identity to its SLO class."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventgw.core.envelope import Priority


@dataclass(frozen=True, slots=True)
class ClassRule:
    """One rule: every field that is set must match (glob patterns allowed); first match wins.

    A rule with no field set matches everything, which makes it a catch-all.
    """

    priority: Priority
    source_name: str | None = None
    statistic_key: str | None = None
    company_id: str | None = None

    def matches(self, source_name: str, statistic_key: str, company_id: str) -> bool:
        """True when every field this rule sets matches the event."""
        return (
            _match(self.source_name, source_name)
            and _match(self.statistic_key, statistic_key)
            and _match(self.company_id, company_id)
        )


def _match(pattern: str | None, value: str) -> bool:
    if pattern is None:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(value, pattern)
    return pattern == value


class StaticClassifier:
    """Classify by the first matching rule, else the default class.

    Results are memoised per (source_name, statistic_key, company_id) in a bounded cache:
    real traffic repeats a small set of identities, so the hot path is one dict lookup.
    The cache is cleared wholesale when it reaches ``cache_size`` (bounded memory).
    """

    def __init__(
        self, rules: Sequence[ClassRule], default: Priority, cache_size: int = 65_536
    ) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.rules = tuple(rules)
        self.default = default
        self._cache: dict[tuple[str, str, str], Priority] = {}
        self._cache_size = cache_size

    def classify(self, source_name: str, statistic_key: str, company_id: str) -> Priority:
        """Return the SLO class for this identity."""
        key = (source_name, statistic_key, company_id)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        result = self.default
        for rule in self.rules:
            if rule.matches(source_name, statistic_key, company_id):
                result = rule.priority
                break
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = result
        return result
