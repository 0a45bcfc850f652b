"""Daemons as child processes: their CPU time while running, their peak RSS once they exit, their store.

Peak RSS is the child's ``VmHWM`` (high-water mark of its own address space), polled every 20 ms
until it exits. Not ``ru_maxrss`` from ``wait4``: a child started by vfork + exec records its
parent's peak there (the bench's own RSS), which would overstate a small daemon. CPU time comes from
``/proc/<pid>/task/*/schedstat`` (nanoseconds on CPU, live threads), else ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mistnet.bench.env import BenchEnv, child_env
from shared.amqp.management import ManagementClient, ManagementError
from shared.wire import names


class DaemonError(RuntimeError):
    """A daemon the bench started failed or did not get ready; the message ends with its log's tail."""


@dataclass
class Daemon:
    """``python -m mistnet.cli <args>`` with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    returncode: int | None = None
    peak_rss_bytes: int = 0

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def fail(self, what: str) -> DaemonError:
        return DaemonError(f"{self.name}: {what}; its log ({self.log_path}) ends:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU time of the process so far (user + system)."""
        pid = self.process.pid
        total, found = 0, False
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    total += int((task / "schedstat").read_text().split()[0])
                    found = True
                except (OSError, ValueError, IndexError):
                    continue
        except OSError:
            pass
        if found:
            return total / 1e9
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sample_peak_rss(self) -> None:
        """Read the child's ``VmHWM`` (its peak RSS so far) into ``peak_rss_bytes``."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_bytes = max(self.peak_rss_bytes, int(line.split()[1]) * 1024)
        except (OSError, ValueError, IndexError):
            pass  # gone (or a zombie) by now

    def wait(self, timeout_s: float) -> int:
        """Exit code, sampling the peak RSS meanwhile; killed (and an error raised) after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            self.sample_peak_rss()
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait(30)
                raise self.fail("timed out and was killed")
            time.sleep(0.02)
        self.returncode = self.process.returncode
        return self.returncode

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM (the daemons finish or requeue their work and exit 0), then wait."""
        if self.returncode is None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout_s) if self.returncode is None else self.returncode


def start(name: str, args: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Daemon:
    """Start ``mistnet <args>`` with exactly ``env`` (secrets travel there, never on the command line)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "mistnet.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=dict(env)
        )
    return Daemon(name, process, log_path)


def wait_consuming(daemon: Daemon, api: ManagementClient, vhost: str, queue: str, timeout_s: float = 120.0) -> None:
    """Until ``queue`` has a consumer (the daemon is ready to ingest); raises if the daemon dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            daemon.wait(5)
            raise daemon.fail(f"exited with {daemon.returncode} before consuming")
        try:
            if api.queue(vhost, queue).get("consumers", 0) >= 1:
                return
        except ManagementError:
            pass  # not declared yet
        time.sleep(0.2)
    daemon.stop()
    raise daemon.fail(f"did not start consuming {queue} within {timeout_s:.0f} s")


@dataclass(frozen=True)
class StoreCount:
    batches: int
    images: int
    last_stored_at: float


def store_count(store: Path) -> StoreCount:
    """What a cloud's feature store holds, read as an operator would (read-only, while the daemon runs)."""
    index = store / "index.sqlite"
    if not index.exists():
        return StoreCount(0, 0, 0.0)
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(images), 0), COALESCE(MAX(stored_at), 0) FROM batches"
        ).fetchone()
    except sqlite3.OperationalError:
        return StoreCount(0, 0, 0.0)  # the schema is not there yet
    finally:
        db.close()
    return StoreCount(int(row[0]), int(row[1]), float(row[2]))


def wait_stored(daemon: Daemon, store: Path, batches: int, timeout_s: float) -> StoreCount:
    """Until the store holds ``batches`` batches; raises if the daemon dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while (count := store_count(store)).batches < batches:
        if daemon.process.poll() is not None:
            daemon.wait(5)
            raise daemon.fail(f"exited with {daemon.returncode} with {count.batches}/{batches} batches stored")
        if time.monotonic() > deadline:
            raise daemon.fail(f"stored {count.batches}/{batches} batches in {timeout_s:.0f} s")
        time.sleep(0.02)
    return count


def start_cloud(env: BenchEnv, name: str, store: Path, **fields: object) -> Daemon:
    """``mistnet cloud`` as this run's cloud user, storing into ``store``; waits until it consumes features."""
    settings = env.cloud_fields(store=store, **fields)
    daemon = start(name, ["cloud"], child_env(settings), env.work / "logs")
    wait_consuming(daemon, env.services.management(), env.vhost, names.features_queue(env.job))
    return daemon
