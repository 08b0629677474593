"""Processor workers: take tasks with credit, run a user handler per event, report results.

Write a handler::

    from eventgw.processor import EventData, Reject, Retry

    async def handle(event: EventData) -> None:
        if not event.payload:
            raise Reject("empty payload")  # straight to the DLQ
        if not await deliver(event):
            raise Retry(delay=30, reason="downstream busy")  # NACK, served again in 30 s
        # returning ACKs the event

and run it with ``eventgw processor --handler mymodule:handle`` or
``Command().run(handler="mymodule:handle")``. ``EventData`` is the event as it travels
(the ``eventgw.v1.EventData`` protobuf message); import it from here. See
`eventgw.processor.handlers` for the full result mapping, and docs/design.md, "Processor
workers" and docs/dispatch-protocol.md, "The worker's side" for how tasks arrive.
"""

from eventgw.processor.command import Command
from eventgw.processor.handlers import EventData, Handler, Reject, Retry
from eventgw.processor.service import ProcessorService

__all__ = ["Command", "EventData", "Handler", "ProcessorService", "Reject", "Retry"]
