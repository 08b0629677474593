"""``eventgw replay``: copy a range of a retry topic to its end, to be served again.

Why the retry topic, and what is kept: see `eventgw.dlq.replayer`. The range is a time range
(``--since``/``--until``, the time each record was written to the retry topic) and/or
offset ranges (``--offsets 0:100-200``); at least one is required, so a replay never copies
a whole topic by accident. Exit codes as ``eventgw dlq``: 0, 1 (Kafka failure or
unfinished), 2 (bad option value).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

from eventgw.cli.clients import DryRunProducer, open_producer, open_scanner, stop_on_signals
from eventgw.cli.options import (
    UsageError,
    add_filter_options,
    add_rate_options,
    batch_size,
    rate_from,
    selection_from,
)
from eventgw.cli.progress import ProgressBar
from eventgw.core.clock import SystemClock
from eventgw.dlq.rate import RateLimiter
from eventgw.dlq.replayer import RetryReplayer
from eventgw.dlq.selection import parse_duration_s
from eventgw.kafka.scanner import ScanError

if TYPE_CHECKING:
    import argparse

    from eventgw.config.settings import EventGwSettings, TopicSettings
    from eventgw.dlq.record import DlqRecord
    from eventgw.dlq.redrive_log import Producer
    from eventgw.dlq.report import ReplayReport
    from eventgw.dlq.selection import Selection
    from eventgw.kafka.scanner import Scanner


def retry_topics(topics: TopicSettings) -> dict[int, str]:
    """``{delay in seconds: retry topic}``."""
    return {
        60: topics.retry_60s,
        120: topics.retry_120s,
        240: topics.retry_240s,
        480: topics.retry_480s,
    }


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay`` to the top-level subparsers."""
    replay = sub.add_parser(
        "replay", help="copy a time or offset range of a retry topic to its end (served again)"
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--retry", metavar="DELAY", help="the retry topic by delay: 60s, 2m, 240s, 8m"
    )
    which.add_argument("--topic", help="the retry topic by name")
    replay.add_argument(
        "--offsets",
        action="append",
        default=[],
        metavar="P:FIRST-LAST",
        help="offset range, both ends included (0:100-200; 0:100- to the end); repeat",
    )
    add_filter_options(replay)
    add_rate_options(replay)
    replay.set_defaults(func=cmd_replay)


def _topic(args: argparse.Namespace, topics: TopicSettings) -> str:
    by_delay = retry_topics(topics)
    if args.topic is not None:
        if args.topic not in by_delay.values():
            names = ", ".join(by_delay.values())
            raise UsageError("--topic", f"{args.topic!r} is not a retry topic (one of {names})")
        return str(args.topic)
    try:
        delay_s = parse_duration_s(args.retry)
    except ValueError as exc:
        raise UsageError("--retry", str(exc)) from None
    if delay_s not in by_delay:
        delays = ", ".join(f"{d}s" for d in by_delay)
        raise UsageError("--retry", f"no retry topic for {args.retry!r}: the delays are {delays}")
    return by_delay[delay_s]


def cmd_replay(args: argparse.Namespace, settings: EventGwSettings) -> int:
    """Run ``eventgw replay``; see the module docstring."""
    try:
        return asyncio.run(_replay(args, settings))
    except ScanError as exc:
        print(f"eventgw replay: {exc}", file=sys.stderr)
        return 1


async def _replay(args: argparse.Namespace, settings: EventGwSettings) -> int:
    topic = _topic(args, settings.topics)
    clock = SystemClock()
    selection = selection_from(args, clock.wall_ms())
    rate = rate_from(args)
    if selection.since_ms is None and selection.until_ms is None and not selection.offset_ranges:
        raise UsageError("--since/--until/--offsets", "give the range to replay")
    async with open_scanner(settings, "replay") as scanner:
        if args.dry_run:
            report = await _run(args, topic, selection, rate, scanner, DryRunProducer())
        else:
            async with open_producer(settings, "replay") as producer:
                report = await _run(args, topic, selection, rate, scanner, producer)
    verb = "would replay" if report.dry_run else "replayed:"
    print(f"{verb} {report.replayed} of {report.selected} selected records of {report.topic}")
    if report.undecodable:
        print(f"skipped {report.undecodable} undecodable records (not an EventData)")
    if report.failed:
        print(f"failed: {report.failed} copies not confirmed")
    if report.error:
        print(f"eventgw replay: {report.error}", file=sys.stderr)
    return 0 if report.error is None else 1


async def _run(
    args: argparse.Namespace,
    topic: str,
    selection: Selection,
    rate: float,
    scanner: Scanner,
    producer: Producer,
) -> ReplayReport:
    replayer = RetryReplayer(
        scanner=scanner,
        producer=producer,
        limiter=RateLimiter(rate, SystemClock()),
        batch_size=batch_size(rate),
    )
    bar = ProgressBar(sys.stderr, "dry run" if args.dry_run else "replay")

    def show(record: DlqRecord) -> None:
        if args.dry_run:
            print(f"would replay {record.coordinate:<12} {record.event_id}")

    with stop_on_signals() as stop:
        try:
            return await replayer.run(
                topic,
                selection,
                dry_run=args.dry_run,
                stop=stop,
                on_progress=bar.update,
                on_record=show,
            )
        finally:
            bar.finish()
