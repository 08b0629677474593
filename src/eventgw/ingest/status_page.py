"""The built-in status page, ``GET /`` of ingest: ``/status`` as a live page.

``status_page.html`` beside this module is the whole page: inline CSS and JavaScript, no
external resource (no CDN, no framework), so it works on an air-gapped host and needs no
build step. In the browser it reads ``/status`` every second (``?refresh_ms=`` to change
it) and shows, per class, AIMD capacity and decrements, events admitted and offloaded, the
door's taken and deferred events, events in flight against each class's share, the hot
companies and the serious-congestion alert (docs/operations.md, "Status page and API").
The same page is served on the public port and on the admin port; only the admin port's
``/status`` lists the hot companies (company ids), so only there does the page show them.
"""

from __future__ import annotations

import importlib.resources
from typing import Final

__all__ = ["STATUS_PAGE_HEADERS", "STATUS_PAGE_HTML"]

STATUS_PAGE_HTML: Final = (
    importlib.resources.files(__package__).joinpath("status_page.html").read_bytes()
)
"""The page, read once at import (it is part of the package, like ``py.typed``)."""

STATUS_PAGE_HEADERS: Final = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # The browser enforces what the page promises: its own inline code, GET /status, nothing else.
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        b"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
]
"""The response headers of the page, on either port."""
