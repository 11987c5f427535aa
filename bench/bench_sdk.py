"""Benchmark (not a test): autodiff work across a process boundary, done five ways side by side in
one run, so crossgrad's SDK can be placed among the ways a Python user already has.

    python bench/bench_sdk.py [--quick] [--rounds N] [--tensorpipe-defaults]

``--quick`` is a run of under a minute; the full run takes a few minutes on 2 cores.
``--rounds N`` fixes the number of interleaved rounds of both workloads.

The peers (every server is a subprocess on 127.0.0.1 and this process is the client alone, so
each side has its own interpreter and GIL, as in a deployment):

1. crossgrad's SDK: ``crossgrad-server`` as a subprocess, ``import crossgrad.client as torch``,
   ``torch.connect(address)``, then the very workload code of the eager row (5.) with the SDK in
   place of torch; twice, with the session's check STRICT (the default: every gradient checked)
   and OFF (the numeric gradient alone). Its RPCs are the session's own count
   (``session.rpc_count``).
2. ``torch.distributed.rpc`` with distributed autograd: this process is rank 0 ("client"), a
   subprocess is rank 1 ("worker"), TensorPipe backend, rendezvous on 127.0.0.1 at a free port
   (MASTER_ADDR/MASTER_PORT), world size 2. The parameters are leaves here; each step runs the
   forward on the worker with ``rpc_sync`` inside ``dist_autograd.context()``, then
   ``dist_autograd.backward(context_id, [loss])``; the gradients flow back to the leaves here and
   ``dist_autograd.get_gradients(context_id)`` reads them; the SGD update is local. (b)'s data is
   sent to the worker once, before timing. TensorPipe is held to TCP on the loopback (its ``uv``
   transport bound to ``lo``, tensors through the same connection: the ``basic`` channel), as
   the gRPC peers are; ``--tensorpipe-defaults`` lets it pick, and between two processes of one
   machine it picks shared memory.
3. A hand-written grpcio endpoint whose handler runs PyTorch: one generic unary method with
   identity serializers; the request is a 4-byte workload tag and the parameters as raw float32
   bytes, the handler runs forward and backward in PyTorch eager (the data is built in the
   server from the same seed) and returns the loss (or y) and the gradients as raw float32;
   the client applies the SGD update with NumPy. One RPC per step.
4. A bare grpcio echo (the request bytes returned) with a payload of the size of 3.'s request:
   the floor of any gRPC call, one per step. It computes nothing.
5. PyTorch eager in this process, no boundary: the reference.

The workloads, the same math for every peer:

(a) one ``sin(x**2)`` step: x a float32 scalar leaf at 4; forward y = sin(x**2), backward, read
    dx (then zero x's grad, for the next step). ms per step, p50 and p90 over interleaved rounds
    (``bench/_timing.py``: each round times every peer once, in a rotating order, so a burst of
    noise hits them alike); in a round, each peer runs a few milliseconds of consecutive steps,
    as a loop of steps runs them (one step between the others' would find cold caches).
(b) logistic regression: 1,000 samples, 5 features, float32, fixed-seed data (X ~ N(0, 1),
    y = (X @ w_true + noise > 0)); w (5,) and b from zero; the mean binary cross-entropy written
    by hand with p clamped to [1e-7, 1 - 1e-7]; 20 SGD steps with lr 0.5 (``loss.backward()``,
    ``w -= lr * w.grad`` under ``no_grad``, the grads zeroed). Steps/s: the median over
    interleaved rounds, each round one run of 20 steps per peer, each run from w = 0, b = 0 set
    in place on the same leaves (a training loop started again). A peer whose checked run took
    seconds (over 1 s with ``--quick``, 5 s without) would stretch every round to its length: it
    is timed apart, after the rounds, in a few runs of its own (one with ``--quick``), and its
    row says so.
(c) the seed notebook (``examples/seed_notebook.py``) end to end through the SDK against the
    warm crossgrad server, a session of its own per run (a program's run): ms per run (target:
    under 50 ms), and the calls each ``backward()`` made (target: one).

Before timing, every peer's answers are checked against PyTorch eager (a: dx, and eager's dx
against 2x cos(x**2); b: the final w and b after 20 steps) within float32 tolerance, and the echo
against its own request; a mismatch stops the benchmark.

RPCs per step are counted, never assumed, during the checked steps: for the gRPC peers by a
client interceptor on the channel (not on the timed calls), for crossgrad by its session. For
distributed autograd, the calls the step code makes are one ``rpc_sync``, but the backward pass
and the context's cleanup send RPCs of their own between the two processes, out of Python's
sight. They are counted in a separate pair of processes (so the timed ones run without
logging) that run the same step code with TensorPipe's verbose log on (``TP_VERBOSE_LOGGING``):
every request TensorPipe writes, in either direction, between marker lines that bound a window
of steps, divided by the steps. A request and its response make one RPC. With torch 2.13 a step
is five: client to worker the forward (the parameters), the gradient of the loss (distributed
backward enters the worker's part of the graph) and the release of the autograd context;
worker to client the gradients of the parameters, and the release passed on: a worker releasing
a context tells every worker it knows in it, the client included, whose context is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import io
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers  # the workloads and the code the subprocesses run, beside this script
from _peers import FEATURES, LR, STEPS, X0, Params
from _timing import Stats, fmt_ratio, markdown_table, measure
from bench_service import (
    Server,
    ServerSettings,
    channel,
    crossgrad_server_command,
    echo_server_main,
    load_note,
    start_subprocess,
)

ECHO_METHOD = "/crossgrad.bench.Echo/Echo"  # bench_service's echo
CALL_TIMEOUT = 60.0  # seconds, every gRPC call
CHECK_SIN_STEPS = 5  # (a) steps in the checked, counted pass
SIN_SAMPLE = 0.005  # seconds: (a) times consecutive steps in samples of at least this
COUNT_STEPS = 5  # steps per workload in the counting run of distributed autograd
COUNT_TIMEOUT = 180.0  # seconds for the counting run
RTOL, ATOL = 1e-5, 1e-6  # float32 agreement with PyTorch eager

CROSSGRAD = "crossgrad SDK"
DIST = "torch.distributed.rpc + dist_autograd"
TORCH_GRPC = "grpcio endpoint running PyTorch"
ECHO = "grpcio echo (floor)"
EAGER = "PyTorch eager, in process"


@dataclass(frozen=True)
class Plan:
    """How long to spend on each workload."""

    quick: bool
    sin_budget: float  # seconds, (a)
    sin_rounds: tuple[int, int]  # (min, max) rounds, each a sample of steps per peer
    logistic_budget: float  # seconds, (b)
    logistic_rounds: tuple[int, int]  # (min, max) rounds of 20-step runs
    slow_run: float  # seconds: a peer whose checked 20-step run took longer is timed apart
    slow_runs: int  # timed runs of such a peer

    def with_rounds(self, rounds: int) -> Plan:
        return replace(self, sin_rounds=(rounds, rounds), logistic_rounds=(rounds, rounds))


FULL = Plan(quick=False, sin_budget=15.0, sin_rounds=(200, 4000), logistic_budget=20.0,
            logistic_rounds=(15, 300), slow_run=5.0, slow_runs=3)
QUICK = Plan(quick=True, sin_budget=3.0, sin_rounds=(50, 500), logistic_budget=3.0,
             logistic_rounds=(5, 30), slow_run=1.0, slow_runs=1)


# --- the peers -----------------------------------------------------------------------------------

def _no_count() -> int | None:
    return None


def _no_switch(on: bool) -> None:
    return None


def _no_remark() -> str:
    return ""


@dataclass
class Peer:
    """One way of doing the workloads. ``sin_step`` is one step of (a) and gives dx (None: the
    echo, which computes nothing); ``logistic_run`` is (b)'s 20 steps from zero and gives the
    final (w, b). ``rpcs`` gives the RPCs made so far as observed (None: not observable);
    ``counting`` switches the observation on for the checked pass (off: the bare calls)."""

    name: str
    sin_step: Callable[[], float | None] | None = None
    logistic_run: Callable[[], Params | None] | None = None
    rpcs: Callable[[], int | None] = _no_count
    counting: Callable[[bool], None] = _no_switch
    how: str = ""  # how its RPCs are counted
    unavailable: str | None = None  # why it has no measurement, if it has none
    checked: bool = True  # its answers are compared with eager's (not the echo's)
    server: Server | None = None  # the subprocess it talks to
    remark: Callable[[], str] = _no_remark  # what its own API says of its last step, or ""


class CallCounter(grpc.UnaryUnaryClientInterceptor):
    """Counts the unary calls made through a channel."""

    def __init__(self) -> None:
        self.calls = 0

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls += 1
        return continuation(details, request)


class GrpcCalls:
    """One channel to a server's generic method: the bare multicallable (timed) and the same
    behind a counting interceptor (the checked pass)."""

    def __init__(self, address: str, method: str, settings: ServerSettings) -> None:
        self.channel = channel(address, settings)
        self.counter = CallCounter()
        self.bare = self.channel.unary_unary(method)  # bytes in, bytes out
        self.counted = grpc.intercept_channel(self.channel, self.counter).unary_unary(method)
        self.call = self.bare

    def counting(self, on: bool) -> None:
        self.call = self.counted if on else self.bare

    def rpcs(self) -> int:
        return self.counter.calls

    def close(self) -> None:
        self.channel.close()


def torch_grpc_peer(calls: GrpcCalls) -> Peer:
    x = np.asarray(X0, dtype=np.float32)

    def sin_step() -> float:
        reply = np.frombuffer(calls.call(_peers.sin_request(x), timeout=CALL_TIMEOUT), "<f4")
        return float(reply[1])  # y, dx

    def logistic_run() -> Params:
        w = np.zeros(FEATURES, dtype=np.float32)
        b = np.zeros((), dtype=np.float32)
        for _ in range(STEPS):
            request = _peers.logistic_request(w, b)
            reply = np.frombuffer(calls.call(request, timeout=CALL_TIMEOUT), "<f4")
            w -= LR * reply[1:1 + FEATURES]  # loss, dw, db
            b -= LR * reply[1 + FEATURES]
        return w, b

    return Peer(TORCH_GRPC, sin_step, logistic_run, calls.rpcs, calls.counting,
                how="client interceptor")


def echo_peer(calls: GrpcCalls) -> Peer:
    """The echo with the payloads of the PyTorch endpoint's requests (same sizes); checked here,
    once, to give back its request's bytes."""
    zeros = np.zeros(FEATURES, dtype=np.float32)
    sin_payload = _peers.sin_request(np.asarray(X0, dtype=np.float32))
    logistic_payload = _peers.logistic_request(zeros, np.zeros((), dtype=np.float32))
    for payload in (sin_payload, logistic_payload):
        if calls.bare(payload, timeout=CALL_TIMEOUT) != payload:
            raise SystemExit("the echo did not give back its request's bytes")

    def sin_step() -> None:
        calls.call(sin_payload, timeout=CALL_TIMEOUT)

    def logistic_run() -> None:
        for _ in range(STEPS):
            calls.call(logistic_payload, timeout=CALL_TIMEOUT)

    return Peer(ECHO, sin_step, logistic_run, calls.rpcs, calls.counting,
                how="client interceptor", checked=False)


