"""Dash callbacks: thin. They read the market service and hand data to the pure builders."""

from __future__ import annotations

from datetime import UTC, datetime

import dash_bootstrap_components as dbc
from dash import MATCH, Input, Output, State, ctx, html, no_update

from core.market.service import MarketService
from core.predictions import StoreUnavailable
from dashboard.challenger_view import register_challenger_callbacks
from dashboard.figures import ChartState, chart_update, depth_figure
from dashboard.layout import symbol_id
from dashboard.model_controls import register_control_callbacks
from dashboard.training_view import accuracy_table, model_card, panel_stats, predictions_table


def format_market_time(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none rejected"


def feed_health_text(feeds: dict) -> str:
    """One line per exchange feed: state (connected, STALLED, DISCONNECTED), last message age,
    rate, reconnects, rejects, the exchange's clock skew and any failed book."""
    parts = []
    for name, h in sorted(feeds.items()):
        age = h.get("message_age_s")
        state = h.get("state", "connected" if h.get("connected") else "disconnected")
        text = (f"{name}: {state if state == 'connected' else state.upper()}"
                f" · last msg {'—' if age is None else f'{age:.1f} s ago'}"
                f" · {h.get('messages_per_s', 0):.1f} msg/s · {h.get('reconnects', 0)} reconnects"
                f" · {h.get('rejected', 0)} rejected")
        if h.get("forced_reconnects"):
            text += f" ({h['forced_reconnects']} for stalling)"
        if h.get("stalled"):
            text += (f" · nothing accepted for {h['stalled']['for_s']:.0f} s"
                     f" ({_counts(h['stalled']['rejected_by_reason'])})")
        if h.get("clock_skew_ms") is not None:
            text += f" · exchange clock {h['clock_skew_ms'] / 1000:+.2f} s"
        for symbol, failed in sorted((h.get("books_failed") or {}).items()):
            text += f" · {symbol} book FAILED ×{failed['failures']}: {failed['reason']}"
        parts.append(text)
    return " | ".join(parts)


def supervisor_text(sup: dict | None) -> str:
    """The market source's life: restarting (why, when next) or how often it was restarted."""
    if not sup or not (sup.get("failures") or sup.get("state") == "restarting"):
        return ""
    if sup["state"] == "restarting":
        wait = sup.get("next_retry_in_s")
        return (f"source STOPPED ({sup['last_error']}): restart #{sup['restarts'] + 1} in "
                f"{0.0 if wait is None else wait:.1f} s")
    return f"source {sup['state']}, restarted {sup['restarts']}× (last: {sup['last_error']})"


def _source_notice(snap: dict) -> str:
    src = snap["source"]
    if src["source"] == "exchange":
        notice = f"Live {src['description']}."
        backfill = src.get("backfill") or {}
        pending = [k for k, v in backfill.items() if v["state"] not in ("done", "empty")]
        if pending:
            first = src["backfill"][pending[0]]
            notice += (f" Backfilling {pending[0]}: {first['done']:,}/{first['total']:,}"
                       f" ({first['state']}).")
        empty = [k for k, v in backfill.items() if v["state"] == "empty"]
        if empty:
            notice += f" No history came back for {', '.join(empty)}."
        return notice
    interpolated = ", ".join(src["interpolated_timeframes"]) or "no"
    notice = (
        f"Replay of real history ({src['bar_timeframe']} bars). {interpolated} candles are "
        f"interpolated inside each real bar; order books are {src['books']}."
    )
    if src["ended"]:
        notice += " The recording has ended (replay.on_end: stop)."
    elif src["lap"]:
        notice += f" Looping: lap {src['lap'] + 1}, timestamps moved forward."
    return notice


def header_view(snap: dict) -> dict:
    """Texts of the header and footer from a market snapshot (pure)."""
    src = snap["source"]
    notice = _source_notice(snap)
    if snap["notice"]:
        notice = f"{snap['notice']}. {notice}"
    if snap["lag_ms"] > 5000:
        notice += f" The data trails the clock by {snap['lag_ms'] / 1000:.0f} market s."
    rejected = snap["rejected"]
    feed = f"feed: {snap['candles_accepted']:,} messages accepted, {sum(rejected.values()):,} rejected"
    if rejected:
        feed += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items())) + ")"
    if snap.get("feeds"):
        feed += " · " + feed_health_text(snap["feeds"])
    source_life = supervisor_text(snap.get("supervisor"))
    if source_life:
        feed = f"{source_life} · {feed}"
    restarting = (snap.get("supervisor") or {}).get("state") == "restarting"
    if restarting:
        notice += f" The market source stopped; {source_life.split(': ', 1)[-1]}."
    return {
        "source": src["source"].upper(),
        "recording": f"{src['recording']}: {src['description']}",
        "clock": format_market_time(snap["market_time_ms"]),
        "speed": f"×{snap['speed']:g}",
        "notice": notice,
        "notice_class": "tw-notice px-3 py-1" + (
            " tw-notice-warning" if snap.get("notice_level") == "warning" or restarting
            else ""),
        "feed": feed,
        "provenance": src["licence"],
    }


def price_view(price: dict) -> tuple[str, str, str]:
    if price["last"] is None:
        return "—", "", "symbol-change"
    change = price["change_pct"]
    text = "" if change is None else f"{change:+.2f}% today"
    cls = "symbol-change " + ("text-success" if (change or 0) >= 0 else "text-danger")
    return f"{price['last']:,.2f}", text, cls


