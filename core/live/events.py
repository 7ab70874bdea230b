"""The event stream: what happens in the live loop, numbered, for GET /api/live-training/events.

``EventBus`` keeps the newest ``server.events_backlog`` events in a ring, each with an id one
above the one before. A client that reconnects with ``Last-Event-ID`` gets exactly what it
missed while that is still kept; when it is not, a ``gap`` event first says from which id the
stream goes on and how many events were lost. Publishing encodes an event once (JSON and its
Server-Sent Events frame), whatever the number of clients.

Ids of one server run are contiguous; a run's first id is the wall time of its start in
microseconds, so the ids of a later run are above those of an earlier one and a client
resuming across a restart is told that it may have lost events (``lost`` null) instead of
silently missing them.

Event types (``event:`` line), their ``data:`` a JSON object:

- ``predictions``: a cycle's new predictions (``predictions``: id, model, symbol, timeframe,
  action, confidence, model_step, created_ts, target_ts);
- ``resolutions``: a cycle's resolved predictions (``resolutions``: id, model, symbol,
  timeframe, action, correct, change, reward, target_ts, resolved_ts) and ``resolved_wall_s``,
  the wall time the cycle resolved them;
- ``training``: the steps of one run of the train job (``steps``: model, timeframe, step, loss);
- ``state``: training started or stopped, a model paused, frozen, rolled back...;
- ``promotion``: a challenger promoted (core/live/challengers.py);
- ``feed``: the market source's or a feed's state changed (running, restarting, STALLED...);
- ``gap`` (no id): events were lost before the next one (``first_id``, ``lost``).

Nothing here knows Flask: dashboard/rest.py serves :meth:`EventBus.stream` as the route.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

HEARTBEAT_S = 15.0  # a comment line this often keeps proxies and the server's idle timeout off
RETRY_MS = 3000  # what a browser's EventSource waits before it reconnects
_TYPE = re.compile(r"[a-z][a-z_]{0,31}")


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    json: str  # the data, encoded once

    @property
    def data(self) -> dict:
        return json.loads(self.json)

    def frame(self) -> bytes:
        return f"id: {self.id}\nevent: {self.type}\ndata: {self.json}\n\n".encode()


def _plain(value):
    """JSON for what json cannot encode itself (numpy and torch scalars)."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(data: dict) -> str:
    return json.dumps(data, separators=(",", ":"), default=_plain)


def number(value) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_last_id(header: str | None, query: str | None) -> int | None:
    """The id a client resumes after: the ``Last-Event-ID`` header, else the
    ``last_event_id`` query parameter; None for neither. ValueError saying what is wrong."""
    for name, raw in (("Last-Event-ID", header), ("last_event_id", query)):
        if raw is None or raw.strip() == "":
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"{name} {raw[:40]!r} is not an event id (a whole number "
                             "from an earlier event's id: line)") from None
        if value < 0:
            raise ValueError(f"{name} {value} is negative; event ids are >= 0")
        return value
    return None


