"""The prediction store past one process: several Tickwise processes writing one PostgreSQL
database (each its own symbols), a version 3 file's totals split by symbol, and a database lost
for a few seconds while predictions flow (reported, retried with backoff, nothing resolved
lost)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from core.predictions import PredictionStore, StoreUnavailable
from tests.core.test_predictions import MIN, T0, new, resolution
from tests.postgres_server import LocalPostgres

CHILD = textwrap.dedent("""
    import sys
    from core.predictions import PredictionStore
    from tests.core.test_predictions import MIN, T0, new, resolution
    with PredictionStore(sys.argv[1], symbols=["BTC/USDT"]) as s:
        for k in range(200):
            ids = s.add_many([new(model=m, symbol="BTC/USDT", created_ts=T0 + k * MIN,
                                  target_ts=T0 + (k + 1) * MIN) for m in ("cnn", "dqn")])
            if k % 2:
                s.resolve_many([(i, resolution(correct=True)) for i in ids], T0 + (k + 2) * MIN)
            if k % 20 == 0:
                s.flush()
    print("child done")
""")


def _flow(store, symbol: str, n: int, flush_every: int = 10) -> list[int]:
    """n candles of cnn and dqn predictions on ``symbol``; every other pair resolved."""
    resolved = []
    for k in range(n):
        ids = store.add_many([new(model=m, symbol=symbol, created_ts=T0 + k * MIN,
                                  target_ts=T0 + (k + 1) * MIN) for m in ("cnn", "dqn")])
        if k % 2:
            store.resolve_many([(i, resolution(correct=False)) for i in ids], T0 + (k + 2) * MIN)
            resolved += ids
        if k % flush_every == 0:
            store.flush()
    return resolved


def test_two_processes_write_one_postgresql_store_and_each_lists_both(pg_url):
    eth = PredictionStore(pg_url, symbols=["ETH/USDT"])
    child = subprocess.Popen([sys.executable, "-c", CHILD, pg_url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    mine = _flow(eth, "ETH/USDT", 300)  # while the other process writes BTC
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    eth.flush()
    # Each keeps the totals of its own symbols ...
    assert eth.counts() == {"cnn": {"pending": 150, "resolved": 150, "expired": 0},
                            "dqn": {"pending": 150, "resolved": 150, "expired": 0}}
    assert eth.accuracy()[("cnn", "1m")] == {"resolved": 150, "correct": 0, "accuracy": 0.0}
    assert len(eth.resolved_frame()) == len(mine) == 300  # its scores: its own rows
    # ... and lists every symbol's rows: the page of either shows both.
    listed = eth.recent(limit=1000)
    assert {r["symbol"] for r in listed} == {"ETH/USDT", "BTC/USDT"}
    assert {r["symbol"] for r in eth.recent(limit=1000, own=True)} == {"ETH/USDT"}
    assert len({r["id"] for r in listed}) == len(listed) == 1000  # ids never collide
    with PredictionStore(pg_url, symbols=["BTC/USDT"]) as btc:  # the other, restarted
        assert btc.counts()["cnn"] == {"pending": 100, "resolved": 100, "expired": 0}
        assert btc.accuracy()[("dqn", "1m")] == {"resolved": 100, "correct": 100,
                                                 "accuracy": 1.0}
        assert len(btc.recent(limit=1000, symbol="ETH/USDT")) == 600
    eth.close()


def test_a_second_writer_of_a_symbol_is_refused_at_open_naming_it(pg_url):
    with PredictionStore(pg_url, symbols=["ETH/USDT", "BTC/USDT"]):
        with pytest.raises(RuntimeError, match="writes BTC/USDT's predictions"):
            PredictionStore(pg_url, symbols=["BTC/USDT"])
        with pytest.raises(RuntimeError, match="writes this prediction store"):
            PredictionStore(pg_url)  # every symbol: the whole database
        with PredictionStore(pg_url, symbols=["SOL/USDT"]) as other:
            assert other.add(new(symbol="SOL/USDT")) > 0
    with PredictionStore(pg_url, symbols=["BTC/USDT"]):  # released when the first closed
        pass


def test_a_version_3_file_gets_its_totals_split_by_symbol(tmp_path):
    from core.predictions import schema

    path = tmp_path / "v3.db"
    with PredictionStore(path) as s:  # rows of two symbols, then made a version 3 file
        for symbol in ("ETH/USDT", "BTC/USDT"):
            ids = s.add_many([new(symbol=symbol), new(symbol=symbol, target_ts=T0 + 2 * MIN)])
            s.resolve_many([(i, resolution(correct=symbol == "ETH/USDT")) for i in ids],
                           T0 + 3 * MIN)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.executescript("""
        DROP TABLE totals; DROP TABLE hits;
        CREATE TABLE totals (model TEXT, status TEXT, n INTEGER, PRIMARY KEY (model, status));
        CREATE TABLE hits (model TEXT, timeframe TEXT, resolved INTEGER, correct INTEGER,
                           PRIMARY KEY (model, timeframe));
        -- version 3 totals: the 4 rows there, and 6 more resolved rows retention deleted
        INSERT INTO totals VALUES ('cnn', 'resolved', 10), ('cnn', 'pending', 0);
        INSERT INTO hits VALUES ('cnn', '1m', 10, 5);
        UPDATE schema_version SET version = 3;
    """)
    raw.close()
    with PredictionStore(path) as s:  # every symbol: the totals as they were
        assert s.counts() == {"cnn": {"pending": 0, "resolved": 10, "expired": 0}}
        assert s.accuracy()[("cnn", "1m")] == {"resolved": 10, "correct": 5, "accuracy": 0.5}
    with PredictionStore(path, symbols=["BTC/USDT"]) as s:  # one symbol: its own rows only
        assert s.counts() == {"cnn": {"pending": 0, "resolved": 2, "expired": 0}}
        assert s.accuracy()[("cnn", "1m")] == {"resolved": 2, "correct": 0, "accuracy": 0.0}
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT version FROM schema_version").fetchall() == [(schema.SCHEMA_VERSION,)]
    assert sorted(raw.execute("SELECT symbol, n FROM totals WHERE status = 'resolved'")) == [
        ("", 6), ("BTC/USDT", 2), ("ETH/USDT", 2)]
    raw.close()


def test_losing_the_database_while_predictions_flow_loses_no_resolved_prediction():
    with LocalPostgres() as pg:
        url = pg.create_database("outage")
        store = PredictionStore(url, symbols=["ETH/USDT"])
        store.health.cap_s = 1.0  # retry at least every second (15 s in the app)
        stop, seen, errors, resolved = threading.Event(), set(), [], []

        def flow() -> None:  # the signal cycle: predicts and resolves every 10 ms
            k = 0
            while not stop.is_set():
                ids = store.add_many([new(created_ts=T0 + k * MIN, target_ts=T0 + (k + 1) * MIN)])
                if k:
                    previous = T0 + k * MIN
                    pending = store.pending("ETH/USDT", "1m", previous)
                    store.resolve_many([(p.id, resolution()) for p in pending], previous)
                    resolved.extend(p.id for p in pending)
                assert ids
                k += 1
                time.sleep(0.01)

        def flusher() -> None:  # the flush job, every 100 ms
            while not stop.is_set():
                try:
                    store.flush()
                except Exception as exc:  # noqa: BLE001 - what the job would report
                    errors.append(exc)
                seen.add(store.health_status()["state"])
                time.sleep(0.1)

        threads = [threading.Thread(target=flow), threading.Thread(target=flusher)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        pg.stop()  # the database host is lost for a few seconds
        time.sleep(1.0)
        down = store.health_status()
        with pytest.raises(StoreUnavailable, match="unreachable"):
            store.recent()
        time.sleep(2.0)
        pg.start()
        deadline = time.monotonic() + 20
        while store.health_status()["state"] != "OK" and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        store.flush()
        assert down["state"] == "DOWN" and down["queued_rows"] > 0 and down["error"]
        assert down["retry_in_s"] is not None and down["outages"] == 1
        assert {"OK", "DOWN"} <= seen and errors  # reported while down, by the flush job
        after = store.health_status()
        assert after["state"] == "OK" and after["queued_rows"] == 0
        store.close()
        import psycopg

        with psycopg.connect(url) as conn:
            rows = dict(conn.execute("SELECT id, status FROM predictions").fetchall())
        assert len(resolved) > 100
        assert all(rows[i] == "resolved" for i in resolved)  # every one, written once
        assert list(rows.values()).count("resolved") == len(resolved)


def test_a_version_3_postgresql_database_is_migrated_and_new_ids_follow_its_rows(pg_url):
    import psycopg

    with PredictionStore(pg_url) as s:
        ids = s.add_many([new(symbol=x) for x in ("ETH/USDT", "BTC/USDT")])
        s.resolve_many([(i, resolution(correct=True)) for i in ids], T0 + 2 * MIN)
    with psycopg.connect(pg_url, autocommit=True) as raw:  # as version 3 left it
        raw.execute("DROP TABLE totals; DROP TABLE hits; DROP SEQUENCE prediction_ids")
        raw.execute("CREATE TABLE totals (model TEXT NOT NULL, status TEXT NOT NULL, "
                    "n BIGINT NOT NULL, PRIMARY KEY (model, status))")
        raw.execute("CREATE TABLE hits (model TEXT NOT NULL, timeframe TEXT NOT NULL, "
                    "resolved BIGINT NOT NULL, correct BIGINT NOT NULL, "
                    "PRIMARY KEY (model, timeframe))")
        raw.execute("INSERT INTO totals VALUES ('cnn', 'resolved', 5)")  # 3 deleted earlier
        raw.execute("INSERT INTO hits VALUES ('cnn', '1m', 5, 4)")
        raw.execute("UPDATE predictions SET id = id + 40")  # ids a v3 writer gave: max + 1
        raw.execute("UPDATE schema_version SET version = 3")
        top = raw.execute("SELECT max(id) FROM predictions").fetchone()[0]
    with PredictionStore(pg_url) as s:
        assert s.counts() == {"cnn": {"pending": 0, "resolved": 5, "expired": 0}}
        assert s.accuracy()[("cnn", "1m")] == {"resolved": 5, "correct": 4, "accuracy": 0.8}
        assert s.add(new(target_ts=T0 + 5 * MIN)) > top  # the sequence starts past them
    with PredictionStore(pg_url, symbols=["ETH/USDT"]) as s:
        assert s.counts()["cnn"] == {"pending": 1, "resolved": 1, "expired": 0}
    with psycopg.connect(pg_url) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(4,)]


def test_a_store_found_down_by_a_read_is_ok_again_only_once_the_database_answers():
    import psycopg

    with LocalPostgres() as pg:
        store = PredictionStore(pg.create_database("reads"), symbols=["ETH/USDT"])
        store.health.cap_s = 0.2
        pg.stop()
        with pytest.raises(StoreUnavailable):
            store.recent()  # nothing queued: a read finds it DOWN
        time.sleep(0.3)  # past the backoff: the flush asks the database, which is gone
        with pytest.raises(psycopg.OperationalError):
            store.flush()
        assert store.health_status()["state"] == "DOWN"
        pg.start()
        time.sleep(0.3)
        assert store.flush() == 0 and store.health_status()["state"] == "OK"
        assert store.recent() == []
        store.close()
