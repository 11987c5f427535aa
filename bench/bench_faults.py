"""Load and faults (not a benchmark of speed): crossgrad-server under mixed, hostile and oversized
traffic while its symbolic workers are killed, with an exact accounting check at the end.

    python bench/bench_faults.py [--quick | --seconds N] [--clients 8] [--server-cmd CMD]
        [--rss-growth-mib 100] [--seed 0]

A default run takes about 3 minutes, ``--quick`` about 40 s, ``--seconds N`` runs the load for N
seconds (at most 250: the whole run stays under 5 minutes). Everything runs on this machine: the
server is a subprocess listening on 127.0.0.1 (a free port), the clients talk to it alone, and
every loop stops by itself.

What runs, all at once:

- the server (``crossgrad-server`` of this environment, or ``--server-cmd``) with small limits
  so that faults are reachable quickly: symbolic deadline 2 s, 8 gRPC threads, 4 MiB messages,
  100,000 elements per tensor;
- ``--clients`` threads, each with its own channel and session, looping over a weighted mix of
  calls of five kinds:
  valid (sessions, leaves, Backward of small graphs with request_ids and retries of them,
  GetLeaf, ZeroGrad, Evaluate, Differentiate of ``sin(x**2)`` and of random small formulas,
  ListOps, health checks), hostile (garbage bytes, unknown ops, formulas too long or too deep
  or that blow up in computer algebra, unknown sessions, invalid durations, NaN values,
  mismatched shapes, a request_id reused for another request), oversized (a tensor past the
  element limit, a message past the size limit, a Backward whose answer would pass it),
  deadline (slow derivations under 50-200 ms client deadlines, or cancelled after a few ms),
  and ledger (below);
- a fault thread that SIGKILLs the server's symbolic worker processes (its children running
  crossgrad's worker, ``-m crossgrad.engine.worker`` or ``.../engine/worker.py``, found in
  /proc) at random, counting kills and the distinct
  worker pids seen (each new pid is a restart);
- a health probe asking grpc.health.v1 every 0.2 s, each call with a 1 s deadline, from a
  process of its own (this script with ``--health-probe``), so the client threads' own load
  cannot delay it;
- a sampler reading the resident set (VmRSS) of the server and of its workers every 2 s.

The ledger: a few sessions each hold a leaf ``w`` (float64, 1.0, requires_grad; check mode
REPORT or OFF). Clients send Backward of ``w * 1`` (gradient exactly 1) into them, each with a
fresh request_id, often under a short deadline or cancelled, and retry with the same request_id
on UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED until a definite answer (OK, or an error that
is not one of those). At the end each leaf's grad must be exactly the number of request_ids
answered OK: nothing lost, nothing doubled. (A request_id still without a definite answer after
its retries would widen that to a range; the report says how many.)

It exits non-zero, saying which, when:

- a call ended in UNKNOWN, or in INTERNAL with an ErrorInfo reason other than
  CHECK_DISAGREEMENT (a server bug, by the wire API's own definition);
- a ledger's grad is not the number of its request_ids answered OK;
- a retried request_id got an answer other than its first;
- a failed oversized Backward changed its leaf's grad;
- a health check did not answer SERVING within 1 s;
- the server's RSS at the end passed its RSS after the warm-up by more than
  ``--rss-growth-mib`` (flat memory);
- after the faults stop, Differentiate of a formula the server has not seen does not get a
  SYMBOLIC check again within 20 s (the worker pool did not recover);
- the server died during the load, a client thread did not stop, the server did not exit
  within its grace period (plus 10 s) of SIGTERM, or a worker outlived it.

Expected failures are not errors: a hostile or oversized call gets the status it should
(INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED...), a deadline call DEADLINE_EXCEEDED or
CANCELLED. Any answer a call's kind does not expect is listed under "unexpected answers" (for
reading; only the conditions above fail the run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc import StatusCode as Code
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import markdown_table  # the helper module next to this script

# --- the server's limits for this run ----------------------------------------------------------

SYMBOLIC_DEADLINE = 2.0  # seconds
SERVER_THREADS = 8
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_ELEMENTS = 100_000
GRACE = 5.0  # seconds the server gets to drain on SIGTERM
SERVER_FLAGS = ["--symbolic-deadline", str(SYMBOLIC_DEADLINE), "--threads", str(SERVER_THREADS),
                "--max-message-bytes", str(MAX_MESSAGE_BYTES),
                "--max-elements", str(MAX_ELEMENTS), "--grace", str(GRACE)]

# --- the run's shape ---------------------------------------------------------------------------

DEFAULT_SECONDS = 150.0  # of load; plus start-up and teardown, about 3 minutes
QUICK_SECONDS = 28.0
MAX_SECONDS = 250.0
START_TIMEOUT = 120.0  # seconds for the server to print its address
CALL_TIMEOUT = 10.0  # seconds, a valid call's deadline
HOSTILE_TIMEOUT = 8.0
HEALTH_TIMEOUT = 1.0  # a health check must answer SERVING within this
HEALTH_PERIOD = 0.2
RSS_PERIOD = 2.0
LEDGERS = 3
LEDGER_ATTEMPTS = 40  # per request_id during the load; more at the end
RETRY = (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELLED)
RECOVERY_SECONDS = 20.0
WORKER_MODULE = "crossgrad.engine.worker"  # run as ``-m crossgrad.engine.worker``
WORKER_SCRIPT = os.path.join("engine", "worker.py")  # or as a script path

# Weights of the kinds of calls in each client's mix.
MIX = {"valid": 52, "hostile": 15, "oversized": 4, "deadline": 6, "ledger": 23}

# What each kind may answer without it being "unexpected" (reported, not failed).
EXPECTED: dict[str, set[Code]] = {
    "valid": {Code.OK},
    "hostile": {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.RESOURCE_EXHAUSTED,
                Code.FAILED_PRECONDITION},
    "oversized": {Code.RESOURCE_EXHAUSTED},
    "deadline": {Code.OK, Code.DEADLINE_EXCEEDED, Code.CANCELLED},
    "ledger": {Code.OK, *RETRY},
}
# Hostile calls that may also answer OK: the server may compute them (falling back to finite
# differences past its symbolic deadline) or cap the value instead of refusing it.
MAY_SUCCEED = {"blow-up pow 5000", "blow-up 9**1e9", "ttl huge"}


# --- requests ----------------------------------------------------------------------------------

_DTYPES: dict[np.dtype[Any], pb.Dtype] = {
    np.dtype("float32"): pb.DTYPE_FLOAT32, np.dtype("float64"): pb.DTYPE_FLOAT64,
    np.dtype("int64"): pb.DTYPE_INT64}
_NUMPY: dict[int, np.dtype[Any]] = {v: k for k, v in _DTYPES.items()}


def tensor(value: Any, dtype: str = "float32") -> pb.Tensor:
    array = np.asarray(value, dtype=dtype)
    return pb.Tensor(shape=array.shape, dtype=_DTYPES[array.dtype],
                     data=array.astype(array.dtype.newbyteorder("<")).tobytes())


def decode(t: pb.Tensor) -> np.ndarray:
    """A tensor from either form: raw bytes, or ``values`` (answers to ``answer_as_values``)."""
    dtype = _NUMPY.get(t.dtype, np.dtype("float64"))
    if t.data or not t.values:
        return np.frombuffer(t.data, dtype=dtype.newbyteorder("<")).reshape(tuple(t.shape))
    return np.asarray(t.values, dtype=dtype).reshape(tuple(t.shape))


def leaf(node_id: str, name: str | None = None) -> pb.Node:
    return pb.Node(id=node_id, leaf=name or node_id)


def const(node_id: str, value: Any, dtype: str = "float64") -> pb.Node:
    return pb.Node(id=node_id, constant=tensor(value, dtype))


def op(node_id: str, name: str, *inputs: str) -> pb.Node:
    return pb.Node(id=node_id, op=pb.Operation(op=name, inputs=list(inputs)))


def graph(*nodes: pb.Node) -> pb.Graph:
    return pb.Graph(nodes=list(nodes), output=nodes[-1].id)


SQUARE = graph(leaf("x"), const("two", 2.0), op("y", "pow", "x", "two"))
SIN_SQUARE = graph(leaf("x"), const("two", 2.0), op("y", "pow", "x", "two"), op("z", "sin", "y"))
MEAN_SQUARE = graph(leaf("v"), const("two", 2.0), op("sq", "pow", "v", "two"),
                    op("m", "mean", "sq"))
LEDGER_GRAPH = graph(leaf("w"), const("one", 1.0), op("y", "mul", "w", "one"))
BIG_LEAF = 90_000  # float64 elements: 720 kB, under the message limit; six of them are not
BIG_CHAIN = graph(leaf("a"), *[op(f"n{k}", "sin", f"n{k - 1}" if k else "a") for k in range(5)],
                  op("s", "sum", "n4"))

_UNARY = ("sin", "cos", "tanh", "sigmoid", "abs")


def random_formula(rng: random.Random, ops: int) -> str:
    """A small formula in x and y with a random structure (so, often, one the server has not
    derived yet), with values that stay moderate for x, y in [-1, 1] (no exp: a chain of them
    overflows). abs has a kink at 0, where both sides take abs'(0) = 0."""
    text = "x"
    for _ in range(ops):
        choice = rng.randrange(8)
        if choice < len(_UNARY):
            text = f"{_UNARY[choice]}({text})"
        elif choice == 5:
            text = f"({text}) * {rng.uniform(0.2, 2):.3f}"
        elif choice == 6:
            text = f"({text}) + y"
        else:
            text = f"({text}) ** 2"
    return text


