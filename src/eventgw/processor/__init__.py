"""Processor workers: pull batches, run a user handler per event, report results (SYSTEM.md 2.5).

Write a handler::

    from eventgw.processor import Reject, Retry

    async def handle(event):  # event: eventgw._proto.eventgw.v1.eventgw_pb2.EventData
        if not event.payload:
            raise Reject("empty payload")  # straight to the DLQ
        if not await deliver(event):
            raise Retry(delay=30, reason="downstream busy")  # NACK, served again in 30 s
        # returning ACKs the event

and run it with ``eventgw processor --handler mymodule:handle`` or
``Command().run(handler="mymodule:handle")``. See `eventgw.processor.handlers` for the
full result mapping.
"""

from eventgw.processor.command import Command
from eventgw.processor.handlers import Reject, Retry
from eventgw.processor.service import ProcessorService

__all__ = ["Command", "ProcessorService", "Reject", "Retry"]
