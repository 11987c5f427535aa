"""The symbolic worker pool: deaths, deadlines, start-up, memory, and short-deadline callers.

Each test has a small pool of its own. The slow task is the derivation of ``sum(A @ B)`` for
n x n matrices (about a second at n = 30 on an idle machine, growing as n cubed), since a worker
only runs the engine's own functions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from crossgrad.engine import formula
from crossgrad.engine.budget import Budget, Caps
from crossgrad.engine.check import CheckMode, Method, Status
from crossgrad.engine.differentiation import differentiate
from crossgrad.engine.dtypes import float64
from crossgrad.engine.errors import DeadlineExceeded, TaskFailed, WorkerFailed
from crossgrad.engine.evaluation import evaluate
from crossgrad.engine.gradient_check import GradientCheck, Result
from crossgrad.engine.graph import validate
from crossgrad.engine.solver import Symbolic, _compile, _render
from crossgrad.engine.symbolic import Plan

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")


def wait_until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def ready(budget: Budget) -> None:
    budget.warm()
    wait_until(lambda: budget.idle == budget.capacity)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def worker_processes() -> set[int]:
    """This process's children running the worker script (other tests' pools' too)."""
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if parent == os.getpid() and b"worker.py" in command:
            children.add(int(entry))
    return children


def matmul_task(n: int) -> tuple[Any, ...]:
    """The arguments of ``_compile`` for the matmul's op-by-op evaluator."""
    valid = validate(formula.parse("sum(A @ B)"), {"A": ((n, n), float64), "B": ((n, n), float64)})
    return Plan.of(valid, ["A", "B"]), False


class Matmul:
    """``sum(A @ B)`` for n x n float64 matrices: its check, and what a call to it needs."""

    def __init__(self, symbolic: Symbolic, n: int) -> None:
        self.valid = validate(formula.parse("sum(A @ B)"),
                              {"A": ((n, n), float64), "B": ((n, n), float64)})
        rng = np.random.default_rng(n)
        self.arrays = {"A": rng.normal(size=(n, n)), "B": rng.normal(size=(n, n))}
        self.value, self.gradients = evaluate(self.valid, self.arrays, ["A", "B"])
        self.check = GradientCheck(self.valid, ["A", "B"], symbolic)

    def __call__(self, deadline: float | None = None) -> Result:
        return self.check(self.arrays, self.value, self.gradients, mode=CheckMode.REPORT,
                          deadline=deadline)


@pytest.fixture
def pool() -> Iterator[Symbolic]:
    side = Symbolic(Caps(workers=2))
    yield side
    side.close()


def symbolic_within(symbolic: Symbolic, seconds: float) -> None:
    started = time.monotonic()
    result = differentiate("sin(x**2)", {"x": 4.0}, symbolic=symbolic, deadline=seconds)
    assert result.check.method is Method.SYMBOLIC, result.check.reason
    assert time.monotonic() - started < seconds


def test_idle_workers_killed_twice_are_replaced_in_the_background(pool: Symbolic) -> None:
    budget = pool.budget
    ready(budget)
    for _ in range(2):
        killed = budget.pids()
        assert len(killed) == 2
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        # The pool notices idle deaths by itself, and starts replacements with nobody asking.
        wait_until(lambda killed=killed: not set(killed) & set(budget.pids()))  # type: ignore
        symbolic_within(pool, 20.0)  # waits for a replacement, within its own deadline
        wait_until(lambda: budget.idle == 2)
        assert not any(alive(pid) for pid in killed)
    assert budget.started == 6 and budget.busy == 0
    assert len(budget.pids()) == 2 and set(budget.pids()) <= worker_processes()


def test_a_worker_killed_mid_task_costs_one_call() -> None:
    pool = Symbolic(Caps(workers=1))
    try:
        killed_mid_task(pool)
    finally:
        pool.close()


