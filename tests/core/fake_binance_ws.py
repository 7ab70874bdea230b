"""A local websockets server speaking Binance's combined-stream format, for tests.

Each connection plays one scripted session, a list of steps:
``("send", payload)`` (JSON-encoded as given: pass a combined-stream envelope),
``("raw", text)``, ``("ping",)`` (a server ping whose pong must come back within 2 s),
``("sleep", s)``, ``("call", fn)``, ``("until", predicate)`` and ``("drop",)`` (abort the
TCP connection, no close frame).
Connections beyond the script stay open and silent until the client closes them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.server import ServerConnection, serve


def envelope(stream: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"stream": stream, "data": data}


def kline_msg(sid: str, tf: str, tf_ms: int, ts: int, ohlcv: tuple[float, ...], closed: bool,
              event_ms: int | None = None) -> dict[str, Any]:
    o, h, lo, c, v = ohlcv
    e = event_ms if event_ms is not None else (ts + tf_ms if closed else ts + tf_ms // 2)
    data = {"e": "kline", "E": e, "s": sid, "k": {
        "t": ts, "T": ts + tf_ms - 1, "s": sid, "i": tf, "f": 100, "L": 200,
        "o": str(o), "c": str(c), "h": str(h), "l": str(lo), "v": str(v), "n": 10,
        "x": closed, "q": "1.0", "V": "0.5", "Q": "0.5", "B": "0"}}
    return envelope(f"{sid.lower()}@kline_{tf}", data)


def trade_msg(sid: str, ts: int, price: float, qty: float, buyer_maker: bool,
              trade_id: int = 1) -> dict[str, Any]:
    data = {"e": "trade", "E": ts + 1, "s": sid, "t": trade_id, "p": str(price), "q": str(qty),
            "T": ts, "m": buyer_maker, "M": True}
    return envelope(f"{sid.lower()}@trade", data)


def depth_msg(sid: str, event_ms: int, first_id: int, final_id: int,
              bids: list[list[float]], asks: list[list[float]]) -> dict[str, Any]:
    data = {"e": "depthUpdate", "E": event_ms, "s": sid, "U": first_id, "u": final_id,
            "b": [[str(x) for x in level] for level in bids],
            "a": [[str(x) for x in level] for level in asks]}
    return envelope(f"{sid.lower()}@depth@100ms", data)


class FakeBinance:
    """``async with FakeBinance(sessions) as fake:`` then point the client at ``fake.url``."""

    def __init__(self, sessions: list[list[tuple]]):
        self.sessions = sessions
        self.paths: list[str] = []  # request path of each connection
        self.sent: list[Any] = []  # every payload sent, in order (appended before sending)
        self.pong_latencies: list[float] = []
        self.url = ""
        self._server: Any = None

    async def __aenter__(self) -> FakeBinance:
        self._server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        index = len(self.paths)
        self.paths.append(ws.request.path if ws.request else "")
        for step in self.sessions[index] if index < len(self.sessions) else []:
            kind = step[0]
            if kind == "send":
                self.sent.append(step[1])
                await ws.send(json.dumps(step[1]))
            elif kind == "raw":
                self.sent.append(step[1])
                await ws.send(step[1])
            elif kind == "ping":
                pong = await ws.ping()
                self.pong_latencies.append(await asyncio.wait_for(pong, 2.0))
            elif kind == "sleep":
                await asyncio.sleep(step[1])
            elif kind == "call":
                step[1]()
            elif kind == "until":  # wait (up to 2 s) for the client to catch up
                async with asyncio.timeout(2.0):
                    while not step[1]():
                        await asyncio.sleep(0.002)
            elif kind == "drop":
                ws.transport.abort()
                return
        await ws.wait_closed()
