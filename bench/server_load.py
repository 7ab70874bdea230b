"""The web server under idle sockets and polling clients: waitress as app.py serves it.

    .venv/bin/python -m bench.server_load [--idle 200] [--clients 20] [--requests 300]
                                          [--warm 20] [--seconds 20] [--speed 600]

The whole app in this process, as app.py runs it: build_services (bundled replay, a temporary
runtime_dir, fresh weights), the Dash app, services.start(), the port bound by
dashboard.server.bind and served by dashboard.server.make_server (waitress: server.threads
workers, server.connection_limit, server.channel_timeout_s). Live training is started through
POST /api/live-training/start (with the page's own Origin) and runs for ``--warm`` wall s.

Cases, each request a new connection (10 s timeout) from a separate, spawned client process so
the clients' Python work does not hold the server's GIL:

1. one client, ``--requests`` GETs of /api/market/status (a normal request): p50/p99;
2. the same while ``--idle`` sockets are held open to the server: half connected and silent,
   half having sent an unfinished request (slowloris); p50/p99 and how many of them the server
   still holds afterwards;
3. ``--clients`` clients polling /api/live-training/status for ``--seconds`` (training on):
   p50/p99/max, requests/s, errors.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import socket
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from bench.serving import serving


def get(port: int, path: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return (time.perf_counter() - t0) * 1000, resp.status
    finally:
        conn.close()


def load(port: int, path: str, n: int, clients: int, seconds: float) -> dict:
    """Up to ``n`` GETs of ``path`` from ``clients`` threads, stopping after ``seconds``."""
    latencies: list[float] = []
    errors: Counter = Counter()
    lock = threading.Lock()
    issued = 0
    deadline = time.perf_counter() + seconds

    def client() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= n or time.perf_counter() > deadline:
                    return
                issued += 1
            try:
                ms, status = get(port, path)
            except OSError as exc:  # counted and reported by type
                with lock:
                    errors[type(exc).__name__] += 1
                continue
            with lock:
                latencies.append(ms)
                if status != 200:
                    errors[f"HTTP {status}"] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "errors": dict(errors), "wall": time.perf_counter() - t0}


def pct(values: list[float], q: int) -> float:
    return (statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1
            else values[0])


def row(label: str, clients: int, r: dict) -> str:
    lat, errors = r["latencies"], sum(r["errors"].values())
    if not lat:
        return f"{label:<44}{clients:>8}{0:>9}{errors:>7}  no successful request {r['errors']}"
    return (f"{label:<44}{clients:>8}{len(lat):>9}{errors:>7}{statistics.median(lat):>9.2f}"
            f"{pct(lat, 99):>9.2f}{max(lat):>9.2f}{len(lat) / r['wall']:>8.0f}"
            + (f"  errors: {r['errors']}" if r["errors"] else ""))


def hold_idle(port: int, n: int) -> list[socket.socket]:
    """``n`` connections to the server: even ones silent, odd ones mid-request."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            s.sendall(b"GET /api/market/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
        socks.append(s)
    return socks


def still_open(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has not closed (a closed one reads EOF at once)."""
    count = 0
    for s in socks:
        s.setblocking(False)
        try:
            count += s.recv(1) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def run_cases(port: int, args, clients: ProcessPoolExecutor) -> None:
    def remote(path: str, n: int, k: int) -> dict:
        return clients.submit(load, port, path, n, k, args.seconds).result()

    print(f"{'case':<44}{'clients':>8}{'requests':>9}{'errors':>7}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}{'req/s':>8}")
    get(port, "/api/market/status")  # first request untimed
    print(row("market/status, nothing else open", 1, remote("/api/market/status", args.requests, 1)))
    idle = hold_idle(port, args.idle)
    try:
        time.sleep(0.5)  # the server has accepted them all
        r = remote("/api/market/status", args.requests, 1)
        print(row(f"market/status, {args.idle} idle sockets held", 1, r))
        print(f"  idle sockets still open after the case: {still_open(idle)} of {args.idle}")
    finally:
        for s in idle:
            s.close()
    r = remote("/api/live-training/status", 100_000, args.clients)
    print(row(f"live-training/status, {args.clients} clients polling", args.clients, r))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--idle", type=int, default=200, help="idle sockets held open in case 2")
    p.add_argument("--clients", type=int, default=20, help="polling clients in case 3")
    p.add_argument("--requests", type=int, default=300, help="GETs in cases 1 and 2")
    p.add_argument("--speed", type=float, help="replay.speed (default: the config's)")
    p.add_argument("--warm", type=float, default=20.0, help="wall s of training before timing")
    p.add_argument("--seconds", type=float, default=20.0, help="wall limit per case")
    args = p.parse_args()
    logging.basicConfig(level="WARNING")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" lines

    overrides = {} if args.speed is None else {"replay.speed": args.speed}
    with serving(overrides, args.warm) as (cfg, services, port, clients):
        s = cfg.server
        print(f"waitress on 127.0.0.1 ({s.threads} threads, connection_limit "
              f"{s.connection_limit}, channel_timeout {s.channel_timeout_s} s), training "
              f"active, speed x{cfg.replay.speed:g}, torch threads {cfg.torch.threads}, "
              "clients in a separate process, a new connection per request")
        run_cases(port, args, clients)
        status = services.training.read.status_json(max_age_s=0)
        print(f"meanwhile: {status['predictions_per_second']} predictions/s, "
              f"{status['training_batches_per_minute']} training batches/min")


if __name__ == "__main__":
    main()