def killed_mid_task(pool: Symbolic) -> None:
    budget = pool.budget
    ready(budget)
    matmul = Matmul(pool, 36)
    outcome: list[Result] = []
    caller = threading.Thread(target=lambda: outcome.append(matmul(deadline=60)))
    caller.start()
    wait_until(lambda: budget.busy == 1)
    time.sleep(0.2)
    (pid,) = budget.pids()
    os.kill(pid, signal.SIGKILL)
    caller.join(timeout=30)
    (report,) = (result.check for result in outcome)
    assert report.method is Method.FINITE_DIFFERENCE and report.status is Status.AGREE
    assert "a symbolic worker died (killed by signal 9)" in report.reason
    assert budget.busy == 0
    wait_until(lambda: budget.idle == 1)
    symbolic_within(pool, 20.0)
    # Not remembered as unsolvable: the next call asks for the derivation again.
    tasks = budget.tasks
    assert "deadline" in matmul(deadline=0.05).check.reason and budget.tasks == tasks + 1
    # A second death in a row, though, is a crash the graph causes: not tried again.
    wait_until(lambda: budget.busy == 1)
    time.sleep(0.2)
    (pid,) = budget.pids()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: budget.idle == 1)  # after the task's end was judged
    report = Matmul(pool, 36)(deadline=60).check  # a new check of the same structure
    assert report.reason.startswith("no closed form: the symbolic derivation of this graph "
                                    "killed its worker twice in a row (the last time: killed "
                                    "by signal 9); not tried again")
    assert budget.tasks == tasks + 1


def test_a_task_past_the_pools_deadline_is_killed_and_its_worker_replaced() -> None:
    symbolic = Symbolic(Caps(workers=1, deadline=0.3))
    budget = symbolic.budget
    try:
        ready(budget)
        (pid,) = budget.pids()
        future = budget.submit(_compile, *matmul_task(40))
        error = future.exception(timeout=30)
        assert isinstance(error, DeadlineExceeded)
        assert "passed its deadline of 0.3 s; its worker was stopped" in error.message
        assert budget.busy == 0 and not alive(pid)
        wait_until(lambda: budget.idle == 1)
        assert budget.pids() != [pid] and budget.started == 2
        symbolic_within(symbolic, 20.0)
    finally:
        symbolic.close()


def test_a_start_that_times_out_is_stopped_reported_and_retried_later() -> None:
    others = worker_processes()
    budget = Budget(Caps(workers=1), startup_timeout=0.01)  # no interpreter imports SymPy that fast
    try:
        future = budget.submit(_compile, *matmul_task(2))
        error = future.exception(timeout=30)
        assert isinstance(error, WorkerFailed)
        assert "took over 0.01 s to start and was stopped" in error.message
        # A broken pool answers at once rather than at the caller's deadline.
        started = time.monotonic()
        with pytest.raises(WorkerFailed, match="no symbolic worker could start"):
            budget.run(_compile, *matmul_task(2), deadline=10)
        assert time.monotonic() - started < 5
        time.sleep(1.0)
        # Retried with growing pauses (0.5 s, 1 s, ...), not in a loop; none left running.
        assert 1 <= budget.started <= 4
        assert len(worker_processes() - others) <= 1
        budget.startup_timeout = 60.0
        wait_until(lambda: budget.idle == 1)
        assert len(worker_processes() - others) == 1 and budget.busy == 0
        assert budget.run(_compile, *matmul_task(2), deadline=10) is not None
    finally:
        budget.close()
    assert not worker_processes() - others


def test_a_derivation_past_the_memory_limit_fails_with_that_reason() -> None:
    # A worker imports in ~210 MiB of address space; a 150 x 150 matmul grows by ~40 MiB/s.
    symbolic = Symbolic(Caps(workers=1, max_memory=320, deadline=60))
    budget = symbolic.budget
    try:
        ready(budget)
        (pid,) = budget.pids()
        with open(f"/proc/{pid}/limits") as limits:
            assert f"{320 << 20}" in next(line for line in limits if "address space" in line)
        matmul = Matmul(symbolic, 150)
        peak = [0]

        def watch() -> None:
            while alive(pid):
                try:
                    with open(f"/proc/{pid}/status") as status:
                        for line in status:
                            if line.startswith("VmPeak:"):
                                peak[0] = max(peak[0], int(line.split()[1]))
                except (FileNotFoundError, ProcessLookupError):
                    break
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        report = matmul(deadline=60).check
        watcher.join()
        assert report.method is Method.FINITE_DIFFERENCE
        assert "the symbolic derivation ran out of its memory limit of 320 MiB" in report.reason
        assert 0 < peak[0] <= 320 * 1024  # kB
        assert "on a fresh worker too" in report.reason
        assert budget.busy == 0
        wait_until(lambda: budget.idle == 1)
        # Run again on a fresh worker before it was taken to be the graph's doing; both
        # workers were replaced, as their heaps may be in pieces.
        assert budget.pids() != [pid] and budget.started == 3 and budget.tasks == 1
        symbolic_within(symbolic, 20.0)
        # A derivation that raised in its worker would raise again: not tried again.
        tasks = budget.tasks
        assert matmul().check.reason == report.reason and budget.tasks == tasks
    finally:
        symbolic.close()