def eager_peer() -> Peer:
    import torch

    eager = _peers.Eager(torch)
    return Peer(EAGER, eager.sin_step, eager.logistic_run, lambda: 0, how="no boundary")


def crossgrad_sdk_rows(stack: ExitStack) -> list[Peer]:
    """crossgrad's SDK as peers: its server as a subprocess (stopped by ``stack``), and a session
    per check mode (STRICT, the default: every gradient checked; OFF: the numeric gradient
    alone), each running the eager row's workload code with ``crossgrad.client`` as ``torch``."""
    import crossgrad.client as sdk

    server = start_server(stack, "crossgrad",
                          [*crossgrad_server_command(), "--address", "127.0.0.1:0"])
    peers = []
    for check, name in (("strict", CROSSGRAD), ("off", f"{CROSSGRAD}, check off")):
        session = sdk.connect(server.address, check=check)
        stack.callback(session.connection.close)  # after the session, before the server
        stack.callback(session.close)
        workload = _peers.Eager(sdk)

        def remark(session: Any = session) -> str:
            """How the service checked the session's last step's gradients."""
            last = session.last_backward
            if last is None:
                return ""
            report = last.check
            return (f"the last step's check: {report.method.value} {report.status.value}; "
                    f"{report.reason}")

        def rpcs(session: Any = session) -> int:
            return int(session.rpc_count)

        peers.append(Peer(name, workload.sin_step, workload.logistic_run, rpcs,
                          how="session.rpc_count", server=server, remark=remark))
    return peers


