"""Who may use the server.

- Always (loopback included: any web page the user visits can post to 127.0.0.1): a
  state-changing request (POST, PUT, PATCH, DELETE: the REST start/stop and Dash's own callbacks)
  whose ``Origin`` is not this server's, nor in ``server.allowed_origins``, gets 403 with a JSON
  reason; so does one without an Origin whose ``Sec-Fetch-Site`` says another site sent it. The
  check is on the server, so a "simple" text/plain POST (no CORS preflight) is refused too.
- Bound to loopback, the ``Host`` must name loopback (or an allowed origin's host): a DNS
  rebinding page cannot reach the server under its own name.
- CORS headers only for the origins in ``server.allowed_origins``; none by default.
- Login: credentials come from the environment only (TICKWISE_USER and TICKWISE_PASSWORD for
  HTTP Basic, the browser's prompt; TICKWISE_TOKEN for ``Authorization: Bearer``), compared in
  constant time and never echoed. Bound to any address other than loopback, start-up refuses
  without them; with them, every request needs them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request

from core.config import ServerConfig
from core.services import StartupError

USER_ENV, PASSWORD_ENV, TOKEN_ENV = "TICKWISE_USER", "TICKWISE_PASSWORD", "TICKWISE_TOKEN"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SAME_SITE = ("same-origin", "none")  # Sec-Fetch-Site values that are not another site
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Credentials:
    """What a request must present; empty: no login. The secrets never appear in a repr."""

    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def basic(self) -> bool:
        return self.user is not None

    @property
    def configured(self) -> bool:
        return self.basic or self.token is not None

    def accepts(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token is not None:
            return _same(value, self.token)
        if scheme.lower() == "basic" and self.basic:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            # Both compared (no early exit on a wrong user): constant time either way.
            ok_user = _same(user, self.user or "")
            ok_password = _same(password, self.password or "")
            return bool(sep) and ok_user and ok_password
        return False


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials from the environment; StartupError (naming the variables, never a value)
    for half a pair or an empty value."""
    env = os.environ if environ is None else environ
    user, password, token = (env.get(k) for k in (USER_ENV, PASSWORD_ENV, TOKEN_ENV))
    if (user is None) != (password is None):
        raise StartupError(f"{USER_ENV} and {PASSWORD_ENV} go together: set both or neither")
    for name, value in ((USER_ENV, user), (PASSWORD_ENV, password), (TOKEN_ENV, token)):
        if value is not None and not value.strip():
            raise StartupError(f"{name} is set but empty")
    if user is not None and ":" in user:
        raise StartupError(f"{USER_ENV} may not contain ':' (HTTP Basic separates on it)")
    return Credentials(user, password, token)


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_origins(origins: tuple[str, ...] | None) -> tuple[str, ...]:
    """server.allowed_origins, normalised (lower case, no trailing slash); StartupError for one
    that is not scheme://host[:port]."""
    out = []
    for origin in origins or ():
        parts = urlsplit(origin.strip().rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path \
                or parts.query or parts.fragment:
            raise StartupError(f"server.allowed_origins: {origin!r} is not an origin; write "
                               "scheme://host[:port], e.g. https://example.org:8443")
        out.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(out)


def check_exposure(server: ServerConfig, creds: Credentials) -> None:
    """Start-up refuses to serve a non-loopback address without credentials."""
    check_origins(server.allowed_origins)
    if not is_loopback(server.host) and not creds.configured:
        raise StartupError(
            f"server.host {server.host} is reachable from other machines: set {USER_ENV} and "
            f"{PASSWORD_ENV} and/or {TOKEN_ENV} in the environment to serve it with a login, "
            "or bind 127.0.0.1")


def exposure_lines(server: ServerConfig, port: int, creds: Credentials,
                   endpoints: list[str]) -> list[str]:
    """What start-up says is exposed: where, which endpoints, whether a login is needed."""
    where = "this machine only" if is_loopback(server.host) else "OTHER MACHINES TOO"
    if creds.configured:
        ways = [w for w, on in (("HTTP Basic", creds.basic), ("bearer token", creds.token))
                if on]
        auth = f"login required ({' or '.join(ways)})"
    else:
        auth = "no login (loopback)"
    origins = ", ".join(server.allowed_origins or ()) or "none (same origin only; CORS off)"
    return [f"serving http://{server.host}:{port}/ to {where}; {auth}",
            f"exposed: the page, Dash callbacks, {', '.join(endpoints)}",
            f"state changes accepted from other origins: {origins}"]


def _refuse(status: int, reason: str) -> Response:
    response = jsonify({"error": reason})
    response.status_code = status
    return response


def origin_refusal(allowed: tuple[str, ...]) -> str | None:
    """Why this (state-changing) request is refused as coming from another site; None: not."""
    if request.method not in STATE_CHANGING:
        return None
    own = f"{request.scheme}://{request.host}".lower()
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin.lower().rstrip("/") in (own, *allowed):
            return None
        return (f"Origin {origin!r} may not change state here: only this server's own page "
                f"({own}) or server.allowed_origins")
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in SAME_SITE:
        return f"a {site} request without an Origin may not change state here"
    return None


def host_refusal(allowed: tuple[str, ...]) -> str | None:
    """On loopback: a Host that is not loopback (DNS rebinding) is refused."""
    host = urlsplit(f"//{request.host}").hostname or ""
    if is_loopback(host) or host in {urlsplit(o).hostname for o in allowed}:
        return None
    return (f"Host {request.host!r} is not this machine: the server is bound to loopback; "
            "add the origin to server.allowed_origins to reach it under another name")


def install_security(server: Flask, cfg: ServerConfig, creds: Credentials) -> None:
    """Every request goes through the login (when configured), the Host check (loopback) and
    the Origin check (state changes), in that order, before any route; listed origins get
    CORS headers."""
    allowed = check_origins(cfg.allowed_origins)
    loopback = is_loopback(cfg.host)
    challenge = 'Basic realm="Tickwise", charset="UTF-8"' if creds.basic else "Bearer"

    @server.before_request
    def guard():
        if creds.configured and request.method != "OPTIONS" \
                and not creds.accepts(request.headers.get("Authorization")):
            response = _refuse(401, "login required: HTTP Basic or 'Authorization: Bearer "
                                    "<token>' (credentials set in the environment)")
            response.headers["WWW-Authenticate"] = challenge
            return response
        reason = (host_refusal(allowed) if loopback else None) or origin_refusal(allowed)
        return _refuse(403, reason) if reason else None

    @server.after_request
    def cors(response: Response) -> Response:
        origin = (request.headers.get("Origin") or "").lower().rstrip("/")
        if origin and origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.vary.add("Origin")
        return response
