"""Budgets for computer algebra: caps on size, and a pool of worker processes with deadlines.

SymPy and SymEngine can take unbounded time and memory on a large or unlucky expression, and
neither can be interrupted from another thread. So symbolic work runs in worker processes, each
with an address-space limit (``Caps.max_memory``) that it sets on itself before importing SymPy;
a request whose structure is past a cap never gets there. The caller falls back to a
finite-difference check and says why.

The pool (``Budget``) owns its processes. Each of its ``workers`` slots is a thread in this
process that starts a worker, hands it queued tasks one at a time and, whenever the worker dies
(killed by the system, out of memory, a crash in native code, past its deadline), starts a new
one: so replacements happen in the background, never on a caller's path, and at most ``workers``
processes exist at once, starting ones included. A start is bounded (``startup_timeout``); one
that fails is retried after a growing pause, so a broken environment does not spin. A worker
is killed by the kernel when the slot thread that started it ends, so a server that is killed
leaves no worker computing on (Linux; elsewhere a worker exits when it next reads its stdin).

A task is a future. The caller waits on it for its own deadline; past that, it gets
``DeadlineExceeded`` but the task runs on in its worker up to the pool's deadline (the task's
``limit``), so that a result arriving late still reaches whoever kept the future (the closed-form
caches in ``differentiation.py``): a short client deadline costs no worker. Only a task past its
limit is killed.

Errors a caller sees: ``TaskFailed`` (the task itself raised in its worker: running it again
would fail again), ``DeadlineExceeded`` and ``WorkerFailed`` (this attempt could not finish: a
later one may).

The workers are plain subprocesses (``python engine/worker.py``) talking length-prefixed pickles
over pipes, not ``multiprocessing``: its "spawn" and "forkserver" start methods re-import the
caller's ``__main__`` in every worker, which runs an unguarded script (a notebook exported as a
script, a program with an embedded server) a second time; "fork" is unsafe in a process running
gRPC's threads. The pools stop their workers at exit.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import CrossgradError

T = TypeVar("T")

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<Q")
_STARTUP_TIMEOUT = 120.0  # seconds for a new worker to import NumPy, SymPy and SymEngine
_RETRY_FIRST = 0.5  # seconds before a failed start is tried again; doubles up to _RETRY_MOST
_RETRY_MOST = 30.0
_IDLE_CHECK = 1.0  # seconds between checks that an idle worker is still alive
_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
# A worker is single-threaded: BLAS thread pools would only reserve address space.
_WORKER_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                       "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Caps:
    """Sizes past which no symbolic derivation is attempted, its deadline and its workers.

    ``max_symbols``: leaf, constant and seed elements; ``max_elements``: elements of op results
    (the expressions built); ``fused_max_*``: up to where the whole closed form is compiled into
    one function (fast calls, slow to compile) and shown as text; beyond, it is evaluated op by op.
    ``deadline``: seconds a derivation may run in its worker before the worker is killed (a
    caller may stop waiting sooner); ``max_memory``: MiB of address space per worker process.
    """

    max_symbols: int = 50_000
    max_elements: int = 200_000
    fused_max_outputs: int = 256
    fused_max_depth: int = 64
    max_hessian_variables: int = 64
    deadline: float = 10.0  # seconds, per derivation
    workers: int = 2
    max_memory: int = 1024  # MiB


DEFAULT_CAPS = Caps()


class DeadlineExceeded(CrossgradError):
    """The symbolic derivation did not finish before a deadline (the caller's, or the pool's:
    then its worker was stopped)."""

    status = "DEADLINE_EXCEEDED"


class WorkerFailed(CrossgradError):
    """No worker could finish the task: it died (killed by the system, a crash in native code),
    none could start, or the pool was closed."""

    status = "INTERNAL"


class TaskFailed(CrossgradError):
    """The task itself raised in its worker (``error``, when it could be sent back): it would
    fail the same way again."""

    status = "INTERNAL"

    def __init__(self, message: str, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.error = error


class _Worker:
    """One worker process and its pipes. Only the slot thread that started it reads, writes,
    reaps and closes it; other threads may only ``signal`` it."""

    def __init__(self, max_memory: int) -> None:
        # Unbuffered stdin: nothing is left to flush when it is closed after the worker died.
        self.process = subprocess.Popen(
            [sys.executable, _WORKER_SCRIPT, str(max_memory), str(os.getpid())], bufsize=0,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, **_WORKER_ENVIRONMENT})
        assert self.process.stdin is not None and self.process.stdout is not None
        self.pid = self.process.pid
        self._in = self.process.stdin.fileno()
        # A write takes what the pipe has room for, so that one to a worker that does not read
        # (stopped, stuck) cannot block past its deadline.
        os.set_blocking(self._in, False)
        self._out = self.process.stdout.fileno()

    def wait_ready(self, end: float) -> None:
        """Returns once the worker has imported what it needs; ``TimeoutError`` past ``end``."""
        self._receive(end)

    def call(self, payload: bytes, end: float) -> tuple[bool, Any, str]:
        """(True, result, "") or (False, the task's exception, the worker's traceback);
        ``TimeoutError`` past ``end``, ``WorkerFailed`` if the worker dies or does not take the
        task by ``end``."""
        self._write(_HEADER.pack(len(payload)) + payload, end)
        reply: tuple[bool, Any, str] = self._receive(end)
        return reply

    def alive(self) -> bool:
        # An idle worker writes nothing: a readable stdout means it closed (the worker died).
        return (self.process.poll() is None
                and not select.select([self._out], [], [], 0)[0])

    def _write(self, data: bytes, end: float) -> None:
        view = memoryview(data)
        while view:
            left = end - time.monotonic()
            if left <= 0 or not select.select([], [self._in], [], left)[1]:
                raise WorkerFailed("a symbolic worker did not take its task before its "
                                   "deadline")
            try:
                view = view[os.write(self._in, view):]
            except BlockingIOError:
                continue
            except OSError:
                raise WorkerFailed(f"a symbolic worker died before taking its task "
                                   f"({self._exit_status()})") from None

    def _receive(self, end: float) -> Any:
        size, = _HEADER.unpack(self._read(_HEADER.size, end))
        return pickle.loads(self._read(size, end))

    def _read(self, size: int, end: float) -> bytes:
        chunks = []
        while size:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self._out, min(size, 1 << 20))
            if not chunk:
                self.process.wait()
                status = self._exit_status()
                raise WorkerFailed(f"a symbolic worker died ({status})")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _exit_status(self) -> str:
        code = self.process.poll()
        if code is None:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def signal(self) -> None:
        """SIGKILL; safe from any thread, never raises."""
        with contextlib.suppress(OSError):
            self.process.kill()

    def kill(self) -> None:
        """Kill, reap and close; never raises."""
        self.signal()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@dataclass(eq=False)
class _Task:
    payload: bytes
    name: str  # the function's, for the log
    limit: float  # seconds it may run in a worker (and wait in the queue)
    queued_at: float = field(default_factory=time.monotonic)
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


class Budget:
    """A pool of up to ``workers`` worker processes that run tasks under deadlines.

    ``run`` calls a function in a worker and waits; ``submit`` returns the task's future, which
    ``wait`` waits on. ``deadline`` is how long a task may run (and wait for a worker) before it
    is dropped or its worker killed, whoever waits for it; ``max_memory`` the MiB of address
    space of each worker; ``startup_timeout`` the seconds a worker may take to start.
    """

    def __init__(self, workers: int = DEFAULT_CAPS.workers, *,
                 deadline: float = DEFAULT_CAPS.deadline,
                 max_memory: int = DEFAULT_CAPS.max_memory,
                 startup_timeout: float = _STARTUP_TIMEOUT) -> None:
        self.capacity = workers
        self.deadline = deadline
        self.max_memory = max_memory
        self.startup_timeout = startup_timeout
        self.tasks = 0  # tasks submitted: what the tests count to see a cache at work
        self.started = 0  # worker processes started, replacements included
        self._state = threading.Condition()
        self._queue: deque[_Task] = deque()
        self._processes: dict[int, _Worker] = {}  # every live worker, starting ones included
        self._idle = 0  # started and waiting for a task
        self._busy = 0  # running a task
        self._slots: list[threading.Thread] = []
        self._closed = False
        self._broken = ""  # why the last start failed, while no worker is up
        _budgets.add(self)

    # --- the callers' side ---------------------------------------------------------------------

    def run(self, function: Callable[..., T], *args: Any, deadline: float) -> T:
        """``function(*args)`` in a worker. ``function`` must be importable by module and name.

        Waiting for a worker (starting or busy) and running the task count against
        ``deadline``; past it ``DeadlineExceeded`` is raised, while the task itself may run on
        up to the pool's deadline (its result is then lost: ``submit`` keeps it)."""
        future = self.submit(function, *args, limit=max(deadline, self.deadline))
        result: T = self.wait(future, deadline)
        return result

    def submit(self, function: Callable[..., Any], *args: Any,
               limit: float | None = None) -> concurrent.futures.Future[Any]:
        """Queue ``function(*args)`` for the next free worker; ``limit``: seconds it may take
        (the pool's deadline by default). The future fails with ``TaskFailed``,
        ``DeadlineExceeded`` or ``WorkerFailed``."""
        payload = pickle.dumps((function.__module__, function.__qualname__, args),
                               protocol=pickle.HIGHEST_PROTOCOL)
        task = _Task(payload, function.__qualname__, self.deadline if limit is None else limit)
        with self._state:
            if self._closed:
                refusal = "the symbolic workers are stopped"
            elif self._broken and not self._idle + self._busy:
                refusal = f"no symbolic worker could start ({self._broken})"
            else:
                refusal = ""
                self.tasks += 1
                self._queue.append(task)
                self._start_slots()
                self._state.notify()
        if refusal:
            task.future.set_exception(WorkerFailed(refusal))
        return task.future

    def wait(self, future: concurrent.futures.Future[T], deadline: float) -> T:
        """The task's result, waiting at most ``deadline`` seconds (the task goes on)."""
        try:
            return future.result(timeout=max(deadline, 0.0))
        except concurrent.futures.TimeoutError:
            if future.running():  # it may go on, up to its limit, for a later call
                raise DeadlineExceeded(f"the symbolic derivation passed its deadline of "
                                       f"{deadline:g} s") from None
            raise DeadlineExceeded(f"no symbolic worker became free before the deadline of "
                                   f"{deadline:g} s") from None

    def warm(self) -> None:
        """Start the workers now, in the background, so the first derivation does not wait a
        second for a new interpreter to import SymPy (a server calls this when it starts)."""
        with self._state:
            self._start_slots()

    @property
    def idle(self) -> int:
        """Workers started and waiting for a task."""
        with self._state:
            return self._idle

    @property
    def busy(self) -> int:
        """Workers running a task."""
        with self._state:
            return self._busy

    def pids(self) -> list[int]:
        """The process ids of the live workers, starting ones included."""
        with self._state:
            return sorted(self._processes)

    def close(self) -> None:
        """Kill every worker, busy ones included; tasks waiting or running fail at once."""
        with self._state:
            self._closed = True
            workers = list(self._processes.values())
            queued = list(self._queue)
            self._queue.clear()
            slots = list(self._slots)
            self._state.notify_all()
        for worker in workers:
            worker.signal()  # its slot reaps it, and fails the task it was running
        for task in queued:
            _fail(task, WorkerFailed("the symbolic workers are stopped"))
        for slot in slots:
            if slot is not threading.current_thread():
                slot.join(timeout=5.0)

    # --- the slots' side -------------------------------------------------------------------------

    def _start_slots(self) -> None:
        """Called holding the lock: the slot threads, on first use. A slot's thread outlives
        every worker it starts: the kernel kills a worker when the thread that started it ends."""
        if self._slots or self._closed:
            return
        for k in range(self.capacity):
            slot = threading.Thread(target=self._serve, name=f"crossgrad-symbolic-worker-{k}",
                                    daemon=True)
            self._slots.append(slot)
            slot.start()

    def _serve(self) -> None:
        """One slot: keep a worker up and give it tasks, until the pool closes."""
        pause = _RETRY_FIRST
        worker: _Worker | None = None
        while True:
            if worker is None:
                worker = self._start()
                if worker is None:
                    with self._state:
                        if self._closed or self._state.wait_for(lambda: self._closed, pause):
                            return
                    pause = min(2 * pause, _RETRY_MOST)
                    continue
                pause = _RETRY_FIRST
            task = self._take(worker)
            if task is None:  # closed, or the worker died while idle
                worker.kill()
                with self._state:
                    self._processes.pop(worker.pid, None)
                    if self._closed:
                        return
                log.warning("symbolic worker %d died while idle (%s); starting another",
                            worker.pid, worker._exit_status())
                worker = None
                continue
            worker = self._run(worker, task)

    def _start(self) -> _Worker | None:
        """A new ready worker, or None (the reason logged, waiting tasks failed if no worker
        is up)."""
        with self._state:
            if self._closed:
                return None
        try:
            worker = _Worker(self.max_memory)
        except OSError as error:
            self._start_failed(f"cannot run {sys.executable}: {error}")
            return None
        with self._state:
            self._processes[worker.pid] = worker
            self.started += 1
            closed = self._closed
        reason = ""
        if not closed:
            try:
                worker.wait_ready(time.monotonic() + self.startup_timeout)
            except TimeoutError:
                reason = (f"a symbolic worker took over {self.startup_timeout:g} s to start "
                          "and was stopped")
            except WorkerFailed:
                reason = (f"a symbolic worker exited while starting ({worker._exit_status()}, "
                          f"with a memory limit of {self.max_memory} MiB)")
            except Exception as error:  # a garbled "ready": a broken environment
                reason = f"a symbolic worker failed to start ({error!r})"
        with self._state:
            if self._closed or reason:
                self._processes.pop(worker.pid, None)
            else:
                self._idle += 1
                self._broken = ""
                self._state.notify_all()
                return worker
        worker.kill()
        if reason:
            self._start_failed(reason)
        return None

    def _start_failed(self, reason: str) -> None:
        with self._state:
            if self._closed:
                return
            log.warning("%s; trying again later", reason)
            if self._idle + self._busy:
                return
            self._broken = reason
            waiting = list(self._queue)
            self._queue.clear()
        for task in waiting:
            _fail(task, WorkerFailed(f"no symbolic worker could start ({reason})"))

    def _take(self, worker: _Worker) -> _Task | None:
        """The next task for ``worker`` (counted busy), or None when the pool closes or the
        worker dies while waiting."""
        expired: list[_Task] = []
        try:
            with self._state:
                while True:
                    if self._closed or not worker.alive():
                        self._idle -= 1
                        return None
                    while self._queue:
                        task = self._queue.popleft()
                        if time.monotonic() - task.queued_at > task.limit:
                            expired.append(task)
                        elif task.future.set_running_or_notify_cancel():
                            self._idle -= 1
                            self._busy += 1
                            return task
                    self._state.wait(_IDLE_CHECK)
        finally:
            for task in expired:
                _fail(task, DeadlineExceeded(f"no symbolic worker became free within "
                                             f"{task.limit:g} s"))

    def _run(self, worker: _Worker, task: _Task) -> _Worker | None:
        """Run ``task`` on ``worker`` and complete its future; the worker if it can take
        another task, else None (it was killed)."""
        error: BaseException = WorkerFailed("the symbolic worker failed unexpectedly")
        result: Any = None
        succeeded = healthy = False
        try:
            ok, value, detail = worker.call(task.payload, time.monotonic() + task.limit)
            if ok:
                result, succeeded, healthy = value, True, True
            elif isinstance(value, MemoryError):  # its heap may be in pieces: a fresh worker
                error = TaskFailed(f"the symbolic derivation ran out of its memory limit of "
                                   f"{self.max_memory} MiB", value)
                log.warning("symbolic task %s ran out of memory (%d MiB); replacing its worker",
                            task.name, self.max_memory)
            else:
                error = TaskFailed("the symbolic derivation failed on this graph (the error "
                                   "is logged)", value)
                healthy = True
                log.warning("symbolic task %s failed in its worker: %s: %s\n%s", task.name,
                            type(value).__name__, value, detail)
        except TimeoutError:
            error = DeadlineExceeded(f"the symbolic derivation passed its deadline of "
                                     f"{task.limit:g} s; its worker was stopped")
            log.info("symbolic task %s passed %g s; stopping worker %d", task.name, task.limit,
                     worker.pid)
        except WorkerFailed as failure:
            error = failure
            if self._closed:
                error = WorkerFailed("the symbolic workers were stopped")
            else:
                log.warning("symbolic worker %d died running %s: %s", worker.pid, task.name,
                            failure.message)
        except Exception as failure:  # a garbled reply: the worker is not to be trusted
            log.exception("symbolic worker %d failed running %s", worker.pid, task.name)
            error = WorkerFailed(f"a symbolic worker failed ({type(failure).__name__})")
        finally:
            if not healthy:
                worker.kill()
            # The counts are right before anyone waiting on the future wakes.
            with self._state:
                self._busy -= 1
                if healthy:
                    self._idle += 1
                else:
                    self._processes.pop(worker.pid, None)
                self._state.notify_all()
            if succeeded:
                task.future.set_result(result)
            else:
                _fail(task, error)
        return worker if healthy else None


def _fail(task: _Task, error: BaseException) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        task.future.set_exception(error)


_budgets: weakref.WeakSet[Budget] = weakref.WeakSet()


@atexit.register
def _stop_workers() -> None:
    for budget in list(_budgets):
        budget.close()
