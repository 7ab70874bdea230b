"""GET /api/openapi.json: the REST API described, by hand, as OpenAPI 3.1 (JSON Schema 2020-12).

Every route under /api is here, with its parameters, body and answers; tests/test_openapi.py
checks the routes the server registers against ``PATHS`` both ways and validates real answers
against the schemas. A route added or changed in dashboard/rest.py gets its entry here.

The two answers built from dataclasses (``LiveStatus``, ``ModelStatus`` in
core/live/read_model.py) list every field and allow no other, so a field added there without
being described here fails the test. Deeper parts that vary by source or model (``source``,
``quality``, ``paper``) are described as objects with the fields every one has.
"""

from __future__ import annotations

import copy

VERSION = "1.0.0"


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


INT, NUM, STR, BOOL = ({"type": "integer"}, {"type": "number"}, {"type": "string"},
                       {"type": "boolean"})
OBJ, ARR = {"type": "object"}, {"type": "array"}
MS = {"type": "integer", "description": "UTC milliseconds (market time)"}


def obj(properties: dict, required: list | None = None, closed: bool = False, **extra) -> dict:
    """An object schema; ``required`` defaults to every property; ``closed``: no other keys."""
    out = {"type": "object", "properties": properties,
           "required": list(properties) if required is None else required, **extra}
    if closed:
        out["additionalProperties"] = False
    return out


TIMING = obj({"n": {**INT, "minimum": 0},
              "p50_ms": nullable({**NUM, "minimum": 0}), "p99_ms": nullable({**NUM, "minimum": 0})},
             closed=True, description="Over the last minute of wall time; null without samples.")