def test_short_deadlines_start_no_workers_and_a_later_call_gets_the_closed_form(
        pool: Symbolic) -> None:
    budget = pool.budget
    ready(budget)
    pids, started = budget.pids(), budget.started
    matmul = Matmul(pool, 32)
    reports = [matmul(deadline=0.08).check for _ in range(20)]
    assert reports[0].method is Method.FINITE_DIFFERENCE
    assert "deadline of 0.08 s" in reports[0].reason
    assert all(r.status is Status.AGREE for r in reports)
    assert budget.started - started <= budget.capacity
    assert budget.tasks == 1  # one derivation, shared by every caller that waited for it
    # The derivation went on in its worker; a later call finds its closed form ready.
    wait_until(lambda: matmul(deadline=0.08).check.method is Method.SYMBOLIC)
    assert matmul(deadline=0.08).check.status is Status.AGREE
    assert budget.tasks == 1 and budget.pids() == pids and budget.started == started


def test_close_stops_busy_workers_and_waiting_callers_return() -> None:
    symbolic = Symbolic(Caps(workers=1))
    budget = symbolic.budget
    try:
        ready(budget)
        running = budget.submit(_compile, *matmul_task(40))
        queued = budget.submit(_compile, *matmul_task(41))
        wait_until(lambda: budget.busy == 1)
        pids = budget.pids()
    finally:
        started = time.monotonic()
        symbolic.close()
    for future in (running, queued):
        assert isinstance(future.exception(timeout=5), WorkerFailed)
    assert time.monotonic() - started < 10
    assert not any(alive(pid) for pid in pids) and not worker_processes() & set(pids)
    assert budget.busy == 0
    refused = budget.submit(_compile, *matmul_task(2))
    assert isinstance(refused.exception(timeout=1), WorkerFailed)


def test_a_task_that_raises_keeps_its_worker_and_says_so_in_words() -> None:
    budget = Budget(Caps(workers=1))
    try:
        ready(budget)
        (pid,) = budget.pids()
        with pytest.raises(TaskFailed) as failure:
            # Not a function of the engine: the worker refuses it.
            budget.run(os.getpid, deadline=30)
        assert failure.value.message == ("the symbolic derivation failed on this graph (the "
                                         "error is logged)")
        assert isinstance(failure.value.error, PermissionError)
        assert budget.pids() == [pid] and budget.busy == 0 and budget.idle == 1
    finally:
        budget.close()


# --- callers that left, and deadlines remembered -------------------------------------------------

def test_a_queued_task_is_dropped_when_its_last_caller_leaves() -> None:
    budget = Budget(Caps(workers=1, deadline=60))
    try:
        ready(budget)
        # Its holder never says it left: it keeps the worker.
        blocker = budget.submit(_compile, *matmul_task(40))
        wait_until(lambda: budget.busy == 1)
        queued = budget.submit(_compile, *matmul_task(2), deadline=0.2)
        assert budget.join(queued)  # a second caller
        with pytest.raises(DeadlineExceeded, match="no symbolic worker became free"):
            budget.wait(queued, 0.2)
        assert not queued.done()  # the second caller still waits for it
        with pytest.raises(DeadlineExceeded, match="no symbolic worker became free"):
            budget.wait(queued, 0.2)
        assert queued.cancelled() and budget.dropped == 1
        assert not budget.join(queued)  # it will never run: a new caller submits anew
        assert budget.preempted == 0 and not blocker.done() and budget.busy == 1
    finally:
        budget.close()


