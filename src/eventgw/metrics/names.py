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
    # gauge, companies; at or above hot_tenants.max_rate_per_company now (their events are
    # offloaded or demoted). Above 0 for long: see runbook "hot tenant".
    "eventgw_ingest_hot_companies",
    # gauge, events; taken by the door and not yet answered. Near ingest.max_in_flight_events
    # x the P10 share: P10 is being deferred — the publisher or Kafka is slow, or scale out.
    "eventgw_ingest_in_flight_events",
    # gauge, ratio 0.05-1; the share of their limits the door gives P10 and P20 now. Below 1:
    # the write path (publisher, Kafka) answers more than ingest.door_queue_target_ms slower
    # than unloaded, and the door keeps its queue short for P30 — scale the publisher or
    # Kafka out if it stays low.
    "eventgw_ingest_door_scale",
    # counter, records; flow-control records that are not signals (not a FlowControlSignal,
    # too large, a field missing or out of range), skipped. Any rise: something other than
    # the orchestrators (or an orchestrator older than the protobuf record) writes to the
    # flow-control topic — read flow_control.invalid in the logs.
    "eventgw_ingest_flow_control_invalid_total",
    # counter, requests; labels code. 5xx rising: the publisher or Kafka is failing (a 503
    # also counts requests refused past ingest.max_http_connections). 408/431 rising: clients
    # send too slowly or too many headers (docs/delivery-semantics.md, "Bounds at the door").
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
    # counter, events; failed-writes records not replayed because the read-back on taking
    # over their partition found their copy already in a lane, retry topic or the DLQ (an
    # earlier run replayed them and was stopped before committing). Rising after restarts is
    # expected: each one is a duplicate avoided (docs/delivery-semantics.md).
    "eventgw_recovery_read_back_skipped_total",
    # counter, read-backs; label reason (no_commit|no_intent|cap|timeout|error). Read-backs
    # that did not read everything they should have: the events they did not find are
    # replayed again (duplicates, never loss). no_commit: the partition was never committed
    # (a new partition or group — expected once each, nothing to find). no_intent: its last
    # commit carries no replay intent (committed by an earlier version: expected once per
    # partition after the upgrade). cap/timeout: the lanes held more
    # since the last commit than recovery.read_back_max_records / _timeout_s allow — raise
    # them if duplicates after restarts matter. error: a cluster or topic could not be read,
    # or the write-ahead commit was refused — read recovery.read_back_failed (ACL: the
    # failed-writes principal reads the lanes).
    "eventgw_recovery_read_back_incomplete_total",
    # counter, tasks; label result (ack|nack|reject|release) reported by processor workers.
    # nack/reject rising: the handler fails — read processor.handler_failed in the worker logs.
    "eventgw_processor_tasks_total",
    # histogram, seconds; one handler call. p99 near the lease (orchestrator.lease_s): results
    # arrive stale and tasks are served twice — speed up the handler or raise the lease.
    "eventgw_processor_handler_duration_seconds",
    # counter, tasks; tasks a worker received from the orchestrators. Flat while lanes hold
    # work: workers cannot reach the orchestrators (processor.stream_failed in their logs).
    "eventgw_processor_tasks_received_total",
    # histogram, seconds; labels class, tier (normal|offloaded). Ingest (ingested_at_ms) →
    # handler start on this worker (its wall clock), per task handled. Rising while the
    # orchestrators' queues are short: tasks wait inside workers (prefetch, slow handlers).
    "eventgw_processor_start_latency_seconds",
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
    # gauge, records; retry-topic and DLQ records submitted and not yet confirmed by Kafka
    # (their tasks stay leased meanwhile). Growing: Kafka refuses or is slow — see
    # eventgw_orchestrator_retry_writes_total{result="retried"}.
    "eventgw_orchestrator_retry_writes_pending",
    # counter, tasks; labels class (P30|P20|P10), tier (normal|offloaded), slo (met|missed).
    # Tasks ACKed by a worker: met = the orchestrator applied the ACK by the event's SLO
    # deadline (ingested_at + SLO), missed = after it. tier = offloaded when ingest sent the
    # event to the offload lane (hot tenant or AIMD capacity; EventData.offloaded), else
    # normal. Attainment = met / (met + missed). Normal-tier attainment below target: see
    # runbook "SLO attainment low" (docs/operations.md).
    "eventgw_orchestrator_processed_total",
    # histogram, seconds; labels class, tier. Ingest (EventData.ingested_at_ms) → the ACK
    # applied by the orchestrator, for every ACKed task; bucket edges at 5, 60 and 1200 s
    # (the SLOs). p99 near the class's SLO: attainment is about to fall.
    "eventgw_orchestrator_ack_latency_seconds",
    # histogram, seconds; labels class, stage. Ingest (EventData.ingested_at_ms) → a stage
    # of the read path: stage=intake when the orchestrator took the record into its buffer
    # (publisher, Kafka and the lane fetch), stage=leased when it first handed it to a
    # worker (intake plus the wait for credit in the buffer; a task a worker RELEASEd
    # unstarted counts again when leased again); retried records are left out.
    # With eventgw_processor_start_latency_seconds (→ handler start) it shows where a
    # class's SLO budget goes (docs/operations.md, "Where a class waits").
    "eventgw_orchestrator_stage_latency_seconds",
    # counter, tasks; label lane. Tasks handed back to the buffer for another try: NACKed
    # with a short delay (memory) or written to a retry topic. Rising: handlers fail —
    # read processor.handler_failed in the worker logs.
    "eventgw_orchestrator_retried_total",
    # counter, records; label lane. Records written to the DLQ (or the parking lot, for an
    # event redriven before): attempts exhausted, REJECTed, or undecodable. Any rise: see
    # runbook "DLQ growing".
    "eventgw_orchestrator_dead_lettered_total",
    # counter, tasks; label lane. Leases that expired without a result (the worker is alive
    # but its handler hung or ran past orchestrator.lease_s); the task is served again.
    "eventgw_orchestrator_leases_expired_total",
    # gauge, bytes; accounted bytes of every task the orchestrator holds (ready, leased,
    # delayed; len(value) + 200 each). Near eventgw_orchestrator_buffer_budget_bytes: lanes
    # pause (eventgw_orchestrator_lane_paused).
    "eventgw_orchestrator_buffer_bytes",
    # gauge, bytes; the buffer's budget (orchestrator.buffer_budget_bytes).
    "eventgw_orchestrator_buffer_budget_bytes",
    # gauge, tasks; labels lane (p30|p20|p10|offload|retry), state (ready|leased|delayed).
    # Tasks held per consumption lane. Do not add it to eventgw_orchestrator_class_tasks:
    # the two count the same tasks by lane and by class.
    "eventgw_orchestrator_lane_tasks",
    # gauge, bytes; label lane. Accounted bytes per consumption lane (what its memory share
    # is compared with, docs/priorities-and-backpressure.md).
    "eventgw_orchestrator_lane_bytes",
    # gauge, 0/1; label lane. 1 = the lane's consumption is paused because the buffer reached
    # its memory share. Working-set pauses (orchestrator.lane_ready_s: a flood waits in Kafka)
    # are normal and not shown. Paused for minutes: processors are short — see runbook "Lane
    # paused".
    "eventgw_orchestrator_lane_paused",
    # gauge, tasks; labels class (P30|P20|P10), state (ready|leased|delayed). Tasks held per
    # original SLO class, whatever lane they came from (offload and retry included).
    "eventgw_orchestrator_class_tasks",
    # gauge, bytes; label class. Accounted bytes per original SLO class.
    "eventgw_orchestrator_class_bytes",
    # gauge, tasks; label class. Ready tasks past their deadline, not offloaded (the second
    # tier). Above 0 for minutes: the class misses its SLO — see runbook "Queue age past half
    # the SLO".
    "eventgw_orchestrator_late_tasks",
    # gauge, seconds; label class. Age (now - ingested_at) of the oldest ready task of the
    # class, offloaded ones excluded; 0 when none is ready. Compare with
    # eventgw_orchestrator_slo_seconds: past half of it flow control sends DECREASE.
    "eventgw_orchestrator_oldest_ready_age_seconds",
    # gauge, seconds; label class. The class's SLO (P30 5, P20 60, P10 1200): a constant, so
    # rules and dashboards can divide an age by it.
    "eventgw_orchestrator_slo_seconds",
    # gauge, records; labels topic, partition. Records this replica consumed from the
    # partition above its last committed offset (last consumed + 1 - committed; before the
    # first commit, - the first consumed offset): what a crash now would read again (those
    # the last commit's metadata records as finished are then skipped, not served:
    # docs/delivery-semantics.md, "Duplicates"). The committed position stops at the first
    # unfinished task, so a value that keeps growing means one task holds the partition (a
    # hung handler, a retry write that does not settle). Kafka's own backlog (high
    # watermark - committed) is the consumer group lag.
    "eventgw_orchestrator_commit_lag_records",
    # counter, commits; label result (ok|failed). Offset commits (every
    # orchestrator.commit_interval_s when something finished). failed rising: read
    # orchestrator.commit_failed; duplicates grow until commits succeed again.
    "eventgw_orchestrator_commits_total",
    # counter, signals; labels class, action (INCREASE|DECREASE). Flow-control signals this
    # orchestrator published to ingest's AIMD (docs/flow-control.md). DECREASE steady for a
    # class: its queue ages past half its SLO — processors are short.
    "eventgw_orchestrator_flow_control_signals_total",
    # counter, reloads; label result (applied|refused). refused: fix the dynamic config file.
    "eventgw_dynamic_config_reloads_total",
    # counter, calls; labels server (publisher|orchestrator), reason (missing|invalid).
    # Internal gRPC calls refused UNAUTHENTICATED before anything was read or served. invalid
    # after a deploy: a caller has another internal_auth token than the server — compare the
    # Secrets; missing: something without a token calls the port — find it (the WARNING
    # grpc.unauthenticated names the method). See docs/security.md.
    "eventgw_grpc_unauthenticated_total",
]