# --- servers and workers as subprocesses ----------------------------------------------------------

@contextmanager
def held_signals() -> Iterator[None]:
    """SIGINT and SIGTERM held while a subprocess starts and its stop is registered, then raised:
    an interrupt never leaves a server running that nothing would stop."""
    got: list[int] = []

    def hold(signum: int, frame: object) -> None:
        got.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if got:
        if got[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + got[0])


def start_server(stack: ExitStack, name: str, command: Sequence[str]) -> Server:
    """``command`` started (it prints ``... listening on HOST:PORT`` first) and stopped by
    ``stack``."""
    with held_signals():
        server = start_subprocess(name, command)
        stack.callback(server.stop)
    return server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def this_script(*flags: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *flags]


def stop_process(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Wait ``grace`` seconds for ``process`` to end, then SIGTERM it, then kill it."""
    if process.poll() is not None:
        return
    try:
        process.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def spawn(command: Sequence[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[Any]:
    """A subprocess in its own session (Ctrl-C reaches the benchmark alone, which stops it)."""
    return subprocess.Popen(list(command), stdout=subprocess.DEVNULL, stderr=log,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
                            start_new_session=True)


def tail(log: IO[bytes], chars: int = 3000) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-chars:]


def rpc_worker_flags(port: int, tensorpipe_defaults: bool) -> list[str]:
    return ["--rpc-worker", "--port", str(port),
            *(["--tensorpipe-defaults"] if tensorpipe_defaults else [])]


@contextmanager
def distributed_rpc(tensorpipe_defaults: bool) -> Iterator[tuple[Peer, Server]]:
    """The rank-1 worker as a subprocess and this process as rank 0; the peer, and the worker
    (its pid). A graceful RPC shutdown at the end, a local one after an error (then the worker
    is killed)."""
    from torch.distributed import rpc

    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115
    with held_signals():
        worker = spawn(this_script(*rpc_worker_flags(port, tensorpipe_defaults)),
                       _peers.rpc_environment(port), log)
    graceful = False
    try:
        try:
            _peers.init_rpc(0, port, tensorpipe_defaults)
        except Exception as error:
            raise SystemExit(f"torch.distributed.rpc did not start: {error}\n"
                             f"the worker's stderr:\n{tail(log)}") from error
        try:
            client = _peers.DistAutograd()
            client.send_data()
            peer = Peer(DIST, client.sin_step, client.logistic_run, lambda: client.calls,
                        how="rpc_sync calls")
            yield peer, Server("rpc worker (rank 1)", f"127.0.0.1 (rendezvous port {port})",
                               worker.pid, lambda: None)
            graceful = True
        finally:
            rpc.shutdown(graceful=graceful)
    finally:
        stop_process(worker, grace=10.0 if graceful else 0.0)
        log.close()


@dataclass
class RpcTally:
    """Requests TensorPipe wrote per step, by direction, in the counting run."""

    client_to_worker: float
    worker_to_client: float
    tensors: str  # the tensors each request carried, per direction

    @property
    def total(self) -> float:
        return self.client_to_worker + self.worker_to_client


_WRITE = re.compile(r"Pipe (\w+)_to_(\w+) received a write request \(#\d+, \w+ \d+ payloads "
                    r"and (\d+) tensors\)")


def _requests_in_windows(text: str) -> dict[str, list[int]]:
    """Per marker window: the tensor count of each request this process wrote (its client pipe,
    ``<self>_to_<peer>``; responses go out on the ``<self>[l0]_from_<peer>`` pipe)."""
    windows: dict[str, list[int]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith(_peers.MARKER):
            kind, name = line[len(_peers.MARKER):].split()
            current = name if kind == "begin" else None
            if current is not None:
                windows[current] = []
            continue
        if current is not None:
            match = _WRITE.search(line)
            if match is not None:
                windows[current].append(int(match.group(3)))
    return windows


class CountRun:
    """Distributed autograd's RPCs, counted in a pair of fresh processes with TensorPipe's verbose
    log on (the timed pair runs without it): see the module's docstring."""

    def __init__(self, tensorpipe_defaults: bool, steps: int) -> None:
        self.steps = steps
        port = free_port()
        env = {**_peers.rpc_environment(port), "TP_VERBOSE_LOGGING": "1"}
        self.logs = [tempfile.TemporaryFile() for _ in range(2)]  # noqa: SIM115 (client, worker)
        self.processes = [
            spawn(this_script("--rpc-count-client", "--port", str(port), "--steps", str(steps),
                              *(["--tensorpipe-defaults"] if tensorpipe_defaults else [])),
                  env, self.logs[0]),
            spawn(this_script(*rpc_worker_flags(port, tensorpipe_defaults)), env, self.logs[1]),
        ]

    def result(self) -> dict[str, RpcTally] | str:
        """Per workload ("sin", "logistic"), the tally; or why there is none."""
        deadline = time.monotonic() + COUNT_TIMEOUT
        for process in self.processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return f"the counting run did not end within {COUNT_TIMEOUT:.0f} s"
        if any(p.returncode != 0 for p in self.processes):
            return (f"the counting run failed (exit codes {[p.returncode for p in self.processes]})"
                    f"; its client's stderr:\n{tail(self.logs[0])}")
        texts = []
        for log in self.logs:
            log.seek(0)
            texts.append(log.read().decode(errors="replace"))
        client, worker = (_requests_in_windows(text) for text in texts)
        tallies: dict[str, RpcTally] = {}
        for name in ("sin", "logistic"):
            if not client.get(name):
                return "no TensorPipe requests found in the log (its format changed?)"
            sent, back = client[name], worker.get(name, [])

            def carried(tensors: list[int]) -> str:
                counts = Counter(tensors)
                return ", ".join(f"{n / self.steps:g} with {k} tensor{'s' * (k != 1)}"
                                 for k, n in sorted(counts.items(), reverse=True))

            tallies[name] = RpcTally(len(sent) / self.steps, len(back) / self.steps,
                                     f"client→worker: {carried(sent)}; "
                                     f"worker→client: {carried(back)}")
        return tallies

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()


# --- subprocess entry points ---------------------------------------------------------------------

def _serve_until_signalled(server: Any, name: str, address: str) -> None:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"{name} listening on {address}", flush=True)
    done.wait()
    server.stop(1.0).wait()