def values_form(**scalars: float) -> dict[str, pb.Tensor]:
    return {k: pb.Tensor(values=[v], dtype=pb.DTYPE_FLOAT64) for k, v in scalars.items()}


def maybe_values(request: Any, rng: random.Random) -> Any:
    """``request``, asking for tensors as numbers (``answer_as_values``) a third of the time."""
    if rng.random() < 1 / 3:
        request.answer_as_values = True
    return request


# --- outcomes ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    code: Code
    reason: str = ""  # the ErrorInfo reason, "" when there is none
    details: str = ""
    response: Any = None


def _reason(error: grpc.RpcError) -> str:
    try:
        status = rpc_status.from_call(error)
    except Exception:  # a status whose details do not match its code or message
        return "(unreadable details)"
    if status is None:
        return ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def outcome_of(error: grpc.RpcError) -> Outcome:
    code = error.code() if hasattr(error, "code") else Code.UNKNOWN
    details = (error.details() if hasattr(error, "details") else str(error)) or ""
    return Outcome(code, _reason(error), details[:300])


def invoke(call: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(Code.OK, response=call())
    except grpc.RpcError as error:
        return outcome_of(error)


def call_once(method: Any, request: Any, timeout: float = CALL_TIMEOUT) -> Outcome:
    return invoke(lambda: method(request, timeout=timeout))


def invoke_and_cancel(method: Any, request: Any, after: float) -> Outcome:
    """Start ``request`` on ``method``, cancel it ``after`` seconds later (if still running)."""
    future = method.future(request, timeout=CALL_TIMEOUT)
    time.sleep(after)
    if future.cancel():
        return Outcome(Code.CANCELLED, details="cancelled by the client")
    try:
        return Outcome(Code.OK, response=future.result())
    except grpc.RpcError as error:
        return outcome_of(error)
    except grpc.FutureCancelledError:
        return Outcome(Code.CANCELLED, details="cancelled by the client")


def is_bug(outcome: Outcome) -> bool:
    """UNKNOWN, or INTERNAL without CHECK_DISAGREEMENT: a server bug by the wire API's terms."""
    return outcome.code is Code.UNKNOWN or (outcome.code is Code.INTERNAL
                                            and outcome.reason != "CHECK_DISAGREEMENT")


@dataclass
class Tally:
    """What one client thread saw; merged at the end."""

    codes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, code)
    latency: dict[tuple[str, str], list[float]] = field(
        default_factory=lambda: defaultdict(list))  # (kind, call) -> seconds
    codes_by_call: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter))
    unexpected: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    unexpected_sample: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    bugs: list[str] = field(default_factory=list)  # a sample of them
    bug_count: int = 0
    failures: list[str] = field(default_factory=list)
    methods: list[tuple[float, int]] = field(default_factory=list)  # Differentiate check method
    fallback_reasons: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, call: str, outcome: Outcome, seconds: float,
               allowed: set[Code] | None = None) -> None:
        name = outcome.code.name
        self.codes[kind, name] += 1
        self.latency[kind, call].append(seconds)
        self.codes_by_call[kind, call][name] += 1
        expected = EXPECTED[kind] | (allowed or set())
        if outcome.code not in expected and not (
                outcome.code is Code.INTERNAL and outcome.reason == "CHECK_DISAGREEMENT"
                and kind == "hostile"):
            key = (kind, call, name, outcome.reason)
            self.unexpected[key] += 1
            self.unexpected_sample.setdefault(key, outcome.details)
        if is_bug(outcome):
            self.bug_count += 1
            if len(self.bugs) < 20:
                self.bugs.append(f"{kind} {call}: {name} {outcome.reason or '(no ErrorInfo)'}: "
                                 f"{outcome.details}")

    def merge(self, other: Tally) -> None:
        self.codes.update(other.codes)
        for key, values in other.latency.items():
            self.latency[key].extend(values)
        for call, counter in other.codes_by_call.items():
            self.codes_by_call[call].update(counter)
        self.unexpected.update(other.unexpected)
        for which, sample in other.unexpected_sample.items():
            self.unexpected_sample.setdefault(which, sample)
        self.bugs += other.bugs[:20]
        self.bug_count += other.bug_count
        self.failures += other.failures
        self.methods += other.methods
        self.fallback_reasons.update(other.fallback_reasons)


