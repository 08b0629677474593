"""``eventgw``: one subcommand per component, plus the local stack and tools.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from eventgw.cli import dlq, logs, replay
from eventgw.cli.options import UsageError
from eventgw.config.local_credentials import with_local_credentials
from eventgw.config.settings import EventGwSettings, load_settings
from eventgw.core.errors import ConfigError
from eventgw.kafka.jar_cache import default_home

if TYPE_CHECKING:
    from collections.abc import Sequence

Command = Callable[[argparse.Namespace, EventGwSettings], int]
"""What a subcommand runs (its parser's ``func`` default): exit code from its arguments and
the loaded settings."""

# Operator tools print their own output; their logs are only warnings unless --log-level.
_TOOL_COMMANDS = ("dlq", "replay")


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """The command ``<module>.<name>``, imported only when it runs: the local-stack tools and
    ``status`` bring modules (gRPC, the broker launcher) a service process does not need."""

    module: str
    name: str

    def __call__(self, args: argparse.Namespace, settings: EventGwSettings) -> int:
        """Import the command and run it."""
        run: Command = getattr(importlib.import_module(self.module), self.name)
        return run(args, settings)


def _settings(args: argparse.Namespace) -> EventGwSettings:
    # Development: the local stack's internal gRPC tokens, made on first use (docs/security.md).
    settings = with_local_credentials(load_settings(args.settings), default_home())
    default = "WARNING" if args.command in _TOOL_COMMANDS else settings.observability.log_level
    logs.configure(args.log_level or default, settings.observability.log_format)
    return settings


def _cmd_ingest(args: argparse.Namespace, settings: EventGwSettings) -> int:
    from eventgw.cli.runner import run
    from eventgw.ingest.service import IngestService

    workers = settings.ingest.workers
    if workers > 1 and not args.worker:
        from eventgw.cli.workers import is_reuse_port_supported, run_workers, worker_argv

        if not is_reuse_port_supported():
            raise ConfigError("ingest.workers", "needs SO_REUSEPORT, which this OS lacks")
        from eventgw.ingest.grants import KeyRing
        from eventgw.ingest.tls import load_server_tls

        # A bad key file or certificate fails here, once, not in every worker.
        KeyRing.from_settings(settings.ingest)
        if settings.ingest.tls is not None:
            load_server_tls(settings.ingest.tls)
        # Each worker drains requests (up to 30 s), then, co-located, flushes its
        # producers (publisher.shutdown_timeout_s): only then is it killed.
        grace_s = 30.0 + settings.publisher.shutdown_timeout_s + 15.0
        return run_workers(workers, worker_argv(), grace_s=grace_s)
    from eventgw.metrics.backend import Metrics

    metrics = Metrics()
    embedded = None
    if settings.ingest.embedded_publisher:  # the co-located layout: the CLI wires the two
        from eventgw.publisher.service import PublisherParts

        embedded = PublisherParts(settings, metrics)
    service = IngestService(settings, metrics=metrics, reuse_port=args.worker, embedded=embedded)
    return run([service])


def _cmd_publisher(args: argparse.Namespace, settings: EventGwSettings) -> int:
    from eventgw.cli.runner import run
    from eventgw.publisher.service import PublisherService

    return run([PublisherService(settings)])


def _cmd_failed_writes(args: argparse.Namespace, settings: EventGwSettings) -> int:
    from eventgw.cli.runner import run
    from eventgw.recovery.service import RecoveryService

    return run([RecoveryService(settings)])


def _cmd_orchestrator(args: argparse.Namespace, settings: EventGwSettings) -> int:
    from eventgw.cli.runner import run
    from eventgw.orchestrator.service import OrchestratorService

    overrides = {
        k: v
        for k, v in (("index", args.index), ("number_of_replicas", args.replicas))
        if v is not None
    }
    if overrides:
        try:
            orch = type(settings.orchestrator).model_validate(
                {**settings.orchestrator.model_dump(), **overrides}
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError("orchestrator", str(err["msg"])) from exc
        settings = settings.model_copy(update={"orchestrator": orch})
    return run([OrchestratorService(settings)])


def _add_processor_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proc = sub.add_parser(
        "processor", help="run a processor worker: take tasks, run a handler, report results"
    )
    proc.add_argument("--handler", help="async handler 'module:function' (processor.handler)")
    proc.add_argument(
        "--orchestrator",
        action="append",
        dest="orchestrators",
        metavar="HOST:PORT",
        help="orchestrator gRPC address; repeat for several (processor.orchestrators)",
    )
    proc.add_argument("--concurrency", type=int, help="handler calls at most running at once")
    proc.add_argument(
        "--max-tasks", type=int, help="stop after this many tasks (0: never; processor.max_tasks)"
    )
    proc.add_argument(
        "--dry-run", action="store_true", help="show and release tasks; run no handler"
    )
    proc.set_defaults(func=_cmd_processor)


def _cmd_processor(args: argparse.Namespace, settings: EventGwSettings) -> int:
    from eventgw.processor.command import run_until_done, with_processor_overrides
    from eventgw.processor.service import ProcessorService

    flags = {
        "handler": args.handler,
        "orchestrators": args.orchestrators,
        "concurrency": args.concurrency,
        "max_tasks": args.max_tasks,
        "execute": False if args.dry_run else None,
    }
    settings = with_processor_overrides(
        settings, **{k: v for k, v in flags.items() if v is not None}
    )
    service = ProcessorService(settings)
    if settings.processor.max_tasks:
        # runner.run serves until a signal; a bounded run must end when its tasks are done.
        try:
            run_until_done(service)
        except OSError as exc:  # e.g. metrics_port in use: one clear line, not a traceback
            print(f"eventgw processor: {exc}", file=sys.stderr)
            return 1
        return 0
    from eventgw.cli.runner import run

    return run([service])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="eventgw", description=__doc__)
    parser.add_argument(
        "--settings", type=_path, help="TOML settings file (or EVENTGW_SETTINGS_FILE)"
    )
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole stack locally, Kafka included")
    up.add_argument("--no-kafka", action="store_true", help="use already running clusters")
    up.add_argument(
        "--secure",
        action="store_true",
        help="Kafka over SASL_SSL with ACLs; each component logs in as its own role",
    )
    up.add_argument(
        "--ingest-workers", type=int, help="ingest processes on the same ports (ingest.workers)"
    )
    up.add_argument("--publishers", type=int, default=1, help="publisher processes (default 1)")
    up.add_argument(
        "--orchestrators",
        type=int,
        default=1,
        help="orchestrator replicas per fleet (default 1)",
    )
    up.add_argument(
        "--rollout-fleet",
        action="store_true",
        help="also a fleet for the rollout cluster, rollout producers on, the dynamic config "
        "file written (try a migration: docs/operations.md)",
    )
    up.add_argument("--processors", type=int, default=1, help="processor workers (default 1)")
    up.set_defaults(func=LazyCommand("eventgw.cli.tools", "cmd_up"))

    ingest = sub.add_parser("ingest", help="run the ingest service (HTTP + gRPC)")
    # Set by the `ingest.workers` supervisor on the processes it starts (eventgw.cli.workers).
    ingest.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ingest.set_defaults(func=_cmd_ingest)
    sub.add_parser("publisher", help="run the prep publisher").set_defaults(func=_cmd_publisher)
    sub.add_parser("failed-writes", help="run the failed-writes processor").set_defaults(
        func=_cmd_failed_writes
    )
    orch = sub.add_parser("orchestrator", help="run an orchestrator replica")
    orch.add_argument("--index", type=int, help="replica index (orchestrator.index)")
    orch.add_argument(
        "--replicas", type=int, help="number of replicas (orchestrator.number_of_replicas)"
    )
    orch.set_defaults(func=_cmd_orchestrator)

    kafka = sub.add_parser("kafka", help="the local Apache Kafka clusters")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument("--cluster", choices=["primary", "rollout", "all"], default="all")
    kafka.add_argument(
        "--secure",
        action="store_true",
        help="the SASL_SSL twins of the clusters (eventgw up --secure)",
    )
    kafka.set_defaults(func=LazyCommand("eventgw.cli.tools", "cmd_kafka"))

    topics = sub.add_parser("topics", help="create or list the eventgw topics")
    topics.add_argument("action", choices=["create", "list"])
    topics.add_argument("--cluster", choices=["primary", "rollout", "all"], default="all")
    topics.set_defaults(func=LazyCommand("eventgw.cli.tools", "cmd_topics"))

    send = sub.add_parser("send", help="POST events to the ingest HTTP API")
    send.add_argument("--url", default=None, help="default: http://<ingest http_host:port>")
    send.add_argument("--company", default="acme")
    send.add_argument("--source", default="cli")
    send.add_argument("--statistic-key", default="")
    send.add_argument("--payload", default='{"hello":"world"}', help="JSON text")
    send.add_argument("--count", type=int, default=1)
    send.add_argument("--api-key", default=None)
    send.add_argument(
        "--ca-file",
        type=_path,
        default=None,
        help="PEM CA bundle to verify an https ingest (default: the system's)",
    )
    send.set_defaults(func=LazyCommand("eventgw.cli.tools", "cmd_send"))

    keys = sub.add_parser("keys", help="ingest API keys bound to a tenant (docs/security.md)")
    keys.add_argument("action", choices=["new"], help="new: print a fresh key and its entry")
    keys.add_argument("--tenant", required=True)
    keys.add_argument(
        "--company", action="append", required=True, help="a company id it may write; repeat"
    )
    keys.add_argument("--source", action="append", help="a source name it may write (default *)")
    keys.add_argument(
        "--class",
        dest="classes",
        action="append",
        choices=["P30", "P20", "P10"],
        help="a class it may write; repeat (default all)",
    )
    keys.set_defaults(func=LazyCommand("eventgw.cli.tools", "cmd_keys"))

    status = sub.add_parser("status", help="health, counters and SLO attainment of every component")
    status.set_defaults(func=LazyCommand("eventgw.cli.status", "cmd_status"))
    _add_processor_parser(sub)
    dlq.add_parser(sub)
    replay.add_parser(sub)
    return parser


def _path(text: str) -> object:
    from pathlib import Path

    return Path(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eventgw`` console script."""
    args = build_parser().parse_args(argv)
    try:
        command: Command = args.func  # every subcommand sets it (build_parser)
        return command(args, _settings(args))
    except UsageError as exc:  # a ConfigError: before it
        action = getattr(args, "action", None) if args.command == "dlq" else None
        print(f"eventgw {args.command}{f' {action}' if action else ''}: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"eventgw: invalid configuration: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
