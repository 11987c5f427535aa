"""A real server on a free loopback port, and stubs to call it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from crossgrad.server.config import Config
from crossgrad.server.main import RunningServer, serve
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc

TEST_CONFIG = Config(address="127.0.0.1:0", max_nodes=2_000, max_elements=100_000,
                     max_message_bytes=4 * 1024 * 1024, max_leaves=50, symbolic_workers=2,
                     threads=40)


@pytest.fixture(scope="module")
def running_server() -> Iterator[RunningServer]:
    server = serve(TEST_CONFIG)
    yield server
    server.stop(0)


@pytest.fixture(scope="module")
def channel(running_server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(running_server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.AutogradServiceStub:
    return pb_grpc.AutogradServiceStub(channel)
