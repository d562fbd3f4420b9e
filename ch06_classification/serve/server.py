"""Running the app: a listening socket, and uvicorn serving on it until Ctrl-C.

The socket is bound before the model is loaded, so that a port already taken is said at
once, as one line, and its address (with the port the system chose for ``--port 0``) is
known before the server starts.
"""

from __future__ import annotations

import socket

from gpt.errors import UserFacingError

BACKLOG = 128  # connections the system holds while the server is busy accepting
GRACE_SECONDS = 10  # what Ctrl-C leaves requests in progress to finish


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port`` (an IPv4 or IPv6 address, or a name)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise UserFacingError(f"--host {host}: not an address of this machine ({error})") from None
    sock = socket.socket(family, kind, proto)
    try:
        # A server stopped a moment ago leaves its port in TIME_WAIT: take it again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise UserFacingError(f"cannot listen on {host} port {port}: {reason}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a listening socket (an IPv6 address in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve_forever(app: object, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C (or SIGTERM): requests in progress are
    finished (for up to ``GRACE_SECONDS``), then the app is shut down."""
    import uvicorn  # imported when serving: the other commands never need it

    config = uvicorn.Config(
        app,
        log_level="warning",  # errors only; the command says what is served where
        access_log=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
        lifespan="on",
    )
    uvicorn.Server(config).run(sockets=[sock])
