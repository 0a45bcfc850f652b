"""Daemons of the demo as child processes: started with their own identity, logged to files, stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Daemon:
    """One ``mistnet <command>`` child; secrets travel in its environment, never on its command line."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)


def start_daemon(name: str, args: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Daemon:
    """Run ``python -m mistnet.cli <args>`` with ``env`` added to a clean copy of ours."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MISTNET_")}
    child_env.update(env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    with log_path.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "mistnet.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=child_env
        )
    return Daemon(name, process, log_path)
