"""``eventgw dlq list|show|redrive``: inspect the DLQ (or the parking lot) and redrive it.

The logic lives in `eventgw.dlq`; this module parses options, opens the Kafka clients and
prints. Output: a table (or JSON Lines with ``--json``) on stdout; progress, warnings and
errors on stderr. Exit codes: 0 done, 1 a Kafka failure or an unfinished redrive, 2 a bad
option value (one line naming the option).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING

from eventgw.cli.clients import DryRunProducer, open_producer, open_scanner, stop_on_signals
from eventgw.cli.dlq_output import (
    TABLE_HEADER,
    clip,
    entry_doc,
    show_doc,
    show_text,
    table_row,
)
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
from eventgw.dlq.lanes import lane_topics
from eventgw.dlq.rate import RateLimiter
from eventgw.dlq.reader import TopicReader
from eventgw.dlq.redrive_log import RedriveLog, log_key
from eventgw.dlq.redriver import Redriver
from eventgw.dlq.selection import parse_coordinate, parse_positive_int
from eventgw.kafka.scanner import ScanError

if TYPE_CHECKING:
    import argparse

    from eventgw.config.settings import EventGwSettings
    from eventgw.dlq.record import DlqRecord
    from eventgw.dlq.redrive_log import LogEntry, Producer
    from eventgw.dlq.report import RedriveReport
    from eventgw.dlq.selection import Coordinate, Selection
    from eventgw.kafka.scanner import Scanner

_DEFAULT_PAYLOAD_BYTES = "2048"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlq`` and its actions to the top-level subparsers."""
    dlq = sub.add_parser("dlq", help="list, show and redrive DLQ records (or the parking lot)")
    actions = dlq.add_subparsers(dest="action", required=True)

    ls = actions.add_parser("list", help="list records: offset, time, class, company, error")
    _add_topic_option(ls)
    add_filter_options(ls)
    ls.add_argument("--json", action="store_true", help="JSON Lines: one object per record")

    show = actions.add_parser("show", help="one record in full: headers, event, payload")
    show.add_argument("record", metavar="PARTITION:OFFSET", help="e.g. 2:1500")
    _add_topic_option(show)
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.add_argument(
        "--payload-bytes",
        default=_DEFAULT_PAYLOAD_BYTES,
        help=f"payload preview length (default {_DEFAULT_PAYLOAD_BYTES})",
    )

    redrive = actions.add_parser(
        "redrive", help="write selected records back to their lane (each at most once)"
    )
    _add_topic_option(redrive)
    add_filter_options(redrive)
    redrive.add_argument(
        "--records",
        action="append",
        default=[],
        metavar="P:O[,P:O...]",
        help="only these records (repeat or comma-separate)",
    )
    redrive.add_argument(
        "--all", action="store_true", help="redrive every record (needed when nothing is selected)"
    )
    add_rate_options(redrive)
    dlq.set_defaults(func=cmd_dlq)


def _add_topic_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parking-lot",
        action="store_true",
        help="the parking lot (redriven records that failed again) instead of the DLQ",
    )


def cmd_dlq(args: argparse.Namespace, settings: EventGwSettings) -> int:
    """Run ``eventgw dlq <action>``; see the module docstring for output and exit codes."""
    topic = settings.topics.parking_lot if args.parking_lot else settings.topics.dlq
    try:
        if args.action == "list":
            return asyncio.run(_list(args, settings, topic))
        if args.action == "show":
            return asyncio.run(_show(args, settings, topic))
        return asyncio.run(_redrive(args, settings, topic))
    except ScanError as exc:
        print(f"eventgw dlq {args.action}: {exc}", file=sys.stderr)
        return 1


# -- list -------------------------------------------------------------------------------


async def _list(args: argparse.Namespace, settings: EventGwSettings, topic: str) -> int:
    selection = selection_from(args, SystemClock().wall_ms())
    lanes = lane_topics(settings.topics)
    async with open_scanner(settings, "dlq") as scanner:
        entries = await _log_entries(scanner, settings, topic)
        reader = TopicReader(scanner)
        plan = await reader.plan(topic, selection)
        if not args.json:
            print(TABLE_HEADER)
        shown = scanned = 0
        async for step in reader.scan(plan, selection):
            for record in step.matches:
                entry = entries.get(log_key(record.topic, record.partition, record.offset))
                if args.json:
                    doc = record.summary()
                    doc["redrive"] = entry_doc(entry)
                    print(json.dumps(doc))
                else:
                    print(table_row(record, entry, lanes))
                shown += 1
            scanned = step.scanned
    print(f"{shown} records listed from {topic} ({scanned} offsets read)", file=sys.stderr)
    return 0


async def _log_entries(
    scanner: Scanner, settings: EventGwSettings, topic: str
) -> dict[str, LogEntry]:
    """The redrive log's entries for ``topic``; none (with a warning) if it cannot be read."""
    try:
        return await RedriveLog(settings.topics.dlq_redrive_log, scanner).load(topic)
    except ScanError as exc:
        print(f"eventgw dlq: redrive status unknown: {exc}", file=sys.stderr)
        return {}