SCHEMAS: dict[str, dict] = {
    "Error": obj({"error": {**STR, "description": "What was wrong, and what is allowed."}},
                 closed=True),
    "Timing": TIMING,
    "ModelCosts": obj({
        "forward_ms": {**ref("Timing"), "description": "The model's network passes per cycle."},
        "cycle_share_ms": {**ref("Timing"),
                           "description": "The model's own time in one cycle: offer, encode, "
                                          "decide, experiences."},
        "train_step_ms": {**ref("Timing"), "description": "One training step."},
        "cpu_fraction": {**NUM, "minimum": 0,
                         "description": "CPU seconds of its cycle shares and training steps "
                                        "per wall second (1.0: one core)."},
        "window_s": NUM}, closed=True),
    "CycleCosts": obj({
        "total_ms": {**ref("Timing"), "description": "One whole cycle (all models)."},
        "shared_ms": {**ref("Timing"), "description": "The cycle less the models' shares: "
                                                      "observations, resolution, the record."},
        "interval_ms": nullable({**NUM, "description": "Wall interval of the job that runs the "
                                                       "cycle; null when not scheduled."}),
        "load": nullable({**NUM, "description": "p99 total over the interval."}),
        "behind_load": NUM, "window_s": NUM}, closed=True),
    "Prediction": obj({
        "id": INT, "model": STR, "model_step": INT, "symbol": STR, "timeframe": STR,
        "created_ts": MS, "target_ts": MS, "reference_price": NUM, "action": STR,
        "confidence": {**NUM, "minimum": 0, "maximum": 1},
        **{f"pred_{k}": nullable(NUM) for k in ("open", "high", "low", "close", "volume")},
        "executed": BOOL,
        **{f"actual_{k}": nullable(NUM) for k in ("open", "high", "low", "close", "volume")},
        "price_error": nullable(NUM), "volume_error": nullable(NUM),
        "action_correct": nullable(BOOL), "reward": nullable(NUM),
        "status": {"enum": ["pending", "resolved", "expired"]}, "resolved_ts": nullable(INT),
        "stale": {**BOOL, "description": "The model was STALE when it predicted."}}),
    "PredictionsPage": obj({"predictions": {**ARR, "items": ref("Prediction")},
                            "query": obj({"limit": INT}, additionalProperties=nullable(STR))}),
    "MarketStatus": obj({
        "market_time_ms": MS, "speed": NUM, "source": obj({"source": STR}),
        "notice": STR, "notice_level": STR, "feeds": {**OBJ, "additionalProperties": OBJ},
        "lag_ms": nullable(NUM), "candles_accepted": INT,
        "rejected": {**OBJ, "additionalProperties": INT},
        "prices": {**OBJ, "additionalProperties": obj(
            {"last": nullable(NUM), "change_pct": nullable(NUM)})},
        "running": BOOL, "supervisor": obj({"state": STR, "restarts": INT, "failures": INT,
                                            "last_error": nullable(STR)})}),
    "ModelStatus": obj({
        "name": STR, "title": STR, "look": OBJ, "parameters": INT, "train_steps": INT,
        "prediction_count": INT, "loss_5ma": nullable(NUM), "loss_history": {**ARR, "items": NUM},
        "epsilon": nullable(NUM), "last_prediction": nullable(OBJ), "device": STR,
        "memory_bytes": INT, "active": BOOL,
        "state": {**STR, "description": "PAUSED, FROZEN, ACTIVE, IDLE (trained, stopped) "
                                        "or UNTRAINED"},
        "checkpoint": nullable(obj({"file": STR, "step": INT, "bytes": INT})),
        "checkpoint_warning": nullable(STR), "resumed_from_step": nullable(INT),
        "accuracy": {**OBJ, "additionalProperties": obj(
            {"resolved": INT, "correct": INT, "accuracy": nullable(NUM)})},
        "quality": nullable(obj({"headline": obj({"text": STR, "verdict": STR}),
                                 "groups": ARR})),
        "timeframes": {**OBJ, "additionalProperties": STR},
        "role": {"enum": ["champion", "challenger"],
                 "description": "A challenger is a shadow copy that never trades."},
        "challenger": nullable({**ref("ChallengerEntry"),
                                "description": "The running challenger: overrides, skill "
                                               "beside the champion's."}),
        "promotions": {**ARR, "items": ref("Promotion"),
                       "description": "The challengers promoted to this model."},
        "costs": ref("ModelCosts"),
        "control": ref("ModelState"),
        "stale": {**BOOL, "description": "No training step or no resolved prediction for "
                                         "training.stale_after_s market seconds."}}, closed=True),
    "LiveStatus": obj({
        "active": BOOL, "started_at": nullable(MS), "timeframes": OBJ, "market_time_ms": MS,
        "clock_speed": NUM, "source": obj({"source": STR}), "predictions_per_second": NUM,
        "training_batches_per_minute": NUM,
        "signal_generation": obj({"state": {"enum": ["ACTIVE", "INACTIVE"]},
                                  "last_signal_ms": nullable(MS), "signals": OBJ}),
        "paper": obj({"realised_pnl": NUM, "positions": OBJ}),
        "models": {**OBJ, "additionalProperties": ref("ModelStatus")},
        "direction": OBJ, "errors": {**OBJ, "additionalProperties": obj(
            {"type": STR, "message": STR, "count": INT, "last_wall_ts": NUM})},
        "prediction_counts": {**OBJ, "additionalProperties": {
            **OBJ, "additionalProperties": INT}},
        "dropped_experiences": {**OBJ, "additionalProperties": INT},
        "cycle": ref("CycleCosts"),
        "training_backend": obj({
            "kind": {"enum": ["thread", "ray"]}, "address": nullable(STR),
            "actors": {**OBJ, "additionalProperties": STR,
                       "description": "Per model (ray): ok, not started, or lost: why; "
                                      "retry in N s."},
            "restarts": {**OBJ, "additionalProperties": INT},
            "lost_steps": {**OBJ, "additionalProperties": INT}}, closed=True),
        "store": ref("StoreHealth")}, closed=True),
    "StoreHealth": obj({
        "backend": {"enum": ["sqlite", "postgresql"]},
        "where": {**STR, "description": "The file, or the URL (never a password)."},
        "state": {"enum": ["OK", "DOWN"]},
        "down_since": nullable({**NUM, "description": "Wall time (Unix s) the outage began."}),
        "error": nullable(STR), "retry_in_s": nullable({**NUM, "minimum": 0}),
        "queued_rows": {**INT, "minimum": 0,
                        "description": "Rows recorded in memory, waiting for the next write."},
        "outages": {**INT, "minimum": 0}, "last_write": nullable(NUM),
        "symbols": {**ARR, "items": STR,
                    "description": "The symbols this process writes (* : all)."}},
        closed=True, description="The prediction store's database (store.url): a lost one is "
                                 "retried with backoff and loses no resolved prediction."),
    "Health": obj({
        "status": {"enum": ["ok", "unhealthy"]},
        "reasons": {**ARR, "items": STR, "description": "Why unhealthy; empty when ok."},
        "feed": obj({"alive": BOOL, "running": BOOL, "state": STR,
                     "feeds": {**OBJ, "additionalProperties": nullable(STR)},
                     "reasons": {**ARR, "items": STR}}, closed=True),
        "scheduler": obj({"alive": BOOL, "state": STR, "reasons": {**ARR, "items": STR},
                          "jobs": {**OBJ, "additionalProperties": obj({
                              "interval_s": NUM, "late_after_s": NUM,
                              "last_start_s_ago": nullable(NUM),
                              "running_s": nullable(NUM)}, closed=True)}}, closed=True),
        "store": nullable(ref("StoreHealth")),
        "warnings": {**ARR, "items": STR,
                     "description": "Degraded but alive (a prediction store DOWN: its rows "
                                    "wait in memory, so a restart now would lose them)."},
    }, closed=True),
    "ModelState": obj({
        "model": STR, "state": {"enum": ["active", "paused", "frozen"]},
        "train_steps": INT,
        "published_steps": {**INT, "description": "The step of the weights it predicts with."},
        "rolled_back": nullable(obj({"from_step": INT, "to_step": INT, "market_ms": MS},
                                    closed=True)),
        "kept_steps": {**ARR, "items": INT, "description": "Steps a rollback may name."},
        "staleness": obj({
            "stale": BOOL,
            "training": nullable({"enum": ["ok", "STALE", "FROZEN"]}),
            "resolution": nullable({"enum": ["ok", "STALE"]}),
            "limit_s": nullable(NUM), "training_age_s": NUM, "resolution_age_s": NUM},
            ["stale", "training", "resolution", "limit_s"], closed=True, description="Null criteria: not judged (training off, or paused).")},
        closed=True, description="The model's control state after the request."),
    "Rollback": obj({"step": {**INT, "minimum": 0,
                              "description": "A kept checkpoint's step."}}, closed=True),
    "ChallengerRequest": {
        "type": "object",
        "description": "Hyperparameter overrides, checked against the model's own config "
                       "section; \"from\": start fresh or from the champion's checkpoint.",
        "properties": {"from": {"enum": ["fresh", "champion"]}},
        "additionalProperties": True},
    "Paired": obj({
        "n": {**INT, "description": "Candles both predicted since the challenger started."},
        **{k: nullable(NUM) for k in ("champion", "challenger", "diff")},
        **{k: {**ARR, "items": nullable(NUM), "description": "95 %, paired block bootstrap"}
           for k in ("champion_ci", "challenger_ci", "diff_ci")},
        "promotable": BOOL, "reason": STR}, closed=True,
        description="Mean per-candle measure of each (higher is better) and of the "
                    "difference challenger - champion (core/scoring/paired.py)."),
    "ChallengerEntry": obj({
        "name": STR, "overrides": OBJ, "from": {"enum": ["fresh", "champion"]},
        "started_ms": MS, "train_steps": INT, "trained_steps": INT,
        "skill": {"anyOf": [ref("Paired"), obj({"error": STR}, closed=True)]},
        "measure": {"enum": ["close_error", "accuracy"]}, "last_error": nullable(STR),
        "min_resolved": INT, "auto_promote": BOOL}, closed=True),
    "Challenger": obj({"role": {"enum": ["champion", "challenger"]},
                       "challenger": nullable(ref("ChallengerEntry")),
                       "promotions": {**ARR, "items": ref("Promotion")}}, closed=True,
                      description="The model's challenger entry, as its card shows it."),
    "Promotion": obj({
        "model": STR, "market_ms": MS,
        "champion_step": {**INT, "description": "The old champion's checkpoint: roll back "
                                                "to it to undo the promotion."},
        "step": INT, "automatic": BOOL, "overrides": OBJ,
        "from": {"enum": ["fresh", "champion"]}, "started_ms": MS, "skill": ref("Paired")},
        closed=True, description="The promotion's record."),
    "OpenAPI": obj({"openapi": STR, "info": OBJ, "paths": OBJ}),
}


