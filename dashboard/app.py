"""The Dash application factory. Building it starts nothing; app.py serves it."""

from __future__ import annotations

from pathlib import Path

import dash

from core.config import Config
from core.market.service import MarketService
from dashboard.callbacks import register_callbacks
from dashboard.layout import build_layout
from dashboard.rest import api_blueprint, install_json_errors, no_paths
from dashboard.security import Credentials, install_security

ASSETS = Path(__file__).resolve().parents[1] / "assets"

# Bootstrap's dark theme is switched on by an attribute on <html>.
INDEX = """<!DOCTYPE html>
<html data-bs-theme="dark" lang="en">
<head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}</head>
<body>{%app_entry%}<footer>{%config%}{%scripts%}{%renderer%}</footer></body>
</html>"""


def create_app(cfg: Config, market: MarketService, training=None,
               credentials: Credentials | None = None) -> dash.Dash:
    """The page, its callbacks and the REST API behind the Origin check (always) and a login
    (when ``credentials`` are given: app.py gives them from the environment)."""
    app = dash.Dash(
        __name__,
        title="Tickwise",
        assets_folder=str(ASSETS),
        serve_locally=True,  # every script from this server: the page works offline
        update_title=None,
        suppress_callback_exceptions=False,
    )
    app.index_string = INDEX
    app.layout = build_layout(cfg.market.symbols, cfg.market.timeframes, cfg.server.refresh_ms,
                              with_training=training is not None)
    register_callbacks(app, market, cfg.server.chart_candles, training)
    install_security(app.server, cfg.server, credentials or Credentials())  # before any route
    app.server.register_blueprint(api_blueprint(market, training, no_paths()))
    install_json_errors(app.server)
    return app
