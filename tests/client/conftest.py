"""A real server on a free loopback port for the SDK's and the command line's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from crossgrad.server.config import Config
from crossgrad.server.main import RunningServer, serve

ROOT = Path(__file__).resolve().parent.parent.parent
# A small leaf limit: a program that leaked leaves on the server would reach it.
CONFIG = Config(address="127.0.0.1:0", max_leaves=50, symbolic_workers=1, threads=8)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = serve(CONFIG)
    yield running
    running.stop(0)
