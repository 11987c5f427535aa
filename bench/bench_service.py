"""Benchmark (not a test): crossgrad's gRPC service against a bare grpcio echo service, the
physical limit of Python gRPC on this machine, measured side by side in one run.

    python bench/bench_service.py [--quick] [--sections abc] [--in-process] [--pin]
        [--server-cmd "crossgrad-server"]
    python bench/bench_service.py --echo-server   # the anchor alone (the benchmark starts it)

``--quick`` is a ~20 s run; the full run takes ~2-3 minutes on 2 cores. ``--sections`` picks
sections; ``--server-cmd`` replaces the command that starts crossgrad's server (it gets
``--address 127.0.0.1:0`` appended and must print ``... listening on HOST:PORT`` first).

The anchor: a grpcio server with one generic unary handler that returns its request bytes
(identity serializers: no protobuf on either side), built with crossgrad's server options (the
message size limits from ``crossgrad.server.config.Config``, ``grpc.so_reuseport`` off, as
``crossgrad.server.main.serve`` sets them) and its thread pool size (``Config.threads``).

Where things run: by default both servers are subprocesses (``crossgrad-server --address
127.0.0.1:0`` and this script with ``--echo-server``; each prints its port on its first line) and
this process is the client alone. In one process, the client's threads and the server's would
take turns on one GIL, and the server would be charged for the client's Python work and the
other way round; separate processes give each side its own interpreter, as in a deployment.
``--in-process`` runs both servers in this process instead (``serve(Config(...))``), to see
what the GIL costs. The machine has few cores: client and server still share them, so the
throughput tables give the CPU each side used. ``--pin`` keeps them apart: both servers on the
last CPU, the client on the others, so neither side's threads migrate onto the other's core and
its caches (the anchor then gets much faster, and so does crossgrad).

Sections (each prints one Markdown table; ratios are crossgrad / echo):

(a) sequential latency: p50 and p99 of single calls on one channel, one session, of the echo
    (its payload is example 3's BackwardRequest, the largest of the four) and of ``Backward`` of
    each seed-notebook example (1: y = x**2 at 5; 2: sin(x**2) at 4; 3: the logistic neuron's
    clamped binary cross-entropy, w = 1, b = 0 leaves, x = 6.7 and y = 0 constants; 4: mean(x**2)
    at [1, 3, 4]), sent as graphs of nodes, the session's check mode STRICT (the default), after
    one warm-up call that derives and caches the closed form; plus example 2 with the check off
    (what the check costs) and a GetLeaf of a scalar (the service's floor: no engine work).
    Calls are interleaved in chunks, in a rotating order. Beside them, the same calls made on
    crossgrad's servicer directly in this process (no gRPC): the server's own work, so the part
    of the latency that is gRPC and protobuf shows, and the same calls each after 0.5 ms asleep
    (what that work costs with cold CPU caches, as a server runs it between one client's
    calls). Target: p50 <= 1.5x the echo's.
(b) throughput: calls/s with 1, 4 and 16 client threads, each thread with its own channel (its
    own HTTP/2 connection: ``grpc.use_local_subchannel_pool``, else grpcio would share one
    connection among identical channels), each thread with its own session (sessions serialize
    Backward on a per-session lock) and, at 16 threads, all on one shared session. Bursts of a
    fixed duration, interleaved, median over rounds. Target: >= 50% of the echo's at 16 clients
    (separate sessions).
(c) a 1 MiB tensor: ``PutLeaf`` (1 MiB up) + ``GetLeaf`` (1 MiB down) of a 262,144-element
    float32 leaf against one echo of 1 MiB (up and down), and in-process protobuf costs of the
    same tensor (building, serializing and parsing a ``pb.Tensor``), so the overhead past the
    wire shows.

Every answer is checked before timing: the four examples' gradients against hand-derived ones
and the check's CHECK_STATUS_AGREE, the 1 MiB leaf read back bit for bit.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.metadata
import os
import platform
import queue
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import (  # the helper module next to this script
    Stats,
    Target,
    fmt_ratio,
    fmt_spread,
    fmt_us,
    markdown_table,
    measure,
)

ECHO_METHOD = "/crossgrad.bench.Echo/Echo"
LATENCY_TARGET = 1.5  # crossgrad p50 / echo p50, at most
THROUGHPUT_TARGET = 0.5  # crossgrad calls/s / echo calls/s at 16 clients, at least
CLIENTS = (1, 4, 16)
EPS = 1e-8  # the clamp of the binary cross-entropy: [EPS, 1 - EPS]
MIB_ELEMENTS = 262_144  # float32 elements in 1 MiB
CALL_TIMEOUT = 60.0  # seconds, every RPC (the first Backward derives the closed form)
START_TIMEOUT = 120.0  # seconds for a server subprocess to print its port
LEAF_LABEL = "GetLeaf of a 0-d leaf (no engine work)"
IDLE = 0.0005  # seconds asleep before each 'after idle' servicer call, about one round trip


@dataclass(frozen=True)
class Plan:
    """How long to spend on each section."""

    quick: bool
    latency_calls: int  # per case
    chunk: int  # calls per case per interleaved chunk
    burst: float  # seconds per throughput burst
    rounds: int  # throughput rounds
    tensor_budget: float  # seconds, section (c)
    servicer_budget: float  # seconds, the servicer called directly in (a)


FULL = Plan(quick=False, latency_calls=2000, chunk=50, burst=1.5, rounds=3, tensor_budget=12.0,
            servicer_budget=6.0)
QUICK = Plan(quick=True, latency_calls=300, chunk=25, burst=0.4, rounds=1, tensor_budget=2.0,
             servicer_budget=1.0)


# --- server settings, shared by crossgrad's server and the echo -------------------------------

@dataclass(frozen=True)
class ServerSettings:
    threads: int
    max_message_bytes: int

    @classmethod
    def of_crossgrad(cls) -> ServerSettings:
        """crossgrad's server defaults (what ``crossgrad-server`` runs with, no flags given)."""
        from crossgrad.server.config import Config

        config = Config()
        return cls(threads=config.threads, max_message_bytes=config.max_message_bytes)

    def options(self) -> list[tuple[str, int]]:
        """The channel arguments crossgrad.server.main.serve gives its server (and the echo)."""
        return [("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 0)]


def _echo(request: bytes, context: Any) -> bytes:
    return request


def start_echo_server(settings: ServerSettings, address: str = "127.0.0.1:0") -> tuple[Any, str]:
    """A grpcio server whose one method returns its request's bytes; (server, "host:port")."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.threads),
                         options=settings.options())
    # No serializers: the handler gets and returns the raw message bytes.
    handler = grpc.method_handlers_generic_handler(
        "crossgrad.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    server.start()
    host = address.rsplit(":", 1)[0]
    return server, f"{host}:{port}"


def echo_server_main(address: str) -> None:
    """``--echo-server``: serve the echo until SIGTERM or SIGINT, its address on the first line."""
    server, bound = start_echo_server(ServerSettings.of_crossgrad(), address)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"echo-server listening on {bound}", flush=True)
    done.wait()
    server.stop(1.0).wait()


# --- servers as subprocesses or in this process ---------------------------------------------------

@dataclass
class Server:
    """A running server: its address and, for a subprocess, its pid (to read its CPU time)."""

    name: str
    address: str
    pid: int | None
    stop: Callable[[], None]


def crossgrad_server_command() -> list[str]:
    """``crossgrad-server`` from this interpreter's environment, else from PATH, else the same
    entry point as ``python -m crossgrad.server`` (an editable install made before the console
    script existed has no ``crossgrad-server`` until it is reinstalled)."""
    beside = Path(sys.executable).with_name("crossgrad-server")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("crossgrad-server")
    if found is not None:
        return [found]
    return [sys.executable, "-m", "crossgrad.server"]


def start_subprocess(name: str, command: Sequence[str]) -> Server:
    """Start ``command``, read ``... listening on HOST:PORT`` from its first line of stdout."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Its stderr, shown if it fails to start; closed when the server is stopped.
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=log, text=True,
                               env=env, start_new_session=True)
    assert process.stdout is not None
    stdout = process.stdout
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:  # keep reading, so a chatty server never blocks on a full pipe
        for line in stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=drain, daemon=True, name=f"{name}-stdout").start()

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def fail(why: str) -> SystemExit:
        stop()
        log.seek(0)
        tail = log.read()[-3000:]
        return SystemExit(f"{name} ({shlex.join(command)}): {why}"
                          + (f"\nits stderr:\n{tail}" if tail else ""))

    try:
        first = lines.get(timeout=START_TIMEOUT)
    except queue.Empty:
        raise fail(f"no address printed within {START_TIMEOUT:.0f} s") from None
    match = re.search(r"listening on (\S+)\s*$", first)
    if match is None:
        raise fail(f"unexpected first line {first!r}")

    def stop_and_close() -> None:
        stop()
        log.close()

    return Server(name, match.group(1), process.pid, stop_and_close)