# --- the ledger --------------------------------------------------------------------------------

@dataclass
class Ledger:
    """A session whose leaf ``w`` gets gradient 1 per request_id answered OK."""

    session_id: str
    check_mode: pb.CheckMode
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # definite errors by code
    undecided: list[str] = field(default_factory=list)  # request_ids still without an answer
    attempts: int = 0

    def request(self, request_id: str) -> pb.BackwardRequest:
        return pb.BackwardRequest(session_id=self.session_id, graph=LEDGER_GRAPH,
                                  check_mode=self.check_mode, request_id=request_id)


def ledger_attempt(stub: pb_grpc.AutogradServiceStub, request: pb.BackwardRequest,
                   rng: random.Random, gentle: bool) -> Outcome:
    """One attempt: a normal deadline, a short one, or cancelled (``gentle``: normal only)."""
    style = 0.0 if gentle else rng.random()
    if style < 0.55:
        return invoke(lambda: stub.Backward(request, timeout=CALL_TIMEOUT))
    if style < 0.85:
        return invoke(lambda: stub.Backward(request, timeout=rng.uniform(0.05, 0.2)))
    return invoke_and_cancel(stub.Backward, request, rng.uniform(0.0, 0.03))


def settle(ledger: Ledger, stub: pb_grpc.AutogradServiceStub, request_id: str,
           rng: random.Random, tally: Tally, attempts: int, gentle: bool,
           stop_at: float) -> bool:
    """Send ``request_id`` until a definite answer (or the attempts or time run out); whether it
    got one. The ledger counts an OK once per request_id, whatever number of attempts."""
    request = maybe_values(ledger.request(request_id), rng)
    for attempt in range(attempts):
        started = time.perf_counter()
        got = ledger_attempt(stub, request, rng, gentle)
        tally.record("ledger", "Backward w*1" + (" (retry)" if attempt else ""), got,
                     time.perf_counter() - started)
        with ledger.lock:
            ledger.attempts += 1
        if got.code is Code.OK:
            grads = [decode(g.grad) for g in got.response.leaves if g.name == "w"]
            if len(grads) != 1:
                tally.failures.append(f"ledger Backward answered OK without w's grad: "
                                      f"{got.response}")
            with ledger.lock:
                ledger.ok += 1
            return True
        if got.code not in RETRY:
            with ledger.lock:
                ledger.failed[got.code.name] += 1
            return True
        if time.monotonic() > stop_at:
            break
        time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * rng.random())
    return False


# --- /proc -------------------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state is [0], ppid [1], starttime
    [19]); None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def is_worker(argv: Sequence[str]) -> bool:
    return any(a == WORKER_MODULE or a.endswith(WORKER_SCRIPT) for a in argv[1:4])


def workers_of(server_pid: int) -> dict[int, str]:
    """The server's symbolic worker processes (its children running crossgrad's worker module):
    pid -> start time (which tells a reused pid)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is None or len(fields) < 20 or fields[1] != str(server_pid):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if is_worker(argv):
            found[int(entry)] = fields[19]
    return found


def kill_exactly(pid: int, start_time: str) -> bool:
    """SIGKILL ``pid`` only if it is still the process that started at ``start_time``."""
    try:
        handle = os.pidfd_open(pid)
    except (OSError, AttributeError):
        handle = None
    try:
        fields = _stat(pid)
        if fields is None or fields[19] != start_time:
            return False
        if handle is not None:
            signal.pidfd_send_signal(handle, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    finally:
        if handle is not None:
            os.close(handle)


# --- the server --------------------------------------------------------------------------------

def server_command(given: str | None) -> list[str]:
    if given:
        return shlex.split(given)
    beside = Path(sys.executable).with_name("crossgrad-server")
    if beside.is_file():
        return [str(beside)]
    return [sys.executable, "-m", "crossgrad.server"]


@dataclass
class Server:
    process: subprocess.Popen[str]
    address: str
    log: Any  # its stderr, a temporary file

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return str(self.log.read())

    def stop(self) -> tuple[float, bool]:
        """SIGTERM; seconds until it exited, and whether it did so by itself in time."""
        started = time.monotonic()
        if self.process.poll() is not None:
            return 0.0, True
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=GRACE + 10)
            return time.monotonic() - started, True
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return time.monotonic() - started, False


def start_server(command: Sequence[str]) -> Server:
    full = [*command, "--address", "127.0.0.1:0", *SERVER_FLAGS]
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by the caller)
    process = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=log, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"),
                               start_new_session=True)
    assert process.stdout is not None
    stdout = process.stdout
    lines: list[str] = []
    # Keep reading, so a chatty server never blocks on a full pipe.
    threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and not lines and process.poll() is None:
        time.sleep(0.05)
    match = re.search(r"listening on (\S+)", lines[0]) if lines else None
    if match is None:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.seek(0)
        raise SystemExit(f"{shlex.join(full)} printed no address: {lines[:1]}\n"
                         f"{log.read()[-3000:]}")
    return Server(process, match.group(1), log)


def channel(address: str) -> grpc.Channel:
    """A channel with its own connection, able to send past the server's message limit (so the
    server's limit is what answers)."""
    ch = grpc.insecure_channel(address, options=[
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    grpc.channel_ready_future(ch).result(timeout=30)
    return ch


# --- health, the sampler, the faults -----------------------------------------------------------

def health_probe_main(address: str, seconds: float) -> int:
    """``--health-probe``: check health every HEALTH_PERIOD for ``seconds`` (or until killed),
    one line per check: its seconds and SERVING or what went wrong. Run as a process of its own,
    so the load this script's client threads make cannot delay it."""
    end = time.monotonic() + seconds
    with contextlib.closing(channel(address)) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(),
                                    timeout=HEALTH_TIMEOUT).status
                what = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as error:
                what = outcome_of(error).code.name
            print(f"{time.perf_counter() - started:.6f} {what}", flush=True)
            time.sleep(HEALTH_PERIOD)
    return 0


class Health:
    """The health probe (a subprocess of this script) and what it saw: every check's latency,
    and the checks that did not answer SERVING within HEALTH_TIMEOUT."""

    def __init__(self, address: str, t0: float, seconds: float) -> None:
        self.latency: list[float] = []
        self.failures: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--health-probe", address,
             "--seconds", f"{seconds:.0f}"], stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, args=(t0,), daemon=True)
        self.reader.start()

    def _read(self, t0: float) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            seconds_text, _, what = line.strip().partition(" ")
            try:
                seconds = float(seconds_text)
            except ValueError:
                continue
            self.latency.append(seconds)
            if what != "SERVING":
                self.failures.append(f"t={time.monotonic() - t0 - seconds:.1f} s: {what} "
                                     f"after {seconds * 1e3:.0f} ms")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=5)


