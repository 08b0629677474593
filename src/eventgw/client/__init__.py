"""Client library: send events to an eventgw ingest service, with optional local fallbacks.

`EventIngestPublisher` speaks gRPC (with fallbacks), `IngestHttpClient` the HTTP API; both
take a `ClientTls` for a TLS-enabled ingest (docs/security.md).
"""

from eventgw.client.http_client import IngestHttpClient
from eventgw.client.ingest_client import ClientEvent, ClientResult, EventIngestPublisher
from eventgw.client.tls import ClientTls

__all__ = ["ClientEvent", "ClientResult", "ClientTls", "EventIngestPublisher", "IngestHttpClient"]
