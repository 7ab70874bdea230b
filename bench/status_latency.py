"""REST latency of the live-training status and predictions while the app runs and trains.

    .venv/bin/python -m bench.status_latency [--requests 300] [--clients 20] [--speed 600]

The whole app in this process, as app.py runs it: build_services (bundled replay, a temporary
runtime_dir, fresh weights), the Dash app, services.start() (backfill, market pump, scheduler)
and werkzeug's threaded server on 127.0.0.1 (a free port). Live training is started through
POST /api/live-training/start, then after ``--warm`` wall seconds of replay at ``--speed``
(default: the config's ``replay.speed``, x600; models predicting and training meanwhile) each
endpoint gets ``--requests`` GETs, first from
one client, then from ``--clients`` concurrent clients (threads sharing the count), each
request a new urllib connection with a 10 s timeout, a case stopping after ``--seconds``.

The clients run in a separate process (spawned) so their Python work does not hold the
server's GIL; ``--in-process`` runs them as threads of the server process instead. Loopback
only. Reported: p50/p99/max latency, requests/s, errors; then what the app did meanwhile
(predictions/s, training batches/min, replay lag, job errors, scheduler runs skipped
because the previous run of the job was still going) and what one uncached
``status()`` costs at the size the prediction store has reached.

The models predict and train on real timeframes only: on the default replay (30m bars) the
1h and 1d candles, never the interpolated 1s and 1m ones. So the replay runs at the app's own
speed (x600: an hour of market time every 6 wall s) and warms for 30 wall s, long enough for
1h predictions to be made, resolved and trained on before the requests; at the x15 this bench
used when the models predicted every 1s candle, nothing would close to predict in a run.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def load(url: str, n: int, clients: int, seconds: float) -> dict:
    """``n`` GETs of ``url`` from ``clients`` threads, stopping after ``seconds``."""
    latencies: list[float] = []
    errors: Counter = Counter()
    lock = threading.Lock()
    issued = 0
    size = 0
    deadline = time.perf_counter() + seconds

    def client() -> None:
        nonlocal issued, size
        while True:
            with lock:
                if issued >= n or time.perf_counter() > deadline:
                    return
                issued += 1
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    body = resp.read()
                    ok = resp.status == 200
            except Exception as exc:  # counted and reported by type
                with lock:
                    errors[type(exc).__name__] += 1
                continue
            dt = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(dt)
                size = len(body)
                if not ok:
                    errors["status"] += 1

    t_start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "errors": dict(errors), "wall": time.perf_counter() - t_start,
            "bytes": size}


class SkipCounter(logging.Handler):
    """Counts APScheduler's "skipped: maximum number of running instances" per job."""

    def __init__(self):
        super().__init__()
        self.skipped: Counter = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "skipped: maximum number of running instances" in msg:
            self.skipped[msg.split('"')[1].split(" ")[0]] += 1


def pct(values: list[float], q: int) -> float:
    return (statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1
            else values[0])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=300, help="GETs per endpoint and case")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients, second case")
    p.add_argument("--speed", type=float, help="replay.speed (default: the config's)")
    p.add_argument("--warm", type=float, default=30.0, help="wall s of training before timing")
    p.add_argument("--seconds", type=float, default=20.0, help="wall limit per case")
    p.add_argument("--in-process", action="store_true", help="client threads in this process")
    args = p.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    skips = SkipCounter()
    sched_log = logging.getLogger("apscheduler")
    sched_log.addHandler(skips)
    sched_log.propagate = False  # counted here instead of printed per skipped run

    import torch
    from werkzeug.serving import make_server

    from core.config import load_config
    from core.services import build_services
    from dashboard.app import create_app

    with tempfile.TemporaryDirectory(prefix="tickwise-bench-") as tmp:
        overrides = {"runtime_dir": tmp, "market.source": "replay",
                     "models.load_checkpoints": False}
        if args.speed is not None:
            overrides["replay.speed"] = args.speed
        cfg = load_config("config.yaml", overrides, environ={})
        torch.set_num_threads(cfg.torch.threads)
        services = build_services(cfg)
        app = create_app(cfg, services.market, services.training)
        clients = (None if args.in_process
                   else ProcessPoolExecutor(1, mp_context=get_context("spawn")))
        server = None
        try:
            if clients is not None:
                clients.submit(time.sleep, 0).result()  # the client process is up before timing
            services.start()
            server = make_server("127.0.0.1", 0, app.server, threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            base = f"http://127.0.0.1:{server.server_port}/api/live-training"
            req = urllib.request.Request(f"{base}/start", method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert json.load(resp)["active"], "training did not start"
            time.sleep(args.warm)

            print(f"REST latency, app in-process (werkzeug threaded, 127.0.0.1), training active, "
                  f"speed x{cfg.replay.speed:g}, torch threads {torch.get_num_threads()}, clients in "
                  f"{'this process' if clients is None else 'a separate process'}, "
                  f"a new connection per request")
            print(f"{'endpoint':<30}{'clients':>8}{'requests':>9}{'errors':>7}{'p50 ms':>9}"
                  f"{'p99 ms':>9}{'max ms':>9}{'req/s':>8}{'bytes':>9}")
            for path in ("status", "predictions?limit=50"):
                for n_clients in (1, args.clients):
                    url = f"{base}/{path}"
                    urllib.request.urlopen(url, timeout=10).read()  # first request untimed
                    call = (load, url, args.requests, n_clients, args.seconds)
                    r = call[0](*call[1:]) if clients is None else clients.submit(*call).result()
                    lat = r["latencies"]
                    errors = sum(r["errors"].values())
                    if not lat:
                        print(f"{path:<30}{n_clients:>8}{0:>9}{errors:>7}  no successful request "
                              f"{r['errors']}")
                        continue
                    print(f"{path:<30}{n_clients:>8}{len(lat):>9}{errors:>7}"
                          f"{statistics.median(lat):>9.2f}{pct(lat, 99):>9.2f}{max(lat):>9.2f}"
                          f"{len(lat) / r['wall']:>8.0f}{r['bytes']:>9,}")
                    if r["errors"]:
                        print(f"  errors: {r['errors']}")

            training = services.training
            status = training.read.status_json(max_age_s=0)
            t_status = []
            for _ in range(20):
                t0 = time.perf_counter()
                training.read.status()
                t_status.append((time.perf_counter() - t0) * 1000)
            rows = sum(sum(c.values()) for c in status["prediction_counts"].values())
            print(f"meanwhile: {status['predictions_per_second']} predictions/s, "
                  f"{status['training_batches_per_minute']} training batches/min, replay lag "
                  f"{status['source']['lag_ms']} ms, dropped experiences "
                  f"{status['dropped_experiences'] or 0}, job errors "
                  f"{ {k: (v['type'], v['count']) for k, v in status['errors'].items()} or 'none'}")
            print(f"scheduler runs skipped (previous run still going) since start: "
                  f"{dict(skips.skipped) or 'none'}")
            print(f"uncached status() with {rows:,} predictions stored: p50 "
                  f"{statistics.median(t_status):.2f} ms, max {max(t_status):.2f} ms "
                  f"(REST serves the published copy, refreshed in the background when over 0.5 s old)")
        finally:
            if server is not None:
                server.shutdown()
            services.stop()
            if clients is not None:
                clients.shutdown()


if __name__ == "__main__":
    main()
