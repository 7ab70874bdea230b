"""The app as app.py serves it, for the benches that measure it over HTTP: a fresh runtime in a
temp dir, the bundled replay, fresh weights, waitress on a free loopback port, live training
started through the REST API and warmed up, and one spawned process for the clients (their
Python does not hold the server's GIL).

    with serving({"replay.speed": 3600}, warm_s=10) as (cfg, services, port, pool):
        ...
"""

from __future__ import annotations

import http.client
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context


@contextmanager
def serving(overrides: dict, warm_s: float) -> Iterator[tuple]:
    import torch

    from core.config import load_config
    from core.services import build_services
    from dashboard.app import create_app
    from dashboard.server import bind, make_server, stop

    with tempfile.TemporaryDirectory(prefix="tickwise-bench-") as tmp:
        cfg = load_config("config.yaml", {"runtime_dir": tmp, "market.source": "replay",
                                          "models.load_checkpoints": False, **overrides},
                          environ={})
        torch.set_num_threads(cfg.torch.threads)
        services = build_services(cfg)
        app = create_app(cfg, services.market, services.training)
        pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
        server = None
        try:
            pool.submit(time.sleep, 0).result()  # the client process is up before timing
            sock = bind("127.0.0.1", 0)
            port = sock.getsockname()[1]
            server = make_server(app.server, sock, cfg.server)
            services.start()
            threading.Thread(target=server.run, daemon=True).start()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/api/live-training/start",
                         headers={"Origin": f"http://127.0.0.1:{port}"})
            assert conn.getresponse().status == 200, "training did not start"
            conn.close()
            time.sleep(warm_s)
            yield cfg, services, port, pool
        finally:
            services.stop()  # the event streams end (the bus closes), checkpoints written
            if server is not None:
                stop(server)
            pool.shutdown()
