"""One loopback HTTPS server for tests that stand in for a remote service (PCS, MAA, a JWKS endpoint)."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from ppml._tls import issue_server_certificate


@contextmanager
def https_server(handler: type[http.server.BaseHTTPRequestHandler], directory: Path,
                 ) -> Iterator[tuple[str, Path]]:
    """Serve ``handler`` on 127.0.0.1 over TLS under a fresh CA; yield ``(base URL, CA file)``."""
    ca_file, certificate, private_key = issue_server_certificate(
        directory, ("127.0.0.1", "localhost"), ca_name="ppml test CA", lifetime=timedelta(hours=1))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, private_key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", ca_file
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
