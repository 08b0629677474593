"""The spliced 202 body is byte-identical to msgspec's encoding of the response structs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.ingest.http_app import HttpResponse, HttpResult, response_body
from eventgw.ingest.pipeline import STATUS_NAMES

if TYPE_CHECKING:
    from eventgw.ingest.http_bodies import EventStatus, ResultLane

_ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,40}", fullmatch=True),
    st.text(max_size=20),  # ids outside the pattern (quotes, escapes) take the slow path
)
_results = st.tuples(
    _ids,
    st.sampled_from([pb.P10, pb.P20, pb.P30]),  # the pipeline answers with a class, always
    st.sampled_from(["p10", "p20", "p30", "offload"]),
    st.sampled_from(["events.public.p20-events-express-v1", 'odd "topic"\\']),
    st.sampled_from(
        [pb.PUBLISHED, pb.FAILED_WRITES, pb.BACKED_UP, pb.REJECTED, pb.FAILED, pb.DEFERRED, 99]
    ),
    st.sampled_from(["", "blocked: source x", "ünïcode\n"]),
    st.sampled_from(["", "primary", "rollout"]),
)


def _reference(
    request_id: str,
    results: list[tuple[str, int, str, str, int, str, str]],
    retry_after_ms: int = 0,
) -> bytes:
    names: dict[int, Literal["P30", "P20", "P10"]] = {10: "P10", 20: "P20", 30: "P30"}
    return msgspec.json.encode(
        HttpResponse(
            request_id=request_id,
            retry_after_ms=retry_after_ms,
            events=[
                HttpResult(
                    event_id=event_id,
                    status=cast("EventStatus", STATUS_NAMES.get(status, "FAILED")),
                    priority=names[priority],
                    lane=cast("ResultLane", lane),
                    topic=topic,
                    cluster=cluster,
                    reason=reason,
                )
                for event_id, priority, lane, topic, status, reason, cluster in results
            ],
        )
    )


@given(st.text(max_size=40), st.lists(_results, max_size=30), st.sampled_from([0, 1, 250]))
def test_response_body_equals_msgspec(
    request_id: str, results: list[tuple[str, int, str, str, int, str, str]], hint: int
) -> None:
    body = response_body(request_id, results, hint)
    assert body == _reference(request_id, results, hint)
    assert len(msgspec.json.decode(body)["events"]) == len(results)


def test_empty_and_typical_bodies() -> None:
    assert response_body("r", []) == b'{"request_id":"r","events":[]}'
    one = ("0190-a/b+c=d@e:f.g_h", pb.P20, "p20", "t", pb.PUBLISHED, "", "primary")
    assert response_body("r", [one]) == _reference("r", [one])