def test_a_live_caller_gets_a_worker_from_tasks_whose_callers_left() -> None:
    symbolic = Symbolic(Caps(workers=2, deadline=120))
    budget = symbolic.budget
    try:
        ready(budget)
        for k, n in enumerate((56, 57, 58, 59)):  # each takes a worker for well over 10 s
            report = Matmul(symbolic, n)(deadline=0.5).check
            assert report.method is Method.FINITE_DIFFERENCE, report.reason
            if k == 1:
                wait_until(lambda: budget.busy == 2)
        assert budget.tasks == 4
        symbolic_within(symbolic, 20.0)
        # Which of them were dropped before they started and which were stopped running depends
        # on how fast replacement workers start; together, at least two gave way.
        assert budget.dropped + budget.preempted >= 2
        assert len(budget.pids()) <= 2
    finally:
        symbolic.close()


def test_a_task_its_callers_just_left_is_not_stopped_at_once() -> None:
    # A task may be about to finish, and stopping it costs a new worker's start: one that has
    # run less than a couple of seconds keeps its worker, and the caller falls back instead.
    symbolic = Symbolic(Caps(workers=1, deadline=120))
    budget = symbolic.budget
    try:
        ready(budget)
        assert Matmul(symbolic, 56)(deadline=0.3).check.method is Method.FINITE_DIFFERENCE
        report = differentiate("sin(x**2)", {"x": 4.0}, symbolic=symbolic, deadline=0.5).check
        assert report.method is Method.FINITE_DIFFERENCE
        assert budget.preempted == 0 and budget.started == 1
    finally:
        symbolic.close()


def test_a_derivation_past_the_pools_deadline_is_not_tried_again_within_it() -> None:
    symbolic = Symbolic(Caps(workers=1, deadline=2.0))
    budget = symbolic.budget
    try:
        ready(budget)
        first = Matmul(symbolic, 56)().check  # over ten seconds of work
        assert "deadline of 2 s" in first.reason
        wait_until(lambda: budget.idle == 1)  # its worker replaced, its end judged
        remembered = ("no closed form: the symbolic derivation of this graph passed the "
                      "deadline of 2 s before; not tried again within that deadline")
        # Per structure: a new check (a new call of the server's) falls back at once too.
        for deadline in (None, 2.0, 0.3):
            matmul = Matmul(symbolic, 56)
            started = time.monotonic()
            report = matmul(deadline=deadline).check
            assert report.reason.startswith(remembered), report.reason
            assert time.monotonic() - started < 1.5
        assert budget.tasks == 1
        # A longer deadline asks again, and is then what is remembered.
        assert "deadline of 3 s" in Matmul(symbolic, 56)(deadline=3.0).check.reason
        assert budget.tasks == 2
        wait_until(lambda: budget.idle == 1)
        assert "deadline of 3 s before" in Matmul(symbolic, 56)(deadline=3.0).check.reason
        assert budget.tasks == 2
    finally:
        symbolic.close()


# --- pipes ---------------------------------------------------------------------------------------

def test_a_worker_that_does_not_read_its_task_is_stopped_at_the_deadline() -> None:
    budget = Budget(Caps(workers=1, deadline=1.0))
    try:
        ready(budget)
        (pid,) = budget.pids()
        os.kill(pid, signal.SIGSTOP)
        plan, _ = matmul_task(2)
        # Far more than a pipe holds: its write cannot complete.
        future = budget.submit(_render, plan, [np.zeros(1 << 20)], None)
        error = future.exception(timeout=30)
        assert isinstance(error, WorkerFailed) and not error.died
        assert "did not take its task before its deadline" in error.message
        wait_until(lambda: not alive(pid))
        wait_until(lambda: budget.idle == 1)
    finally:
        budget.close()


_PARENT = """
import sys, time
from crossgrad.engine.budget import Budget, Caps
from crossgrad.engine.solver import _compile
from tests.engine.test_budget import matmul_task
budget = Budget(Caps(workers=1, deadline=600))
budget.submit(_compile, *matmul_task(60))
while budget.busy < 1:
    time.sleep(0.02)
print(budget.pids()[0], flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_workers_die_with_the_process_that_started_them() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], cwd=root,
                              stdout=subprocess.PIPE)
    pid = 0
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())  # once busy with a derivation of many seconds
        parent.kill()
        parent.wait()
        wait_until(lambda: not alive(pid), 10.0)
    finally:
        parent.kill()
        parent.wait()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
