"""Synchronous CLI commands: the local stack (``up``), Kafka, topics, send, keys.

``eventgw status`` lives in `eventgw.cli.status`; it reads `endpoints` and `http_json`."""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError

from eventgw.cli import secure
from eventgw.cli.local_procs import wait_http_ready
from eventgw.cli.local_stack import StackShape, fleet_document, plan_stack
from eventgw.config.ingest_security import TenantKey, key_digest
from eventgw.config.local_credentials import credentials_dir
from eventgw.core.errors import ConfigError
from eventgw.kafka.acl_policy import username
from eventgw.kafka.admin import TopicSpec, ensure_partitions, ensure_topics, list_topics
from eventgw.kafka.broker_config import BrokerSpec, default_spec
from eventgw.kafka.jar_cache import default_home, ensure_kafka_jars
from eventgw.kafka.local_broker import LocalBroker
from eventgw.kafka.local_security import ADMIN_USER

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from eventgw.config.settings import EventGwSettings, KafkaClusterSettings, TopicSettings
    from eventgw.kafka.acl_policy import Role


def _clusters(which: str) -> list[str]:
    return ["primary", "rollout"] if which == "all" else [which]


def _local_spec(name: str, bootstrap: str, home: Path) -> BrokerSpec:
    """The local broker serving ``bootstrap`` (a loopback host:port from the settings).

    The default ports keep the default data directory; other ports get their own, since a
    KRaft data directory is bound to the listeners it was formatted with.
    """
    spec = default_spec(name, home)
    host, _, port_text = bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port_text.isdigit():
        raise ConfigError(
            f"kafka.{name}.bootstrap_servers",
            f"{bootstrap!r} is not a loopback host:port the local broker can serve",
        )
    port = int(port_text)
    if port == spec.port:
        return spec
    return BrokerSpec(
        name=name,
        port=port,
        controller_port=port + 1,
        data_dir=home / "clusters" / f"{name}-{port}",
    )


def _brokers(which: str, settings: EventGwSettings, *, secured: bool) -> list[LocalBroker]:
    """The local brokers serving ``which`` clusters; ``secured``: their SASL_SSL twins."""
    home = default_home()
    libs = ensure_kafka_jars(home)
    bootstraps = {"primary": settings.kafka.primary.bootstrap_servers}
    if settings.kafka.rollout is not None:
        bootstraps["rollout"] = settings.kafka.rollout.bootstrap_servers
    specs = [_local_spec(n, bootstraps[n], home) for n in _clusters(which) if n in bootstraps]
    return [LocalBroker(secure.secure_spec(s) if secured else s, libs) for s in specs]


def _start_at_once(brokers: list[LocalBroker], started: list[LocalBroker]) -> None:
    """Start every broker of ``brokers`` that is not running, all at once (a thread each).

    Each start is a JVM formatting and then starting a cluster, seconds of waiting: one after
    the other, the two clusters took twice as long. Every broker that started is appended to
    ``started`` (for the caller to stop) even when another one failed; the first failure is
    raised once all have finished.
    """
    pending = [broker for broker in brokers if not broker.is_running()]
    if not pending:
        return
    with ThreadPoolExecutor(max_workers=len(pending)) as pool:
        starts = [(broker, pool.submit(broker.start)) for broker in pending]
    failures = []
    for broker, start in starts:
        error = start.exception()
        if error is None:
            started.append(broker)
        else:
            failures.append(error)
    if failures:
        raise failures[0]


def cmd_kafka(args: argparse.Namespace, settings: EventGwSettings) -> int:
    """``eventgw kafka start|stop|status [--secure]``."""
    for broker in _brokers(args.cluster, settings, secured=args.secure):
        if args.action == "start":
            started = time.monotonic()
            broker.start()
            print(
                f"kafka {broker.spec.name}: ready on {broker.bootstrap} "
                f"({time.monotonic() - started:.1f}s)"
            )
            if args.secure:
                print(
                    f"  SASL_SSL; CA {broker.credentials.ca_file}; SCRAM users and passwords "
                    f"in {broker.spec.security_dir / 'scram.json'}"
                )
        elif args.action == "stop":
            broker.stop()
            print(f"kafka {broker.spec.name}: stopped")
        else:
            print(json.dumps(broker.status()))
    return 0


