"""GET /api/health: is the market feed alive, and does the scheduler run the jobs?

Pure: it judges what the market snapshot (core/market/service.py) and the scheduler's job
liveness (core/scheduler.py ``JobLiveness.report``) say, and returns the HTTP status with the
reasons. Dead, with its reason, when:

- the market source is not running (restarting after a failure, stopped, never started);
- an exchange feed is STALLED (connected, yet nothing accepted for ``exchange.stall_after_s``)
  or has been disconnected for ``DISCONNECTED_GRACE_S`` (a reconnect's backoff is not death);
- the scheduler is not running, or one of its jobs has not started for several intervals
  (a hung job, a dead scheduler thread); no scheduler at all (the services not started) is
  dead too: nothing would predict or train.

A prediction store whose database is DOWN is a warning beside them, not a reason.
"""

from __future__ import annotations

DISCONNECTED_GRACE_S = 30.0


def feed_liveness(snapshot: dict) -> dict:
    """{alive, running, state, feeds (name -> state), reasons} from a market snapshot."""
    reasons = []
    supervisor = snapshot.get("supervisor") or {}
    state = supervisor.get("state", "unknown")
    if not snapshot.get("running"):
        error = supervisor.get("last_error")
        reasons.append(f"the market source is {state}" + (f" (last error: {error})"
                                                           if error else ""))
    feeds = snapshot.get("feeds") or {}
    for name, feed in feeds.items():
        if feed.get("state") == "stalled":
            quiet = (feed.get("stalled") or {}).get("for_s", 0.0)
            reasons.append(f"feed {name} is stalled: nothing accepted for {quiet:.0f} s")
        elif feed.get("state") == "disconnected":
            age = feed.get("message_age_s")
            if age is None or age >= DISCONNECTED_GRACE_S:
                since = "no message yet" if age is None else f"last message {age:.0f} s ago"
                reasons.append(f"feed {name} is disconnected ({since})")
    return {"alive": not reasons, "running": bool(snapshot.get("running")), "state": state,
            "feeds": {name: feed.get("state") for name, feed in feeds.items()},
            "reasons": reasons}


def health(snapshot: dict, schedule: dict | None,
           store: dict | None = None) -> tuple[int, dict]:
    """(200 or 503, the answer): the feed's and the scheduler's liveness and every reason.
    ``schedule``: the scheduler's ``JobLiveness.report()``, None when none was built.
    ``store``: the prediction store's health (core/predictions/health.py); DOWN is a warning,
    not death: the predictions wait in memory until it is back, and a supervisor that
    restarted the process for it would lose them."""
    feed = feed_liveness(snapshot)
    if schedule is None:
        schedule = {"alive": False, "state": "not built", "jobs": {},
                    "reasons": ["no scheduler runs the jobs (the services were not started)"]}
    reasons = feed["reasons"] + schedule["reasons"]
    warnings = []
    if store is not None and store["state"] != "OK":
        warnings.append(f"the prediction store {store['where']} is {store['state']} "
                        f"({store['error']}): {store['queued_rows']} rows wait in memory, "
                        f"next try in {store['retry_in_s']} s")
    body = {"status": "ok" if not reasons else "unhealthy", "reasons": reasons,
            "feed": feed, "scheduler": schedule, "store": store, "warnings": warnings}
    return (200 if not reasons else 503), body
