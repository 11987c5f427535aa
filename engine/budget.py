"""Budgets for computer algebra: caps on size, and worker processes with a deadline.

SymPy and SymEngine can take unbounded time and memory on a large or unlucky expression, and
neither can be interrupted from another thread. So symbolic work runs in worker processes, and a
worker whose task passes its deadline is killed (a new one starts when next needed); a request
whose structure is past a cap never gets there. Either way the caller falls back to a
finite-difference check and says why.

The workers are plain subprocesses (``python -m crossgrad.engine.worker``) talking length-prefixed
pickles over pipes, not ``multiprocessing``: its "spawn" and "forkserver" start methods re-import
the caller's ``__main__`` in every worker, which runs an unguarded script (a notebook exported as
a script, a program with an embedded server) a second time; "fork" is unsafe in a process running
gRPC's threads.

The pool is the engine's one piece of machinery with processes of its own; it starts its workers
on first use and stops them at exit.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import CrossgradError

T = TypeVar("T")

_HEADER = struct.Struct("<Q")
_STARTUP_TIMEOUT = 120.0  # seconds for a new worker to import NumPy, SymPy and SymEngine


@dataclass(frozen=True)
class Caps:
    """Sizes past which no symbolic derivation is attempted, and its deadline.

    ``max_symbols``: leaf, constant and seed elements; ``max_elements``: elements of op results
    (the expressions built); ``fused_max_*``: up to where the whole closed form is compiled into
    one function (fast calls, slow to compile) and shown as text; beyond, it is evaluated op by op.
    """

    max_symbols: int = 50_000
    max_elements: int = 200_000
    fused_max_outputs: int = 256
    fused_max_depth: int = 64
    max_hessian_variables: int = 64
    deadline: float = 10.0  # seconds, per derivation
    workers: int = 2


DEFAULT_CAPS = Caps()


class DeadlineExceeded(CrossgradError):
    """The symbolic derivation passed its deadline; its worker was stopped."""

    status = "DEADLINE_EXCEEDED"


class WorkerFailed(CrossgradError):
    """A worker died (killed by the system, out of memory, a crash in native code)."""

    status = "INTERNAL"


class _Worker:
    """One worker process and its pipes."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crossgrad.engine.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in = self.process.stdin
        self._out = self.process.stdout.fileno()
        self._receive(time.monotonic() + _STARTUP_TIMEOUT)  # its "ready"

    def call(self, function: Callable[..., T], args: tuple[Any, ...], deadline: float) -> T:
        payload = pickle.dumps((function.__module__, function.__qualname__, args),
                               protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._in.write(_HEADER.pack(len(payload)) + payload)
            self._in.flush()
        except OSError:
            raise WorkerFailed("a symbolic worker died before taking its task") from None
        ok, result = self._receive(deadline)
        if not ok:
            raise result  # the task's own exception, re-raised here
        return result

    def _receive(self, deadline: float) -> Any:
        size, = _HEADER.unpack(self._read(_HEADER.size, deadline))
        return pickle.loads(self._read(size, deadline))

    def _read(self, size: int, deadline: float) -> bytes:
        chunks = []
        while size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self._out, min(size, 1 << 20))
            if not chunk:
                code = self.process.wait()
                raise WorkerFailed(f"a symbolic worker died (exit status {code})")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class Budget:
    """Up to ``workers`` worker processes; ``run`` calls a function in one under a deadline."""

    def __init__(self, workers: int = DEFAULT_CAPS.workers) -> None:
        self._capacity = workers
        self._idle: list[_Worker] = []
        self._busy = 0
        self._free = threading.Condition()
        self.tasks = 0  # tasks run: what the tests count to see a cache at work
        _budgets.add(self)

    def run(self, function: Callable[..., T], *args: Any, deadline: float) -> T:
        """``function(*args)`` in a worker; ``DeadlineExceeded`` once ``deadline`` seconds pass
        (the worker is killed). ``function`` must be importable by module and name. Waiting for a
        free worker counts against the deadline; starting a new one does not."""
        end = time.monotonic() + deadline
        worker = self._acquire(end)
        try:
            if worker is None:
                worker = _Worker()
            self.tasks += 1
            result = worker.call(function, args, max(end, time.monotonic() + 0.001))
        except TimeoutError:
            self._discard(worker)
            raise DeadlineExceeded(f"the symbolic derivation passed its deadline of "
                                   f"{deadline:g} s; its worker was stopped") from None
        except BaseException:
            self._discard(worker)
            raise
        self._release(worker)
        return result

    @property
    def idle(self) -> int:
        """Workers started and waiting for a task."""
        with self._free:
            return len(self._idle)

    def warm(self) -> None:
        """Start the workers now, in the background, so the first derivation does not wait a
        second for a new interpreter to import SymPy (a server calls this when it starts)."""
        def start() -> None:
            for _ in range(self._capacity):
                with self._free:
                    if len(self._idle) + self._busy >= self._capacity:
                        return
                    self._busy += 1  # a slot reserved for the worker being started
                try:
                    worker = _Worker()
                except (OSError, WorkerFailed, TimeoutError):
                    self._discard(None)
                    return
                self._release(worker)

        threading.Thread(target=start, name="crossgrad-warm-workers", daemon=True).start()

    def _acquire(self, end: float) -> _Worker | None:
        """An idle worker, or None with a slot reserved to start one."""
        with self._free:
            while not self._idle and self._busy >= self._capacity:
                left = end - time.monotonic()
                if left <= 0 or not self._free.wait(left):
                    raise DeadlineExceeded("no symbolic worker became free before the "
                                           "deadline")
            self._busy += 1
            return self._idle.pop() if self._idle else None

    def _release(self, worker: _Worker) -> None:
        with self._free:
            self._busy -= 1
            self._idle.append(worker)
            self._free.notify()

    def _discard(self, worker: _Worker | None) -> None:
        if worker is not None:
            worker.kill()
        with self._free:
            self._busy -= 1
            self._free.notify()

    def close(self) -> None:
        with self._free:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


_budgets: weakref.WeakSet[Budget] = weakref.WeakSet()


@atexit.register
def _stop_workers() -> None:
    for budget in list(_budgets):
        budget.close()
