"""A symbolic worker process: ``python engine/worker.py [MAX_MEMORY_MIB [PARENT_PID]]`` (also
runs as ``python -m crossgrad.engine.worker``).

It first arranges to be killed when ``PARENT_PID`` (the pool's process) dies, even while busy in
SymPy, when it would not notice its stdin closing (``die_with_parent``; Linux only), and limits
its own address space to ``MAX_MEMORY_MIB`` (none when absent or 0); then it imports the engine
(NumPy, SymPy, SymEngine), warms it up (``solver.warm_up``) and writes "ready". Then it
reads length-prefixed pickled calls ``(module, function, args)`` on stdin, runs them, and writes
``(True, result, "")`` or ``(False, exception, traceback)`` on stdout; a task that runs out of
memory gets a bare ``MemoryError``. It exits when stdin closes (its parent is gone). Only
functions of ``crossgrad.engine`` are run. See ``budget.py``.

Run as a script, it imports nothing heavy before setting its limit (``-m`` would import the
``crossgrad.engine`` package, SymPy included, first), so the limit covers everything it loads.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import struct
import sys
import traceback
from typing import Any, BinaryIO

_HEADER = struct.Struct("<Q")
_ENGINE = "crossgrad.engine"

Reply = tuple[bool, Any, str]


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent ends (the parent thread, in fact:
    the pool starts workers from threads that outlive them). Then, if the parent is no longer
    ``parent``, it died before the request took effect: exit now. A no-op off Linux."""
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the worker ends when it next reads stdin
        return
    if os.getppid() != parent:
        os._exit(0)


def limit_memory(mebibytes: int) -> None:
    """Cap this process's address space: past it, allocations fail with MemoryError."""
    import resource

    if mebibytes <= 0:
        return
    limit = mebibytes << 20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _read(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data and len(data) == size else None


def _send(stream: BinaryIO, reply: Reply) -> None:
    try:
        payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        payload = pickle.dumps((False, MemoryError(), ""))
    except Exception as error:  # a result or exception that does not pickle: send its text
        what = reply[1]
        payload = pickle.dumps((False, RuntimeError(f"{type(what).__name__}: {what} ({error})"),
                                reply[2]))
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent(int(argv[1]) if len(argv) > 1 else 0)
    limit_memory(int(argv[0]) if argv else 0)
    if not __package__:
        # Run as a script, its own directory heads sys.path; the engine's modules are only to
        # be imported as parts of their package.
        here = os.path.dirname(os.path.realpath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != here]
    # The start-up cost is paid before "ready".
    importlib.import_module(_ENGINE + ".solver").warm_up()
    requests = sys.stdin.buffer
    # The protocol owns the original stdout; anything printed goes to stderr instead.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        _serve(requests, replies)
    except BrokenPipeError:
        # The parent is gone (a server that stopped as this worker started): nobody to answer,
        # nothing to report; _exit, as a normal exit would flush the broken pipe again.
        os._exit(0)


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    _send(replies, (True, "ready", ""))
    while (header := _read(requests, _HEADER.size)) is not None:
        body = _read(requests, _HEADER.unpack(header)[0])
        if body is None:
            break
        _send(replies, _run(body))


def _run(body: bytes) -> Reply:
    try:
        module, name, args = pickle.loads(body)
        if module != _ENGINE and not module.startswith(_ENGINE + "."):
            raise PermissionError(f"{module} is not part of {_ENGINE}")
        function = getattr(importlib.import_module(module), name)
        return True, function(*args), ""
    except MemoryError:
        return False, MemoryError(), ""  # no traceback: what it holds is being freed
    except Exception as error:
        return False, error, traceback.format_exc()


if __name__ == "__main__":
    main()