def torch_server_main(address: str) -> None:
    """``--torch-server``: the grpcio endpoint that runs PyTorch, with the echo's settings."""
    _peers.exit_when_orphaned()
    settings = ServerSettings.of_crossgrad()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.threads),
                         options=settings.options())
    service, method = _peers.TORCH_METHOD.strip("/").split("/")
    handler = grpc.method_handlers_generic_handler(
        service, {method: grpc.unary_unary_rpc_method_handler(_peers.TorchHandler())})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    server.start()
    _serve_until_signalled(server, "torch-grpc-server", f"{address.rsplit(':', 1)[0]}:{port}")


def rpc_worker_main(port: int, tensorpipe_defaults: bool) -> None:
    """``--rpc-worker``: rank 1, serving the forward functions until rank 0 shuts down."""
    from torch.distributed import rpc

    _peers.exit_when_orphaned()
    _peers.init_rpc(1, port, tensorpipe_defaults)
    rpc.shutdown()


# --- checks --------------------------------------------------------------------------------------

def _per_step(before: int | None, after: int | None, steps: int) -> str:
    if before is None or after is None:
        return "n/a"
    return f"{(after - before) / steps:g}"


@dataclass(frozen=True)
class Checked:
    """What the checked pass found: notes to print, RPCs per step as observed ({workload: {peer:
    cell}}), and how long each peer's checked 20-step run of (b) took."""

    notes: list[str]
    rpcs: dict[str, dict[str, str]]
    logistic_seconds: dict[str, float]


