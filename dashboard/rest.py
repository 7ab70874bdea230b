"""REST endpoints on Dash's Flask server: one-liners over the services' snapshots."""

from __future__ import annotations

from flask import Blueprint, jsonify

from core.market.service import MarketService


def api_blueprint(market: MarketService) -> Blueprint:
    api = Blueprint("api", __name__, url_prefix="/api")

    @api.get("/market/status")
    def market_status():
        return jsonify(market.snapshot())

    @api.errorhandler(405)
    def method_not_allowed(_exc):
        return jsonify({"error": "method not allowed"}), 405

    return api
