"""A minimal stand-in for the Hugging Face Hub on 127.0.0.1, enough for ``hf_hub_download``.

It serves one file the way the Hub serves a large (LFS) file: a HEAD request answers with the
commit, the SHA-256 as ETag and the size, and GET sends the bytes. Tests use it to run the
project's real download code path without the internet.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@contextmanager
def serve_hub_file(repo_id: str, filename: str, data: bytes) -> Iterator[dict]:
    """Serve ``data`` as ``repo_id/filename``; yields {"endpoint": URL, "gets": count}."""
    sha256 = hashlib.sha256(data).hexdigest()
    state = {"gets": 0}
    path = f"/{repo_id}/resolve/main/{filename}"

    class Handler(BaseHTTPRequestHandler):
        def _headers(self) -> bool:
            if self.path.split("?")[0] != path:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return False
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{sha256}"')
            self.send_header("X-Linked-Etag", f'"{sha256}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return True

        def do_HEAD(self) -> None:
            self._headers()

        def do_GET(self) -> None:
            if self._headers():
                state["gets"] += 1
                self.wfile.write(data)

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        state["endpoint"] = f"http://127.0.0.1:{server.server_address[1]}"
        yield state
    finally:
        server.shutdown()
        server.server_close()