def check(peers: Sequence[Peer]) -> Checked:
    """Every peer's answers against PyTorch eager's (SystemExit on a mismatch), and the RPCs per
    step each made meanwhile."""
    eager = next(p for p in peers if p.name == EAGER)
    assert eager.sin_step is not None and eager.logistic_run is not None
    reference_dx = eager.sin_step()
    assert reference_dx is not None
    analytic = 2 * X0 * math.cos(X0 ** 2)
    if not math.isclose(reference_dx, analytic, rel_tol=RTOL, abs_tol=ATOL):
        raise SystemExit(f"(a) eager dx = {reference_dx!r}, not 2x cos(x**2) = {analytic!r}")
    reference = eager.logistic_run()
    assert reference is not None
    rpcs: dict[str, dict[str, str]] = {"sin": {}, "logistic": {}}
    seconds: dict[str, float] = {}
    worst: dict[str, float] = {}
    for peer in peers:
        if peer.unavailable is not None or peer.sin_step is None or peer.logistic_run is None:
            continue
        peer.counting(True)
        try:
            before = peer.rpcs()
            dxs = [peer.sin_step() for _ in range(CHECK_SIN_STEPS)]
            middle = peer.rpcs()
            started = time.perf_counter()
            final = peer.logistic_run()
            seconds[peer.name] = time.perf_counter() - started
            after = peer.rpcs()
        finally:
            peer.counting(False)
        rpcs["sin"][peer.name] = _per_step(before, middle, CHECK_SIN_STEPS)
        rpcs["logistic"][peer.name] = _per_step(middle, after, STEPS)
        if not peer.checked:
            continue
        for dx in dxs:
            if dx is None or not math.isclose(dx, reference_dx, rel_tol=RTOL, abs_tol=ATOL):
                raise SystemExit(f"(a) {peer.name}: dx = {dx!r}, eager's is {reference_dx!r}")
        if final is None:
            raise SystemExit(f"(b) {peer.name} gave no parameters")
        diff = 0.0
        for label, got, expected in zip("wb", final, reference, strict=True):
            if got.shape != expected.shape or not np.allclose(got, expected, rtol=RTOL,
                                                              atol=ATOL):
                raise SystemExit(f"(b) {peer.name}: final {label} = {got!r}, "
                                 f"eager's is {expected!r}")
            diff = max(diff, float(np.max(np.abs(got - expected), initial=0.0)))
        worst[peer.name] = diff
    w, b = reference
    notes = [f"(a) dx = {reference_dx:.7g} from every peer (eager's against 2x cos(x**2) = "
             f"{analytic:.7g}, float64) within rtol {RTOL:g}, atol {ATOL:g}, "
             f"{CHECK_SIN_STEPS} steps each.",
             f"(b) final w = {np.array2string(w, precision=5)}, b = {float(b):.5f} from every "
             f"peer within rtol {RTOL:g}, atol {ATOL:g}; largest difference from eager: "
             + ", ".join(f"{name} {d:.1e}" for name, d in worst.items() if name != EAGER) + "."]
    return Checked(notes, rpcs, seconds)


