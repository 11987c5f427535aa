"""A second-language client: tests/node/client.js (Node.js, @grpc/grpc-js with the .proto loaded
at run time by @grpc/proto-loader) drives a real server through the wire API alone.

It runs the seed's example 2, ``sin(x**2)`` at x = 4: CreateSession, PutLeaf (float32 as raw
little-endian bytes), Backward of the graph x -> pow(x, 2) -> sin, GetLeaf, and the stateless
Differentiate with the formula and x in the ``values`` form; it prints one JSON line.

Needs ``node``, ``npm`` and tests/node/node_modules (``npm ci --prefix tests/node``, which
.ci/run does). Without them the test skips, with the reason, except under CI=true, where a
missing piece fails it: the cross-language check can never silently stop running there.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
CLIENT = NODE_DIR / "client.js"
TIMEOUT = 120.0  # seconds for the whole script: the first Backward derives the closed form

# d/dx sin(x**2) = 2*x*cos(x**2); at x = 4, 8*cos(16), computed in float32 as the server does.
EXPECTED_GRAD = float(np.float32(2 * 4.0) * np.cos(np.float32(16.0), dtype=np.float32))
EXPECTED_CLOSED_FORM = "2*x*cos(x**2)"
# proto-loader with `enums: String` gives the enum value's name as the .proto spells it.
AGREE = "CHECK_STATUS_AGREE"


def _missing() -> str | None:
    """Why the Node.js client cannot run here, or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH (install Node.js and npm)"
    for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            return (f"{package} is not installed in tests/node/node_modules "
                    "(run `npm ci --prefix tests/node`)")
    return None


@pytest.fixture(scope="module")
def node() -> str:
    """The path of `node`, when the client can run; skips (fails under CI=true) otherwise."""
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    path = shutil.which("node")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def answer(node: str, running_server: Any) -> dict[str, Any]:
    """What client.js printed against the running server, as a dict."""
    try:
        done = subprocess.run([node, str(CLIENT), running_server.address], capture_output=True,
                              text=True, timeout=TIMEOUT, cwd=NODE_DIR, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"client.js did not finish in {TIMEOUT:.0f} s; stderr: {exc.stderr!r}")
    assert done.returncode == 0, (
        f"client.js exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}")
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got: {done.stdout!r}"
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    return result


def test_backward_grad_read_back_with_get_leaf(answer: dict[str, Any]) -> None:
    assert answer["grad_dtype"] == "DTYPE_FLOAT32"
    assert math.isclose(answer["grad"], EXPECTED_GRAD, rel_tol=0, abs_tol=1e-5)
    # The grad Backward returned is the one GetLeaf reads back, bit for bit (both float32).
    assert answer["backward_grad"] == answer["grad"]
    assert math.isclose(answer["backward_output"], math.sin(16.0), abs_tol=1e-6)
    assert answer["backward_check_status"] == AGREE


def test_differentiate_closed_form_and_check(answer: dict[str, Any]) -> None:
    assert answer["closed_form"] == EXPECTED_CLOSED_FORM
    assert answer["check_status"] == AGREE
    assert answer["check_method"] == "CHECK_METHOD_SYMBOLIC"
    assert math.isclose(answer["differentiate_grad"], EXPECTED_GRAD, rel_tol=0, abs_tol=1e-5)
    assert math.isclose(answer["differentiate_output"], math.sin(16.0), abs_tol=1e-6)
