"""This process's peak resident memory."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_bytes() -> int:
    """The high-water mark of this program's resident memory (``VmHWM``).

    Not ``ru_maxrss`` where ``/proc`` exists: Linux carries a parent's high-water mark over fork and exec
    into the child's ``ru_maxrss``, so a daemon started by a large parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