# --- timing and tables ---------------------------------------------------------------------------

def timed(peers: Sequence[Peer], which: str) -> dict[str, Callable[[], object]]:
    cases: dict[str, Callable[[], object]] = {}
    for peer in peers:
        step = peer.sin_step if which == "sin" else peer.logistic_run
        if peer.unavailable is None and step is not None:
            cases[peer.name] = step
    return cases


def _ratio(crossgrad: Stats | None, peer: Stats) -> str:
    """crossgrad's steps/s over the peer's (the peer's time over crossgrad's)."""
    return "—" if crossgrad is None else fmt_ratio(peer.median / crossgrad.median)


def _rpc_cells(peer: Peer, which: str, rpcs: dict[str, str],
               tally: dict[str, RpcTally] | str | None) -> tuple[str, str]:
    """A peer's RPCs/step cell and how they were counted."""
    observed = rpcs.get(peer.name, "n/a")
    if peer.name != DIST:
        return observed, peer.how
    # ``observed`` is the rpc_sync calls the step code made; the tally has every request
    if isinstance(tally, dict):
        t = tally[which]
        return (f"{t.total:g}", f"TensorPipe log: {t.client_to_worker:g} client→worker + "
                                f"{t.worker_to_client:g} worker→client ({observed} rpc_sync)")
    return f"≥ {observed}", f"rpc_sync calls only; {tally}"


def sin_table(plan: Plan, peers: Sequence[Peer], rpcs: dict[str, str],
              tally: dict[str, RpcTally] | str | None) -> None:
    print("\n### (a) One sin(x**2) step: forward, backward, read dx\n")
    cases = timed(peers, "sin")
    low, high = plan.sin_rounds
    stats = measure(cases, budget=plan.sin_budget, min_sample=SIN_SAMPLE, min_rounds=low,
                    max_rounds=high)
    crossgrad = stats.get(CROSSGRAD)
    rows: list[list[str]] = []
    for peer in peers:
        if peer.name not in stats:
            rows.append([peer.name, "—", "—", "—", "—", "—", peer.unavailable or "—"])
            continue
        s = stats[peer.name]
        cell, how = _rpc_cells(peer, "sin", rpcs, tally)
        rows.append([peer.name, f"{s.median * 1e3:.3f}", f"{s.p90 * 1e3:.3f}",
                     f"{1 / s.median:,.0f}", cell,
                     _ratio(crossgrad, s), how])
    print(markdown_table(["peer", "ms/step p50", "ms/step p90", "steps/s (p50)", "RPCs/step",
                          "crossgrad ÷ peer (steps/s)", "RPCs counted by"], rows,
                         right=[False, True, True, True, True, True, False]))
    remarks = {peer.name: peer.remark() for peer in peers if peer.name in stats}
    rounds = max((s.rounds for s in stats.values()), default=0)
    per_sample = ", ".join(f"{name} {s.calls_per_round}" for name, s in stats.items())
    print(f"\n{rounds} interleaved rounds; in each, every peer runs a sample of "
          f"consecutive steps lasting at least {SIN_SAMPLE * 1e3:g} ms ({per_sample}), timed "
          "as a whole: p50 and p90 of the samples' mean step. Each peer's step: forward, "
          "backward and dx read on the client as a Python float; the echo moves the PyTorch "
          f"endpoint's {_peers.TAG_BYTES + 4}-byte request and computes nothing.")
    for name, remark in remarks.items():
        if remark:
            print(f"\n{name}, {remark}")