@dataclass
class Samples:
    """RSS samples: (seconds since the start, server KiB, workers' KiB summed, worker count)."""

    rows: list[tuple[float, int, int, int]] = field(default_factory=list)
    worker_pids: dict[int, str] = field(default_factory=dict)  # every worker seen
    initial_workers: int = 0
    kills: int = 0

    def sample(self, server_pid: int, at: float) -> None:
        workers = workers_of(server_pid)
        self.worker_pids.update(workers)
        server = rss_kib(server_pid)
        if server is not None:
            self.rows.append((at, server, sum(rss_kib(p) or 0 for p in workers), len(workers)))


def sampler(server_pid: int, samples: Samples, t0: float, stop: threading.Event) -> None:
    while not stop.wait(RSS_PERIOD):
        samples.sample(server_pid, time.monotonic() - t0)


def watch_workers(server_pid: int, samples: Samples, stop: threading.Event) -> None:
    """Notice worker pids often (a worker may live less than an RSS period)."""
    while not stop.wait(0.25):
        samples.worker_pids.update(workers_of(server_pid))


def faults(server_pid: int, samples: Samples, rng: random.Random, period: tuple[float, float],
           stop: threading.Event) -> None:
    while not stop.wait(rng.uniform(*period)):
        workers = workers_of(server_pid)
        samples.worker_pids.update(workers)
        if not workers:
            continue
        victims = list(workers.items())
        rng.shuffle(victims)
        for pid, start_time in victims[:rng.choice((1, 1, 2))]:
            if kill_exactly(pid, start_time):
                samples.kills += 1


# --- the clients -------------------------------------------------------------------------------