# -- show -------------------------------------------------------------------------------


async def _show(args: argparse.Namespace, settings: EventGwSettings, topic: str) -> int:
    try:
        coordinate = parse_coordinate(args.record)
    except ValueError as exc:
        raise UsageError("PARTITION:OFFSET", str(exc)) from None
    try:
        preview_bytes = parse_positive_int(args.payload_bytes)
    except ValueError as exc:
        raise UsageError("--payload-bytes", str(exc)) from None
    async with open_scanner(settings, "dlq") as scanner:
        record = await TopicReader(scanner).get(topic, coordinate)
        if record is None:
            print(f"eventgw dlq show: {topic} holds no record at {coordinate}", file=sys.stderr)
            return 1
        entries = await _log_entries(scanner, settings, topic)
    entry = entries.get(log_key(record.topic, record.partition, record.offset))
    if args.json:
        print(json.dumps(show_doc(record, entry, preview_bytes), indent=2))
    else:
        print(show_text(record, entry, preview_bytes))
    return 0


# -- redrive ----------------------------------------------------------------------------


async def _redrive(args: argparse.Namespace, settings: EventGwSettings, topic: str) -> int:
    clock = SystemClock()
    selection = selection_from(args, clock.wall_ms())
    rate = rate_from(args)
    if selection.is_everything and not args.all:
        raise UsageError(
            "--all", "nothing selected: give filters or --records, or --all for every record"
        )
    async with open_scanner(settings, "dlq-redrive") as scanner:
        await _check_records_exist(scanner, topic, selection.coordinates)
        if args.dry_run:
            report = await _run_redrive(args, settings, topic, selection, rate, scanner, None)
        else:
            async with open_producer(settings, "dlq-redrive") as producer:
                report = await _run_redrive(
                    args, settings, topic, selection, rate, scanner, producer
                )
    _print_report(report, settings)
    return 0 if report.error is None else 1


async def _run_redrive(
    args: argparse.Namespace,
    settings: EventGwSettings,
    topic: str,
    selection: Selection,
    rate: float,
    scanner: Scanner,
    producer: Producer | None,
) -> RedriveReport:
    writer: Producer = producer if producer is not None else DryRunProducer()
    clock = SystemClock()
    redriver = Redriver(
        topics=settings.topics,
        scanner=scanner,
        log=RedriveLog(settings.topics.dlq_redrive_log, scanner, writer),
        producer=writer,
        limiter=RateLimiter(rate, clock),
        clock=clock,
        batch_size=batch_size(rate),
    )
    bar = ProgressBar(sys.stderr, "dry run" if args.dry_run else "redrive")

    def show(record: DlqRecord, target: str) -> None:
        if args.dry_run:
            priority = record.priority
            print(
                f"would redrive {record.coordinate:<12} "
                f"{priority.name if priority is not None else '?':<4} "
                f"{clip(record.company or '-', 16):<16} {record.event_id} -> {target}"
            )

    with stop_on_signals() as stop:
        try:
            return await redriver.run(
                topic,
                selection,
                dry_run=args.dry_run,
                stop=stop,
                on_progress=bar.update,
                on_record=show,
            )
        finally:
            bar.finish()


async def _check_records_exist(
    scanner: Scanner, topic: str, coordinates: frozenset[Coordinate]
) -> None:
    """Explicit ``--records`` must be in the topic now: a typo is an error, not a no-op."""
    if not coordinates:
        return
    marks = await scanner.watermarks(topic)
    for coordinate in sorted(coordinates):
        low, high = marks.get(coordinate.partition, (0, 0))
        if not low <= coordinate.offset < high:
            held = f"offsets {low}-{high - 1}" if high > low else "no records"
            if coordinate.partition not in marks:
                held = f"no partition {coordinate.partition}"
            raise UsageError("--records", f"{coordinate} is not in {topic} ({held})")


def _print_report(report: RedriveReport, settings: EventGwSettings) -> None:
    verb = "would redrive" if report.dry_run else "redriven:"
    print(f"{verb} {report.redriven} of {report.selected} selected records from {report.topic}")
    for target, count in sorted(report.by_target.items()):
        print(f"  {count:>8} -> {target}")
    if report.already_redriven:
        print(
            f"skipped {report.already_redriven} already redriven "
            f"(redrive log {settings.topics.dlq_redrive_log})"
        )
    if report.undecodable:
        print(
            f"skipped {report.undecodable} undecodable records "
            "(not an EventData: inspect with eventgw dlq show)"
        )
    if report.recovered:
        logged = "would be logged" if report.dry_run else "now logged"
        print(
            f"found {report.recovered} records an interrupted earlier run had already "
            f"written to their lane ({logged}; not written again)"
        )
    if report.failed:
        print(f"failed: {report.failed} lane writes not confirmed (still in the DLQ)")
    if report.error:
        print(f"eventgw dlq redrive: {report.error}", file=sys.stderr)