def logistic_table(plan: Plan, peers: Sequence[Peer], checked: Checked,
                   tally: dict[str, RpcTally] | str | None) -> None:
    print(f"\n### (b) Logistic regression: {_peers.SAMPLES:,} × {FEATURES} float32, "
          f"{STEPS} SGD steps per run\n")
    cases = timed(peers, "logistic")
    # A peer whose run takes seconds would stretch every round to its length: timed apart.
    slow = {name: case for name, case in cases.items()
            if checked.logistic_seconds.get(name, 0.0) > plan.slow_run}
    low, high = plan.logistic_rounds
    stats = measure({n: c for n, c in cases.items() if n not in slow},
                    budget=plan.logistic_budget, min_sample=0.0, warmup=2, min_rounds=low,
                    max_rounds=high)
    rounds = max((s.rounds for s in stats.values()), default=0)
    alone: dict[str, list[float]] = {}
    for name, case in slow.items():
        alone[name] = []
        for _ in range(plan.slow_runs):
            started = time.perf_counter()
            case()
            alone[name].append(time.perf_counter() - started)
        stats[name] = Stats.of(alone[name], 1)
    remarks = {peer.name: peer.remark() for peer in peers if peer.name in stats}
    crossgrad = stats.get(CROSSGRAD)
    rows: list[list[str]] = []
    for peer in peers:
        if peer.name not in stats:
            rows.append([peer.name, "—", "—", "—", "—", "—", peer.unavailable or "—"])
            continue
        s = stats[peer.name]
        cell, how = _rpc_cells(peer, "logistic", checked.rpcs["logistic"], tally)
        spread = (f"{STEPS / s.p90:,.0f}–{STEPS / s.p10:,.0f}" if s.rounds >= 3 else "—")
        rows.append([peer.name + (" †" if peer.name in slow else ""), f"{STEPS / s.median:,.1f}",
                     spread, f"{s.median / STEPS * 1e3:.3f}", cell, _ratio(crossgrad, s), how])
    print(markdown_table(["peer", "steps/s (median)", "steps/s p10–p90", "ms/step",
                          "RPCs/step", "crossgrad ÷ peer (steps/s)", "RPCs counted by"], rows,
                         right=[False, True, True, True, True, True, False]))
    print(f"\nEach round runs every peer's {STEPS} steps once (from w = 0, b = 0, set in "
          f"place), in a rotating order; {rounds} rounds; steps/s from the median run, the "
          "range from the runs' 10th and 90th percentiles. The echo makes the PyTorch endpoint's "
          f"{_peers.TAG_BYTES + 4 * (FEATURES + 1)}-byte request once per step.")
    for name, runs in alone.items():
        print(f"\n† {name}: its checked run took {checked.logistic_seconds[name]:.1f} s (over "
              f"{plan.slow_run:g} s), so it is timed apart from the rounds, after them: "
              f"{len(runs)} run(s) of {STEPS} steps, "
              + ", ".join(f"{t:.2f} s" for t in runs) + ".")
    for name, remark in remarks.items():
        if remark:
            print(f"\n{name}, {remark}")


# --- the report ----------------------------------------------------------------------------------

def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def print_environment(plan: Plan, servers: Sequence[Server], settings: ServerSettings,
                      tensorpipe_defaults: bool) -> None:
    import torch

    print("## Autodiff across a process boundary: crossgrad's SDK and its peers"
          + (" (--quick)" if plan.quick else ""))
    print()
    transport = ("TensorPipe's own choice (--tensorpipe-defaults)" if tensorpipe_defaults
                 else "uv transport (TCP) bound to lo, basic channel")
    print(markdown_table(["", "environment"], [
        ["Python", f"{platform.python_version()} ({platform.python_implementation()}), "
                   f"{platform.machine()}, {os.cpu_count()} CPUs"],
        ["PyTorch", f"{torch.__version__}, {torch.get_num_threads()} intra-op threads "
                    "(its default, in every process)"],
        ["grpcio", f"{grpc.__version__}; protobuf {_version('protobuf')}; NumPy {np.__version__}"],
        ["servers", "subprocesses (this process is the client alone): "
                    + ", ".join(f"{s.name} at {s.address}" for s in servers)],
        ["gRPC servers", f"{settings.threads} worker threads, max message "
                         f"{settings.max_message_bytes:,} bytes (crossgrad's defaults)"],
        ["torch.distributed.rpc", f"TensorPipe, world size 2, {transport}"],
        ["machine", load_note("at start")],
    ], right=[False, False]))


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanups, which stop the servers


NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "seed_notebook.py"


