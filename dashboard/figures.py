"""Pure figure builders: candle arrays in, plotly figure dicts and Dash Patches out.

Figures are plain dicts (no plotly.graph_objects, no template) so a full figure is small and
cheap to build. A chart is four traces: closed candles, the forming candle, closed volume, the
forming volume. Every second the page gets a Patch that appends the newly closed candles,
replaces the forming one and moves the axes; the browser holds at most ``2 x visible`` candles
and a full figure is sent only when that fills up (about once per ``visible`` new candles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dash import Patch

from core.market.candles import Candle
from core.predictions import outcome as outcome_word
from nn.contract import LONG_ACTIONS

UP = "#26a69a"
DOWN = "#ef5350"
GRID = "#2a2e39"
TEXT = "#c9d1d9"

TRACE_CLOSED, TRACE_FORMING, TRACE_VOLUME, TRACE_VOLUME_FORMING = 0, 1, 2, 3
# Prediction overlays: one trace per model (in the read model's order) after the four
# candle traces, each drawn with the markers its learner declares (``Learner.look``).
TRACE_FIRST_OVERLAY = 4
BULL, BEAR = "#2bd4c4", "#ff9f43"
HIT, MISS, PENDING = "#7CFC00", "#ff3b3b", "#e6edf3"
OUTLINE = {"pending": PENDING, "hit": HIT, "miss": MISS}  # by core.predictions.outcome


@dataclass(frozen=True)
class ChartState:
    """What the browser holds for one chart (kept in a dcc.Store)."""

    tf: str
    last_ts: int  # open time of the newest closed candle sent, -1 if none
    count: int  # closed candles the browser holds

    def to_dict(self) -> dict:
        return {"tf": self.tf, "last_ts": self.last_ts, "count": self.count}

    @staticmethod
    def from_dict(data: dict | None) -> ChartState | None:
        if not data:
            return None
        return ChartState(str(data["tf"]), int(data["last_ts"]), int(data["count"]))


def _columns(rows: np.ndarray) -> dict[str, list]:
    return {
        "x": rows[:, 0].astype(np.int64).tolist(),
        "open": rows[:, 1].tolist(),
        "high": rows[:, 2].tolist(),
        "low": rows[:, 3].tolist(),
        "close": rows[:, 4].tolist(),
        "volume": rows[:, 5].tolist(),
        "colors": np.where(rows[:, 4] >= rows[:, 1], UP, DOWN).tolist(),
    }


def _forming_columns(forming: Candle | None) -> dict[str, list]:
    if forming is None:
        return {k: [] for k in ("x", "open", "high", "low", "close", "volume", "colors")}
    return {
        "x": [forming.ts], "open": [forming.open], "high": [forming.high], "low": [forming.low],
        "close": [forming.close], "volume": [forming.volume],
        "colors": [UP if forming.close >= forming.open else DOWN],
    }


def overlay_trace(model: str, look: dict, predictions: list[dict]) -> dict:
    """Markers for a model's recent predictions on the candle they target.

    The marker of each action is the model's (``look["markers"]``: CNN triangles, BUY up and
    SELL down; COB diamonds; DQN circles, only for predictions that executed a paper trade,
    ``look["executed_only"]``); an action without a marker (HOLD) is not drawn. Fill:
    bullish teal, bearish orange.
    Outline: white while pending, green for a hit, red for a miss. Opacity and size grow
    with confidence. x is the predicted candle's open time; y the predicted close when the
    model predicts one, else the price when it predicted.
    """
    xs, ys, symbols, colors, lines, sizes, opacity, text = [], [], [], [], [], [], [], []
    for p in predictions:
        shape = look["markers"].get(p["action"])
        if shape is None or (look["executed_only"] and not p.get("executed")):
            continue
        conf = float(p["confidence"])
        y = p.get("pred_close") if p.get("pred_close") is not None else p["reference_price"]
        word = outcome_word(p["status"], p.get("action_correct"))
        xs.append(int(p["target_ts"]))
        ys.append(float(y))
        symbols.append(shape)
        colors.append(BULL if p["action"] in LONG_ACTIONS else BEAR)
        lines.append(OUTLINE.get(word, MISS))  # an expired call is drawn as a miss
        sizes.append(7 + 9 * conf)
        opacity.append(0.35 + 0.65 * conf)
        text.append(f"{model.upper()} {p['action']} {conf:.0%} · {word}")
    return {"x": xs, "y": ys, "text": text, "marker": {
        "symbol": symbols, "color": colors, "size": sizes, "opacity": opacity,
        "line": {"color": lines, "width": 2}}}


def axis_ranges(closed: np.ndarray, forming: Candle | None, tf_ms: int, visible: int) -> dict:
    """x range over the last ``visible`` candles (+ the forming one), y ranges fitted to them."""
    rows = closed[-visible:]
    if forming is not None:
        rows = np.vstack([rows, np.array(forming.as_row())]) if len(rows) else \
            np.array([forming.as_row()])
    if len(rows) == 0:
        return {}
    lo, hi = float(rows[:, 3].min()), float(rows[:, 2].max())
    pad = (hi - lo) * 0.05 or hi * 0.001
    x0 = int(rows[-1, 0]) - (visible - 1) * tf_ms - tf_ms // 2
    x1 = int(rows[-1, 0]) + tf_ms
    return {
        "x": [x0, x1],
        "y": [lo - pad, hi + pad],
        "y2": [0.0, float(rows[:, 5].max()) * 1.15 or 1.0],
    }


def candle_figure(symbol: str, tf: str, tf_ms: int, closed: np.ndarray,
                  forming: Candle | None, visible: int, overlays: dict | None = None) -> dict:
    """A full chart: candles over volume, axes fitted to the last ``visible`` candles."""
    c, f = _columns(closed), _forming_columns(forming)
    ranges = axis_ranges(closed, forming, tf_ms, visible)
    candle_style = {
        "increasing": {"line": {"color": UP}, "fillcolor": UP},
        "decreasing": {"line": {"color": DOWN}, "fillcolor": DOWN},
        "hoverinfo": "x+y", "showlegend": False,
    }
    data = [
        {"type": "candlestick", "name": f"{symbol} {tf}", "x": c["x"], "open": c["open"],
         "high": c["high"], "low": c["low"], "close": c["close"], **candle_style},
        {"type": "candlestick", "name": "forming", "x": f["x"], "open": f["open"],
         "high": f["high"], "low": f["low"], "close": f["close"], "opacity": 0.55, **candle_style},
        {"type": "bar", "name": "volume", "x": c["x"], "y": c["volume"], "yaxis": "y2",
         "marker": {"color": c["colors"]}, "opacity": 0.6, "showlegend": False},
        {"type": "bar", "name": "volume (forming)", "x": f["x"], "y": f["volume"], "yaxis": "y2",
         "marker": {"color": f["colors"]}, "opacity": 0.3, "showlegend": False},
    ]
    for model, overlay in (overlays or {}).items():
        trace = overlay_trace(model, overlay["look"], overlay["predictions"])
        data.append({"type": "scatter", "mode": "markers", "name": model.upper(),
                     "hoverinfo": "text", "showlegend": False, **trace})
    axis = {"gridcolor": GRID, "zerolinecolor": GRID, "color": TEXT}
    layout = {
        "uirevision": f"{symbol}-{tf}",
        "margin": {"l": 10, "r": 70, "t": 10, "b": 30},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "#131722",
        "font": {"color": TEXT, "size": 11},
        "xaxis": {**axis, "type": "date", "rangeslider": {"visible": False},
                  "range": ranges.get("x")},
        "yaxis": {**axis, "domain": [0.27, 1.0], "side": "right", "range": ranges.get("y"),
                  "tickformat": ",.2f"},
        "yaxis2": {**axis, "domain": [0.0, 0.22], "side": "right", "range": ranges.get("y2"),
                   "showgrid": False},
        "bargap": 0.15, "hovermode": "x",
    }
    if not c["x"] and not f["x"]:
        layout["annotations"] = [{"text": "waiting for candles", "showarrow": False,
                                  "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.6}]
    return {"data": data, "layout": layout}


def candle_patch(new_closed: np.ndarray, forming: Candle | None, ranges: dict,
                 overlays: dict | None = None) -> Patch:
    """Append newly closed candles, replace the forming one and the overlays, move the axes."""
    patch = Patch()
    for i, (model, overlay) in enumerate((overlays or {}).items()):
        trace = overlay_trace(model, overlay["look"], overlay["predictions"])
        for key in ("x", "y", "text", "marker"):
            patch["data"][TRACE_FIRST_OVERLAY + i][key] = trace[key]
    if len(new_closed):
        c = _columns(new_closed)
        for key in ("x", "open", "high", "low", "close"):
            patch["data"][TRACE_CLOSED][key].extend(c[key])
        patch["data"][TRACE_VOLUME]["x"].extend(c["x"])
        patch["data"][TRACE_VOLUME]["y"].extend(c["volume"])
        patch["data"][TRACE_VOLUME]["marker"]["color"].extend(c["colors"])
    f = _forming_columns(forming)
    for key in ("x", "open", "high", "low", "close"):
        patch["data"][TRACE_FORMING][key] = f[key]
    patch["data"][TRACE_VOLUME_FORMING]["x"] = f["x"]
    patch["data"][TRACE_VOLUME_FORMING]["y"] = f["volume"]
    patch["data"][TRACE_VOLUME_FORMING]["marker"]["color"] = f["colors"]
    if ranges:
        patch["layout"]["xaxis"]["range"] = ranges["x"]
        patch["layout"]["yaxis"]["range"] = ranges["y"]
        patch["layout"]["yaxis2"]["range"] = ranges["y2"]
    return patch


def chart_update(symbol: str, tf: str, tf_ms: int, state: ChartState | None,
                 recent: np.ndarray, forming: Candle | None, visible: int,
                 overlays: dict | None = None) -> tuple[dict | Patch, ChartState]:
    """Decide between a Patch and a full figure for one refresh.

    ``recent`` is the newest ``2 x visible`` closed candles. A full figure (the last
    ``visible`` candles) goes out when the chart is new, its timeframe changed, the browser
    would hold more than ``2 x visible`` candles, or the browser's newest candle is no longer
    in ``recent`` (it fell behind); otherwise a Patch with what is new.
    """
    newest = int(recent[-1, 0]) if len(recent) else -1
    if state is not None and state.tf == tf:
        fresh = recent[recent[:, 0] > state.last_ts] if len(recent) else recent
        known = state.last_ts == -1 or (len(recent) and recent[0, 0] <= state.last_ts)
        if known and state.count + len(fresh) <= 2 * visible:
            ranges = axis_ranges(recent, forming, tf_ms, visible)
            new_state = ChartState(tf, newest if len(fresh) else state.last_ts,
                                   state.count + len(fresh))
            return candle_patch(fresh, forming, ranges, overlays), new_state
    shown = recent[-visible:]
    figure = candle_figure(symbol, tf, tf_ms, shown, forming, visible, overlays)
    return figure, ChartState(tf, newest, len(shown))


EXCHANGE_COLOURS = ("#2bd4c4", "#b388ff", "#ffb74d", "#64b5f6")


def depth_figure(cob: dict | None) -> dict:
    """The consolidated order book as a depth ladder: price buckets on y, size on x (bids to
    the left, asks to the right), one colour per exchange, stacked."""
    axis = {"gridcolor": GRID, "zerolinecolor": "#8b949e", "color": TEXT}
    layout = {
        "barmode": "relative", "bargap": 0.05, "showlegend": True,
        "legend": {"orientation": "h", "y": 1.08, "x": 0, "font": {"size": 10}},
        "margin": {"l": 8, "r": 62, "t": 28, "b": 26},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "#131722",
        "font": {"color": TEXT, "size": 10},
        "xaxis": {**axis, "title": {"text": "size  ← bids | asks →", "font": {"size": 10}}},
        "yaxis": {**axis, "side": "right", "tickformat": ",.2f"},
        "uirevision": "depth",
    }
    if not cob:
        layout["annotations"] = [{"text": "no order book yet", "showarrow": False,
                                  "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}]
        return {"data": [], "layout": layout}
    data = []
    bids, asks = cob["bids"], cob["asks"]
    width = cob["mid"] * cob["bucket_bps"] / 1e4
    for i, exchange in enumerate(cob["exchanges"]):
        colour = EXCHANGE_COLOURS[i % len(EXCHANGE_COLOURS)]
        share = _share(cob, i)
        name = f"{exchange} {share:.0%}"
        data.append({"type": "bar", "orientation": "h", "name": name, "legendgroup": exchange,
                     "y": [row[0] for row in bids], "x": [-row[1 + i] for row in bids],
                     "width": width * 0.9, "marker": {"color": colour}, "opacity": 0.85,
                     "hovertemplate": f"{exchange} bid %{{y:,.2f}}: %{{customdata:.4f}}<extra></extra>",
                     "customdata": [row[1 + i] for row in bids]})
        data.append({"type": "bar", "orientation": "h", "name": name, "legendgroup": exchange,
                     "showlegend": False,
                     "y": [row[0] for row in asks], "x": [row[1 + i] for row in asks],
                     "width": width * 0.9, "marker": {"color": colour}, "opacity": 0.55,
                     "hovertemplate": f"{exchange} ask %{{y:,.2f}}: %{{x:.4f}}<extra></extra>"})
    title = "consolidated book"
    if cob.get("stale"):
        title += f" · stale: {', '.join(cob['stale'])}"
    if cob.get("crossed"):
        title += " · crossed across exchanges"
    layout["title"] = {"text": title, "font": {"size": 11}, "x": 0.01, "y": 0.99}
    layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": cob["mid"],
                         "y1": cob["mid"], "line": {"color": "#8b949e", "width": 1, "dash": "dot"}}]
    return {"data": data, "layout": layout}


def _share(cob: dict, i: int) -> float:
    total = sum(sum(row[1:]) for row in cob["bids"]) + sum(sum(row[1:]) for row in cob["asks"])
    mine = sum(row[1 + i] for row in cob["bids"]) + sum(row[1 + i] for row in cob["asks"])
    return mine / total if total else 0.0
