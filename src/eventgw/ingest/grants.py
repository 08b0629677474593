"""Ingest API keys and what each may write: `KeyRing` (key → `Grant`) and the grant check.

Both faces (``http_app``, ``grpc_api``) look the request's key up in the `KeyRing` where they
always checked it, before the body is decoded; the pipeline then calls `Grant.check` once per
request, on the distinct identities it already groups the batch by, before anything is
counted, admitted or written. A refusal is the whole request (docs/security.md).

Keys are held as SHA-256 digests, never as the keys themselves, and looked up by the digest
of the presented key. A lookup's timing can tell a caller at most how far the digest of its
guess agrees with a stored digest, which it cannot steer toward a real key (SHA-256 is
preimage resistant), so no per-key constant-time comparison is needed and the cost is one
hash and one dict lookup per request, however many keys there are.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from eventgw.config.ingest_security import ANY, TenantKey, key_digest, load_tenant_keys_file
from eventgw.core.envelope import Priority
from eventgw.core.errors import ConfigError, PermissionDenied

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventgw.config.settings import IngestSettings
    from eventgw.core.classify import StaticClassifier
    from eventgw.ingest.validation import ValidEvent
    from eventgw.metrics.backend import Metrics

__all__ = ["Grant", "KeyRing"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one key may write. ``None`` in a field means any value.

    ``restricted`` is False for a key that may write anything (``ingest.api_keys``, or a
    tenant key of ``"*"`` everywhere): its requests skip the check.
    """

    tenant: str
    company_ids: frozenset[str] | None
    source_names: frozenset[str] | None
    classes: frozenset[Priority] | None

    @property
    def restricted(self) -> bool:
        """Whether `check` can refuse anything."""
        return not (self.company_ids is None and self.source_names is None and self.classes is None)

    @classmethod
    def of(cls, key: TenantKey) -> Grant:
        """The grant of a configured tenant key."""
        classes = frozenset(Priority.parse(c) for c in key.classes)
        return cls(
            tenant=key.tenant,
            company_ids=None if key.company_ids == [ANY] else frozenset(key.company_ids),
            source_names=None if key.source_names == [ANY] else frozenset(key.source_names),
            classes=None if classes == frozenset(Priority) else classes,
        )

    def check(
        self,
        identities: Sequence[ValidEvent],
        classifier: StaticClassifier,
        events: Sequence[ValidEvent],
    ) -> None:
        """Refuse the request if any identity is outside this grant.

        ``identities`` holds the first event of each distinct (source, statistic key,
        company) of ``events``, in order of first appearance, so the cost is a few set
        lookups (and, with a class restriction, one cached classification) per distinct
        identity, none per event; and the first refusal found is the first offending event
        of the request.

        Raises:
            PermissionDenied: naming ``events[<i>].company_id``, ``.source_name`` or
                ``.class`` of the first event outside the grant.
        """
        companies, sources, classes = self.company_ids, self.source_names, self.classes
        if companies is None and sources is None and classes is None:
            return
        for e in identities:
            if companies is not None and e.company_id not in companies:
                self._refuse(events, e, "company_id", f"company {e.company_id!r}")
            if sources is not None and e.source_name not in sources:
                self._refuse(events, e, "source_name", f"source {e.source_name!r}")
            if classes is not None:
                priority = classifier.classify(e.source_name, e.statistic_key, e.company_id)
                if priority not in classes:
                    granted = ", ".join(p.name for p in sorted(classes, reverse=True))
                    self._refuse(
                        events,
                        e,
                        "class",
                        f"class {priority.name} (source {e.source_name!r}, statistic_key "
                        f"{e.statistic_key!r} are classified so) is outside the key's "
                        f"classes ({granted})",
                    )

    def _refuse(
        self, events: Sequence[ValidEvent], event: ValidEvent, field: str, what: str
    ) -> NoReturn:
        index = next(i for i, e in enumerate(events) if e is event)
        message = what if field == "class" else f"{what} is not granted to the key"
        raise PermissionDenied(
            f"events[{index}].{field}",
            f"{message} (tenant {self.tenant!r}); nothing of the request was written",
            index=index,
        )


_UNBOUND = Grant(tenant="(api_keys)", company_ids=None, source_names=None, classes=None)


class KeyRing:
    """The configured ingest API keys, by SHA-256 digest, each with its `Grant`.

    Empty (``required`` False) when no key is configured: requests need none, which the
    settings allow only on loopback outside production.
    """

    def __init__(self, grants: Mapping[bytes, Grant], metrics: Metrics | None = None) -> None:
        self._grants = dict(grants)
        self.required = bool(self._grants)
        self._denied = (
            metrics.counter(
                "eventgw_ingest_permission_denied_total",
                "requests refused because an event is outside the key's grant",
                ["field"],
            )
            if metrics is not None
            else None
        )

    @classmethod
    def from_settings(cls, settings: IngestSettings, metrics: Metrics | None = None) -> KeyRing:
        """``api_keys``, ``tenant_keys`` and the ``tenant_keys_file`` (read now).

        Raises:
            ConfigError: the file cannot be read or holds an invalid entry
                (``ingest.tenant_keys_file``), or two keys are the same
                (``ingest.tenant_keys``).
        """
        tenant_keys = list(settings.tenant_keys)
        if settings.tenant_keys_file is not None:
            tenant_keys += load_tenant_keys_file(settings.tenant_keys_file)
        grants: dict[bytes, Grant] = {}
        for unbound in settings.api_keys:
            grants[bytes.fromhex(key_digest(unbound.get_secret_value()))] = _UNBOUND
        for k in tenant_keys:
            digest = bytes.fromhex(k.key_sha256.get_secret_value())
            other = grants.get(digest)
            if other is not None:
                raise ConfigError(
                    "ingest.tenant_keys",
                    f"the key of tenant {k.tenant!r} is also the key of {other.tenant!r}: "
                    "every key must be distinct",
                )
            grants[digest] = Grant.of(k)
        if grants:
            logger.info(
                "ingest.keys keys=%d tenants=%d",
                len(grants),
                len({g.tenant for g in grants.values()}),
            )
        return cls(grants, metrics)

    def grant_of(self, key: bytes) -> Grant | None:
        """The grant of the presented key, or None when it is no configured key."""
        if not key:
            return None
        return self._grants.get(hashlib.sha256(key).digest())

    def count_denied(self, grant: Grant, exc: PermissionDenied) -> None:
        """Log and count a request refused by ``grant`` (by the kind of field refused)."""
        kind = exc.field.rpartition(".")[2]
        logger.info("ingest.permission_denied tenant=%s field=%s", grant.tenant, exc.field)
        if self._denied is not None:
            self._denied.labels(kind).inc()