def register_callbacks(app, market: MarketService, visible: int, training=None) -> None:
    """The page's callbacks: the header and prices, each symbol's charts, and (with live
    training) its control, cards and panel. ``training``: the live service, whose read model
    (``training.read``) is all the page reads of it."""
    register_market_callbacks(app, market)
    register_chart_callbacks(app, market, visible, training.read if training else None)
    if training is not None:
        register_training_callbacks(app, training, market.store.timeframes)
        register_challenger_callbacks(app, training)  # dashboard/challenger_view.py
        register_control_callbacks(app, training)  # dashboard/model_controls.py


def register_market_callbacks(app, market: MarketService) -> None:
    by_id = {symbol_id(s): s for s in market.store.symbols}

    @app.callback(
        Output("hdr-source", "children"),
        Output("hdr-recording", "children"),
        Output("hdr-clock", "children"),
        Output("hdr-speed", "children"),
        Output("hdr-notice", "children"),
        Output("hdr-notice", "className"),
        Output("ftr-feed", "children"),
        Output("ftr-provenance", "children"),
        Input("refresh", "n_intervals"),
    )
    def update_header(_n):
        view = header_view(market.snapshot())
        return (view["source"], view["recording"], view["clock"], view["speed"], view["notice"],
                view["notice_class"], view["feed"], view["provenance"])

    @app.callback(
        Output({"type": "price", "symbol": MATCH}, "children"),
        Output({"type": "change", "symbol": MATCH}, "children"),
        Output({"type": "change", "symbol": MATCH}, "className"),
        Input("refresh", "n_intervals"),
        State({"type": "price", "symbol": MATCH}, "id"),
    )
    def update_price(_n, component_id):
        return price_view(market.snapshot()["prices"][by_id[component_id["symbol"]]])


def register_chart_callbacks(app, market: MarketService, visible: int, read=None) -> None:
    """Candles and prediction overlays (from the read model ``read``, when training), and
    the consolidated depth chart."""
    store = market.store
    by_id = {symbol_id(s): s for s in store.symbols}

    @app.callback(
        Output({"type": "chart-graph", "symbol": MATCH}, "figure"),
        Output({"type": "chart-state", "symbol": MATCH}, "data"),
        Input("refresh", "n_intervals"),
        Input({"type": "chart-tf", "symbol": MATCH}, "value"),
        State({"type": "chart-state", "symbol": MATCH}, "data"),
        State({"type": "chart-graph", "symbol": MATCH}, "id"),
    )
    def update_chart(_n, tf, state_data, component_id):
        symbol = by_id[component_id["symbol"]]
        state = ChartState.from_dict(state_data)
        if ctx.triggered_id and isinstance(ctx.triggered_id, dict) and \
                ctx.triggered_id.get("type") == "chart-tf":
            state = None  # timeframe switched: a whole new figure
        recent = store.closed(symbol, tf, 2 * visible)
        try:
            overlays = read.overlays(symbol, tf) if read is not None else None
        except StoreUnavailable:  # the database is DOWN: the candles without predictions
            overlays = None
        figure, new_state = chart_update(symbol, tf, store.tf_ms[tf], state, recent,
                                         store.forming(symbol, tf), visible, overlays)
        return figure, new_state.to_dict()

    @app.callback(
        Output({"type": "depth-graph", "symbol": MATCH}, "figure"),
        Input("refresh", "n_intervals"),
        State({"type": "depth-graph", "symbol": MATCH}, "id"),
    )
    def update_depth(_n, component_id):
        cob = market.consolidated_book(by_id[component_id["symbol"]])
        return depth_figure(cob.to_dict() if cob is not None else None)


def register_training_callbacks(app, training, timeframes: tuple[str, ...]) -> None:
    @app.callback(
        Output("lt-state", "children"),
        Output("lt-state", "color"),
        Input("lt-start", "n_clicks"),
        Input("lt-stop", "n_clicks"),
        Input("refresh", "n_intervals"),
    )
    def control(_start, _stop, _n):
        # Every input that changed since the last call, not just the first: a click that
        # lands while the once-a-second refresh is in flight reaches the server in the same
        # request as the next tick, and ``triggered_id`` would name only one of them (the
        # click was lost: the browser test saw Start do nothing in some runs). Both at once
        # (two quick clicks in one request): stop, the safe one.
        changed = {t["prop_id"] for t in ctx.triggered}
        if "lt-stop.n_clicks" in changed:
            status = training.stop()
        elif "lt-start.n_clicks" in changed:
            status = training.start()
        else:
            status = training.read.status_json()
        return ("ACTIVE", "success") if status["active"] else ("INACTIVE", "secondary")

    @app.callback(
        Output("model-cards", "children"),
        Output("lt-stats", "children"),
        Output("lt-accuracy", "children"),
        Output("lt-predictions", "children"),
        Input("refresh", "n_intervals"),
    )
    def update_training(_n):
        status = training.read.status_json()
        if not status["models"]:
            return no_update, no_update, no_update, no_update
        roles = status.get("timeframes")
        cards = [dbc.Col(model_card(name, m, roles), lg=4, md=6)
                 for name, m in status["models"].items()]
        try:
            table = predictions_table(training.read.predictions(limit=12))
        except StoreUnavailable as exc:  # the database is DOWN: say so where the rows were
            table = html.Div(str(exc), className="text-danger small", id="predictions-down")
        return (cards, panel_stats(status),
                accuracy_table(status["models"], timeframes, roles), table)
