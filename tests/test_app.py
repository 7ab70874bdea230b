"""The entry point: flags override config, bad config stops start-up, nothing starts early;
served by waitress with a login when exposed, stopped cleanly by SIGTERM."""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import app
from core.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_flags_override_config_and_env():
    args = app.parse_args(["--source", "replay", "--speed", "40", "--host", "0.0.0.0",
                           "--port", "9001", "--no-load-models", "--recording", "binance-btcusdt-1m"])
    cfg = load_config(ROOT / "config.yaml", app.overrides(args),
                      environ={"TICKWISE_REPLAY__SPEED": "25", "TICKWISE_SERVER__PORT": "7000"})
    assert cfg.market.source == "replay"
    assert cfg.replay.speed == 40.0  # the flag beats the environment
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 9001
    assert cfg.models.load_checkpoints is False
    assert cfg.replay.recording == "binance-btcusdt-1m"


def test_unset_flags_leave_config_alone():
    assert app.overrides(app.parse_args([])) == {}


def test_bad_config_stops_startup_naming_the_key(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "config.yaml"
    bad.write_text("replay:\n  on_end: again\n")
    monkeypatch.chdir(ROOT)
    assert app.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "replay.on_end" in err and "loop, stop" in err


def test_bad_env_value_stops_startup(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TICKWISE_SERVER__PORT", "eighty")
    assert app.main([]) == 2
    assert "server.port" in capsys.readouterr().err


def test_building_the_app_starts_no_threads():
    from core.market.service import build_market
    from dashboard.app import create_app

    before = threading.active_count()
    cfg = load_config(ROOT / "config.yaml", {"market.source": "replay"}, environ={})
    market = build_market(cfg)
    create_app(cfg, market)
    assert threading.active_count() == before
    assert not market.started
    # The clock is held at the replay's start until start(): no market time passes before.
    assert market.clock.now_ms() == market.source.start_ms


class Output:
    """A process's output lines, read in a thread as they come."""

    def __init__(self, proc: subprocess.Popen):
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.queue.put(line)
        self.queue.put(None)

    def until(self, marker: str, timeout: float) -> str:
        seen, deadline = [], time.monotonic() + timeout
        while not any(marker in line for line in seen):
            try:
                line = self.queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {marker!r} within {timeout} s: {''.join(seen)}")
            seen.append(line)
        return "".join(seen)

    def rest(self) -> str:
        self.thread.join(timeout=30)
        lines = []
        while (line := self.queue.get_nowait()) is not None:
            lines.append(line)
        return "".join(lines)


def _call(port: int, method: str, path: str, headers: dict) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode() + str(resp.getheaders())
    finally:
        conn.close()


def test_exposed_server_needs_a_login_and_stops_cleanly(tmp_path):
    """app.py as a user runs it, bound beyond loopback: waitress, a login on every request,
    what is exposed said at start, the secrets in no output, SIGTERM writes the checkpoints."""
    secrets = {"TICKWISE_USER": "alice", "TICKWISE_PASSWORD": "pw-5d1e0a9c", "TICKWISE_TOKEN": "tok-7c3b2f18"}
    env = {**os.environ, **secrets, "TICKWISE_RUNTIME_DIR": str(tmp_path / "rt")}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--host", "0.0.0.0", "--port", "0", "--source", "replay",
         "--no-load-models"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    out = Output(proc)
    answers: list = []
    try:
        started = out.until("Tickwise on", timeout=180)
        port = int(re.search(r"serving http://0\.0\.0\.0:(\d+)/ to OTHER MACHINES", started)[1])
        assert "login required (HTTP Basic or bearer token)" in started
        assert "POST /api/live-training/start" in started and "waitress" in started
        basic = "Basic " + base64.b64encode(b"alice:pw-5d1e0a9c").decode()
        bearer = "Bearer tok-7c3b2f18"
        own = {"Origin": f"http://127.0.0.1:{port}"}
        answers = [_call(port, "GET", "/api/market/status", {}),
                   _call(port, "POST", "/api/live-training/start", own),
                   _call(port, "GET", "/", {"Authorization": basic}),
                   _call(port, "POST", "/api/live-training/start",
                         {"Authorization": bearer, "Origin": "http://evil.example"}),
                   _call(port, "POST", "/api/live-training/start", {"Authorization": bearer, **own}),
                   _call(port, "GET", "/api/live-training/status", {"Authorization": basic})]
        assert [code for code, _ in answers] == [401, 401, 200, 403, 200, 200]
        assert json.loads(answers[-1][1].split("[(")[0])["active"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    rest = out.rest()
    assert proc.returncode == 0, rest
    output = started + rest + "".join(text for _, text in answers)
    assert "pw-5d1e0a9c" not in output and "tok-7c3b2f18" not in output
    assert "live training stopped" in rest  # SIGTERM stopped the services first...
    for model in ("cnn", "dqn", "cob"):  # ...which wrote a checkpoint per model
        assert list((tmp_path / "rt" / "checkpoints" / model).glob("*.pt")), model