def notebook_table(plan: Plan, address: str) -> None:
    """(c) The seed notebook end to end through the SDK against the warm crossgrad server: a
    session of its own per run (a program run), the notebook's code, the session closed. The
    first run derives the closed forms and is not timed; each ``backward()``'s calls are
    counted (target: one)."""
    import crossgrad.client as sdk

    sdk_tensor = importlib.import_module("crossgrad.client.tensor")  # the module, not tensor()

    code = compile(NOTEBOOK.read_text(encoding="utf-8"), str(NOTEBOOK), "exec")
    per_backward: list[int] = []
    original = vars(sdk_tensor)["backward"]

    def counted(root: Any, *args: Any, **kwargs: Any) -> Any:
        before = root.session.rpc_count
        try:
            return original(root, *args, **kwargs)
        finally:
            per_backward.append(root.session.rpc_count - before)

    def one_run() -> tuple[float, int]:
        started = time.perf_counter()
        session = sdk.connect(address)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the notebook's own non-leaf warning
            exec(code, {"__name__": "seed_notebook"})
        calls = session.rpc_count
        session.close()
        session.connection.close()
        return time.perf_counter() - started, calls + 1  # + the DeleteSession

    vars(sdk_tensor)["backward"] = counted  # Tensor.backward calls the module's function
    try:
        one_run()  # derives and caches the closed forms: the server is warm after it
        per_backward.clear()
        runs = [one_run() for _ in range(5 if plan.quick else 30)]
    finally:
        vars(sdk_tensor)["backward"] = original
    times = sorted(seconds for seconds, _ in runs)
    p50, p90 = times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.9))]
    print("\n### (c) The seed notebook end to end through the SDK, warm server\n")
    print("| runs | ms p50 | ms p90 | target | RPCs per run | backward() calls per run | "
          "RPCs per backward() |")
    print("|--:|--:|--:|:--|--:|--:|:--|")
    backwards = len(per_backward) // len(runs)
    print(f"| {len(runs)} | {p50 * 1e3:.1f} | {p90 * 1e3:.1f} | < 50 ms: "
          f"{'PASS' if p50 < 0.05 else 'FAIL'} | {runs[0][1]} | {backwards} | "
          f"{', '.join(sorted({str(n) for n in per_backward}))} |")
    print("\nEach run: CreateSession, the notebook's cells (every print() is a read of a value "
          "the program has not seen yet, with what is queued), DeleteSession.")


def run(plan: Plan, tensorpipe_defaults: bool) -> None:
    started = time.perf_counter()
    settings = ServerSettings.of_crossgrad()
    with ExitStack() as stack:
        with held_signals():
            counting = CountRun(tensorpipe_defaults, COUNT_STEPS)  # runs while the rest starts
            stack.callback(counting.stop)
        echo = start_server(stack, "echo", this_script("--echo-server"))
        torch_server = start_server(stack, "torch-grpc", this_script("--torch-server"))
        crossgrad = crossgrad_sdk_rows(stack)
        dist, worker = stack.enter_context(distributed_rpc(tensorpipe_defaults))
        echo_calls = GrpcCalls(echo.address, ECHO_METHOD, settings)
        stack.callback(echo_calls.close)
        torch_calls = GrpcCalls(torch_server.address, _peers.TORCH_METHOD, settings)
        stack.callback(torch_calls.close)
        peers = [*crossgrad, dist, torch_grpc_peer(torch_calls), echo_peer(echo_calls),
                 eager_peer()]

        servers = [p.server for p in peers if p.server is not None]
        print_environment(plan, [*servers, echo, torch_server, worker], settings,
                          tensorpipe_defaults)
        checked = check(peers)
        tally = counting.result()
        print("\nChecked before timing, against PyTorch eager:\n")
        for note in checked.notes:
            print(f"- {note}")
        if isinstance(tally, dict):
            for name, label in (("sin", "(a)"), ("logistic", "(b)")):
                print(f"- {label} distributed autograd, requests per step in TensorPipe's log "
                      f"({COUNT_STEPS} steps): {tally[name].tensors}.")
        else:
            print(f"- distributed autograd's RPCs: not counted ({tally})")
        sin_table(plan, peers, checked.rpcs["sin"], tally)
        logistic_table(plan, peers, checked, tally)
        server = peers[0].server
        assert server is not None
        notebook_table(plan, server.address)
    print(f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s; "
          f"{load_note('at end', own=True)} (this benchmark's own client and servers in it).")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a run of under a minute")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of each workload")
    parser.add_argument("--tensorpipe-defaults", action="store_true",
                        help="let TensorPipe pick its transport (shared memory on one machine)")
    # The subprocesses this benchmark starts:
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rpc-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rpc-count-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--address", default="127.0.0.1:0", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=COUNT_STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server:
        _peers.exit_when_orphaned()
        echo_server_main(args.address)
        return
    if args.torch_server:
        torch_server_main(args.address)
        return
    if args.rpc_worker:
        rpc_worker_main(args.port, args.tensorpipe_defaults)
        return
    if args.rpc_count_client:
        _peers.exit_when_orphaned()
        _peers.count_client(args.port, args.tensorpipe_defaults, args.steps)
        return
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    plan = QUICK if args.quick else FULL
    if args.rounds is not None:
        plan = plan.with_rounds(args.rounds)
    signal.signal(signal.SIGTERM, _terminate)
    run(plan, args.tensorpipe_defaults)


if __name__ == "__main__":
    main()