def answer(schema: str, description: str, media: str = "application/json") -> dict:
    return {"description": description, "content": {media: {"schema": ref(schema)}}}


ERROR_400 = {"400": answer("Error", "A bad parameter or body: the reason, and what is allowed.")}
ERROR_404 = {"404": answer("Error", "No such model: the reason, and the models there are.")}
REFUSED = {"403": answer("Error", "Refused: another site's Origin may not change state.")}
NAME = {"name": "name", "in": "path", "required": True, "schema": STR,
        "description": "A model's name, as /api/live-training/status lists it."}


def control(summary: str, body: str | None = None, ok: str = "ModelState",
            errors: dict | None = None) -> dict:
    """A POST on one model; answers with its state (or ``ok``)."""
    op = {"summary": summary, "parameters": [NAME],
          "responses": {"200": answer(ok, "Done (idempotent: again changes nothing)."),
                        **(errors or {}), **ERROR_404, **REFUSED}}
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": ref(body)}}}
    return {"post": op}


def get(summary: str, schema: str, **more) -> dict:
    return {"get": {"summary": summary, "responses": {"200": answer(schema, summary)}, **more}}


STATUS = "The live-training status (per model card, the cycle, errors)."
PREDICTION_PARAMETERS = [
    {"name": "limit", "in": "query", "schema": {**INT, "minimum": 1, "maximum": 1000,
                                                 "default": 50}},
    *({"name": n, "in": "query", "schema": STR, "description": f"only this {n}"}
      for n in ("model", "symbol", "timeframe")),
    {"name": "status", "in": "query", "schema": {"enum": ["pending", "resolved", "expired"]}},
]