def start_servers(in_process: bool, server_cmd: Sequence[str] | None,
                  settings: ServerSettings, pin: bool = False) -> tuple[Server, Server]:
    """(crossgrad's server, the echo server); ``pin``: both on the last CPU, this process (the
    client) on the others."""
    if pin:
        if in_process or not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
            raise SystemExit("--pin needs subprocess servers and two CPUs or more")
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[-1:])  # the servers inherit the affinity they start with
        try:
            return start_servers(in_process, server_cmd, settings)
        finally:
            for thread in threading.enumerate():  # this one, and the output readers it started
                if thread.native_id is not None:
                    os.sched_setaffinity(thread.native_id, cpus[:-1])
    if in_process:
        from crossgrad.server.main import Config, serve

        running = serve(Config(address="127.0.0.1:0"))
        echo, echo_address = start_echo_server(settings)
        return (Server("crossgrad", running.address, None, lambda: running.stop(1.0)),
                Server("echo", echo_address, None, lambda: echo.stop(1.0).wait()))
    command = list(server_cmd) if server_cmd else crossgrad_server_command()
    crossgrad = start_subprocess("crossgrad", [*command, "--address", "127.0.0.1:0"])
    try:
        echo_server = start_subprocess("echo", [sys.executable, os.path.abspath(__file__),
                                                "--echo-server"])
    except BaseException:
        crossgrad.stop()
        raise
    return crossgrad, echo_server


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its live descendants (the server's
    derivation workers), from /proc; 0 off Linux."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(c) for c in children.read().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- requests -----------------------------------------------------------------------------------