class EventBus:
    """A thread-safe ring of the newest ``backlog`` events; see the module's doc."""

    def __init__(self, backlog: int = 10_000, max_streams: int = 24,
                 first_id: int | None = None):
        if backlog < 1:
            raise ValueError(f"backlog {backlog}: keep at least one event")
        self.backlog = backlog
        self.max_streams = max_streams
        self.start_id = time.time_ns() // 1000 if first_id is None else first_id
        self._events: deque[Event] = deque(maxlen=backlog)
        self._newest = self.start_id - 1  # the newest id published (none yet: one below)
        self._changed = threading.Condition()
        self._closed = False
        self._streams = 0
        self._last_state: dict[str, str] = {}  # publish_change: key -> its last encoding

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, type: str, data: dict) -> int:
        """Add one event; returns its id. ``type``: a lowercase word (the ``event:`` line)."""
        if not _TYPE.fullmatch(type):
            raise ValueError(f"event type {type!r}: use a lowercase word (a-z, _)")
        body = encode(data)
        with self._changed:
            self._newest += 1
            self._events.append(Event(self._newest, type, body))
            self._changed.notify_all()
            return self._newest

    def publish_change(self, type: str, key: str, data: dict) -> int | None:
        """Publish ``data`` only when it differs from the last published under ``key``
        (a watcher polled from a job); returns the id, or None when nothing changed."""
        body = encode(data)
        with self._changed:
            if self._last_state.get(key) == body:
                return None
            self._last_state[key] = body
        return self.publish(type, data)

    def close(self) -> None:
        """The server stops: every stream ends after what it has."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def newest_id(self) -> int:
        """The newest id published (``start_id - 1`` before the first)."""
        return self._newest

    # -- reading ------------------------------------------------------------------------------

    def check(self, last_id: int | None) -> None:
        """ValueError when ``last_id`` is newer than any event this server sent."""
        if last_id is not None and last_id > self._newest:
            raise ValueError(f"Last-Event-ID {last_id} is newer than this server's newest "
                             f"event ({self._newest}); resume from an id it sent")

    def since(self, last_id: int | None) -> tuple[list[Event], int | None]:
        """(the events after ``last_id`` still kept, how many after it are no longer kept).

        ``None``: nothing (a new client starts with what comes next), 0 lost. An id of an
        earlier server run (below this run's first id; 0 included): everything kept, lost
        counted from this run's first id for 0, None (unknown) for any other."""
        with self._changed:
            return self._since(last_id)

    def wait(self, last_id: int, timeout: float) -> tuple[list[Event], int | None, int]:
        """:meth:`since` and the id now caught up to, once there is something after
        ``last_id``, the bus is closed or ``timeout`` seconds passed."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._newest > last_id, timeout)
            events, lost = self._since(last_id)
            return events, lost, events[-1].id if events else max(last_id, self.start_id - 1)

    def _since(self, last_id: int | None) -> tuple[list[Event], int | None]:
        if last_id is None:
            return [], 0
        self.check(last_id)
        lost: int | None = 0
        if last_id < self.start_id - 1:  # before this run
            lost = None if last_id else 0
            last_id = self.start_id - 1
        first_kept = self._events[0].id if self._events else self._newest + 1
        if last_id < first_kept - 1:
            lost = None if lost is None else first_kept - 1 - last_id
        count = min(self._newest - last_id, len(self._events))
        found = list(itertools.islice(reversed(self._events), count))
        found.reverse()
        return found, lost

    # -- streams ------------------------------------------------------------------------------

    def open_stream(self) -> bool:
        """Take one of ``max_streams`` slots (each stream holds a server thread); False when
        all are taken. :meth:`close_stream` gives it back."""
        with self._changed:
            if self._streams >= self.max_streams:
                return False
            self._streams += 1
            return True

    def close_stream(self) -> None:
        with self._changed:
            self._streams = max(0, self._streams - 1)

    @property
    def streams(self) -> int:
        return self._streams

    def stream(self, last_id: int | None, heartbeat_s: float = HEARTBEAT_S,
               until: float | None = None) -> Iterator[bytes]:
        """The Server-Sent Events of one client: what it missed after ``last_id`` (a ``gap``
        event first when some is lost), then each event as it comes, a comment line after
        ``heartbeat_s`` of quiet. Ends when the bus closes, at ``until`` (monotonic seconds;
        tests), or when the server stops iterating (the client went away)."""
        self.check(last_id)
        if last_id is None:  # from here on: what the first frame's reader cannot have seen
            last_id = self._newest
        yield f"retry: {RETRY_MS}\n: tickwise events\n\n".encode()
        while not self._closed and (until is None or time.monotonic() < until):
            events, lost, cursor = self.wait(last_id, heartbeat_s)
            out = [] if lost == 0 else [
                gap_frame(events[0].id if events else cursor + 1, lost, last_id)]
            out += [e.frame() for e in events]
            last_id = cursor
            yield b"".join(out) if out else b": heartbeat\n\n"


def gap_frame(first_id: int, lost: int | None, last_id: int) -> bytes:
    """The ``gap`` event (no id: a client's Last-Event-ID stays that of its last real event)."""
    data = {"first_id": first_id, "lost": lost, "last_event_id": last_id,
            "reason": "the backlog no longer holds them" if lost is not None
            else "the id is from an earlier run of the server: events may be lost"}
    return f"event: gap\ndata: {encode(data)}\n\n".encode()


# -- what the live loop publishes ------------------------------------------------------------

def prediction_event(rows, ids) -> dict:
    """A cycle's new predictions (core/predictions NewPrediction rows and their ids)."""
    return {"predictions": [
        {"id": pid, "model": r.model, "symbol": r.symbol, "timeframe": r.timeframe,
         "action": r.action, "confidence": number(r.confidence), "model_step": r.model_step,
         "created_ts": r.created_ts, "target_ts": r.target_ts, "stale": bool(r.stale)}
        for pid, r in zip(ids, rows, strict=True)]}


def resolution_event(resolved: list, wall_s: float) -> dict:
    """A cycle's resolutions: (pending prediction, Resolution, close time) triples."""
    return {"resolved_wall_s": wall_s, "resolutions": [
        {"id": p.id, "model": p.model, "symbol": p.symbol, "timeframe": p.timeframe,
         "action": p.action, "correct": bool(r.action_correct), "change": number(r.change),
         "reward": number(r.reward), "target_ts": p.target_ts, "resolved_ts": ts}
        for p, r, ts in resolved]}


def training_step(model: str, tf: str, step: int, losses) -> dict:
    """One training step of the ``training`` event (losses: the learner's dict, or None)."""
    return {"model": model, "timeframe": tf, "step": step,
            "loss": {k: number(v) for k, v in (losses or {}).items()}}


def feed_state(market) -> dict:
    """The market source's life and each feed's state, as the ``feed`` event shows them."""
    health = market.source.health() if hasattr(market.source, "health") else {}
    return {"running": bool(market.started and market.supervisor.running),
            "supervisor": market.supervisor.state,
            "feeds": {name: feed.get("state") for name, feed in health.items()}}
