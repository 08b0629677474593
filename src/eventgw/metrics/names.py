"""Every metric name eventgw emits, with kind, unit, meaning and what to do when it moves."""

from __future__ import annotations

from typing import Literal

MetricName = Literal[
    # gauge, events/s; label class. The SLO service's admission capacity (AIMD). Falling:
    # orchestrators report queueing past half the SLO — processors are short of capacity.
    "eventgw_ingest_slo_capacity_events_per_second",
    # gauge, decrements in the last 60 s; label class. > 10 for P10 raises the alert below.
    "eventgw_ingest_slo_decrements_per_minute",
    # gauge, 0/1. 1 = serious congestion (> 10 P10 decrements a minute): add processors or
    # find the slow handler — see runbook "serious congestion".
    "eventgw_ingest_serious_congestion",
    # counter, events; labels class, reason (capacity|hot_tenant). Events sent to the offload
    # lane. Rising for one company: a hot tenant; for all: capacity is short.
    "eventgw_ingest_offloaded_total",
    # counter, events; label status (accepted|rejected|failed|invalid|deferred). Invalid
    # rising: a client sends bad events — read the 4xx bodies in its logs. deferred rising:
    # ingest is saturated and sheds the lower classes at the door (runbook "door deferring").
    "eventgw_ingest_events_total",
    # gauge, events; taken by the door and not yet answered. Near ingest.max_in_flight_events
    # x the P10 share: P10 is being deferred — the publisher or Kafka is slow, or scale out.
    "eventgw_ingest_in_flight_events",
    # counter, records; flow-control records that are not signals (not JSON, too large, a
    # number out of range, a wrong type), skipped. Any rise: something other than the
    # orchestrators writes to the flow-control topic — read flow_control.invalid in the logs.
    "eventgw_ingest_flow_control_invalid_total",
    # counter, requests; labels code. 5xx rising: the publisher or Kafka is failing (a 503
    # also counts requests refused past ingest.max_http_connections). 408/431 rising: clients
    # send too slowly or too many headers (docs/delivery-semantics.md "Bounds at the door").
    "eventgw_ingest_requests_total",
    # counter, requests (HTTP and gRPC); label field (company_id|source_name|class). Requests
    # refused whole (403 / PERMISSION_DENIED) because an event is outside its API key's grant.
    # Any rise: a client writes what its key does not cover — a tenant misconfigured, or a key
    # used for another tenant's companies; the ingest.permission_denied log names the tenant.
    "eventgw_ingest_permission_denied_total",
    # histogram, seconds; ingest request → durable answer. p99 above the P30 SLO: scale out.
    "eventgw_ingest_request_duration_seconds",
    # counter, events; labels lane, status (published|failed_writes|backed_up|rejected|failed).
    # failed_writes/backed_up rising: a cluster is unhealthy — see runbook "publisher fallback".
    "eventgw_publisher_events_total",
    # histogram, seconds; publish call → every event durable.
    "eventgw_publisher_publish_duration_seconds",
    # gauge, events; produced but not yet confirmed by Kafka, per lane.
    "eventgw_publisher_in_flight_events",
    # counter, events; republished by the failed-writes processor, label source (topic|backup).
    "eventgw_recovery_replayed_total",
    # counter, errors; replay attempts that failed and will be retried with backoff.
    "eventgw_recovery_errors_total",
    # gauge, objects; backup objects waiting to be replayed. Not falling: recovery is stuck.
    "eventgw_recovery_backup_objects",
    # counter, events; labels source (topic|backup),
    # reason (undecodable|invalid|unknown_topic|refused|gave_up). Captured events that could not be
    # replayed, parked in the DLQ with eventgw-last-error. Any rise: read recovery.parked in
    # the logs, fix the cause, re-drive from the DLQ — see docs/failure-handling.md
    # "Replay never stalls".
    "eventgw_recovery_parked_total",
    # gauge, objects; backup objects whose last replay left events out of Kafka, waiting for
    # a retry with backoff while newer objects go on. Not falling: read recovery.backup_deferred.
    "eventgw_recovery_backup_objects_deferred",
    # counter, objects; label reason (a CorruptBackup kind: bad_signature|unsigned|
    # unverifiable for untrusted objects; record_crc|object_crc|truncated|... for damaged
    # ones). Backup objects the failed-writes processor refused to replay: kept in the store,
    # re-read after a backoff. bad_signature: someone wrote the store without the key — treat
    # as a security incident (ERROR recovery.untrusted_backup names the key). unsigned or
    # unverifiable: services disagree on backup.hmac_key. Damaged: recovery.corrupt_backup.
    "eventgw_recovery_backup_rejected_total",
    # counter, events; failed-writes records that neither their topic nor the DLQ can ever
    # take (e.g. too large for both), moved to the backup store so the topic goes on. Any
    # rise: a human is needed — read recovery.moved_to_backup and recovery.park_failed.
    "eventgw_recovery_moved_to_backup_total",
    # counter, tasks; label result (ack|nack|reject|release) reported by processor workers.
    # nack/reject rising: the handler fails — read processor.handler_failed in the worker logs.
    "eventgw_processor_tasks_total",
    # histogram, seconds; one handler call. p99 near the lease (orchestrator.lease_s): results
    # arrive stale and tasks are served twice — speed up the handler or raise the lease.
    "eventgw_processor_handler_duration_seconds",
    # counter, tasks; tasks a worker received from the orchestrators. Flat while lanes hold
    # work: workers cannot reach the orchestrators (processor.stream_failed in their logs).
    "eventgw_processor_tasks_received_total",
    # counter, tasks; label lane. Tasks the orchestrator leased to workers (credit-based
    # dispatch). Flat while the buffer holds ready tasks: no worker has credit — processors
    # are down or all busy (eventgw_orchestrator_worker_sessions, processor logs).
    "eventgw_orchestrator_dispatched_total",
    # counter, results; label result (ack|nack|release|reject|unspecified|stale). stale
    # rising: results arrive after their lease ended (handlers slower than
    # orchestrator.lease_s, or workers reconnecting) — tasks ran twice.
    "eventgw_orchestrator_results_total",
    # counter, tasks; leases returned early because the worker's Work stream ended (the
    # worker stopped, crashed or lost its connection). Rising without deploys: workers crash.
    "eventgw_orchestrator_leases_returned_total",
    # gauge, streams; open Work streams, one per connected worker. 0 while lanes hold work:
    # no processor can reach this orchestrator.
    "eventgw_orchestrator_worker_sessions",
    # counter, records; label result (written|retried|given_up). Retry-topic and DLQ writes.
    # retried/given_up rising: Kafka refuses writes — given_up tasks are served again.
    "eventgw_orchestrator_retry_writes_total",
    # counter, records; labels source (lane|retry|response), action (dead_lettered|clamped|
    # skipped). Records that are not what their topic should hold: a lane or retry record
    # that is not an event (to the DLQ unchanged), a retry time past the longest retry delay
    # (clamped), a response record that is not TaskResults (skipped). Any rise: something
    # other than eventgw writes to these topics — read orchestrator.undecodable,
    # orchestrator.retry_at_clamped and orchestrator.bad_result in the logs.
    "eventgw_orchestrator_invalid_records_total",
    # counter, reloads; label result (applied|refused). refused: fix the dynamic config file.
    "eventgw_dynamic_config_reloads_total",
]
