"""An HTTP server on 127.0.0.1, in a thread, serving what a test gives it: the download
code's real path (requests, retries, mirrors) without the internet."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes``: path -> (body, declared Content-Length or None)."""

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, declared_length = route
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(declared_length or len(body)))
        self.end_headers()
        self.wfile.write(body)  # then the connection closes, short if declared_length lied

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


class LocalServer:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        server.routes = {}

    def serve(self, path: str, body: bytes, declared_length: int | None = None) -> str:
        self.server.routes[path] = (body, declared_length)
        return self.url(path)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"


@contextmanager
def serving() -> Iterator[LocalServer]:
    """A running ``LocalServer``, shut down afterwards."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield LocalServer(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
