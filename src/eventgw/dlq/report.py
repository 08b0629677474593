"""What a redrive or replay did, and how far it got: plain values for the CLI. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a run is: offsets covered of the planned total, records written, skipped."""

    scanned: int
    total: int
    written: int
    skipped: int


@dataclass(frozen=True, slots=True)
class RedriveReport:
    """The outcome of one ``eventgw dlq redrive`` run.

    Attributes:
        topic: the DLQ (or parking lot) read.
        dry_run: nothing was written; ``redriven`` counts what would have been.
        scanned: offsets covered.
        selected: records that matched the selection.
        redriven: records written to their lane and confirmed by Kafka.
        already_redriven: skipped: the redrive log says an earlier run redrove them.
        recovered: redrives an earlier run left unfinished (crash between the lane write
            and the log) found in their lane by the ``eventgw-redriven`` header, now logged.
        undecodable: skipped: not an ``EventData``; inspect with ``eventgw dlq show``.
        failed: lane writes Kafka did not confirm (still in the DLQ; run again).
        by_target: records redriven per lane topic.
        error: why the run stopped before the end of the selection, or None.
    """

    topic: str
    dry_run: bool
    scanned: int = 0
    selected: int = 0
    redriven: int = 0
    already_redriven: int = 0
    recovered: int = 0
    undecodable: int = 0
    failed: int = 0
    by_target: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The outcome of one ``eventgw replay`` run.

    Attributes:
        topic: the retry topic read and written to.
        dry_run: nothing was written; ``replayed`` counts what would have been.
        scanned: offsets covered.
        selected: records that matched the selection.
        replayed: copies written to the end of the topic and confirmed by Kafka.
        undecodable: skipped: not an ``EventData`` (the orchestrator would only
            dead-letter it again).
        failed: copies Kafka did not confirm.
        error: why the run stopped before the end of the selection, or None.
    """

    topic: str
    dry_run: bool
    scanned: int = 0
    selected: int = 0
    replayed: int = 0
    undecodable: int = 0
    failed: int = 0
    error: str | None = None
