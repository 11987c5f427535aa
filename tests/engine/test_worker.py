"""The symbolic worker process on its own."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_worker_whose_parent_is_gone_exits_quietly() -> None:
    # Its replies go to a pipe nobody reads any more: a server that stopped as it started.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        worker = subprocess.run([sys.executable, "-m", "crossgrad.engine.worker"],
                                stdin=subprocess.DEVNULL, stdout=write_end,
                                stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)
    assert (worker.returncode, worker.stderr) == (0, b"")
