"""The app on a PostgreSQL prediction store (store.url): two Tickwise processes (each its own
market.symbols) write one database and the page and REST of either list both symbols'
predictions; losing the database while predictions flow is shown on the page, in /status and
/api/health, the rows wait in memory and reach the database once it is back."""

from __future__ import annotations

import time

import psycopg
import pytest

from core.services import StartupError
from dashboard.app import create_app
from dashboard.training_view import panel_stats
from tests.dash_text import texts
from tests.postgres_server import LocalPostgres
from tests.test_live_training import make_services, run


def _client(services):
    return create_app(services.config, services.market, services.training).server.test_client()


def test_two_processes_share_one_store_and_each_page_lists_both(tmp_path, pg_url):
    eth = make_services(tmp_path / "eth", **{"store.url": pg_url,
                                             "market.symbols": ["ETH/USDT"]})
    btc = make_services(tmp_path / "btc", **{"store.url": pg_url,
                                             "market.symbols": ["BTC/USDT"]})
    try:
        for services in (eth, btc):
            services.training.start()
            run(services, 40)
            services.training.flush_job()
        own = eth.training.read.status().to_json()["prediction_counts"]
        with psycopg.connect(pg_url) as conn:
            by_symbol = dict(conn.execute(
                "SELECT symbol, COUNT(*) FROM predictions WHERE model = 'cnn' "
                "GROUP BY symbol").fetchall())
        assert set(by_symbol) == {"ETH/USDT", "BTC/USDT"}
        assert sum(own["cnn"].values()) == by_symbol["ETH/USDT"]  # its cards: its own symbols
        client = _client(eth)
        listed = client.get("/api/live-training/predictions?limit=1000").get_json()
        assert {p["symbol"] for p in listed["predictions"]} == {"ETH/USDT", "BTC/USDT"}
        theirs = client.get("/api/live-training/predictions?limit=1000&symbol=BTC/USDT")
        assert theirs.status_code == 200
        with psycopg.connect(pg_url) as conn:
            btc_rows = conn.execute("SELECT COUNT(*) FROM predictions WHERE symbol = "
                                    "'BTC/USDT'").fetchone()[0]
        rows = theirs.get_json()["predictions"]
        assert {p["symbol"] for p in rows} == {"BTC/USDT"} and len(rows) == btc_rows < 1000
        assert client.get("/api/live-training/predictions?symbol=XRP/USDT").status_code == 400
        store = client.get("/api/live-training/status").get_json()["store"]
        assert store["backend"] == "postgresql" and store["state"] == "OK"
        assert store["symbols"] == ["ETH/USDT"]
        with pytest.raises(StartupError, match=r"^store.url postgresql://.*writes ETH/USDT.s predictions"):
            make_services(tmp_path / "eth2", **{"store.url": pg_url,
                                                "market.symbols": ["ETH/USDT"]})
    finally:
        eth.stop()
        btc.stop()


def test_a_lost_database_is_shown_retried_and_loses_nothing(tmp_path):
    with LocalPostgres() as pg:
        url = pg.create_database("app")
        services = make_services(tmp_path / "rt", **{"store.url": url})
        live = services.training
        live.store.health.cap_s = 1.0
        client = _client(services)
        try:
            live.start()
            now = run(services, 30)
            live.guarded("flush", live.flush_job)
            pg.stop()
            now = run(services, 30, now)  # predictions flow and resolve meanwhile
            live.guarded("flush", live.flush_job)
            live.read.invalidate()
            status = client.get("/api/live-training/status").get_json()
            assert status["store"]["state"] == "DOWN" and status["store"]["queued_rows"] > 0
            assert status["errors"]["flush"]["count"] >= 1
            assert "DOWN since" in texts(panel_stats(status))
            health = client.get("/api/health")
            # (503 here only because no scheduler runs in this test: a warning, not a reason)
            assert not any("store" in r for r in health.get_json()["reasons"])
            assert "wait in memory" in health.get_json()["warnings"][0]
            down = client.get("/api/live-training/predictions")
            assert down.status_code == 503 and "unreachable" in down.get_json()["error"]
            pg.start()
            deadline = time.monotonic() + 20
            while live.store.health_status()["state"] != "OK" and time.monotonic() < deadline:
                time.sleep(0.2)
                live.guarded("flush", live.flush_job)
            live.read.invalidate()
            counts = client.get("/api/live-training/status").get_json()["prediction_counts"]
            assert client.get("/api/live-training/status").get_json()["store"]["state"] == "OK"
            with psycopg.connect(url) as conn:
                stored = dict(conn.execute("SELECT model, COUNT(*) FROM predictions "
                                           "WHERE status = 'resolved' GROUP BY model").fetchall())
            assert stored == {m: c["resolved"] for m, c in counts.items() if c["resolved"]}
            assert min(stored.values()) > 20
        finally:
            services.stop()
