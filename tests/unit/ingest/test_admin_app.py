"""The admin port's app: the status document with the hot companies, and the operator routes.

The public ``/status`` (`StatusDocument`) has no field that lists company ids; the admin
port's (`AdminStatusDocument`) adds ``hot_companies``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from eventgw.config.settings import IngestSettings
from eventgw.ingest.admin_app import AdminHttpApp
from eventgw.ingest.status_doc import (
    AdminStatusDocument,
    AdmissionClasses,
    ClassAdmission,
    DoorClass,
    DoorClasses,
    DoorStatus,
    HotCompany,
    HotTenantCounts,
    StatusDocument,
)
from eventgw.ingest.status_page import STATUS_PAGE_HTML
from eventgw.metrics.backend import Metrics

if TYPE_CHECKING:
    from collections.abc import MutableMapping


def document() -> AdminStatusDocument:
    admission = ClassAdmission(capacity=1.0, decrements_last_minute=0, admitted=1, offloaded=0)
    door = DoorClass(admitted=1, deferred=0, limit_events=10)
    return AdminStatusDocument(
        pid=1,
        serious_congestion=False,
        aimd_enabled=True,
        classes=AdmissionClasses(P30=admission, P20=admission, P10=admission),
        hot_tenants=HotTenantCounts(
            offloaded=0, offloaded_by_kill_switch=0, demoted=0, max_rate_per_company=5.0
        ),
        flow_control_signals=0,
        door=DoorStatus(
            in_flight_events=0,
            max_in_flight_events=10,
            in_flight_requests=0,
            retry_after_ms=0,
            refused_requests=0,
            scale=1.0,
            unloaded_ms=0.0,
            held_events=0,
            held=0,
            classes=DoorClasses(P30=door, P20=door, P10=door),
        ),
        hot_companies=[HotCompany(company_id="floodco", rate=12.5)],
    )


async def call(method: str, path: str, ready: bool = True) -> tuple[int, dict[bytes, bytes], bytes]:
    app = AdminHttpApp(IngestSettings(), Metrics(), lambda: ready, document)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


def test_only_the_admin_document_lists_companies() -> None:
    public = {f.name for f in msgspec.structs.fields(StatusDocument)}
    admin = {f.name for f in msgspec.structs.fields(AdminStatusDocument)}
    assert admin - public == {"hot_companies"}
    assert not any("compan" in name for name in public)


async def test_the_admin_status_lists_the_hot_companies() -> None:
    status, _, body = await call("GET", "/status")
    assert status == 200
    assert json.loads(body)["hot_companies"] == [{"company_id": "floodco", "rate": 12.5}]


async def test_the_page_readiness_and_metrics() -> None:
    status, headers, body = await call("GET", "/")
    assert (status, body) == (200, STATUS_PAGE_HTML)
    assert b"default-src 'none'" in headers[b"content-security-policy"]
    assert (await call("GET", "/readyz"))[0] == 200
    assert (await call("GET", "/readyz", ready=False))[0] == 503
    assert (await call("HEAD", "/healthz"))[0] == 200
    status, headers, _ = await call("GET", "/metrics")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain")
    assert json.loads((await call("GET", "/openapi.json"))[2])["openapi"].startswith("3.1")


@pytest.mark.parametrize(
    ("method", "path", "code"), [("POST", "/status", 405), ("GET", "/v1/events", 404)]
)
async def test_nothing_else(method: str, path: str, code: int) -> None:
    status, headers, body = await call(method, path)
    assert status == code
    assert json.loads(body)["error"]["code"] == (
        "method_not_allowed" if code == 405 else "not_found"
    )
    if code == 405:
        assert headers[b"allow"] == b"GET, HEAD"
