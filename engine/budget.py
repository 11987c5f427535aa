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

A task is a future with a count of the callers waiting for it: its submitter, and whoever
``join``s it (``Symbolic`` shares one task between the callers of one structure). Each caller
waits for its own deadline; the task may run for the longer of that and the pool's deadline
(``Caps.deadline``), so that a result arriving after its callers left still reaches whoever
kept the future (the closed-form caches in ``solver.py``): a short client deadline
costs no worker start. But callers that left must not hold workers that live callers wait for:

- a task whose last caller leaves before it started is dropped (its future cancelled), so the
  queue only ever holds tasks someone waits for, and is bounded by the callers waiting;
- a running task nobody waits for any more runs on only while no queued task needs its worker:
  when one does, the oldest such task that has run two seconds is stopped (its worker killed and
  replaced; a younger one may be about to finish, and a stop costs a worker's start). Its result
  would only have filled a cache, and a later call of its structure may ask again.

A task is killed past its limit. One that runs out of memory is run once more on a fresh
worker (the first one's heap may have been fragmented, or filled by earlier derivations) before
that is taken to be the task's own doing.

Errors a caller sees: ``TaskFailed`` (the task itself raised in its worker: running it again
would fail again), ``DeadlineExceeded`` (its ``limit`` set when the task itself ran past its
limit, not when a caller stopped waiting) and ``WorkerFailed`` (this attempt could not finish: a
later one may; its ``died`` set when the worker died while running the task).

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

from .errors import DeadlineExceeded, TaskFailed, WorkerFailed

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
    caller may stop waiting sooner, or allow it longer); ``render_seconds``: how long making a
    closed form readable (SymPy reading and simplifying it) may take before it is shown as far
    as it got (the check never waits on it); ``max_memory``: MiB of address space per worker
    process.
    """

    max_symbols: int = 50_000
    max_elements: int = 200_000
    fused_max_outputs: int = 256
    fused_max_depth: int = 64
    max_hessian_variables: int = 64
    deadline: float = 10.0  # seconds, per derivation
    render_seconds: float = 0.5
    workers: int = 2
    max_memory: int = 1024  # MiB


DEFAULT_CAPS = Caps()


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
                raise WorkerFailed(f"a symbolic worker died ({status})", died=status)
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
    """A task from its submission until its future is settled (or it is dropped)."""

    payload: bytes
    name: str  # the function's, for the log
    what: str  # what it does, for a person: "the symbolic derivation"
    limit: float  # seconds it may run in a worker (and wait in the queue)
    queued_at: float = field(default_factory=time.monotonic)
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    waiters: int = 1  # callers that wait or will wait for it: its submitter, and those who join
    started_at: float = 0.0  # when a slot took it: the oldest running task is stopped first
    worker: _Worker | None = None  # the worker running it (None while a fresh one starts)
    dropped: bool = False  # left before it started: it never will
    stopped: bool = False  # stopped running, nobody waiting for it, to free its worker
    retried: bool = False  # run again on a fresh worker after it ran out of memory


# A task nobody waits for any more may run on (its result is kept for the next call on its
# structure), but after this many seconds of running gives its worker up to a caller waiting for
# one; waiting callers look for such a worker this often.
_STOP_AFTER = 2.0
_RECHECK = 0.25

_STOPPED = "was stopped: nobody waited for it any more and a call needed its worker"


class Budget:
    """A pool of ``caps.workers`` worker processes that run tasks under deadlines.

    ``run`` calls a function in a worker and waits; ``submit`` returns the task's future, which
    ``wait`` waits on, and which other callers may ``join``. A task may wait for a worker and run
    for the longer of its caller's deadline and ``caps.deadline``, whoever waits for it; each
    worker has ``caps.max_memory`` MiB of address space; ``startup_timeout`` is the seconds a
    worker may take to start.
    """

    def __init__(self, caps: Caps = DEFAULT_CAPS, *,
                 startup_timeout: float = _STARTUP_TIMEOUT) -> None:
        self.caps = caps
        self.startup_timeout = startup_timeout
        # What the tests count: tasks submitted (to see a cache at work), worker processes
        # started (replacements included), tasks dropped unstarted and stopped running because
        # nobody waited for them.
        self.tasks = 0
        self.started = 0
        self.dropped = 0
        self.preempted = 0
        self._state = threading.Condition()
        self._queue: deque[_Task] = deque()
        self._tasks: dict[concurrent.futures.Future[Any], _Task] = {}  # until settled
        self._running: list[_Task] = []  # in the order they started, retries included
        self._processes: dict[int, _Worker] = {}  # every live worker, starting ones included
        self._idle = 0  # started and waiting for a task
        self._busy = 0  # running a task
        self._slots: list[threading.Thread] = []
        self._closed = False
        self._broken = ""  # why the last start failed, while no worker is up
        _budgets.add(self)

    @property
    def capacity(self) -> int:
        return self.caps.workers

    # --- the callers' side ---------------------------------------------------------------------

    def run(self, function: Callable[..., T], *args: Any, deadline: float) -> T:
        """``function(*args)`` in a worker. ``function`` must be importable by module and name.

        Waiting for a worker (starting or busy) and running the task count against
        ``deadline``; past it ``DeadlineExceeded`` is raised (the task's result is then lost:
        ``submit`` keeps it)."""
        result: T = self.wait(self.submit(function, *args, deadline=deadline), deadline)
        return result

    def submit(self, function: Callable[..., Any], *args: Any, deadline: float | None = None,
               what: str = "the symbolic derivation") -> concurrent.futures.Future[Any]:
        """Queue ``function(*args)`` for the next free worker, for a caller that waits up to
        ``deadline`` seconds (the pool's by default) and counts as its first waiter until its
        ``wait`` ends. The task may take the longer of that and the pool's deadline, so that a
        short caller's derivation still completes for a later one. The future fails with
        ``TaskFailed``, ``DeadlineExceeded`` or ``WorkerFailed`` (their messages name the task
        by ``what``), or is cancelled when every waiter left before it started."""
        limit = self.caps.deadline if deadline is None else max(deadline, self.caps.deadline)
        payload = pickle.dumps((function.__module__, function.__qualname__, args),
                               protocol=pickle.HIGHEST_PROTOCOL)
        task = _Task(payload, function.__qualname__, what, limit)
        stop: list[_Worker] = []
        with self._state:
            if self._closed:
                refusal = "the symbolic workers are stopped"
            elif self._broken and not self._idle + self._busy:
                refusal = f"no symbolic worker could start ({self._broken})"
            else:
                refusal = ""
                self.tasks += 1
                self._queue.append(task)
                self._tasks[task.future] = task
                self._start_slots()
                self._state.notify()
                stop = self._make_room()
        _signal(stop)
        if refusal:
            task.future.set_exception(WorkerFailed(refusal))
        return task.future

    def join(self, future: concurrent.futures.Future[Any]) -> bool:
        """Count one more caller that will ``wait`` for ``future``; False when its task was
        dropped or stopped for want of callers (it will not complete: submit a new one)."""
        with self._state:
            task = self._tasks.get(future)
            if task is None:  # settled
                return not future.cancelled()
            if task.dropped or task.stopped:
                return False
            task.waiters += 1
            return True

    def wait(self, future: concurrent.futures.Future[T], deadline: float) -> T:
        """The task's result, waiting at most ``deadline`` seconds; the caller then stops
        counting as one of its waiters (it was counted by ``submit`` or ``join``). While it
        waits, it looks now and then for a worker that a task nobody waits for may give up."""
        end = time.monotonic() + max(deadline, 0.0)
        try:
            while True:
                try:
                    return future.result(timeout=max(0.0, min(_RECHECK, end - time.monotonic())))
                except concurrent.futures.TimeoutError:
                    if time.monotonic() >= end:
                        raise
                with self._state:
                    stop = self._make_room()
                _signal(stop)
        except concurrent.futures.TimeoutError:
            if future.running():  # it may go on, up to its limit, for a later call
                task = self._tasks.get(future)
                raise DeadlineExceeded(f"{task.what if task else 'the task'} passed its deadline "
                                       f"of {deadline:g} s") from None
            raise DeadlineExceeded(f"no symbolic worker became free before the deadline of "
                                   f"{deadline:g} s") from None
        finally:
            self._leave(future)

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
        _signal(workers)  # their slots reap them, and fail the tasks they were running
        for task in queued:
            self._settle(task, WorkerFailed("the symbolic workers are stopped"))
        for slot in slots:
            if slot is not threading.current_thread():
                slot.join(timeout=5.0)

    def _leave(self, future: concurrent.futures.Future[Any]) -> None:
        """A waiter of ``future``'s task is gone: if it was the last, the task is dropped
        (queued) or may be stopped for a caller waiting for a worker (running)."""
        stop: list[_Worker] = []
        with self._state:
            task = self._tasks.get(future)
            if task is None or task.future.done():
                return
            task.waiters -= 1
            if task.waiters > 0:
                return
            if task in self._queue:
                self._queue.remove(task)
                task.dropped = True
                self.dropped += 1
            else:
                stop = self._make_room()
        _signal(stop)
        if task.dropped:
            log.info("symbolic task %s dropped before it started: its callers left", task.name)
            self._settle(task, None)

    def _make_room(self) -> list[_Worker]:
        """Called holding the lock: marks stopped the running tasks nobody waits for that have
        run at least ``_STOP_AFTER`` seconds, oldest first, as long as queued tasks (each with a
        caller waiting) outnumber the workers that will be free for them; returns their workers,
        to be signalled once the lock is let go. A younger task may be about to finish, and a
        stopped one costs a new worker's start (a second of CPU): callers that wait call this
        again every ``_RECHECK`` seconds."""
        free = self.capacity - sum(1 for task in self._running if not task.stopped)
        short = len(self._queue) - free
        if short <= 0:
            return []
        old = time.monotonic() - _STOP_AFTER
        workers = []
        for task in [t for t in self._running if not t.waiters and not t.stopped
                     and t.started_at <= old][:short]:
            task.stopped = True
            self.preempted += 1
            log.info("stopping symbolic task %s: nobody waits for it and a call needs its "
                     "worker", task.name)
            if task.worker is not None:
                workers.append(task.worker)
        return workers

    def _settle(self, task: _Task, error: BaseException | None, result: Any = None) -> None:
        """Complete the task's future, then forget the task. Never called holding the lock: the
        future's callbacks run here (``Symbolic``'s take their own lock, then call ``join``).
        ``error`` None and the task dropped: its future is cancelled."""
        if task.dropped:
            task.future.cancel()
        else:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                if error is None:
                    task.future.set_result(result)
                else:
                    task.future.set_exception(error)
        with self._state:
            self._tasks.pop(task.future, None)

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
        again: _Task | None = None  # to run once more, on the next (fresh) worker
        while True:
            if worker is None:
                worker = self._start()
                if worker is None:
                    if again is not None:
                        self._give_up(again, WorkerFailed(
                            "the symbolic workers were stopped" if self._closed else
                            "no symbolic worker could start to run the derivation again after "
                            "it ran out of memory"))
                        again = None
                    with self._state:
                        if self._closed or self._state.wait_for(lambda: self._closed, pause):
                            return
                    pause = min(2 * pause, _RETRY_MOST)
                    continue
                pause = _RETRY_FIRST
            if again is not None:
                task: _Task | None = again if self._resume(worker, again) else None
                again = None
                if task is None:
                    continue
            else:
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
            worker, retry = self._run(worker, task)
            again = task if retry else None

    def _start(self) -> _Worker | None:
        """A new ready worker, or None (the reason logged, waiting tasks failed if no worker
        is up)."""
        with self._state:
            if self._closed:
                return None
        try:
            worker = _Worker(self.caps.max_memory)
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
                          f"with a memory limit of {self.caps.max_memory} MiB)")
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
            self._settle(task, WorkerFailed(f"no symbolic worker could start ({reason})"))

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
                            self._running.append(task)
                            self._begin(worker, task)
                            return task
                    self._state.wait(_IDLE_CHECK)
        finally:
            for task in expired:
                self._settle(task, DeadlineExceeded(f"no symbolic worker became free within "
                                                    f"{task.limit:g} s"))

    def _resume(self, worker: _Worker, task: _Task) -> bool:
        """Hand ``task`` (already running: a retry) to the fresh ``worker``, unless it was
        stopped (or the pool closed) meanwhile: then it is settled so and False returned."""
        with self._state:
            if not (self._closed or task.stopped):
                self._begin(worker, task)
                return True
        self._give_up(task, WorkerFailed("the symbolic workers were stopped" if self._closed
                                          else f"{task.what} {_STOPPED}"))
        return False

    def _begin(self, worker: _Worker, task: _Task) -> None:
        """Called holding the lock: ``worker`` runs ``task``."""
        self._idle -= 1
        self._busy += 1
        task.worker = worker
        task.started_at = time.monotonic()

    def _give_up(self, task: _Task, error: BaseException) -> None:
        """Settle a running task that has no worker."""
        with self._state:
            self._running.remove(task)
        self._settle(task, error)

    def _run(self, worker: _Worker, task: _Task) -> tuple[_Worker | None, bool]:
        """Run ``task`` on ``worker`` and settle its future, unless it ran out of memory for the
        first time: then it is to run again on a fresh worker (the second value, True). The
        first value is the worker if it can take another task, else None (it was killed)."""
        error: BaseException = WorkerFailed("the symbolic worker failed unexpectedly")
        result: Any = None
        succeeded = healthy = again = False
        try:
            ok, value, detail = worker.call(task.payload, time.monotonic() + task.limit)
            if ok:
                result, succeeded, healthy = value, True, True
            elif isinstance(value, MemoryError):  # its heap may be in pieces: a fresh worker
                again = not task.retried
                task.retried = True
                error = TaskFailed(f"{task.what} ran out of its memory limit of "
                                   f"{self.caps.max_memory} MiB, on a fresh worker too", value)
                log.warning("symbolic task %s ran out of memory (%d MiB); replacing its worker%s",
                            task.name, self.caps.max_memory,
                            " and running it again" if again else "")
            else:
                error = TaskFailed(f"{task.what} failed on this graph (the error is logged)",
                                   value)
                healthy = True
                log.warning("symbolic task %s failed in its worker: %s: %s\n%s", task.name,
                            type(value).__name__, value, detail)
        except TimeoutError:
            error = DeadlineExceeded(f"{task.what} passed its deadline of {task.limit:g} s; "
                                     f"its worker was stopped", task.limit)
            log.info("symbolic task %s passed %g s; stopping worker %d", task.name, task.limit,
                     worker.pid)
        except WorkerFailed as failure:
            if self._closed:
                error = WorkerFailed("the symbolic workers were stopped")
            elif task.stopped:
                error = WorkerFailed(f"{task.what} {_STOPPED}")
            else:
                error = failure
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
                task.worker = None
                if not again:
                    self._running.remove(task)
                self._state.notify_all()
            if not again:  # else the slot runs it again once its next worker is up
                self._settle(task, None if succeeded else error, result)
        return (worker if healthy else None), again


def _signal(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.signal()


_budgets: weakref.WeakSet[Budget] = weakref.WeakSet()


@atexit.register
def _stop_workers() -> None:
    for budget in list(_budgets):
        budget.close()
