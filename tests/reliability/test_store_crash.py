"""Fault matrix: ``kill -9`` of a process writing the prediction store, during a flush or
between flushes, then a restart that rewinds (as a replay restarting from its start does).

Kept running, lost nothing: after each kill the file is intact (``PRAGMA integrity_check``),
every prediction flushed before the kill is there, what is lost was recorded within the last
flush interval (the flush in progress commits all of it or nothing), the running totals the
page shows agree with the rows, and a candle predicted before the kill is not stored again
after the restart. The writer is tests/reliability/store_child.py.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.reliability.store_child import CANDLES, MIN, MODELS, SYMBOLS, T0

ROOT = Path(__file__).resolve().parents[2]
FLUSH_S = 0.05  # the writer's scheduler.store_flush_s
PER_BATCH = CANDLES * len(MODELS) * len(SYMBOLS)


def _run(path: Path, first: int, log: Path, kill_in_flush: bool | None, rng: random.Random,
         last: int | None = None) -> tuple[dict, float | None]:
    """The writer from batch ``first``; killed with SIGKILL after a few flushes (right after a
    flush begins when ``kill_in_flush``, else right after a record), or run to ``last``.
    Returns its events {kind: {batch: time}} and the monotonic time of the kill."""
    import time

    args = [sys.executable, "-m", "tests.reliability.store_child", str(path), str(first),
            str(FLUSH_S)] + ([] if last is None else [str(last)])
    events: dict[str, dict[int, float]] = {"R": {}, "B": {}, "F": {}}
    with log.open("a") as err:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        flushes = rng.randint(3, 8)
        killed_at = None
        for line in proc.stdout:
            kind, k, t = line.split()
            events[kind][int(k)] = float(t)
            if last is None and len(events["F"]) >= flushes \
                    and kind == ("B" if kill_in_flush else "R"):
                killed_at = time.monotonic()
                proc.kill()  # SIGKILL: no close, no flush, no exit handler
                break
        proc.wait(timeout=30)
        proc.stdout.close()
    if last is not None:
        assert proc.returncode == 0, log.read_text()
    return events, killed_at


def _check_file(path: Path) -> list[int]:
    """The file is intact, holds each candle once per model, its running totals agree with
    its rows; returns the batches it holds (each whole)."""
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        keys = raw.execute("SELECT COUNT(*), COUNT(DISTINCT model || symbol || timeframe || "
                           "target_ts) FROM predictions").fetchone()
        assert keys[0] == keys[1]  # no candle stored twice for a model
        totals = {(m, s): n for m, s, n in raw.execute(
            "SELECT model, status, SUM(n) FROM totals GROUP BY model, status") if n}
        counted = {(m, s): n for m, s, n in raw.execute(
            "SELECT model, status, COUNT(*) FROM predictions GROUP BY model, status")}
        assert totals == counted
        hits = {(m, tf): (n, k) for m, tf, n, k in raw.execute(
            "SELECT model, timeframe, SUM(resolved), SUM(correct) FROM hits "
            "GROUP BY model, timeframe")}
        assert hits == {(m, tf): (n, k) for m, tf, n, k in raw.execute(
            "SELECT model, timeframe, COUNT(*), SUM(action_correct) FROM predictions "
            "WHERE status = 'resolved' GROUP BY model, timeframe")}
        per_batch = dict(raw.execute(
            f"SELECT (target_ts - {T0} - {MIN}) / {MIN * CANDLES} AS k, COUNT(*) "
            "FROM predictions GROUP BY k").fetchall())
    finally:
        raw.close()
    assert set(per_batch.values()) <= {PER_BATCH}  # a flush writes all of a batch or none
    batches = sorted(per_batch)
    assert batches == list(range(len(batches)))  # and in order: no hole
    return batches


def test_kill_9_during_store_flushes_loses_only_the_unflushed_interval(tmp_path):
    path, log = tmp_path / "predictions.sqlite", tmp_path / "child.log"
    rng = random.Random(13)
    first = 0
    for kill_in_flush in (True, False, True):
        events, killed_at = _run(path, first, log, kill_in_flush, rng)
        held = _check_file(path)
        flushed = max(events["F"])
        assert held[-1] >= flushed  # every batch flushed before the kill is there
        lost = [k for k in events["R"] if k > held[-1]]
        assert all(k > flushed for k in lost)
        if lost:  # recorded within the flush interval (and the flush then in progress)
            since = max(events["B"].values()) if kill_in_flush else events["F"][flushed]
            assert killed_at - min(events["R"][k] for k in lost) <= \
                FLUSH_S + (killed_at - since) + 0.5
        # The restart rewinds a few batches, as a replay restarting from its start does:
        # the candles already stored are skipped, not stored again.
        first = max(0, held[-1] + 1 - 3)
    last = first + 5
    events, _ = _run(path, first, log, None, rng, last=last)
    assert _check_file(path) == list(range(last + 1))
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT COUNT(*) FROM predictions").fetchone() == (PER_BATCH * (last + 1),)
    raw.close()


def test_a_restart_that_replays_the_same_candles_predicts_none_of_them_again(tmp_path):
    # The case: after a restart the replay starts over, training on; every candle it
    # had predicted before is skipped by the live cycle, so each target is stored and scored
    # once, and the models predict again from the first candle past the old ones.
    from tests.test_live_training import make_services, run

    first = make_services(tmp_path)
    first.training.start()
    run(first, 30)
    first.stop()
    raw = sqlite3.connect(tmp_path / "predictions.sqlite")
    made = raw.execute("SELECT COUNT(*), MAX(target_ts) FROM predictions").fetchone()
    assert made[0] > 0
    second = make_services(tmp_path)  # the replay starts over from the same market time
    second.training.start()
    run(second, 40)
    second.stop()
    rows, keys, newer = raw.execute(
        "SELECT COUNT(*), COUNT(DISTINCT model || symbol || timeframe || target_ts), "
        "SUM(target_ts > ?) FROM predictions", (made[1],)).fetchone()
    totals = raw.execute("SELECT SUM(n) FROM totals").fetchone()[0]
    raw.close()
    assert rows == keys == totals  # each candle once, counted once
    assert newer > 0 and rows - newer == made[0]  # predicting went on past the old candles