def _configured(settings: EventGwSettings, which: str) -> dict[str, KafkaClusterSettings]:
    """The configured clusters named by ``which`` (``all`` or one name)."""
    out = settings.kafka.configured()
    if which == "all":
        return out
    if which not in out:
        raise ConfigError(f"kafka.{which}", "not configured")
    return {which: out[which]}


def topic_specs(topics: TopicSettings) -> list[TopicSpec]:
    """Every topic of ``topics``; the redrive log is compacted (one entry per DLQ record)."""
    compacted = {topics.dlq_redrive_log}
    return [
        TopicSpec(
            name, topics.partitions, {"cleanup.policy": "compact"} if name in compacted else {}
        )
        for name in topics.all_topics()
    ]


def create_topics(settings: EventGwSettings, which: str = "all") -> dict[str, list[str]]:
    """Create every topic of ``settings.topics`` on the chosen clusters (see `topic_specs`).

    Idempotent: existing topics are left as they are.
    """
    specs = topic_specs(settings.topics)
    return {
        name: ensure_topics(cluster, specs)
        for name, cluster in _configured(settings, which).items()
    }


def cmd_topics(args: argparse.Namespace, settings: EventGwSettings) -> int:
    """``eventgw topics create|list``."""
    if args.action == "create":
        for name, created in create_topics(settings, args.cluster).items():
            print(
                f"{name}: created {len(created)} topics"
                + (f": {', '.join(created)}" if created else " (all existed)")
            )
    else:
        for name, cluster in _configured(settings, args.cluster).items():
            for topic in sorted(list_topics(cluster)):
                print(f"{name}\t{topic}")
    return 0


def endpoints(settings: EventGwSettings) -> dict[str, str]:
    """The status HTTP base URL of each local component (readiness, ``/metrics``)."""
    return {
        # The admin port: plain HTTP on loopback whether or not the public port has TLS.
        "ingest": f"http://{settings.ingest.admin_host}:{settings.ingest.admin_port}",
        "publisher": f"http://{settings.publisher.grpc_host}:{settings.publisher.metrics_port}",
        "failed-writes": f"http://127.0.0.1:{settings.recovery.metrics_port}",
        "orchestrator": f"http://127.0.0.1:{settings.orchestrator.metrics_port}",
        "processor": f"http://127.0.0.1:{settings.processor.metrics_port}",
    }