def f32(value: Any) -> pb.Tensor:
    """A float32 tensor as the wire carries it: shape, dtype, raw little-endian bytes."""
    array = np.asarray(value, dtype="<f4")
    return pb.Tensor(shape=array.shape, dtype=pb.DTYPE_FLOAT32, data=array.tobytes())


def int_constant(value: int) -> pb.Tensor:
    """A Python int in a graph (the 2 of ``x ** 2``, the 1 of ``1 - y``): a 0-d INT64."""
    return pb.Tensor(shape=(), dtype=pb.DTYPE_INT64, data=np.asarray(value, "<i8").tobytes())


def leaf(node_id: str, name: str) -> pb.Node:
    return pb.Node(id=node_id, leaf=name)


def constant(node_id: str, value: pb.Tensor) -> pb.Node:
    return pb.Node(id=node_id, constant=value)


def op(node_id: str, name: str, *inputs: str, **attrs: float) -> pb.Node:
    return pb.Node(id=node_id, op=pb.Operation(
        op=name, inputs=inputs, attrs={k: pb.AttrValue(number=v) for k, v in attrs.items()}))


@dataclass(frozen=True)
class Example:
    """A seed-notebook example: its leaves (name -> float32 value), graph and expected grads."""

    label: str
    leaves: Mapping[str, Any]
    graph: pb.Graph
    grads: Mapping[str, Any]  # float64 references

    def request(self, session_id: str, check_mode: pb.CheckMode = pb.CHECK_MODE_UNSPECIFIED,
                ) -> pb.BackwardRequest:
        return pb.BackwardRequest(session_id=session_id, graph=self.graph, check_mode=check_mode)


def _sigmoid(z: float) -> float:
    return float(1 / (1 + np.exp(-z)))


def examples() -> list[Example]:
    # 3: loss = -(y*log(c) + (1-y)*log(1-c)), c = clamp(sigmoid(w*x + b), EPS, 1-EPS)
    p = _sigmoid(float(np.float32(6.7)))
    g_z = (1 - 0.0) / (1 - p) * p * (1 - p)  # d loss / dz at y = 0, inside the clamp
    logistic = pb.Graph(nodes=[
        leaf("w", "w"), leaf("b", "b"),
        constant("x", f32(6.7)), constant("y", f32(0.0)), constant("one", int_constant(1)),
        op("wx", "mul", "w", "x"), op("z", "add", "wx", "b"), op("p", "sigmoid", "z"),
        op("c", "clamp", "p", min=EPS, max=1 - EPS),
        op("log_c", "log", "c"), op("y_log_c", "mul", "y", "log_c"),
        op("one_minus_y", "sub", "one", "y"), op("one_minus_c", "sub", "one", "c"),
        op("log_1mc", "log", "one_minus_c"), op("rest", "mul", "one_minus_y", "log_1mc"),
        op("sum", "add", "y_log_c", "rest"), op("loss", "neg", "sum"),
    ], output="loss")
    return [
        Example("1. y = x**2, x = 5", {"x1": 5.0}, pb.Graph(nodes=[
            leaf("x", "x1"), constant("two", int_constant(2)), op("y", "pow", "x", "two"),
        ], output="y"), {"x1": 10.0}),
        Example("2. z = sin(x**2), x = 4", {"x2": 4.0}, pb.Graph(nodes=[
            leaf("x", "x2"), constant("two", int_constant(2)), op("y", "pow", "x", "two"),
            op("z", "sin", "y"),
        ], output="z"), {"x2": 8 * np.cos(16.0)}),
        Example("3. logistic BCE, w = 1, b = 0", {"w": 1.0, "b": 0.0}, logistic,
                {"w": g_z * 6.7, "b": g_z}),
        Example("4. y = mean(x**2), x = [1,3,4]", {"x4": [1.0, 3.0, 4.0]}, pb.Graph(nodes=[
            leaf("x", "x4"), constant("two", int_constant(2)), op("sq", "pow", "x", "two"),
            op("y", "mean", "sq"),
        ], output="y"), {"x4": [2 / 3, 2.0, 8 / 3]}),
    ]


def decode(tensor: pb.Tensor) -> np.ndarray:
    kinds = {pb.DTYPE_FLOAT32: "<f4", pb.DTYPE_FLOAT64: "<f8"}
    return np.frombuffer(tensor.data, dtype=kinds[tensor.dtype]).reshape(tuple(tensor.shape))


# --- clients ------------------------------------------------------------------------------------

def channel(address: str, settings: ServerSettings) -> grpc.Channel:
    """A channel with its own connection (grpcio shares one among identical channels unless told
    otherwise) and the server's message size limits."""
    options: list[tuple[str, int]] = [*settings.options(), ("grpc.use_local_subchannel_pool", 1)]
    ch = grpc.insecure_channel(address, options=options)
    grpc.channel_ready_future(ch).result(timeout=30)
    return ch