class Client:
    """One client thread: its channel, its session, its random mix of calls."""

    def __init__(self, address: str, index: int, seed: int, ledgers: Sequence[Ledger],
                 t0: float) -> None:
        self.rng = random.Random(seed * 1000 + index)
        self.channel = channel(address)
        self.stub = pb_grpc.AutogradServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.ledgers = ledgers
        self.t0 = t0
        self.tally = Tally()
        self.extra_sessions: list[str] = []
        self.oversized_failed_backwards = 0
        self.session = self.stub.CreateSession(pb.CreateSessionRequest(
            idle_ttl=duration_pb2.Duration(seconds=3600)), timeout=CALL_TIMEOUT).session.id
        for name, value, dtype in (("x", 4.0, "float32"), ("v", [1.0, 3.0, 4.0], "float32"),
                                   ("a", np.linspace(0, 1, BIG_LEAF), "float64")):
            self.stub.PutLeaf(pb.PutLeafRequest(session_id=self.session, name=name,
                                                value=tensor(value, dtype), requires_grad=True),
                              timeout=CALL_TIMEOUT)

    def close(self) -> None:
        for session in [self.session, *self.extra_sessions]:
            call_once(self.stub.DeleteSession, pb.DeleteSessionRequest(session_id=session))
        self.channel.close()

    def run(self, stop_at: float) -> None:
        kinds = list(MIX)
        weights = [MIX[k] for k in kinds]
        actions: dict[str, Callable[[float], None]] = {
            "valid": self.valid, "hostile": self.hostile, "oversized": self.oversized,
            "deadline": self.deadline, "ledger": self.ledger}
        calls = 0
        while time.monotonic() < stop_at and calls < 1_000_000:
            actions[self.rng.choices(kinds, weights)[0]](stop_at)
            calls += 1

    def timed(self, kind: str, call: str, thunk: Callable[[], Outcome],
              allowed: set[Code] | None = None) -> Outcome:
        started = time.perf_counter()
        got = thunk()
        self.tally.record(kind, call, got, time.perf_counter() - started, allowed)
        return got

    def _call(self, kind: str, call: str, method: Any, request: Any,
              timeout: float = CALL_TIMEOUT, allowed: set[Code] | None = None) -> Outcome:
        return self.timed(kind, call, lambda: call_once(method, request, timeout), allowed)

    # valid -----------------------------------------------------------------------------------

    def _retry_same(self, name: str, method: Any, request: Any, first: Outcome,
                    key: Callable[[Any], Any] = lambda response: response) -> None:
        """Send ``request`` again with its request_id: it must get its first answer back (``key``:
        the part of it that must be the same)."""
        again = self._call("valid", f"{name} (retry)", method, request)
        if (first.code is Code.OK and again.code is Code.OK
                and key(again.response) != key(first.response)):
            self.tally.failures.append(f"a retried {name} request_id got another answer")

    def valid(self, stop_at: float) -> None:
        s, stub, rng = self.session, self.stub, self.rng
        pick = rng.randrange(13)
        if pick == 0:
            rid = uuid.uuid4().hex
            request = pb.CreateSessionRequest(idle_ttl=duration_pb2.Duration(seconds=300),
                                              dtype=pb.DTYPE_FLOAT64, request_id=rid)
            got = self._call("valid", "CreateSession", stub.CreateSession, request)
            if got.code is Code.OK:
                self.extra_sessions.append(got.response.session.id)
                # The session as it is now: the same one, its expiry moved on.
                self._retry_same("CreateSession", stub.CreateSession, request, got,
                                 lambda r: (r.session.id, r.session.dtype, r.session.idle_ttl))
            if len(self.extra_sessions) > 3:
                old = self.extra_sessions.pop(0)
                self._call("valid", "DeleteSession", stub.DeleteSession,
                           pb.DeleteSessionRequest(session_id=old, request_id=uuid.uuid4().hex))
        elif pick == 1:
            request = pb.PutLeafRequest(session_id=s, name="x",
                                        value=tensor(rng.uniform(1.0, 5.0)),
                                        request_id=uuid.uuid4().hex)
            got = self._call("valid", "PutLeaf", stub.PutLeaf, request)
            if rng.random() < 0.3:
                self._retry_same("PutLeaf", stub.PutLeaf, request, got)
        elif pick in (2, 3, 4):
            g = rng.choice([SQUARE, SIN_SQUARE, MEAN_SQUARE])
            request = pb.BackwardRequest(session_id=s, graph=g,
                                         request_id=uuid.uuid4().hex if rng.random() < 0.7
                                         else "")
            got = self._call("valid", "Backward", stub.Backward, maybe_values(request, rng))
            if request.request_id and rng.random() < 0.3:
                self._retry_same("Backward", stub.Backward, request, got)
        elif pick == 5:
            request = pb.GetLeafRequest(session_id=s, name=rng.choice("xv"))
            if rng.random() < 0.5:
                request.view = rng.choice((pb.LEAF_VIEW_VALUE, pb.LEAF_VIEW_GRAD))
            self._call("valid", "GetLeaf", stub.GetLeaf, maybe_values(request, rng))
        elif pick == 6:
            self._call("valid", "ZeroGrad", stub.ZeroGrad, pb.ZeroGradRequest(
                session_id=s, names=["x", "v"], set_to_none=rng.random() < 0.5,
                request_id=uuid.uuid4().hex))
        elif pick == 7:
            self._call("valid", "Evaluate", stub.Evaluate,
                       maybe_values(pb.EvaluateRequest(session_id=s, graph=SIN_SQUARE,
                                                       nodes=["y", "z"]), rng))
        elif pick in (8, 9):
            self._differentiate("sin(x**2)", values_form(x=4.0), hessian=rng.random() < 0.3)
        elif pick == 10:
            self._differentiate(random_formula(rng, rng.randint(2, 7)),
                                values_form(x=rng.uniform(-1, 1), y=rng.uniform(-1, 1)))
        elif pick == 11:
            self._call("valid", "ListOps" if rng.random() < 0.5 else "GetSession",
                       *((stub.ListOps, pb.ListOpsRequest()) if rng.random() < 0.5
                         else (stub.GetSession, pb.GetSessionRequest(session_id=s))))
        else:  # the verdict on health is the probe's; this one is one more call under load
            self._call("valid", "Health.Check", self.health_stub.Check,
                       health_pb2.HealthCheckRequest(), HEALTH_TIMEOUT)

    def _differentiate(self, formula: str, values: dict[str, pb.Tensor],
                       hessian: bool = False) -> None:
        name = "Differentiate sin(x**2)" if formula == "sin(x**2)" else "Differentiate random"
        got = self._call("valid", name, self.stub.Differentiate, maybe_values(
            pb.DifferentiateRequest(formula=formula, values=values, hessian=hessian), self.rng))
        if got.code is Code.OK:
            check = got.response.check
            self.tally.methods.append((time.monotonic() - self.t0, check.method))
            if check.method == pb.CHECK_METHOD_FINITE_DIFFERENCE:
                self.tally.fallback_reasons[re.sub(r"[\d.]+", "N", check.reason)[:110]] += 1

    # hostile ---------------------------------------------------------------------------------

    def hostile(self, stop_at: float) -> None:
        s, stub, rng = self.session, self.stub, self.rng
        pick = rng.randrange(16)

        def diff(call: str, formula: str, **values: float) -> None:
            self._call("hostile", call, stub.Differentiate,
                       pb.DifferentiateRequest(formula=formula, values=values_form(**values)),
                       HOSTILE_TIMEOUT, {Code.OK} if call in MAY_SUCCEED else None)

        def backward(call: str, g: pb.Graph) -> None:
            self._call("hostile", call, stub.Backward,
                       pb.BackwardRequest(session_id=s, graph=g), HOSTILE_TIMEOUT)

        if pick == 0:
            method = rng.choice(["Backward", "PutLeaf", "Differentiate", "CreateSession",
                                 "ListOps"])
            raw = self.channel.unary_unary(f"/crossgrad.v1.AutogradService/{method}",
                                           request_serializer=None, response_deserializer=None)
            garbage = b"\xff" * 11 + rng.randbytes(rng.randrange(64))  # a varint too long
            self._call("hostile", "garbage bytes", raw, garbage, HOSTILE_TIMEOUT)
        elif pick == 1:
            backward("unknown op", graph(leaf("x"), op("y", "frobnicate", "x")))
        elif pick == 2:
            diff("huge formula", "+".join(["x"] * 6000), x=1.0)
        elif pick == 3:
            diff("blow-up pow 5000", "x ** (5000 + 0)", x=1.0001)
        elif pick == 4 and rng.random() < 0.5:  # the heaviest: half as often
            diff("blow-up 9**1e9", "x * 9 ** (y*0 + 1000000000)", x=1.0, y=1.0)
        elif pick == 5:
            depth = rng.choice((150, 600, 3000))
            diff("deep formula", "sin(" * depth + "x" + ")" * depth, x=0.5)
        elif pick == 6:
            self._call("hostile", "unknown session", stub.GetLeaf,
                       pb.GetLeafRequest(session_id=uuid.uuid4().hex, name="x"))
        elif pick == 7:
            ttl, call = rng.choice([(duration_pb2.Duration(seconds=-5), "ttl negative"),
                                    (duration_pb2.Duration(seconds=1, nanos=2_000_000_000),
                                     "ttl bad nanos"),
                                    (duration_pb2.Duration(seconds=10**15), "ttl huge")])
            got = self._call("hostile", call, stub.CreateSession,
                             pb.CreateSessionRequest(idle_ttl=ttl), HOSTILE_TIMEOUT,
                             {Code.OK} if call in MAY_SUCCEED else None)
            if got.code is Code.OK:  # capped, not refused: do not leave it behind
                self.extra_sessions.append(got.response.session.id)
        elif pick == 8:
            diff("NaN value", "sin(x)", x=float("nan"))
        elif pick == 9:
            self._call("hostile", "NaN leaf", stub.PutLeaf, pb.PutLeafRequest(
                session_id=s, name="nan", value=tensor(float("nan"))))
        elif pick == 10:
            backward("mismatched shapes", graph(leaf("v"), const("c", [1.0, 2.0], "float32"),
                                                op("y", "add", "v", "c"),
                                                op("m", "mean", "y")))
        elif pick == 11:
            backward("bytes not shape x dtype", graph(leaf("x"), pb.Node(
                id="c", constant=pb.Tensor(shape=[2], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 7)),
                op("y", "mul", "x", "c")))
        elif pick == 12:
            rid = uuid.uuid4().hex
            first = self._call("valid", "Backward", stub.Backward,
                               pb.BackwardRequest(session_id=s, graph=SQUARE, request_id=rid))
            if first.code is Code.OK:
                self._call("hostile", "request_id reused", stub.Backward, pb.BackwardRequest(
                    session_id=s, graph=SIN_SQUARE, request_id=rid))
        elif pick == 13:
            self._call("hostile", "unknown leaf", stub.Backward, pb.BackwardRequest(
                session_id=s, graph=graph(leaf("q"), op("y", "sin", "q"))))
        elif pick == 14:
            diff("forbidden formula", "__import__('os').getpid()")
        else:
            diff("exponent literal", "x ** 100000", x=1.0)

    # oversized -------------------------------------------------------------------------------

    def oversized(self, stop_at: float) -> None:
        s, stub, rng = self.session, self.stub, self.rng
        pick = rng.randrange(4)
        if pick == 0:  # claims a million elements with 16 bytes of data
            big = pb.Tensor(shape=[1000, 1000], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 16)
            self._call("oversized", "tensor past max-elements (claimed)", stub.Backward,
                       pb.BackwardRequest(session_id=s, graph=graph(
                           leaf("x"), pb.Node(id="c", constant=big), op("y", "mul", "x", "c"))))
        elif pick == 1:  # real elements: 150,000 float32, 600 kB, within the message limit
            self._call("oversized", "tensor past max-elements", stub.PutLeaf, pb.PutLeafRequest(
                session_id=s, name="too-big", value=tensor(np.zeros(MAX_ELEMENTS * 3 // 2))))
        elif pick == 2:
            self._call("oversized", "message past the size limit", stub.PutLeaf,
                       pb.PutLeafRequest(session_id=s, name="huge", value=pb.Tensor(
                           shape=[MAX_MESSAGE_BYTES // 4 + 1024], dtype=pb.DTYPE_FLOAT32,
                           data=b"\0" * (MAX_MESSAGE_BYTES + 4096))))
        else:  # six 720 kB gradients in one answer: past 4 MiB
            request = pb.BackwardRequest(session_id=s, graph=BIG_CHAIN,
                                         retain=[f"n{k}" for k in range(5)],
                                         check_mode=pb.CHECK_MODE_OFF,
                                         request_id=uuid.uuid4().hex)
            got = self._call("oversized", "answer past the size limit", stub.Backward, request)
            if got.code is Code.OK:
                self.tally.failures.append("a Backward whose answer passes the message limit "
                                           "answered OK")
            else:
                self.oversized_failed_backwards += 1

    # deadlines and cancellations -------------------------------------------------------------

    def deadline(self, stop_at: float) -> None:
        rng = self.rng
        n = rng.randrange(1500, 4000)  # a new structure most times: a derivation to run
        request = pb.DifferentiateRequest(
            formula="mean(sigmoid(w * x + b))",
            values={"w": tensor(np.linspace(-1, 1, n)), "x": tensor(np.linspace(0, 2, n)),
                    "b": tensor(0.1)})
        if rng.random() < 0.6:
            self._call("deadline", "Differentiate, 50-200 ms deadline",
                       self.stub.Differentiate, request, rng.uniform(0.05, 0.2))
        else:
            self.timed("deadline", "Differentiate, cancelled",
                       lambda: invoke_and_cancel(self.stub.Differentiate, request,
                                                 rng.uniform(0.01, 0.15)))

    # ledger ----------------------------------------------------------------------------------

    def ledger(self, stop_at: float) -> None:
        book = self.rng.choice(self.ledgers)
        request_id = uuid.uuid4().hex
        if not settle(book, self.stub, request_id, self.rng, self.tally, LEDGER_ATTEMPTS,
                      gentle=False, stop_at=stop_at + 5):
            with book.lock:
                book.undecided.append(request_id)


# --- the run -----------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def ms(seconds: float) -> str:
    return "—" if seconds != seconds else f"{seconds * 1e3:,.1f} ms"


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def recovery_probe(stub: pb_grpc.AutogradServiceStub, rng: random.Random) -> tuple[bool, str]:
    """After the faults: Differentiate of formulas the server has not seen must get a SYMBOLIC
    check again within RECOVERY_SECONDS."""
    end = time.monotonic() + RECOVERY_SECONDS
    last = ""
    tries = 0
    while time.monotonic() < end:
        tries += 1
        formula = random_formula(rng, 9) + f" + x * {tries}"  # an unseen structure
        got = call_once(stub.Differentiate, pb.DifferentiateRequest(
            formula=formula, values=values_form(x=0.3, y=0.2)))
        if got.code is Code.OK and got.response.check.method == pb.CHECK_METHOD_SYMBOLIC:
            return True, f"SYMBOLIC on try {tries}"
        last = (f"{pb.CheckMethod.Name(got.response.check.method)}: "
                f"{got.response.check.reason[:120]}" if got.code is Code.OK
                else f"{got.code.name}: {got.details[:120]}")
        time.sleep(1.0)
    return False, f"{tries} tries over {RECOVERY_SECONDS:.0f} s, the last {last}"


def final_grad(stub: pb_grpc.AutogradServiceStub, session_id: str) -> float | None:
    for _ in range(5):
        got = call_once(stub.GetLeaf, pb.GetLeafRequest(session_id=session_id, name="w",
                                                        view=pb.LEAF_VIEW_GRAD))
        if got.code is Code.OK:
            leaf_state = got.response.leaf
            return float(decode(leaf_state.grad)) if leaf_state.HasField("grad") else 0.0
        time.sleep(1.0)
    return None


@dataclass(frozen=True)
class Plan:
    seconds: float  # of load
    clients: int
    command: list[str]
    rss_growth_mib: float
    seed: int
    health_probe: str | None = None  # run as the health probe of this address, nothing else

    @property
    def warmup(self) -> float:
        return min(10.0, max(4.0, self.seconds * 0.1))

    @property
    def kill_period(self) -> tuple[float, float]:
        return (2.0, 5.0) if self.seconds < 60 else (3.0, 8.0)


@dataclass
class Result:
    """Everything the run measured, for the tables and the checks."""

    tally: Tally
    ledgers: list[Ledger]
    grads: list[float | None]  # each ledger's final grad (None: unreadable)
    samples: Samples
    rss_start: tuple[float, int, int, int]
    rss_end: tuple[float, int, int, int]
    health: Health
    recovered: bool
    recovery: str
    alive: bool  # the server was still running after the load
    stuck: int  # client threads that did not stop
    oversized_failed: int  # Backwards refused for an answer past the size limit
    big_grads: list[bool]  # whether their leaf has a grad afterwards (it must not)
    exit_seconds: float
    exited: bool  # by itself after SIGTERM, within its grace
    returncode: int | None
    log: str  # the server's stderr
    orphans: dict[int, str]  # workers alive after the server exited
    load_offset: float  # seconds from the server's start to the load's
    times: tuple[float, float, float]  # start-up, load, the end


def start_ledgers(stub: pb_grpc.AutogradServiceStub) -> list[Ledger]:
    ledgers = []
    for k in range(LEDGERS):
        mode = pb.CHECK_MODE_REPORT if k % 2 == 0 else pb.CHECK_MODE_OFF
        sid = stub.CreateSession(pb.CreateSessionRequest(
            dtype=pb.DTYPE_FLOAT64, check_mode=mode,
            idle_ttl=duration_pb2.Duration(seconds=3600)), timeout=CALL_TIMEOUT).session.id
        stub.PutLeaf(pb.PutLeafRequest(session_id=sid, name="w", value=tensor(1.0, "float64"),
                                       requires_grad=True), timeout=CALL_TIMEOUT)
        ledgers.append(Ledger(sid, mode))
    return ledgers


def settle_the_rest(ledgers: Sequence[Ledger], stub: pb_grpc.AutogradServiceStub,
                    rng: random.Random, tally: Tally) -> None:
    """Send the request_ids the load left without a definite answer again (30 s at most)."""
    settle_by = time.monotonic() + 30
    for book in ledgers:
        pending, book.undecided = book.undecided, []
        for request_id in pending:
            if time.monotonic() > settle_by or not settle(
                    book, stub, request_id, rng, tally, 5, gentle=True, stop_at=settle_by):
                book.undecided.append(request_id)


def surviving_workers(samples: Samples) -> dict[int, str]:
    """Workers seen during the run still alive after the server exited (given 2 s to go)."""
    def alive() -> dict[int, str]:
        return {pid: st for pid, st in samples.worker_pids.items()
                if (f := _stat(pid)) is not None and f[19] == st and f[0] != "Z"}

    left = alive()
    for _ in range(20):
        if not left:
            break
        time.sleep(0.1)
        left = alive()
    return left


def run(plan: Plan, server: Server, started: float) -> Result:
    """The load, the faults and the end; the server is stopped (SIGTERM) on the way out."""
    t0 = time.monotonic()
    stop, fault_stop = threading.Event(), threading.Event()
    samples = Samples()
    health: Health | None = None
    control = channel(server.address)
    stub = pb_grpc.AutogradServiceStub(control)
    try:
        ledgers = start_ledgers(stub)
        clients = [Client(server.address, i, plan.seed, ledgers, t0)
                   for i in range(plan.clients)]
        wait_until = time.monotonic() + 30  # the server starts its workers in the background
        while not workers_of(server.pid) and time.monotonic() < wait_until:
            time.sleep(0.2)
        samples.sample(server.pid, time.monotonic() - t0)
        samples.initial_workers = len(samples.worker_pids)

        load_start = time.monotonic()
        stop_at = load_start + plan.seconds
        background = [
            threading.Thread(target=sampler, args=(server.pid, samples, t0, stop)),
            threading.Thread(target=watch_workers, args=(server.pid, samples, stop))]
        fault_thread = threading.Thread(target=faults, args=(
            server.pid, samples, random.Random(plan.seed + 7), plan.kill_period, fault_stop))
        threads = [threading.Thread(target=c.run, args=(stop_at,)) for c in clients]
        for thread in [*background, *threads, fault_thread]:
            thread.daemon = True
        health = Health(server.address, t0, min(MAX_SECONDS, plan.seconds + 30))
        for thread in [*background, *threads]:
            thread.start()
        time.sleep(plan.warmup)
        samples.sample(server.pid, time.monotonic() - t0)
        rss_start = samples.rows[-1]
        fault_thread.start()
        join_by = stop_at + 3 * CALL_TIMEOUT  # a ledger's retries may run 5 s past the end
        for thread in threads:
            thread.join(timeout=max(0.1, join_by - time.monotonic()))
        fault_stop.set()
        fault_thread.join(timeout=5)
        health.stop()
        stuck = sum(t.is_alive() for t in threads)
        end_start = time.monotonic()

        time.sleep(2.0)  # let the pool notice the last kill
        end_rng = random.Random(plan.seed + 11)
        tally = Tally()
        settle_the_rest(ledgers, stub, end_rng, tally)
        recovered, recovery = recovery_probe(stub, end_rng)
        samples.sample(server.pid, time.monotonic() - t0)
        rss_end = samples.rows[-1]
        grads = [final_grad(stub, book.session_id) for book in ledgers]
        alive = server.process.poll() is None
        stop.set()
        for thread in background:
            thread.join(timeout=5)
        big_grads = []
        for c in clients:
            tally.merge(c.tally)
            got = call_once(stub.GetLeaf, pb.GetLeafRequest(session_id=c.session, name="a",
                                                            view=pb.LEAF_VIEW_GRAD))
            big_grads.append(got.code is Code.OK and got.response.leaf.HasField("grad"))
            c.close()
    except BaseException:
        print("\nThe run broke off; the server's stderr ends with:\n" + server.log_text()[-3000:],
              file=sys.stderr)
        raise
    finally:
        stop.set()
        fault_stop.set()
        if health is not None:
            health.stop()
        control.close()
        exit_seconds, exited = server.stop()
    orphans = surviving_workers(samples)
    for pid, start_time in orphans.items():
        kill_exactly(pid, start_time)
    now = time.monotonic()
    return Result(
        tally, ledgers, grads, samples, rss_start, rss_end, health, recovered, recovery, alive,
        stuck, sum(c.oversized_failed_backwards for c in clients), big_grads, exit_seconds,
        exited, server.process.returncode, server.log_text(), orphans, load_start - t0,
        (load_start - started, end_start - load_start, now - end_start))


# --- the report --------------------------------------------------------------------------------

def print_answers(tally: Tally, plan: Plan, load_seconds: float) -> None:
    codes = sorted({code for _, code in tally.codes}, key=lambda c: (c != "OK", c))
    kinds = [k for k in MIX if any(kk == k for kk, _ in tally.codes)]
    print("\n### Answers by status code\n")
    rows = [[kind, f"{sum(tally.codes[kind, c] for c in codes):,}",
             *[f"{tally.codes[kind, c]:,}" if tally.codes[kind, c] else "" for c in codes],
             f"{sum(n for key, n in tally.unexpected.items() if key[0] == kind):,}"]
            for kind in kinds]
    print(markdown_table(["kind", "calls", *codes, "unexpected"], rows,
                         right=[False, *([True] * (len(codes) + 2))]))
    calls = sum(tally.codes.values())
    print(f"\n{calls:,} calls in {load_seconds:.0f} s ({calls / load_seconds:,.0f}/s) from "
          f"{plan.clients} client threads; ledger attempts include retries.")

    print("\n### Latency by call\n")
    rows = []
    for (kind, call), values in sorted(tally.latency.items()):
        answered = tally.codes_by_call[kind, call]
        rows.append([kind, call, f"{len(values):,}", ms(percentile(values, 50)),
                     ms(percentile(values, 99)), ms(max(values)),
                     ", ".join(f"{c} {n}" for c, n in answered.most_common())])
    print(markdown_table(["kind", "call", "n", "p50", "p99", "max", "answers"], rows,
                         right=[False, False, True, True, True, True, False]))

    if tally.unexpected:
        print("\n### Unexpected answers (for reading; they fail the run only as listed below)\n")
        rows = [[kind, call, code, reason or "—", f"{n:,}",
                 tally.unexpected_sample[kind, call, code, reason][:90].replace("|", "/")]
                for (kind, call, code, reason), n in tally.unexpected.most_common(25)]
        print(markdown_table(["kind", "call", "code", "reason", "n", "a message"], rows,
                             right=[False, False, False, False, True, False]))


def checks(r: Result, plan: Plan) -> tuple[list[list[str]], list[str]]:
    """The checks table's rows (what, measured, verdict) and the failures among them."""
    rows: list[list[str]] = []
    failures: list[str] = []

    def check(what: str, measured: str, ok: bool, why: str = "") -> None:
        rows.append([what, measured, "PASS" if ok else "FAIL"])
        if not ok:
            failures.append(f"{what}: {why or measured}")

    def note(what: str, measured: str) -> None:
        rows.append([what, measured, "—"])

    tally = r.tally
    bad = sum(n for (_, code), n in tally.codes.items() if code in ("UNKNOWN", "INTERNAL"))
    check("no UNKNOWN, no INTERNAL but CHECK_DISAGREEMENT",
          f"{bad:,} UNKNOWN or INTERNAL, {bad - tally.bug_count:,} of them CHECK_DISAGREEMENT",
          tally.bug_count == 0, "; ".join(tally.bugs[:3]))
    for book, grad in zip(r.ledgers, r.grads, strict=True):
        mode = pb.CheckMode.Name(book.check_mode).removeprefix("CHECK_MODE_")
        open_ids = len(book.undecided)
        expected = (f"{book.ok}" if not open_ids
                    else f"{book.ok}..{book.ok + open_ids} ({open_ids} undecided)")
        check(f"ledger {book.session_id[:8]} ({mode}): grad = request_ids answered OK",
              f"expected {expected}, grad {grad if grad is None else f'{grad:g}'}; "
              f"{book.attempts:,} attempts, definite errors {dict(book.failed) or 0}",
              grad is not None and book.ok <= grad <= book.ok + open_ids)
    for failure in sorted(set(tally.failures))[:5]:
        check("an answer as the wire API promises", failure[:120], False)
    check("a failed oversized Backward changed nothing",
          f"{r.oversized_failed} failed; grads set afterwards: {sum(r.big_grads)}",
          not any(r.big_grads))
    latency = r.health.latency
    check("health answers SERVING within 1 s",
          f"{len(latency):,} checks, p50 {ms(percentile(latency, 50))}, "
          f"p99 {ms(percentile(latency, 99))}, max {ms(max(latency, default=float('nan')))}, "
          f"{len(r.health.failures)} failed", not r.health.failures,
          f"{len(r.health.failures)} failed, the first {r.health.failures[:3]}")
    rows_rss = r.samples.rows
    growth = r.rss_end[1] - r.rss_start[1]
    check("server memory flat",
          f"after warm-up {mib(r.rss_start[1])}, end {mib(r.rss_end[1])} "
          f"({growth / 1024:+,.1f} MiB), max {mib(max(x[1] for x in rows_rss))}",
          growth <= plan.rss_growth_mib * 1024,
          f"grew {growth / 1024:,.1f} MiB (> {plan.rss_growth_mib:g})")
    step = max(1, -(-len(rows_rss) // 10))  # about ten of them
    note("server RSS over the run",
         ", ".join(f"{x[0]:.0f} s: {x[1] / 1024:.0f}" for x in rows_rss[::step]) + " MiB")
    note("workers' memory (all workers summed)",
         f"after warm-up {mib(r.rss_start[2])} ({r.rss_start[3]} workers), end "
         f"{mib(r.rss_end[2])} ({r.rss_end[3]}), max {mib(max(x[2] for x in rows_rss))}")
    pids = r.samples.worker_pids
    note("worker kills (SIGKILL) / restarts (new pids)",
         f"{r.samples.kills} / {len(pids) - r.samples.initial_workers} ({len(pids)} pids seen)")
    third = plan.seconds / 3
    parts = [[m for t, m in tally.methods if lo <= t - r.load_offset < hi]
             for lo, hi in ((0, third), (third, 2 * third), (2 * third, 10 * third))]
    note("valid Differentiate answered by finite differences, by third of the run",
         " / ".join(f"{sum(m == pb.CHECK_METHOD_FINITE_DIFFERENCE for m in part)} of {len(part)}"
                    for part in parts))
    check("after the faults, symbolic derivation works again", r.recovery, r.recovered)
    check("the server is still up after the load", "running" if r.alive
          else f"exited with status {r.returncode}", r.alive)
    check("every client thread stops by itself",
          f"{r.stuck} still in a call {3 * CALL_TIMEOUT:.0f} s after the end", r.stuck == 0)
    check("SIGTERM: the server exits within its grace", f"exited in {r.exit_seconds:.1f} s"
          + ("" if r.exited else " (killed)") + f", grace {GRACE:g} s", r.exited)
    if r.orphans:
        check("no worker outlives the server", f"{len(r.orphans)} left 2 s after it exited: "
              f"{sorted(r.orphans)} (killed now)", False)
    note("server log", f"{r.log.count('Traceback')} tracebacks, {len(r.log.splitlines())} lines")
    return rows, failures


def parse(argv: Sequence[str] | None) -> Plan:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS:.0f} s of load")
    parser.add_argument("--seconds", type=float,
                        help=f"seconds of load (at most {MAX_SECONDS:.0f})")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument("--server-cmd", help="the command that starts the server (default: "
                                             "crossgrad-server); gets --address and limits")
    parser.add_argument("--rss-growth-mib", type=float, default=100.0,
                        help="most the server's RSS may grow after the warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--health-probe", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    if not 5 <= seconds <= MAX_SECONDS or not 1 <= args.clients <= 64:
        parser.error(f"--seconds within 5-{MAX_SECONDS:.0f}, --clients within 1-64")
    return Plan(seconds, args.clients, server_command(args.server_cmd), args.rss_growth_mib,
                args.seed, args.health_probe)


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse(argv)
    if plan.health_probe:
        return health_probe_main(plan.health_probe, plan.seconds)
    started = time.monotonic()
    server = start_server(plan.command)
    print(f"## crossgrad load and faults ({plan.seconds:.0f} s of load, {plan.clients} "
          "clients)\n")
    print(markdown_table(["", "setting"], [
        ["server", f"`{shlex.join(plan.command)}` at {server.address}, pid {server.pid}"],
        ["limits", shlex.join(SERVER_FLAGS)],
        ["mix", ", ".join(f"{k} {v}" for k, v in MIX.items())
         + f"; worker kills every {plan.kill_period[0]:g}-{plan.kill_period[1]:g} s"],
        ["machine", f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
                    f"grpcio {grpc.__version__}"],
    ], right=[False, False]))
    sys.stdout.flush()
    try:
        result = run(plan, server, started)
    finally:
        server.log.close()

    print_answers(result.tally, plan, result.times[1])
    rows, failures = checks(result, plan)
    print("\n### Checks\n")
    print(markdown_table(["check", "measured", "verdict"], rows, right=[False, False, False]))
    if result.tally.fallback_reasons:
        print("\nWhy valid Differentiate calls fell back to finite differences:")
        for reason, n in result.tally.fallback_reasons.most_common(4):
            print(f"- {n:,}x {reason}")
    if "Traceback" in result.log:
        first = result.log.index("Traceback")
        print("\nThe server's first traceback (its stderr):\n")
        print("    " + "\n    ".join(result.log[first:first + 1500].splitlines()[:20]))
    startup, load, end = result.times
    print(f"\nTotal time {time.monotonic() - started:.0f} s: start-up {startup:.0f} s, load "
          f"{load:.0f} s, the end (ledgers, recovery, SIGTERM) {end:.0f} s.")
    if failures:
        print("\nFAILED:\n" + "\n".join(f"- {f}" for f in failures))
        return 1
    print("\nAll checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
