"""The event stream under load: events per second delivered to many clients, and the delay
from a prediction's resolution to its event arriving at a client.

    .venv/bin/python -m bench.events [--clients 20] [--seconds 20] [--warm 10] [--speed 3600]

The whole app as app.py runs it (build_services on the bundled replay, a temporary
runtime_dir, fresh weights; waitress as dashboard/server.py serves it with the config's
server.threads and server.event_streams); training started through POST
/api/live-training/start and running ``--warm`` wall s first. Then ``--clients`` clients, in
a separate spawned process (their parsing does not hold the server's GIL), each read
GET /api/live-training/events for ``--seconds``. Printed: events and bytes per second
delivered (all clients together and per client), and for every resolution the delay from the
wall time the cycle resolved it (``resolved_wall_s`` in the event) to the client reading the
event: p50/p99/max. One more client past server.event_streams is refused (503), and
/api/market/status still answers meanwhile: its latency is printed too.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import statistics
import threading
import time

from bench.serving import serving

URL = "/api/live-training/events"


def read_stream(port: int, seconds: float, out: dict, lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", URL)
    resp = conn.getresponse()
    if resp.status != 200:
        with lock:
            out["refused"] += 1
        return
    events, nbytes, delays, event = 0, 0, [], None
    deadline = time.time() + seconds
    while time.time() < deadline:
        line = resp.readline()
        if not line:
            break
        nbytes += len(line)
        if line.startswith(b"event: "):
            event = line[7:].strip()
        elif line.startswith(b"data: "):
            events += 1
            if event == b"resolutions":
                delays.append(time.time() - json.loads(line[6:])["resolved_wall_s"])
    resp.close()
    conn.close()
    with lock:
        out["events"] += events
        out["bytes"] += nbytes
        out["delays"] += delays


def clients(port: int, n: int, seconds: float) -> dict:
    """``n`` stream readers for ``seconds``, in threads of this (client) process."""
    out = {"events": 0, "bytes": 0, "delays": [], "refused": 0}
    lock = threading.Lock()
    threads = [threading.Thread(target=read_stream, args=(port, seconds, out, lock))
               for _ in range(n)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["wall"] = time.time() - t0
    return out


def pct(values: list[float], q: int) -> float:
    return (statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1
            else values[0])


def meanwhile(port: int, seconds: float) -> list[float]:
    """GET /api/market/status once a second while the streams run: latency, ms."""
    out = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/market/status")
        conn.getresponse().read()
        conn.close()
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(1.0)
    return out


def report(r: dict, args, status_ms: list[float]) -> None:
    got = args.clients - r["refused"]
    print(f"{got} clients streaming for {r['wall']:.1f} s ({r['refused']} refused): "
          f"{r['events'] / r['wall']:.0f} events/s delivered in all "
          f"({r['events'] / r['wall'] / max(got, 1):.1f} per client), "
          f"{r['bytes'] / r['wall'] / 1e3:.0f} kB/s")
    d = [x * 1000 for x in r["delays"]]
    if d:
        print(f"resolution -> event at a client: {len(d)} resolutions, p50 "
              f"{statistics.median(d):.1f} ms, p99 {pct(d, 99):.1f} ms, max {max(d):.1f} ms")
    else:
        print("resolution -> event at a client: no resolution arrived")
    if status_ms:
        print(f"meanwhile /api/market/status: p50 {statistics.median(status_ms):.1f} ms, "
              f"max {max(status_ms):.1f} ms over {len(status_ms)} requests")


def flood(bus, pool, port: int, args) -> None:
    """The ceiling: the same clients while this process publishes small events as fast as
    it can (the live loop still running)."""
    t0 = time.time()
    while bus.streams and time.time() - t0 < 30:  # the first case's streams, freed at a write
        time.sleep(0.1)
    print(f"the first case's {args.clients} streams freed {time.time() - t0:.1f} s after "
          f"their clients left ({bus.streams} still open)")
    future = pool.submit(clients, port, args.clients, args.seconds)
    time.sleep(1.0)
    first, deadline = bus.newest_id, time.time() + args.seconds - 2
    while time.time() < deadline:
        for _ in range(100):
            bus.publish("bench", {"t": time.time()})
        time.sleep(0.001)  # let the streams' threads run
    published = bus.newest_id - first
    r = future.result()
    print(f"flood: {published / (args.seconds - 2):.0f} events/s published, "
          f"{r['events'] / r['wall']:.0f} events/s delivered to {args.clients - r['refused']} "
          f"clients ({r['events'] / r['wall'] / max(args.clients - r['refused'], 1):.0f} "
          f"per client, {r['refused']} refused), {r['bytes'] / r['wall'] / 1e6:.1f} MB/s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=20, help="stream clients")
    p.add_argument("--seconds", type=float, default=20.0, help="wall s each client reads")
    p.add_argument("--warm", type=float, default=10.0, help="wall s of training before")
    p.add_argument("--speed", type=float, default=3600.0, help="replay.speed")
    args = p.parse_args()
    logging.basicConfig(level="WARNING")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    with serving({"replay.speed": args.speed}, args.warm) as (cfg, services, port, pool):
        s = cfg.server
        print(f"waitress ({s.threads} threads, event_streams {s.event_streams}), training "
              f"active, replay speed x{cfg.replay.speed:g}, clients in a separate process")
        future = pool.submit(clients, port, args.clients, args.seconds)
        time.sleep(1.0)
        status_ms = meanwhile(port, args.seconds - 2)
        report(future.result(), args, status_ms)
        st = services.training.read.status_json(max_age_s=0)
        print(f"meanwhile: {st['predictions_per_second']} predictions/s, "
              f"{st['training_batches_per_minute']} training batches/min")
        flood(services.training.events, pool, port, args)


if __name__ == "__main__":
    main()
