"""The daemons' HTTP endpoint: Prometheus ``/metrics`` and ``/healthz`` for probes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

#: Probes and scrapers reach the daemon from outside its pod or host.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


class MetricsServer:
    """Serves ``registry`` on ``/metrics`` and ``healthy()`` on ``/healthz`` from a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        healthy: Callable[[], tuple[bool, str]],
        port: int,
        host: str = ALL_INTERFACES,
    ):
        registry_ = registry
        healthy_ = healthy

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, status, ctype = generate_latest(registry_), 200, CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    ok, detail = healthy_()
                    body, status, ctype = detail.encode(), (200 if ok else 503), "text/plain; charset=utf-8"
                else:
                    body, status, ctype = b"not found\n", 404, "text/plain; charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
