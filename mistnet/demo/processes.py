"""Daemons of the demo as child processes: started with their own identity, logged to files, stopped cleanly.

Each child is reaped with ``wait4`` so that its CPU time is known exactly when it exits (the comparison
report needs it for the edges). Its peak memory is the kernel's high-water mark (``VmHWM``) of the child's
own program, sampled while it runs: ``ru_maxrss`` would not do, because Linux carries the parent's
high-water mark over a fork and exec into the child's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Usage:
    """What a child used: CPU seconds (user + system), peak resident memory, wall seconds."""

    cpu_seconds: float = 0.0
    peak_rss_bytes: int = 0
    wall_seconds: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "cpu_seconds": round(self.cpu_seconds, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "wall_seconds": round(self.wall_seconds, 3),
        }


@dataclass
class Daemon:
    """One ``mistnet <command>`` child; secrets travel in its environment, never on its command line."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: Sequence[str] = ()
    started: float = field(default_factory=time.monotonic)
    usage: Usage | None = None
    peak_rss_bytes: int = 0

    def watch_memory(self, every_s: float = 0.2) -> None:
        """Sample the child's ``VmHWM`` until it exits (from a thread: see :func:`start_daemon`)."""
        while self.process.returncode is None:
            hwm = _high_water_mark(self.process.pid, self.argv)
            if hwm is not None:
                self.peak_rss_bytes = max(self.peak_rss_bytes, hwm)
            time.sleep(every_s)

    @property
    def returncode(self) -> int | None:
        """The exit code once the child ended (reaping it and recording its usage), else None."""
        if self.process.returncode is None:
            pid, status, rusage = os.wait4(self.process.pid, os.WNOHANG)
            if pid == 0:
                return None
            self.process.returncode = os.waitstatus_to_exitcode(status)
            self.usage = Usage(rusage.ru_utime + rusage.ru_stime, self.peak_rss_bytes, time.monotonic() - self.started)
        return self.process.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait(self, timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while (code := self.returncode) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return code

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code."""
        if self.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            if self.wait(timeout_s) is None:
                self.process.kill()
                self.wait(10)
        return int(self.process.returncode if self.process.returncode is not None else -9)


def start_daemon(name: str, args: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Daemon:
    """Run ``python -m mistnet.cli <args>`` with ``env`` added to a clean copy of ours."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MISTNET_")}
    child_env.update(env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    argv = [sys.executable, "-m", "mistnet.cli", *args]
    with log_path.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env)  # noqa: S603
    daemon = Daemon(name, process, log_path, argv)
    threading.Thread(target=daemon.watch_memory, name=f"rss-{name}", daemon=True).start()
    return daemon


def _high_water_mark(pid: int, argv: Sequence[str]) -> int | None:
    """``VmHWM`` in bytes once ``pid`` runs ``argv`` (before its exec it is still a copy of us); None if gone."""
    try:
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1] != [os.fsencode(a) for a in argv]:
            return None
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None
