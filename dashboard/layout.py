"""The page layout: header, source notice, one chart card per symbol. No data is read here."""

from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import dcc, html


def symbol_id(symbol: str) -> str:
    return symbol.replace("/", "-")


def chart_card(symbol: str, timeframes: tuple[str, ...], default_tf: str) -> dbc.Card:
    sid = symbol_id(symbol)
    selector = dbc.RadioItems(
        id={"type": "chart-tf", "symbol": sid},
        options=[{"label": tf, "value": tf} for tf in timeframes],
        value=default_tf,
        inline=True,
        className="btn-group btn-group-sm tf-selector",
        inputClassName="btn-check",
        labelClassName="btn btn-outline-info",
        labelCheckedClassName="active",
    )
    header = dbc.CardHeader(
        html.Div(
            [
                html.Span(symbol, className="symbol-name me-3"),
                html.Span("—", id={"type": "price", "symbol": sid}, className="symbol-price me-2"),
                html.Span("", id={"type": "change", "symbol": sid}, className="symbol-change me-auto"),
                selector,
            ],
            className="d-flex align-items-center",
        )
    )
    graph = dcc.Graph(
        id={"type": "chart-graph", "symbol": sid},
        config={"displaylogo": False, "scrollZoom": False, "responsive": True},
        className="candle-chart",
        style={"height": "430px"},
    )
    state = dcc.Store(id={"type": "chart-state", "symbol": sid}, data=None)
    depth = dcc.Graph(
        id={"type": "depth-graph", "symbol": sid},
        config={"displayModeBar": False, "responsive": True},
        className="depth-chart",
        style={"height": "430px"},
    )
    body = dbc.Row([dbc.Col([graph, state], width=8, className="pe-0"),
                    dbc.Col(depth, width=4, className="ps-0")], className="g-0")
    return dbc.Card([header, dbc.CardBody(body, className="p-1")],
                    className="mb-3 chart-card", id=f"card-{sid}")


def _control() -> html.Div:
    """Start/Stop of live training and its state."""
    return html.Div(
        [
            html.Span("live training", className="hdr-label me-2"),
            dbc.Badge("—", id="lt-state", color="secondary", className="me-2"),
            dbc.Button("Start", id="lt-start", color="success", size="sm", className="me-1",
                       n_clicks=0),
            dbc.Button("Stop", id="lt-stop", color="danger", size="sm", n_clicks=0),
        ],
        className="ms-4 d-flex align-items-center",
    )


def _navbar(with_training: bool) -> html.Header:
    return html.Header(
        [
            html.Div([html.Span("◆ ", className="brand-mark"), "Tickwise"], className="brand"),
            html.Span("", id="hdr-source", className="badge bg-info text-dark ms-3"),
            html.Span("", id="hdr-recording", className="hdr-recording ms-2"),
            *([_control()] if with_training else []),
            html.Div(
                [
                    html.Span("market time ", className="hdr-label"),
                    html.Span("—", id="hdr-clock", className="hdr-clock"),
                    html.Span("", id="hdr-speed", className="badge bg-secondary ms-2"),
                ],
                className="ms-auto",
            ),
        ],
        className="tw-header d-flex align-items-center px-3 py-2",
    )


def _training_panel() -> html.Div:
    """The model cards, filled by the callbacks, and the live-training panel."""
    return html.Div(
        [
            html.Div(id="challenger-message"),  # a Promote click's answer
            html.Div(id="control-message"),  # a card's pause/freeze/rollback answer
            dbc.Row(id="model-cards", className="g-3 mb-3"),
            dbc.Card(
                [
                    dbc.CardHeader("Live training"),
                    dbc.CardBody([
                        html.Div(id="lt-stats", className="lt-stats mb-2"),
                        html.Div(id="lt-accuracy", className="mb-2"),
                        html.Div("Recent predictions (predicted vs actual)",
                                 className="hdr-label mb-1"),
                        html.Div(id="lt-predictions", className="lt-predictions"),
                    ], className="p-2"),
                ],
                className="chart-card mb-3",
                id="lt-panel",
            ),
        ]
    )


def build_layout(symbols: tuple[str, ...], timeframes: tuple[str, ...], refresh_ms: int,
                 with_training: bool = True) -> html.Div:
    default_tf = timeframes[1] if len(timeframes) > 1 else timeframes[0]
    notice = html.Div("", id="hdr-notice", className="tw-notice px-3 py-1")
    cards = dbc.Row([dbc.Col(chart_card(s, timeframes, default_tf), xxl=6, xl=12) for s in symbols],
                    className="g-3")
    footer = html.Footer(
        [html.Span("", id="ftr-feed"), html.Span("", id="ftr-provenance", className="ms-3")],
        className="tw-footer px-3 py-2",
    )
    return html.Div(
        [
            _navbar(with_training),
            notice,
            dbc.Container([cards, _training_panel()] if with_training else [cards], fluid=True,
                          className="pt-3"),
            footer,
            dcc.Interval(id="refresh", interval=refresh_ms, n_intervals=0),
        ]
    )
