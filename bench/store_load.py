"""REST latency with a full prediction store: 1,000,000 stored predictions, training on, 20
clients polling ``/api/live-training/status`` and ``/api/live-training/predictions?limit=1000``.

    .venv/bin/python -m bench.store_load [--rows 1000000] [--clients 20] [--seconds 15]
                                         [--server waitress|werkzeug] [--warm 20]

1. A prediction store file of ``--rows`` resolved predictions (3 models x 2 symbols, one a
   market second per series, in the two days before the replay starts: inside
   ``store.keep_days``), written with one ``executemany`` through the store's schema, its
   running totals counted from the rows as a version 1 file's migration counts them.
2. The whole app on it, as app.py runs it: build_services (bundled replay from a fixed
   ``replay.start``, that runtime_dir, fresh weights), the Dash app, services.start() (backfill,
   market pump, scheduler with the flush and retention jobs) and a real server on 127.0.0.1
   (waitress with 8 threads by default, or werkzeug's threaded server). Live training is
   started through POST /api/live-training/start and runs ``--warm`` wall seconds before the
   requests and throughout them (predicting, resolving, training, flushing, and retention
   deleting the oldest rows over ``store.max_rows``).
3. Per case, ``--clients`` clients (threads of a separate, spawned process, so their Python
   does not hold the server's GIL), each polling one endpoint every ``--interval`` wall
   seconds (the page's refresh_ms by default, as 20 open pages would), a new connection per
   request, for ``--seconds``; then the same back to back (no pause: saturation, the worst
   case). Reported: p50/p99/max, requests/s, errors, bytes; the targets (/status p99 < 100 ms,
   /predictions?limit=1000 p99 < 200 ms) are checked on the polling cases.

Printed last: what the store held and did meanwhile (rows, predictions/s, rows retention
deleted), and what one ``store.recent(limit=1000)`` and one JSON encoding of it cost.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import statistics
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPLAY_START = "2018-01-01"
REPLAY_START_MS = 1_514_764_800_000  # the same, UTC ms
MODELS = ("cnn", "dqn", "cob")
SYMBOLS = ("ETH/USDT", "BTC/USDT")
TARGETS = {"status": 100.0, "predictions?limit=1000": 200.0}  # p99, ms


def fill(path: Path, rows: int) -> float:
    """``rows`` resolved predictions in a new store file; seconds it took."""
    from core.predictions import PredictionStore, schema

    t0 = time.perf_counter()
    PredictionStore(path).close()  # the schema, version 2
    per_series = -(-rows // (len(MODELS) * len(SYMBOLS)))
    first_ts = REPLAY_START_MS - (per_series + 1) * 1000

    def generate():
        for i in range(rows):
            k, n = divmod(i, len(MODELS) * len(SYMBOLS))
            model, symbol = MODELS[n % len(MODELS)], SYMBOLS[n // len(MODELS)]
            ts = first_ts + k * 1000
            up = (i * 7919) % 3
            yield (i + 1, model, k, symbol, "1s", ts, ts + 1000, 100.0,
                   ("UP" if up else "DOWN") if model == "cob" else ("BUY", "SELL", "HOLD")[up],
                   0.4 + (i % 50) / 100, 100.0, 100.2, 99.9, 100.1, 10.0, None, 0,
                   100.0, 100.3, 99.8, 100.0 + (up - 1) / 10, 11.0, 0.001, 0.1,
                   int(i % 5 < 3), 0.01 * (up - 1), "resolved", ts + 1000)

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO predictions (id, model, model_step, symbol, timeframe, created_ts, "
        "target_ts, reference_price, action, confidence, pred_open, pred_high, pred_low, "
        "pred_close, pred_volume, state, executed, actual_open, actual_high, actual_low, "
        "actual_close, actual_volume, price_error, volume_error, action_correct, reward, "
        f"status, resolved_ts) VALUES ({', '.join('?' * 28)})", generate())
    for table in ("totals", "hits", "series"):
        conn.execute(f"DELETE FROM {table}")
    for statement in schema._COUNT_TOTALS.split(";"):  # as a migration counts them
        if statement.strip():
            conn.execute(statement)
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - t0


def poll(url: str, clients: int, seconds: float, interval: float) -> dict:
    """``clients`` threads each GETting ``url`` every ``interval`` s for ``seconds``."""
    latencies: list[float] = []
    errors: Counter = Counter()
    lock = threading.Lock()
    size = 0
    deadline = time.perf_counter() + seconds

    def client(k: int) -> None:
        nonlocal size
        time.sleep(interval * k / clients)  # spread over the interval, as pages would be
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    body = resp.read()
                    ok = resp.status == 200
            except Exception as exc:  # counted and reported by type
                with lock:
                    errors[type(exc).__name__] += 1
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt * 1000)
                size = len(body)
                if not ok:
                    errors["status"] += 1
            time.sleep(max(0.0, interval - dt))

    t_start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "errors": dict(errors), "wall": time.perf_counter() - t_start,
            "bytes": size}


def pct(values: list[float], q: int) -> float:
    return (statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1
            else values[0])


def serve(app, kind: str):
    """(port, stop) of a server of the WSGI app on 127.0.0.1, serving on a thread."""
    if kind == "waitress":
        from waitress.server import create_server

        server = create_server(app, host="127.0.0.1", port=0, threads=8)
        threading.Thread(target=server.run, daemon=True).start()
        return server.effective_port, server.close
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_port, server.shutdown


def report(path: str, n_clients: int, interval: float, r: dict) -> bool:
    lat = r["latencies"]
    errors = sum(r["errors"].values())
    pace = f"{interval:g} s" if interval else "none"
    if not lat:
        print(f"{path:<26}{n_clients:>8}{pace:>7}   no successful request {r['errors']}")
        return False
    p99 = pct(lat, 99)
    target = TARGETS[path]
    met = "yes" if p99 < target else "NO"
    print(f"{path:<26}{n_clients:>8}{pace:>7}{len(lat):>9}{errors:>7}"
          f"{statistics.median(lat):>9.1f}{p99:>9.1f}{max(lat):>9.1f}"
          f"{len(lat) / r['wall']:>8.0f}{r['bytes']:>10,}  p99<{target:g}: {met}")
    if r["errors"]:
        print(f"  errors: {r['errors']}")
    return p99 < target


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000, help="predictions stored before")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=15.0, help="wall s per case")
    p.add_argument("--interval", type=float, help="s between a client's requests (refresh_ms)")
    p.add_argument("--warm", type=float, default=20.0, help="wall s of training before timing")
    p.add_argument("--server", choices=("waitress", "werkzeug"), default="waitress")
    args = p.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is 12"
    import torch

    from core.config import load_config
    from core.services import build_services
    from dashboard.app import create_app

    with tempfile.TemporaryDirectory(prefix="tickwise-store-load-") as tmp:
        store_path = Path(tmp) / "predictions.sqlite"
        took = fill(store_path, args.rows)
        print(f"store file: {args.rows:,} predictions written in {took:.1f} s, "
              f"{store_path.stat().st_size / 2**20:,.0f} MiB "
              f"({store_path.stat().st_size / max(1, args.rows):,.0f} bytes a row)")
        cfg = load_config("config.yaml", {
            "runtime_dir": tmp, "market.source": "replay", "replay.start": REPLAY_START,
            "models.load_checkpoints": False}, environ={})
        torch.set_num_threads(cfg.torch.threads)
        t0 = time.perf_counter()
        services = build_services(cfg)
        print(f"opened with the app's services in {time.perf_counter() - t0:.2f} s "
              f"(store.keep_days {cfg.store.keep_days:g}, store.max_rows "
              f"{cfg.store.max_rows:,})")
        interval = cfg.server.refresh_ms / 1000 if args.interval is None else args.interval
        app = create_app(cfg, services.market, services.training)
        clients = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
        stop = None
        try:
            clients.submit(time.sleep, 0).result()  # the client process is up before timing
            services.start()
            port, stop = serve(app.server, args.server)
            base = f"http://127.0.0.1:{port}/api/live-training"
            req = urllib.request.Request(f"{base}/start", method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert json.load(resp)["active"], "training did not start"
            stored_before = services.training.store.stored()
            time.sleep(args.warm)
            run_cases(base, args, interval, cfg, services, clients, stored_before)
        finally:
            if stop is not None:
                stop()
            services.stop()
            clients.shutdown()


def run_cases(base: str, args, interval: float, cfg, services, clients,
              stored_before: int) -> None:
    import torch

    print(f"\nREST latency, {args.server} on 127.0.0.1, training active, replay x"
          f"{cfg.replay.speed:g}, torch threads {torch.get_num_threads()}, clients in a "
          f"separate process, a new connection per request, {args.seconds:g} s a case")
    print(f"{'endpoint':<26}{'clients':>8}{'pause':>7}{'requests':>9}{'errors':>7}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>8}{'bytes':>10}")
    training = services.training
    made_before = sum(sum(c.values()) for c in training.store.counts().values())
    t_start = time.perf_counter()
    met = []
    for pause in (interval, 0.0):
        for path in TARGETS:
            url = f"{base}/{path}"
            urllib.request.urlopen(url, timeout=10).read()  # first request untimed
            r = clients.submit(poll, url, args.clients, args.seconds, pause).result()
            ok = report(path, args.clients, pause, r)
            if pause:
                met.append(ok)
    wall = time.perf_counter() - t_start
    store = training.store
    made = sum(sum(c.values()) for c in store.counts().values()) - made_before
    status = training.read.status_json(max_age_s=0)
    print(f"\nmeanwhile: {made / wall:.1f} predictions/s recorded, "
          f"{status['training_batches_per_minute']} training batches/min, job errors "
          f"{ {k: (v['type'], v['count']) for k, v in status['errors'].items()} or 'none'}")
    print(f"store rows: {stored_before:,} at Start, {store.stored():,} now "
          f"(max_rows {cfg.store.max_rows:,}: retention deletes the oldest resolved)")
    t0 = time.perf_counter()
    rows = store.recent(limit=1000)
    t1 = time.perf_counter()
    json.dumps({"predictions": rows})
    t2 = time.perf_counter()
    print(f"one store.recent(limit=1000): {(t1 - t0) * 1000:.1f} ms; json.dumps of it "
          f"{(t2 - t1) * 1000:.1f} ms (idle-ish, with training on)")
    print(f"RESULT targets_met={all(met)}")


if __name__ == "__main__":
    main()
