"""The web server: waitress in this one process (a thread pool, idle connections timed out, so
the scheduler runs once), or with ``--dev`` Dash's debug server (no reloader).

The port is bound first thing after the config loads (``bind``): a port in use is found
before any service is built or any thread started.
"""

from __future__ import annotations

import errno
import logging
import socket

import dash

from core.config import ServerConfig
from core.services import StartupError

log = logging.getLogger(__name__)
BACKLOG = 1024


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); StartupError naming the key
    when the port is taken or the address is not this machine's."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise StartupError(f"server.host {host!r}: not an address here ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart despite TIME_WAIT
        sock.bind(address)
        sock.listen(BACKLOG)  # listening now: no other process can take it in the meantime
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"server.port {port} on {host} is in use (another Tickwise?); "
                               "choose another with --port") from None
        raise StartupError(f"server.host {host} port {port}: cannot listen there "
                           f"({exc.strerror or exc})") from None
    return sock


def make_server(wsgi_app, sock: socket.socket, cfg: ServerConfig):
    """A waitress server on an already bound socket; ``run()`` serves until Ctrl+C/SIGTERM
    (it then returns), ``close()`` ends it from another thread."""
    from waitress import create_server

    return create_server(
        wsgi_app, sockets=[sock], threads=cfg.threads, connection_limit=cfg.connection_limit,
        channel_timeout=cfg.channel_timeout_s, asyncore_use_poll=True,  # no select() fd limit
        ident="tickwise", clear_untrusted_proxy_headers=True)


def serve(app: dash.Dash, sock: socket.socket, cfg: ServerConfig, dev: bool = False) -> None:
    """Serve until stopped. waitress returns from ``run`` on SystemExit/KeyboardInterrupt
    (SIGTERM, Ctrl+C), so the caller's ``finally`` stops the services."""
    if dev:
        host, port = sock.getsockname()[:2]
        sock.close()  # Dash's debug server binds by itself
        log.warning("--dev: Dash's development server (Werkzeug), one request thread each")
        app.run(host=host, port=port, debug=False, use_reloader=False)
        return
    server = make_server(app.server, sock, cfg)
    try:
        server.run()
    finally:
        server.close()


def stop(server) -> None:
    """End a waitress server's ``run`` from another thread (tests, benches): its workers
    finish, its sockets close."""
    server.task_dispatcher.shutdown()
    for channel in list(server._map.values()):
        channel.close()