PATHS: dict[str, dict] = {
    "/api/market/status": get("The market header's facts: source, prices, feeds.",
                              "MarketStatus"),
    "/api/live-training/status": get(STATUS, "LiveStatus"),
    "/api/live-training/start": {"post": {
        "summary": "Start predicting and training (idempotent).",
        "responses": {"200": answer("LiveStatus", STATUS), **REFUSED}}},
    "/api/live-training/stop": {"post": {
        "summary": "Stop predicting and training; checkpoints written (idempotent).",
        "responses": {"200": answer("LiveStatus", STATUS), **REFUSED}}},
    "/api/live-training/predictions": {"get": {
        "summary": "Stored predictions, newest first.", "parameters": PREDICTION_PARAMETERS,
        "responses": {"200": answer("PredictionsPage", "The predictions and the query."),
                      **ERROR_400}}},
    "/api/live-training/events": {"get": {
        "summary": "Server-Sent Events: predictions, resolutions, training steps, state "
                   "changes, promotions, feed health; each with an increasing id.",
        "parameters": [{"name": "Last-Event-ID", "in": "header", "schema": STR,
                        "description": "Resume after this id (what was missed is sent)."},
                       {"name": "last_event_id", "in": "query", "schema": STR,
                        "description": "The same, for clients that cannot set headers."}],
        "responses": {"200": {"description": "An event stream.",
                              "content": {"text/event-stream": {"schema": STR}}},
                      **ERROR_400,
                      "503": answer("Error", "Too many streams open (server.event_streams); "
                                             "Retry-After says when to try again.")}}},
    "/api/health": {"get": {
        "summary": "The feed's and the scheduler's liveness.",
        "responses": {"200": answer("Health", "Both alive."),
                      "503": answer("Health", "The feed or the scheduler is dead: reasons.")}}},
    "/api/openapi.json": get("This description.", "OpenAPI"),
    "/api/models/{name}/pause": control("Pause: no predictions, no training (no body).",
                                        errors=ERROR_400),
    "/api/models/{name}/resume": control("Resume a paused model (no body).", errors=ERROR_400),
    "/api/models/{name}/freeze": control("Freeze: predicts and is scored, does not train "
                                         "(no body).", errors=ERROR_400),
    "/api/models/{name}/unfreeze": control("Train a frozen model again (no body).",
                                           errors=ERROR_400),
    "/api/models/{name}/rollback": control("Roll back to a kept checkpoint.", body="Rollback",
                                           errors=ERROR_400),
    "/api/models/{name}/challenger": {
        **control("Start a challenger: a shadow copy with hyperparameter overrides.",
                  body="ChallengerRequest", ok="Challenger", errors=ERROR_400),
        "delete": {**control("Drop the model's challenger (its stored predictions stay).",
                             ok="Challenger")["post"]}},
    "/api/models/{name}/promote": control("Promote the model's challenger.", ok="Promotion",
                                          errors=ERROR_400),
}

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "TICKWISE_TOKEN; required off loopback."},
    "basic": {"type": "http", "scheme": "basic",
              "description": "TICKWISE_USER and TICKWISE_PASSWORD; required off loopback."},
}


def spec() -> dict:
    """The OpenAPI document (a fresh copy: callers may change theirs)."""
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "Tickwise", "version": VERSION,
                 "description": "Live candles, models predicting and training live. On loopback "
                                "no login; bound elsewhere every request (/api/health too) "
                                "needs HTTP Basic or the bearer token (401 without). A "
                                "state-changing request from another site's Origin gets "
                                "403; an unknown path 404, a wrong method 405, each "
                                "with {\"error\": reason}."},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
        "security": [{}, {"bearer": []}, {"basic": []}],
    })
