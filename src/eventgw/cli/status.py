"""``eventgw status``: every component's readiness and counters, and each orchestrator's view.

Components, in the order events pass them:

- ingest, publisher, failed-writes: ``/readyz`` and the counters of ``/metrics`` on the
  ports of the settings;
- every orchestrator, by its gRPC address (``processor.orchestrators`` and this host's
  ``orchestrator.grpc_*``): ``Stats`` — buffer, per-class counts, **SLO attainment** (tasks
  ACKed by their deadline, of all ACKed), late tasks, and its worker sessions;
- the processor on ``processor.metrics_port``, and every worker the orchestrators see
  connected (``worker_id`` = ``<host>-<pid>``), wherever it runs.

Exit code 0 when everything answered ready (orchestrators: serving), else 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventgw.cli.orchestrator_client import fetch_stats
from eventgw.cli.tools import endpoints, http_json
from eventgw.core.errors import OrchestratorUnavailable
from eventgw.grpc_auth import bearer_metadata
from eventgw.metrics.exposition import sample_values

if TYPE_CHECKING:
    import argparse

    from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
    from eventgw.config.settings import EventGwSettings

__all__ = ["attainment", "cmd_status", "orchestrator_lines", "orchestrator_targets"]

_TIMEOUT_S = 2.0
_NAME_WIDTH = 16
_COUNTER_SUFFIXES = ("_total", "_objects", "_events", "_companies", "_sessions")


def cmd_status(args: argparse.Namespace, settings: EventGwSettings) -> int:
    """Print the status of every component; see the module docstring."""
    worst = 0
    http = endpoints(settings)
    for name in ("ingest", "publisher", "failed-writes"):
        worst |= _print_http_component(name, http[name])
    workers: list[tuple[str, int]] = []  # (worker id, orchestrator index)
    metadata = bearer_metadata(settings.internal_auth.token_for("orchestrator"))
    for target in orchestrator_targets(settings):
        try:
            stats = fetch_stats(target, _TIMEOUT_S, metadata)
        except OrchestratorUnavailable as exc:
            print(f"{'orchestrator':{_NAME_WIDTH}} DOWN  grpc {target} ({exc.code})")
            worst = 1
            continue
        print("\n".join(orchestrator_lines(target, stats)))
        worst |= 0 if stats.serving else 1
        workers += [(w.worker_id, stats.index) for w in stats.workers]
    worst |= _print_http_component("processor", http["processor"])
    if workers:
        seen = ", ".join(f"{w} (orchestrator {i})" for w, i in sorted(set(workers)))
        print(f"    connected workers, as the orchestrators see them: {seen}")
    else:
        print("    connected workers, as the orchestrators see them: none")
    return worst


def orchestrator_targets(settings: EventGwSettings) -> list[str]:
    """The orchestrators' gRPC addresses: the processors' list, then this host's own."""
    o = settings.orchestrator
    targets = list(settings.processor.orchestrators)
    own = f"{o.grpc_host}:{o.grpc_port}"
    if own not in targets:
        targets.append(own)
    return targets


def attainment(met: int, missed: int) -> str:
    """``99.5% of 1200`` (tasks ACKed by their deadline, of all ACKed); ``-`` before any."""
    total = met + missed
    return f"{100 * met / total:.1f}% of {total}" if total else "-"


def orchestrator_lines(target: str, stats: pb.StatsResponse) -> list[str]:
    """The status block of one orchestrator (pure: for the CLI and its tests)."""
    state = "serving" if stats.serving else "DRAINING"
    name = f"orchestrator {stats.index}"
    lines = [
        f"{name:{_NAME_WIDTH}} {state}  grpc {target}",
        f"    buffer {stats.buffer_bytes / 1e6:.1f} MB of {stats.buffer_budget_bytes / 1e6:.0f} MB",
        f"    {'class':8}{'buffered':>10}{'in flight':>11}{'processed':>11}{'retried':>9}"
        f"{'DLQ':>6}{'late':>6}{'oldest/SLO':>14}  {'within SLO':16}paused",
    ]
    offloaded: list[str] = []
    for c in stats.lanes:
        is_class = c.slo_s > 0
        age = f"{c.oldest_age_s:.1f}s/{c.slo_s:g}s" if is_class else "-"
        within = attainment(c.slo_met, c.slo_missed) if is_class else ""
        late = str(c.late) if is_class else ""
        row = (
            f"    {c.lane:8}{c.buffered:>10}{c.in_flight:>11}{c.processed:>11}{c.retried:>9}"
            f"{c.dead_lettered:>6}{late:>6}{age:>14}  {within:16}{'yes' if c.paused else ''}"
        )
        lines.append(row.rstrip())
        if c.offloaded_slo_met or c.offloaded_slo_missed:
            offloaded.append(f"{c.lane} {attainment(c.offloaded_slo_met, c.offloaded_slo_missed)}")
    if offloaded:
        lines.append(f"    within SLO, offloaded events only: {', '.join(offloaded)}")
    lines.append(f"    worker sessions: {len(stats.workers)}")
    lines += [
        f"      {w.worker_id}  session {w.session}  credit {w.credit}  leased {w.leased}  "
        f"results {w.results}  connected {w.connected_s:.0f}s"
        for w in stats.workers
    ]
    return lines


def _print_http_component(name: str, base: str) -> int:
    """Readiness and counters of one component; returns 1 unless it is ready."""
    try:
        code, _ = http_json(base + "/readyz", timeout=_TIMEOUT_S)
        _, metrics = http_json(base + "/metrics", timeout=_TIMEOUT_S)
    except OSError as exc:
        print(f"{name:{_NAME_WIDTH}} DOWN  {base} ({exc})")
        return 1
    print(f"{name:{_NAME_WIDTH}} {'ready' if code == 200 else 'NOT READY'}  {base}")
    if isinstance(metrics, str):
        try:
            samples = sample_values(metrics, "eventgw_")
        except ValueError as exc:
            print(f"    /metrics is not Prometheus text ({exc})")
            samples = {}
        for key, value in samples.items():
            if key.split("{")[0].endswith(_COUNTER_SUFFIXES):
                print(f"    {key} {value:g}")
    return 0 if code == 200 else 1