class Client:
    """A channel to each server, a stub, an echo callable and a session holding every example's
    leaves (each example's first Backward done, so the closed form is cached)."""

    def __init__(self, crossgrad: str, echo: str | None, settings: ServerSettings,
                 cases: Sequence[Example], session_id: str | None = None) -> None:
        self.channels = [channel(crossgrad, settings)]
        self.stub = pb_grpc.AutogradServiceStub(self.channels[0])
        if echo is not None:
            self.channels.append(channel(echo, settings))
            self.echo = self.channels[1].unary_unary(ECHO_METHOD)  # bytes in, bytes out
        if session_id is None:
            session_id = self.stub.CreateSession(pb.CreateSessionRequest(),
                                                 timeout=CALL_TIMEOUT).session.id
            for example in cases:
                for name, value in example.leaves.items():
                    self.stub.PutLeaf(pb.PutLeafRequest(session_id=session_id, name=name,
                                                        value=f32(value), requires_grad=True),
                                      timeout=CALL_TIMEOUT)
            for example in cases:  # warm: the first call of a structure derives its closed form
                self.stub.Backward(example.request(session_id), timeout=CALL_TIMEOUT)
        self.session_id = session_id

    def close(self) -> None:
        for ch in self.channels:
            ch.close()


def _shorten(text: str, width: int = 90) -> str:
    return text if len(text) <= width else f"{text[:width]}… ({len(text):,} characters)"


def verify(server: str, settings: ServerSettings, cases: Sequence[Example]) -> list[str]:
    """Each example's first Backward in a fresh session: gradients and check; notes to print."""
    client = Client(server, None, settings, [])
    notes = []
    try:
        session = client.stub.CreateSession(pb.CreateSessionRequest(), timeout=CALL_TIMEOUT)
        sid = session.session.id
        for example in cases:
            for name, value in example.leaves.items():
                client.stub.PutLeaf(pb.PutLeafRequest(session_id=sid, name=name, value=f32(value),
                                                      requires_grad=True), timeout=CALL_TIMEOUT)
            started = time.perf_counter()
            answer = client.stub.Backward(example.request(sid), timeout=CALL_TIMEOUT)
            first = time.perf_counter() - started
            if answer.check.status != pb.CHECK_STATUS_AGREE:
                status = pb.CheckStatus.Name(answer.check.status)
                raise SystemExit(f"{example.label}: check {status} ({answer.check.reason})")
            got = {g.name: decode(g.grad) for g in answer.leaves}
            for name, expected in example.grads.items():
                np.testing.assert_allclose(got[name], np.asarray(expected), rtol=1e-5, atol=1e-6,
                                           err_msg=example.label)
            forms = ", ".join(f"d/d{g.name} = {_shorten(g.closed_form)}" for g in answer.leaves)
            notes.append(f"{example.label}: first call {first * 1e3:.0f} ms; {forms}")
        client.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=CALL_TIMEOUT)
    finally:
        client.close()
    return notes


class _Context:
    """A call as the servicer sees it (``crossgrad.server.call.Call``), without gRPC: always
    active, no deadline."""

    def time_remaining(self) -> float | None:
        return None

    def is_active(self) -> bool:
        return True

    def peer(self) -> str:
        return "ipv4:127.0.0.1:0"


@contextmanager
def servicer_calls(cases: Sequence[Example],
                   ) -> Iterator[tuple[dict[str, Callable[[], object]], str]]:
    """Each example's Backward (and a GetLeaf) as direct calls of crossgrad's servicer in this
    process, built as ``serve`` builds it, with no gRPC: the server's own work per call. Yields
    the calls by case label (none if the servicer cannot be built here) and a note."""
    closing: list[Callable[[], None]] = []
    try:
        from crossgrad.engine.solver import Symbolic
        from crossgrad.server.config import Config
        from crossgrad.server.memory_store import MemoryStore
        from crossgrad.server.servicer import Servicer
        from crossgrad.server.sessions import StoreConfig

        config = Config()
        store = MemoryStore(StoreConfig(max_sessions=config.max_sessions,
                                        default_idle_ttl=config.session_ttl,
                                        max_idle_ttl=max(config.session_ttl, 86_400.0)))
        closing.append(store.close)
        symbolic = Symbolic(config.caps)
        closing.append(symbolic.close)
        servicer: Any = Servicer(config, store, symbolic)
        context = _Context()
        sid = servicer.CreateSession(pb.CreateSessionRequest(), context).session.id
        calls: dict[str, Callable[[], object]] = {}
        for example in cases:
            for name, value in example.leaves.items():
                servicer.PutLeaf(pb.PutLeafRequest(session_id=sid, name=name, value=f32(value),
                                                   requires_grad=True), context)
            request = example.request(sid)
            servicer.Backward(request, context)  # derive the closed form
            calls[example.label] = functools.partial(servicer.Backward, request, context)
        off = cases[1].request(sid, pb.CHECK_MODE_OFF)
        calls[f"{cases[1].label}, check OFF"] = functools.partial(servicer.Backward, off, context)
        get_leaf = pb.GetLeafRequest(session_id=sid, name="x2")
        calls[LEAF_LABEL] = functools.partial(servicer.GetLeaf, get_leaf, context)
    except (ImportError, TypeError, AttributeError, RuntimeError) as error:
        calls, note = {}, f"crossgrad's servicer could not be built in this process ({error!r})"
    else:
        note = ("'servicer µs': the same calls made on crossgrad's Servicer directly, in this "
                "process (no gRPC, no protobuf bytes), median over interleaved rounds: the "
                "server's own work per call, measured in isolation (inside a serving process, "
                "with gRPC's threads and the client busy on the other CPUs, the same work takes "
                "longer), so 'p50 − servicer', what gRPC, protobuf and the client add, is an "
                "upper bound, to compare with the echo's p50. 'after idle µs': the same direct "
                f"calls, each after sleeping {IDLE * 1e3:g} ms (about one round trip), median: "
                "the same work with cold CPU caches, as a server runs it between one client's "
                "calls.")
    try:
        yield calls, note
    finally:
        for close in reversed(closing):
            close()


