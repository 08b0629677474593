"""Operator tools for the DLQ, the parking lot and the retry topics (``eventgw dlq|replay``).

- `TopicReader` lists and finds records (explicit offsets; never joins a group or commits).
- `Redriver` writes selected DLQ records back to their lane, once per record, losing none:
  what was redriven is recorded in Kafka (`RedriveLog`), see `eventgw.dlq.redriver`.
- `RetryReplayer` copies a range of a retry topic to its end, to be served again.

Pure parts (`Selection` and the ``parse_*`` functions, `DlqRecord`, lane choice,
`RateLimiter`) need no Kafka. docs/failure-handling.md and docs/operations.md, "DLQ
growing", describe how operators use them.
"""

from eventgw.dlq.lanes import NotRedrivable, redrive_record, redrive_target
from eventgw.dlq.rate import RateLimiter
from eventgw.dlq.reader import ScanPlan, ScanStep, TopicReader
from eventgw.dlq.record import DlqRecord
from eventgw.dlq.redrive_log import LogEntry, RedriveLog
from eventgw.dlq.redriver import Redriver
from eventgw.dlq.replayer import RetryReplayer
from eventgw.dlq.report import Progress, RedriveReport, ReplayReport
from eventgw.dlq.selection import Coordinate, OffsetRange, Selection

__all__ = [
    "Coordinate",
    "DlqRecord",
    "LogEntry",
    "NotRedrivable",
    "OffsetRange",
    "Progress",
    "RateLimiter",
    "RedriveLog",
    "RedriveReport",
    "Redriver",
    "ReplayReport",
    "RetryReplayer",
    "ScanPlan",
    "ScanStep",
    "Selection",
    "TopicReader",
    "redrive_record",
    "redrive_target",
]
