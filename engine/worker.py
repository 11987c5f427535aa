"""A symbolic worker process: ``python -m crossgrad.engine.worker``.

Reads length-prefixed pickled calls ``(module, function, args)`` on stdin, runs them, and writes
``(True, result)`` or ``(False, exception)`` on stdout; exits when stdin closes (its parent is
gone). Only functions of ``crossgrad.engine`` are run. See ``budget.py``.
"""

from __future__ import annotations

import importlib
import os
import pickle
import struct
import sys
from typing import Any, BinaryIO

_HEADER = struct.Struct("<Q")


def _read(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data and len(data) == size else None


def _send(stream: BinaryIO, message: Any) -> None:
    try:
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # an exception that does not pickle: send its text
        payload = pickle.dumps((False, RuntimeError(f"{type(message[1]).__name__}: "
                                                    f"{message[1]} ({error})")))
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def main() -> None:
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
    _send(replies, (True, "ready"))
    while (header := _read(requests, _HEADER.size)) is not None:
        body = _read(requests, _HEADER.unpack(header)[0])
        if body is None:
            break
        module, name, args = pickle.loads(body)
        try:
            if module != "crossgrad.engine" and not module.startswith("crossgrad.engine."):
                raise PermissionError(f"{module} is not part of crossgrad.engine")
            function = getattr(importlib.import_module(module), name)
            reply: Any = (True, function(*args))
        except Exception as error:
            reply = (False, error)
        _send(replies, reply)


if __name__ == "__main__":
    main()
