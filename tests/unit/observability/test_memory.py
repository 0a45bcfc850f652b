"""Peak RSS is this program's own high-water mark, not one inherited from a big parent."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from shared.observability.memory import peak_rss_bytes


def test_covers_what_this_process_touched() -> None:
    block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, every page written
    assert peak_rss_bytes() >= block.nbytes


def test_a_child_does_not_inherit_the_parents_peak() -> None:
    block = np.ones(512 << 20, dtype=np.uint8)  # the parent's peak goes past 512 MiB
    code = "from shared.observability.memory import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child < 256 << 20 < block.nbytes