# --- (a) sequential latency ---------------------------------------------------------------------

@dataclass(frozen=True)
class Latency:
    p50: float
    p99: float
    mean: float
    calls: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        ordered = sorted(samples)
        return cls(statistics.median(ordered), ordered[min(len(ordered) - 1,
                                                           round(0.99 * (len(ordered) - 1)))],
                   statistics.fmean(ordered), len(ordered))


def measure_latency(cases: Mapping[str, Callable[[], object]], calls: int, chunk: int,
                    ) -> dict[str, Latency]:
    """Per-call latency of each case: ``calls`` calls, in chunks of ``chunk`` that interleave the
    cases in a rotating order (a burst of noise then hits every case alike)."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: connections, caches
        for _ in range(min(chunk, 20)):
            cases[name]()
    clock = time.perf_counter
    for r in range(-(-calls // chunk)):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            case, out = cases[name], samples[name]
            for _ in range(min(chunk, calls - r * chunk)):
                start = clock()
                case()
                out.append(clock() - start)
    return {name: Latency.of(samples[name]) for name in names}


def median_after_idle(cases: Mapping[str, Callable[[], object]], calls: int,
                      idle: float = IDLE) -> dict[str, float]:
    """Median seconds per call of each case when every call follows ``idle`` seconds asleep, as
    a server's handler runs between one client's calls: its code and data no longer in the CPU's
    caches. Interleaved case by case."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    clock = time.perf_counter
    for _ in range(calls):
        for name, case in cases.items():
            time.sleep(idle)
            start = clock()
            case()
            samples[name].append(clock() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def section_a(plan: Plan, client: Client, cases: Sequence[Example]) -> list[Target]:
    print("\n### (a) Sequential latency: one client thread, one channel, one session\n")
    echo_payload = cases[2].request(client.session_id).SerializeToString()
    stub, sid = client.stub, client.session_id
    calls: dict[str, Callable[[], object]] = {"echo": lambda: client.echo(echo_payload,
                                                                          timeout=CALL_TIMEOUT)}
    sizes = {"echo": (len(echo_payload), len(echo_payload))}
    def backward(request: pb.BackwardRequest) -> Callable[[], object]:
        return lambda: stub.Backward(request, timeout=CALL_TIMEOUT)

    for example in cases:
        request = example.request(sid)
        calls[example.label] = backward(request)
        sizes[example.label] = (request.ByteSize(), stub.Backward(request).ByteSize())
    off_label = f"{cases[1].label}, check OFF"
    off = cases[1].request(sid, pb.CHECK_MODE_OFF)
    calls[off_label] = lambda: stub.Backward(off, timeout=CALL_TIMEOUT)
    sizes[off_label] = (off.ByteSize(), stub.Backward(off).ByteSize())

    # The cheapest session call: the service's own overhead, with no engine work.
    leaf_label = LEAF_LABEL
    get_leaf = pb.GetLeafRequest(session_id=sid, name="x2")
    calls[leaf_label] = lambda: stub.GetLeaf(get_leaf, timeout=CALL_TIMEOUT)
    sizes[leaf_label] = (get_leaf.ByteSize(), stub.GetLeaf(get_leaf).ByteSize())
    informative = ("echo", off_label, leaf_label)

    stats = measure_latency(calls, plan.latency_calls, plan.chunk)
    with servicer_calls(cases) as (direct, direct_note):
        own = measure(direct, budget=plan.servicer_budget, min_rounds=3) if direct else {}
        after_idle = median_after_idle(direct, plan.latency_calls // 2)
    echo = stats["echo"]
    rows: list[list[str]] = []
    targets: list[Target] = []
    for name, lat in stats.items():
        ratio = lat.p50 / echo.p50
        graded = name not in informative
        servicer = own[name].median if name in own else None
        idle = after_idle.get(name)
        row = [("echo (anchor)" if name == "echo" else name if name == leaf_label
                else f"Backward {name}"),
               f"{sizes[name][0]} / {sizes[name][1]}", fmt_us(lat.p50), fmt_us(lat.p99),
               fmt_us(lat.mean), "" if servicer is None else fmt_us(servicer),
               "" if idle is None else fmt_us(idle),
               "" if servicer is None else fmt_us(lat.p50 - servicer),
               fmt_ratio(ratio), fmt_ratio(lat.p99 / echo.p99)]
        if graded:
            ok = ratio <= LATENCY_TARGET
            targets.append(Target(f"(a) p50 {name} / echo", fmt_ratio(ratio),
                                  f"<= {LATENCY_TARGET:.2f}x", ok))
            row += [f"<= {LATENCY_TARGET:.2f}x", "PASS" if ok else "MISS"]
        else:
            row += ["", ""]
        rows.append(row)
    print(markdown_table(["call", "bytes up / down", "p50 µs", "p99 µs", "mean µs",
                          "servicer µs", "after idle µs", "p50 − servicer", "p50 / echo",
                          "p99 / echo", "target", "verdict"], rows))
    print(f"\n{echo.calls} calls per row, timed one by one (client side: protobuf encoding and "
          "decoding included for crossgrad; the echo's bytes are not parsed), in interleaved "
          f"chunks of {plan.chunk}. The echo carries example 3's BackwardRequest bytes both "
          "ways. Backward accumulates into the session's grads on every call, as a training "
          "loop's would; the check runs (STRICT) except on the 'check OFF' row. The GetLeaf row "
          "is the service's floor: the session lookup and the tensor encoding, no engine. "
          + direct_note)
    return targets


# --- (b) throughput -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Burst:
    rate: float  # calls per second
    server_cpu: float | None  # cores busy in the server process tree
    client_cpu: float  # cores busy in this process


def burst(calls: Sequence[Callable[[], object]], seconds: float, server_pid: int | None,
          ) -> Burst:
    """Every callable on its own thread, in a loop for ``seconds``; total calls per second."""
    counts = [0] * len(calls)
    start_line = threading.Barrier(len(calls) + 1)
    stop_at = 0.0

    def run(i: int) -> None:
        call = calls[i]
        start_line.wait()
        n = 0
        while time.perf_counter() < stop_at:
            call()
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    server_before = cpu_seconds(server_pid) if server_pid else 0.0
    client_before = own_cpu_seconds()
    started = time.perf_counter()
    stop_at = started + seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started  # calls in flight at stop_at finish and count
    server = (cpu_seconds(server_pid) - server_before) / wall if server_pid else None
    return Burst(sum(counts) / wall, server, (own_cpu_seconds() - client_before) / wall)


def section_b(plan: Plan, servers: tuple[Server, Server], settings: ServerSettings,
              cases: Sequence[Example]) -> list[Target]:
    crossgrad, echo = servers
    print(f"\n### (b) Throughput: calls/s with 1, 4 and {CLIENTS[-1]} client threads\n")
    clients = [Client(crossgrad.address, echo.address, settings, cases)
               for _ in range(max(CLIENTS))]
    shared = [Client(crossgrad.address, echo.address, settings, cases,
                     session_id=clients[0].session_id) for _ in range(max(CLIENTS))]
    echo_payload = cases[2].request(clients[0].session_id).SerializeToString()

    def echo_calls(c: Client) -> Callable[[], object]:
        return lambda: c.echo(echo_payload, timeout=CALL_TIMEOUT)

    def backward_calls(c: Client, example: Example) -> Callable[[], object]:
        request = example.request(c.session_id)
        return lambda: c.stub.Backward(request, timeout=CALL_TIMEOUT)

    # (label, example or None for the echo, clients, shared session?)
    runs: list[tuple[str, Example | None, int, bool]] = []
    for n in CLIENTS:
        runs.append(("echo", None, n, False))
        runs += [(e.label, e, n, False) for e in cases]
    runs += [(e.label, e, max(CLIENTS), True) for e in cases]
    bursts: dict[int, list[Burst]] = {i: [] for i in range(len(runs))}
    try:
        for r in range(plan.rounds):
            order = list(range(len(runs)))
            shift = (r * 5) % len(order)
            for i in order[shift:] + order[:shift]:
                _, example, n, is_shared = runs[i]
                pool = shared if is_shared else clients
                calls = [echo_calls(c) if example is None else backward_calls(c, example)
                         for c in pool[:n]]
                pid = echo.pid if example is None else crossgrad.pid
                bursts[i].append(burst(calls, plan.burst, pid))
    finally:
        for c in clients + shared:
            c.close()

    def median(i: int) -> Burst:
        got = bursts[i]
        return Burst(statistics.median(b.rate for b in got),
                     None if got[0].server_cpu is None else
                     statistics.median(b.server_cpu or 0.0 for b in got),
                     statistics.median(b.client_cpu for b in got))

    echo_rate = {n: median(i).rate for i, (_, e, n, _) in enumerate(runs) if e is None}
    rows: list[list[str]] = []
    targets: list[Target] = []
    for i, (label, example, n, is_shared) in enumerate(runs):
        b = median(i)
        spread = bursts[i]
        rate = f"{b.rate:,.0f}"
        if len(spread) >= 3:
            rate += f" [{min(x.rate for x in spread):,.0f}–{max(x.rate for x in spread):,.0f}]"
        ratio = b.rate / echo_rate[n]
        row = [("echo (anchor)" if example is None else f"Backward {label}"), str(n),
               "—" if example is None else ("1 shared" if is_shared else f"{n} (one each)"),
               rate, f"{ratio:.0%}",
               "—" if b.server_cpu is None else f"{b.server_cpu:.2f}", f"{b.client_cpu:.2f}"]
        if example is not None and n == max(CLIENTS) and not is_shared:
            ok = ratio >= THROUGHPUT_TARGET
            targets.append(Target(f"(b) {n} clients, {label}: crossgrad / echo",
                                  f"{ratio:.0%}", f">= {THROUGHPUT_TARGET:.0%}", ok))
            row += [f">= {THROUGHPUT_TARGET:.0%}", "PASS" if ok else "MISS"]
        else:
            row += ["", ""]
        rows.append(row)
    print(markdown_table(["call", "client threads", "sessions", "calls/s", "vs echo",
                          "server CPU (cores)", "client CPU (cores)", "target", "verdict"],
                         rows))
    spread_note = (f"median [min–max] over {plan.rounds} rounds" if plan.rounds >= 3
                   else f"{plan.rounds} round(s)")
    print(f"\nBursts of {plan.burst:g} s, interleaved in a rotating order; calls/s {spread_note}. "
          "Each client thread has its own channels (one connection each) to both servers; "
          "'vs echo' compares with the echo at the same thread count. CPU: cores busy on "
          "average during the burst (server: its process and its children, from /proc; client: "
          f"this process). {os.cpu_count()} CPUs: client and server share them, so past a few "
          "threads the calls/s are bounded by the machine, not by the server alone. A shared "
          "session serializes Backward on its lock (accumulation is atomic per session)."
          + (" In-process servers: their CPU is in the client's column." if crossgrad.pid is None
             else ""))
    return targets


# --- (c) a 1 MiB tensor -------------------------------------------------------------------------

def section_c(plan: Plan, client: Client) -> list[Target]:
    print(f"\n### (c) A 1 MiB tensor: {MIB_ELEMENTS:,} float32 elements\n")
    stub, sid = client.stub, client.session_id
    rng = np.random.default_rng(0)
    array = rng.standard_normal(MIB_ELEMENTS).astype("<f4")
    raw = array.tobytes()
    tensor = pb.Tensor(shape=array.shape, dtype=pb.DTYPE_FLOAT32, data=raw)
    put = pb.PutLeafRequest(session_id=sid, name="big", value=tensor)
    get = pb.GetLeafRequest(session_id=sid, name="big")
    stub.PutLeaf(put, timeout=CALL_TIMEOUT)
    back = stub.GetLeaf(get, timeout=CALL_TIMEOUT)
    if back.leaf.value.data != raw:
        raise SystemExit("(c) GetLeaf did not give back the 1 MiB leaf PutLeaf sent")
    wire = tensor.SerializeToString()
    get_bytes = back.SerializeToString()

    def put_and_get() -> object:
        stub.PutLeaf(put, timeout=CALL_TIMEOUT)
        return stub.GetLeaf(get, timeout=CALL_TIMEOUT)

    mib = len(raw)
    # what -> (the call, payload bytes it moves)
    cases: dict[str, tuple[Callable[[], object], int]] = {
        "echo 1 MiB (1 MiB up, 1 MiB down)": (lambda: client.echo(raw, timeout=CALL_TIMEOUT),
                                              2 * mib),
        "PutLeaf (1 MiB up) + GetLeaf (1 MiB down)": (put_and_get, 2 * mib),
        "PutLeaf (1 MiB up)": (lambda: stub.PutLeaf(put, timeout=CALL_TIMEOUT), mib),
        "GetLeaf (1 MiB down)": (lambda: stub.GetLeaf(get, timeout=CALL_TIMEOUT), mib),
        "in-process: ndarray.tobytes + pb.Tensor(...)": (lambda: pb.Tensor(
            shape=array.shape, dtype=pb.DTYPE_FLOAT32, data=array.tobytes()), mib),
        "in-process: pb.Tensor.SerializeToString": (tensor.SerializeToString, mib),
        "in-process: pb.Tensor.FromString": (lambda: pb.Tensor.FromString(wire), mib),
        "in-process: PutLeafRequest build + serialize": (lambda: pb.PutLeafRequest(
            session_id=sid, name="big", value=tensor).SerializeToString(), mib),
        "in-process: GetLeafResponse.FromString + np.frombuffer": (lambda: np.frombuffer(
            pb.GetLeafResponse.FromString(get_bytes).leaf.value.data, dtype="<f4"), mib),
    }
    stats: dict[str, Stats] = measure({k: c for k, (c, _) in cases.items()},
                                      budget=plan.tensor_budget, min_sample=0.01,
                                      min_rounds=3 if plan.quick else 7)
    echo = stats["echo 1 MiB (1 MiB up, 1 MiB down)"].median
    rows = [[name, fmt_spread(s), fmt_ratio(s.median / echo),
             f"{cases[name][1] / s.median / 2**30:.2f}"] for name, s in stats.items()]
    print(markdown_table(["what", "µs per call", "vs echo", "GiB/s (payload)"], rows))
    print(f"\nµs per call, median [p10–p90] over interleaved rounds (bench/_timing.py). The echo "
          "and the PutLeaf + GetLeaf pair both move 1 MiB each way, the pair in two round trips; "
          f"the tensor is {len(wire):,} bytes on the wire ({len(wire) - len(raw)} bytes of "
          "protobuf framing). The in-process rows are what the client pays before and after "
          "the wire; the server pays the mirror image (parse, copy into its leaf, and back).")
    return [Target("(c) PutLeaf + GetLeaf 1 MiB / echo 1 MiB",
                   fmt_ratio(stats["PutLeaf (1 MiB up) + GetLeaf (1 MiB down)"].median / echo),
                   "(no target)", True)]


# --- the report ---------------------------------------------------------------------------------

def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load_note(when: str, own: bool = False) -> str:
    """The load average, which says whether other processes competed for the CPUs (``own``:
    this benchmark's client and servers are in it, so no warning)."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return f"load average {when}: unknown"
    busy = not own and one > 0.5 * (os.cpu_count() or 1)
    return (f"load average {when}: {one:.2f} (1 min), {five:.2f} (5 min)"
            + (" — other processes are using the CPUs; expect noisy numbers" if busy else ""))


def print_environment(plan: Plan, servers: tuple[Server, Server], settings: ServerSettings,
                      in_process: bool, server_cmd: str, pin: bool) -> None:
    from google.protobuf.internal import api_implementation

    print("## crossgrad service benchmark" + (" (--quick)" if plan.quick else ""))
    print()
    where = ("in this process (--in-process): client and servers share one GIL" if in_process
             else "subprocesses (this process is the client alone)")
    if pin and servers[0].pid is not None:
        where += (f"; --pin: both servers on CPU(s) {sorted(os.sched_getaffinity(servers[0].pid))}"
                  f", the client on CPU(s) {sorted(os.sched_getaffinity(0))}")
    print(markdown_table(["", "environment"], [
        ["Python", f"{platform.python_version()} ({platform.python_implementation()}), "
                   f"{platform.machine()}, {os.cpu_count()} CPUs"],
        ["grpcio", f"{grpc.__version__}; protobuf {_version('protobuf')} "
                   f"({api_implementation.Type()} backend)"],
        ["servers", f"{where}; crossgrad: `{server_cmd}` at {servers[0].address}, echo at "
                    f"{servers[1].address}"],
        ["server settings", f"{settings.threads} worker threads, max message "
                            f"{settings.max_message_bytes:,} bytes (both servers)"],
        ["gc", f"enabled={gc.isenabled()} (client)"],
        ["machine", load_note("at start")],
    ], right=[False, False]))


def print_summary(targets: Sequence[Target]) -> None:
    print("\n### Summary of targets\n")
    rows = [[t.what, t.measured, t.target, ("PASS" if t.ok else "MISS") if "no target"
             not in t.target else "—"] for t in targets]
    print(markdown_table(["target", "measured", "target", "verdict"], rows,
                         right=[False, True, True, False]))


@contextmanager
def running(in_process: bool, server_cmd: Sequence[str] | None, settings: ServerSettings,
            pin: bool) -> Iterator[tuple[Server, Server]]:
    servers = start_servers(in_process, server_cmd, settings, pin)
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a ~30 s run")
    parser.add_argument("--sections", default="abc", help="which sections to run (abc)")
    parser.add_argument("--in-process", action="store_true",
                        help="run both servers in this process instead of subprocesses")
    parser.add_argument("--server-cmd", help="the command that starts crossgrad's server "
                                             "(default: crossgrad-server)")
    parser.add_argument("--pin", action="store_true",
                        help="both servers on the last CPU, the client on the others")
    parser.add_argument("--echo-server", action="store_true",
                        help="serve the echo anchor and print its address (used by the benchmark)")
    parser.add_argument("--address", default="127.0.0.1:0", help="--echo-server's address")
    args = parser.parse_args(argv)
    if args.echo_server:
        echo_server_main(args.address)
        return

    plan = QUICK if args.quick else FULL
    settings = ServerSettings.of_crossgrad()
    server_cmd = shlex.split(args.server_cmd) if args.server_cmd else None
    started = time.perf_counter()
    cases = examples()
    with running(args.in_process, server_cmd, settings, args.pin) as servers:
        shown = ("serve(Config(address='127.0.0.1:0'))" if args.in_process
                 else shlex.join(server_cmd or crossgrad_server_command()))
        print_environment(plan, servers, settings, args.in_process, shown, args.pin)
        notes = verify(servers[0].address, settings, cases)
        print("\nChecked before timing (a fresh session, each example's first Backward: the "
              "gradients against hand-derived ones, the check AGREE):\n")
        for note in notes:
            print(f"- {note}")
        targets: list[Target] = []
        client = Client(servers[0].address, servers[1].address, settings, cases)
        try:
            if "a" in args.sections:
                targets += section_a(plan, client, cases)
            if "b" in args.sections:
                targets += section_b(plan, servers, settings, cases)
            if "c" in args.sections:
                targets += section_c(plan, client)
        finally:
            client.close()
    if targets:
        print_summary(targets)
    print(f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s; "
          f"{load_note('at end', own=True)} (this benchmark's own client and servers in it).")


if __name__ == "__main__":
    main()
