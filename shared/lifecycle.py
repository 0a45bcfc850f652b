"""Stop signals for the daemons: the first SIGTERM or SIGINT asks for a clean stop; later ones cannot cut it short.

While a daemon serves, SIGTERM and SIGINT call its stop callback. Once it is shutting down (closing its
connections, flushing state, tearing down the event loop), a further SIGTERM from a supervisor that sends
it again, or from a parent that sends it to a daemon that is already exiting, is ignored: the daemon
still exits with its own status. SIGKILL, which systemd and Kubernetes send after their grace period,
still ends it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_signals(loop: asyncio.AbstractEventLoop, on_stop: Callable[[], None]) -> Callable[[], None]:
    """Route SIGTERM and SIGINT to ``on_stop``; returns the call that marks the start of the shutdown."""
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_stop)

    def shutting_down() -> None:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)  # SIGINT gets its default back (KeyboardInterrupt)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    return shutting_down
