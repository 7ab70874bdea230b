"""The event stream: the bus's ids, backlog and gaps (worked by hand), and the route serving
it while the replay trains, resumed with Last-Event-ID, under waitress with its stream cap."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from core.live.events import EventBus, parse_last_id
from dashboard.app import create_app
from dashboard.server import bind, make_server, stop
from tests.test_live_training import make_services, run

URL = "/api/live-training/events"


def parse(raw: bytes) -> list[dict]:
    """Server-Sent Events text -> [{id, event, data}] (comments and retry left out)."""
    out = []
    for block in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if line and not line.startswith(":") and not line.startswith("retry"))
        if "event" in fields:
            out.append({"id": int(fields["id"]) if "id" in fields else None,
                        "event": fields["event"], "data": json.loads(fields["data"])})
    return out


# -- the bus ----------------------------------------------------------------------------------

def test_ids_increase_and_since_returns_exactly_the_missed():
    bus = EventBus(backlog=5, first_id=1)
    assert [bus.publish("state", {"n": n}) for n in range(3)] == [1, 2, 3]
    events, lost = bus.since(1)
    assert [(e.id, e.data["n"]) for e in events] == [(2, 1), (3, 2)] and lost == 0
    assert bus.since(3) == ([], 0)
    assert bus.since(None) == ([], 0)  # a new client: only what comes next


def test_overflow_says_where_the_stream_goes_on_and_how_many_were_lost():
    bus = EventBus(backlog=5, first_id=1)
    for n in range(12):
        bus.publish("training", {"n": n})  # ids 1..12; the ring keeps 8..12
    events, lost = bus.since(2)  # missed 3..12: 3..7 are gone (5), 8..12 kept
    assert [e.id for e in events] == [8, 9, 10, 11, 12] and lost == 5
    frames = parse(b"".join(bus.stream(2, heartbeat_s=0.01, until=time.monotonic() + 0.05)))
    assert frames[0] == {"id": None, "event": "gap", "data": {
        "first_id": 8, "lost": 5, "last_event_id": 2, "reason": "the backlog no longer holds them"}}
    assert [f["id"] for f in frames[1:]] == [8, 9, 10, 11, 12]


def test_ids_of_another_run_and_bad_ids_are_told_apart():
    bus = EventBus(backlog=10, first_id=1000)
    bus.publish("state", {})
    events, lost = bus.since(400)  # an id from an earlier run: all kept, the loss unknown
    assert [e.id for e in events] == [1000] and lost is None
    with pytest.raises(ValueError, match="newer than this server's newest event"):
        bus.since(1001)
    with pytest.raises(ValueError, match="'abc' is not an event id"):
        parse_last_id("abc", None)
    with pytest.raises(ValueError, match="last_event_id -3 is negative"):
        parse_last_id(None, "-3")
    assert parse_last_id(None, "7") == 7 and parse_last_id("5", "7") == 5


# -- the route ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def services(tmp_path_factory):
    services = make_services(tmp_path_factory.mktemp("runtime"), **{
        "server.threads": 3, "server.event_streams": 1})
    yield services
    services.stop()


def read_until(chunks, done) -> list[dict]:
    """Frames from a stream's chunks until ``done(frames)``; the stream is caught up then."""
    frames: list[dict] = []
    for chunk in chunks:
        frames += parse(chunk)
        if done(frames):
            return frames
    raise AssertionError(f"the stream ended after {len(frames)} events")


def test_a_client_follows_training_and_resumes_without_losing_any(services):
    training = services.training
    client = create_app(services.config, services.market, training).server.test_client()
    first = client.get(URL, buffered=False)
    assert first.status_code == 200 and first.mimetype == "text/event-stream"
    chunks = iter(first.response)
    next(chunks)  # the stream is open: what is published from now on reaches it
    training.start()
    now = run(services, 40)
    wanted = {"state", "predictions", "resolutions", "training"}
    frames = read_until(chunks, lambda fs: wanted <= {f["event"] for f in fs}
                        and fs[-1]["id"] == training.events.newest_id)
    first.close()
    assert frames[0]["event"] == "state" and frames[0]["data"]["training"] == "started"
    resolution = next(f for f in frames if f["event"] == "resolutions")["data"]["resolutions"][0]
    assert resolution["model"] in training.learners and resolution["resolved_ts"] > 0
    step = next(f for f in frames if f["event"] == "training")["data"]["steps"][0]
    assert step["step"] >= 1 and step["model"] in training.learners

    seen = frames[len(frames) // 2]["id"]  # the client "lost" the second half, and more:
    run(services, 20, start_ms=now)
    again = client.get(URL, headers={"Last-Event-ID": str(seen)}, buffered=False)
    resumed = read_until(iter(again.response),
                         lambda fs: fs and fs[-1]["id"] == training.events.newest_id)
    again.close()
    ids = [f["id"] for f in resumed]
    assert ids == list(range(seen + 1, training.events.newest_id + 1))  # contiguous, no gap
    assert {f["event"] for f in resumed} >= {"predictions", "resolutions", "training"}


def test_bad_last_event_ids_get_400_with_the_reason(services):
    client = create_app(services.config, services.market,
                        services.training).server.test_client()
    cases = {("Last-Event-ID", "x1"): "'x1' is not an event id",
             ("last_event_id", "-1"): "last_event_id -1 is negative",
             ("Last-Event-ID", str(services.training.events.newest_id + 5)): "newer than"}
    for (where, value), reason in cases.items():
        r = (client.get(URL, headers={where: value}) if where[0] == "L"
             else client.get(f"{URL}?{where}={value}"))
        assert r.status_code == 400 and reason in r.get_json()["error"], (where, value)
    r = client.get(f"{URL}?since=3")
    assert r.status_code == 400 and "unknown parameter 'since'" in r.get_json()["error"]


def test_under_waitress_streams_past_the_cap_get_503_and_the_rest_still_answers(services):
    app = create_app(services.config, services.market, services.training)
    sock = bind("127.0.0.1", 0)
    server = make_server(app.server, sock, services.config.server)  # 3 threads, 1 stream
    threading.Thread(target=server.run, daemon=True).start()
    port, bus = sock.getsockname()[1], services.training.events
    try:
        one = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        one.request("GET", URL)
        stream = one.getresponse()
        assert stream.status == 200 and stream.readline() == b"retry: 3000\n"
        bus.publish("state", {"probe": 1})
        while b"probe" not in stream.readline():  # arrives at once, not buffered
            pass
        two = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        two.request("GET", URL)
        refused = two.getresponse()
        assert refused.status == 503 and b"server.event_streams" in refused.read()
        two.request("GET", "/api/market/status")
        assert two.getresponse().status == 200  # the other threads still serve
        stream.close()
        one.close()  # the client goes: its next write fails and its slot is given back
        deadline = time.monotonic() + 5
        while bus.streams and time.monotonic() < deadline:
            bus.publish("state", {"probe": 2})
            time.sleep(0.05)
        assert bus.streams == 0
    finally:
        stop(server)
