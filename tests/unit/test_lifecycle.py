"""Stop signals: the first SIGTERM stops the daemon cleanly; once it is shutting down a late SIGTERM cannot kill it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from shared.lifecycle import install_stop_signals

    async def main() -> int:
        stop = asyncio.Event()
        shutting_down = install_stop_signals(asyncio.get_running_loop(), stop.set)
        os.kill(os.getpid(), signal.SIGTERM)  # the first SIGTERM: a clean stop
        await asyncio.wait_for(stop.wait(), 5)
        shutting_down()
        os.kill(os.getpid(), signal.SIGTERM)  # a late SIGTERM while closing
        await asyncio.sleep(0.2)
        return 0

    code = asyncio.run(main())
    os.kill(os.getpid(), signal.SIGTERM)  # even after the event loop is gone
    print("exited cleanly")
    sys.exit(code)
    """
)


def test_late_sigterm_does_not_kill_a_stopping_daemon() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "exited cleanly"), done.stderr


def test_without_it_a_late_sigterm_kills() -> None:
    # The failure the helper prevents: asyncio gives SIGTERM its default action back when a handler is removed.
    script = SCRIPT.replace(
        "shutting_down()",
        "[asyncio.get_running_loop().remove_signal_handler(s) for s in (signal.SIGTERM, signal.SIGINT)]",
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == -15
