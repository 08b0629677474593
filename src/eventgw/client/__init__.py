"""Client library: send events to an eventgw ingest service, with optional local fallbacks."""

from eventgw.client.ingest_client import ClientEvent, ClientResult, EventIngestPublisher

__all__ = ["ClientEvent", "ClientResult", "EventIngestPublisher"]