def http_json(
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """GET (or POST ``body``) ``url``; returns the status and the JSON body (text if not JSON).

    Raises:
        OSError: the connection failed or timed out.
        ValueError: ``url`` is not http(s).
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    req = urllib.request.Request(  # noqa: S310  (scheme checked above)
        url, data=body, headers=headers or {}, method="POST" if body else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:  # noqa: S310
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def cmd_send(args: argparse.Namespace, settings: EventGwSettings) -> int:
    """``eventgw send``: POST ``--count`` events and print the answer."""
    s = settings.ingest
    scheme = "https" if s.tls is not None else "http"
    url = args.url or f"{scheme}://{s.http_host}:{s.http_port}/v1/events"
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        print(f"--payload is not JSON: {exc}", file=sys.stderr)
        return 2
    event = {"company_id": args.company, "source_name": args.source, "payload": payload}
    if args.statistic_key:
        event["statistic_key"] = args.statistic_key
    body = json.dumps({"events": [event] * args.count}).encode()
    headers = {"content-type": "application/json"}
    if args.api_key:
        headers["authorization"] = f"Bearer {args.api_key}"
    context = None
    if url.startswith("https://"):
        try:
            context = ssl.create_default_context(cafile=args.ca_file)
        except (OSError, ssl.SSLError) as exc:
            print(f"--ca-file: {exc}", file=sys.stderr)
            return 2
    try:
        status, doc = http_json(url, body, headers, context=context)
    except urllib.error.URLError as exc:  # refused, or the TLS handshake failed
        print(f"eventgw send: {url}: {exc.reason}", file=sys.stderr)
        return 1
    print(json.dumps({"status": status, "body": doc}, indent=2))
    return 0 if status == 202 else 1


def cmd_keys(args: argparse.Namespace, settings: EventGwSettings) -> int:
    """``eventgw keys new``: a fresh random key, and its ``[[keys]]`` entry (only the digest).

    The key is printed once and stored nowhere: give it to the tenant, put the entry in
    ``ingest.tenant_keys_file`` (or ``ingest.tenant_keys``).
    """
    del settings  # a key needs no settings; the parameter keeps the handlers uniform
    key = "egw_" + secrets.token_urlsafe(32)
    try:
        entry = TenantKey(
            tenant=args.tenant,
            key_sha256=SecretStr(key_digest(key)),
            company_ids=args.company,
            source_names=args.source or ["*"],
            classes=args.classes or ["P30", "P20", "P10"],
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        options = {"company_ids": "company", "source_names": "source", "classes": "class"}
        option = options.get(str(err["loc"][0]), str(err["loc"][0]))
        print(f"--{option}: {str(err['msg']).removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    print(f"key (give it to {entry.tenant}; it is not stored anywhere):\n  {key}\n")
    print("entry for ingest.tenant_keys_file:\n")
    print("[[keys]]")
    print(f"tenant = {json.dumps(entry.tenant)}")
    print(f'key_sha256 = "{entry.key_sha256.get_secret_value()}"')
    for name in ("company_ids", "source_names", "classes"):
        print(f"{name} = {json.dumps(getattr(entry, name))}")
    return 0


def _secure_stack(
    settings: EventGwSettings, brokers: list[LocalBroker], replicas: int = 1
) -> dict[str, dict[str, str]]:
    """Topics (as the admin) and every role's ACLs on the secured ``brokers``; return the
    environment of each component (its own principal) and write the operator's env files."""
    by_name = {broker.spec.name: broker for broker in brokers}
    admin = secure.admin_settings(settings, by_name)
    create_topics(admin)
    _response_partitions(admin, replicas)
    secure.grant_roles(settings, by_name)
    for who, user in (("tools", username("tools")), ("admin", ADMIN_USER)):
        secure.write_env_file(_env_file(brokers, who), secure.login_env(by_name, user))
    ingest_role: Role = "gateway" if settings.ingest.embedded_publisher else "ingest"
    roles: dict[str, Role] = {
        "publisher": "publisher",
        "failed-writes": "failed-writes",
        "orchestrator": "orchestrator",
        "processor": "processor",
        "ingest": ingest_role,
    }
    return {name: secure.role_env(by_name, role) for name, role in roles.items()}


def _env_file(brokers: list[LocalBroker], who: str) -> Path:
    """Where ``up --secure`` leaves ``who``'s logins: in the first cluster's security dir."""
    return brokers[0].spec.security_dir / f"{who}.env"


def _response_partitions(settings: EventGwSettings, replicas: int) -> None:
    """One response partition per orchestrator replica index, on every cluster a fleet may
    read (the topic has no key order to keep)."""
    for name, cluster in settings.kafka.configured().items():
        if name in ("primary", "rollout"):
            ensure_partitions(cluster, settings.topics.response, replicas)


def _write_fleets(settings: EventGwSettings, path: Path, rollout_indexes: tuple[int, ...]) -> None:
    """Set the rollout fleet's replica indexes in the dynamic config file, keeping the rest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    current = path.read_text() if path.exists() else None
    key = settings.orchestrator.rollout_orchestrator_config_key
    path.write_text(fleet_document(current, key, rollout_indexes))


def cmd_up(args: argparse.Namespace, settings: EventGwSettings) -> int:
    """``eventgw up [--secure]``: Kafka (both clusters), topics, then the processes
    `plan_stack` lays out (``--publishers``, ``--orchestrators``, ``--rollout-fleet``, ...).

    ``--secure``: the clusters are SASL_SSL with ACLs (their own data directories), topics
    are created as the admin, and each component runs as its own principal.
    """
    plan = plan_stack(
        settings,
        StackShape(
            ingest_workers=args.ingest_workers,
            publishers=args.publishers,
            orchestrators=args.orchestrators,
            processors=args.processors,
            rollout_fleet=args.rollout_fleet,
        ),
    )
    started_brokers: list[LocalBroker] = []
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    code = 0
    try:  # everything started from here on is stopped in `finally`, whatever fails
        if not args.no_kafka:
            print(
                "eventgw up: fetching Apache Kafka (first run only) and starting it ...",
                flush=True,
            )
            brokers = _brokers("all", settings, secured=args.secure)
            _start_at_once(brokers, started_brokers)
            for broker in brokers:
                print(f"  kafka {broker.spec.name}: {broker.bootstrap}", flush=True)
        logins: dict[str, dict[str, str]] = {}
        if args.secure:
            secured = _brokers("all", settings, secured=True)
            logins = _secure_stack(settings, secured, plan.replicas)
        else:
            create_topics(settings)
            _response_partitions(settings, plan.replicas)
        if plan.dynamic_config is not None:
            _write_fleets(settings, plan.dynamic_config, plan.rollout_indexes)
        base = [sys.executable, "-m", "eventgw.cli.main"]
        if args.settings:
            base += ["--settings", str(args.settings)]
        if args.log_level:
            base += ["--log-level", args.log_level]
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        for child in plan.children:
            # The subcommand is the component's role (its login with --secure).
            login = logins.get(child.args[0], {})
            env = os.environ | plan.shared_env | child.env | login
            proc = subprocess.Popen([*base, *child.args], env=env)
            children.append((child.label, proc))
            wait_http_ready(child.ready_url, proc, 90, name=child.label, every_s=0.2)
        s = settings.ingest
        width = max(len(c.label) for c in plan.children)
        lines = [f"  {c.label:<{width}}  {c.detail}" for c in reversed(plan.children)]
        if plan.dynamic_config is not None:
            primary = sorted(set(range(plan.replicas)) - set(plan.rollout_indexes))
            lines.append(
                f"  fleets: primary {primary}, rollout {list(plan.rollout_indexes)}; migrate "
                f"by editing {plan.dynamic_config} (event_gateway_cluster_rollout: 0-100)"
            )
        print(
            "\neventgw is up.\n"
            + "\n".join(lines)
            + f"\n  internal gRPC tokens  {credentials_dir(default_home())}/ (0600)\n"
            "  status: eventgw status\n"
            f"  page http://{s.http_host}:{s.http_port}/ (hot companies: admin port "
            f"http://{s.admin_host}:{s.admin_port}/)\n"
            f"  try: curl -s -XPOST {s.http_host}:{s.http_port}/v1/events "
            "-H 'content-type: application/json' "
            '-d \'{"company_id":"acme","source_name":"api","payload":{"x":1}}\'\n'
            "  Ctrl-C stops everything this command started.",
            flush=True,
        )
        if args.secure:
            secured = _brokers("all", settings, secured=True)
            print(
                "  Kafka is SASL_SSL with ACLs; each component logs in as eventgw-<role>.\n"
                f"  for eventgw dlq/replay: source {_env_file(secured, 'tools')}\n"
                f"  for eventgw topics (admin): source {_env_file(secured, 'admin')}",
                flush=True,
            )
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    print(
                        f"eventgw up: {name} exited with {proc.returncode}",
                        file=sys.stderr,
                    )
                    stopping = True
                    code = 1
            time.sleep(0.5)
    except RuntimeError as exc:
        print(f"eventgw up: {exc}", file=sys.stderr)
        code = 1
    finally:
        for _, proc in reversed(children):  # upstream (ingest) first
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(45)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for broker in started_brokers:
            broker.stop()
    return code
