"""The ``crossgrad`` command, run in-process against a real server, and the logistic regression
example, run as a user would run it."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import socket
import subprocess
import sys
from typing import Any

import pytest
from crossgrad.client import cli
from crossgrad.client.connection import SERVICE
from crossgrad.client.context import ADDRESS_VARIABLE
from crossgrad.server.main import RunningServer
from grpc_health.v1 import health_pb2

from tests.client.conftest import ROOT
from tests.engine.test_formula import (
    SEED_LOSS,
    SEED_VALUES,
    assert_seed_numbers,
    seed_loss_in_torch,
)
from tests.notebook import CELLS, NON_LEAF_WARNING


@pytest.fixture
def target(server: RunningServer) -> str:
    return server.address


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


# --- grad ----------------------------------------------------------------------------------------

def test_grad_prints_the_gradient_its_closed_form_and_the_check(
        capsys: pytest.CaptureFixture[str], target: str) -> None:
    status, out, err = run(capsys, "grad", "sin(x**2)", "--at", "x=4", "--target", target)
    assert (status, err) == (0, "")
    assert "2*x*cos(x**2)" in out
    assert re.search(r"^check\s+SYMBOLIC AGREE$", out, re.M)
    gradient = re.search(r"^grad x\s+(\S+)$", out, re.M)
    assert gradient is not None
    assert float(gradient.group(1)) == pytest.approx(8 * math.cos(16), rel=1e-6)
    output = re.search(r"^output\s+(\S+)\s+\(float32\)$", out, re.M)
    assert output is not None and float(output.group(1)) == pytest.approx(math.sin(16), rel=1e-6)


def test_grad_json_is_one_object_with_the_same_content(
        capsys: pytest.CaptureFixture[str], target: str) -> None:
    status, out, _ = run(capsys, "grad", "sin(x**2)", "--at", "x=4", "--json",
                         "--target", target)
    assert status == 0
    result = json.loads(out)
    assert list(result) == ["formula", "dtype", "at", "output", "gradients", "check", "hessian"]
    assert result["formula"] == "sin(x**2)" and result["at"] == {"x": 4.0}
    assert result["output"]["shape"] == [] and result["output"]["dtype"] == "float32"
    assert result["output"]["value"] == pytest.approx(math.sin(16), rel=1e-6)
    [gradient] = result["gradients"]
    assert gradient["leaf"] == "x" and gradient["closed_form"] == "2*x*cos(x**2)"
    assert gradient["value"] == pytest.approx(8 * math.cos(16), rel=1e-6)
    assert gradient["latex"]
    check = result["check"]
    assert (check["method"], check["status"]) == ("SYMBOLIC", "AGREE")
    assert check["max_abs_error"] <= check["atol"] and check["reason"]
    assert result["hessian"] is None


def test_grad_hessian(capsys: pytest.CaptureFixture[str], target: str) -> None:
    status, out, _ = run(capsys, "grad", "sin(x**2)", "--at", "x=4", "--hessian", "--json",
                         "--target", target)
    assert status == 0
    hessian = json.loads(out)["hessian"]
    [block] = hessian["blocks"]
    assert (block["row"], block["column"]) == ("x", "x")
    second = 2 * math.cos(16) - 64 * math.sin(16)  # d²/dx² sin(x²) at 4
    assert block["value"] == pytest.approx(second, rel=1e-5)
    assert "sin(x**2)" in block["closed_form"] and "cos(x**2)" in block["closed_form"]
    assert hessian["check"]["status"] == "AGREE"

    status, out, _ = run(capsys, "grad", "sin(x**2)", "--at", "x=4", "--hessian",
                         "--target", target)
    assert status == 0
    assert re.search(r"^hessian x, x\s+\S+$", out, re.M)
    assert re.search(r"^hessian check\s+\w+ AGREE$", out, re.M)


def test_grad_of_vectors_with_respect_to_chosen_leaves(
        capsys: pytest.CaptureFixture[str], target: str) -> None:
    status, out, _ = run(capsys, "grad", "sum(y * x)", "--at", "x=2", "--at", "y=1.5, 2",
                         "--wrt", "y", "--dtype", "float64", "--json", "--target", target)
    assert status == 0
    result = json.loads(out)
    assert result["at"] == {"x": 2.0, "y": [1.5, 2.0]}
    [gradient] = result["gradients"]
    assert gradient["leaf"] == "y"
    assert (gradient["shape"], gradient["dtype"], gradient["value"]) == ([2], "float64",
                                                                         [2.0, 2.0])
    assert gradient["closed_form"] == "[x, x]"
    # A trailing comma makes a one-element vector.
    status, out, _ = run(capsys, "grad", "sum(y)", "--at", "y=3,", "--json", "--target", target)
    assert status == 0 and json.loads(out)["gradients"][0]["shape"] == [1]


def test_grad_of_the_seed_notebook_loss_as_written(
        capsys: pytest.CaptureFixture[str], target: str, require_torch: Any) -> None:
    at = [arg for name, value in SEED_VALUES.items() for arg in ("--at", f"{name}={value}")]
    status, out, err = run(capsys, "grad", SEED_LOSS, *at, "--wrt", "w", "--wrt", "b",
                           "--json", "--target", target)
    assert (status, err) == (0, "")
    result = json.loads(out)
    assert (result["check"]["method"], result["check"]["status"]) == ("SYMBOLIC", "AGREE")
    loss, grads = seed_loss_in_torch(require_torch)
    assert_seed_numbers(result["output"]["value"],
                        {g["leaf"]: g["value"] for g in result["gradients"]}, loss, grads)


def test_the_address_comes_from_the_environment(
        capsys: pytest.CaptureFixture[str], target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADDRESS_VARIABLE, target)
    status, out, _ = run(capsys, "grad", "x**2", "--at", "x=3")
    assert status == 0 and re.search(r"^grad x\s+6$", out, re.M)


@pytest.mark.parametrize(("argv", "message"), [
    (["sin(", "--at", "x=1"], "syntax error in the formula"),
    (["sin(x)", "--at", "x=abc"], "'abc' is not a number"),
    (["sin(x)", "--at", "x=__import__('os').getcwd()"], "is not a number"),
    (["sin(x)", "--at", "x=inf"], "is not finite"),
    (["sin(x)", "--at", "x"], "expected NAME=VALUE"),
    (["sin(x)", "--at", "x=1", "--at", "x=2"], "'x' is given twice"),
    (["sin(x)"], "unknown leaf 'x'"),
    (["sin(x)", "--at", "x=1", "--wrt", "y"], "'y'"),
    (["sin(x\udcff)", "--at", "x=1"], "is not valid UTF-8"),  # undecodable bytes in argv
])
def test_bad_input_is_one_line_on_stderr_and_status_1(
        capsys: pytest.CaptureFixture[str], target: str, argv: list[str], message: str) -> None:
    status, out, err = run(capsys, "grad", *argv, "--target", target)
    assert status == 1 and out == ""
    assert err.startswith("crossgrad: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_usage_error_is_argparse_s_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "grad")
    assert status == 2 and "required: formula" in err


# --- ops -----------------------------------------------------------------------------------------

def test_ops_lists_the_op_table(capsys: pytest.CaptureFixture[str], target: str) -> None:
    status, out, _ = run(capsys, "ops", "--target", target)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ARITY", "ATTRS", "GRAD_FN", "KINK"]
    assert re.search(r"^sin\s+1\s+-\s+SinBackward0\s+-$", out, re.M)
    assert re.search(r"^clamp\s+1\s+min: number\? = None, max: number\? = None\s", out, re.M)
    assert re.search(r"^cat\s+1\+\s+dim: int = 0\s+CatBackward0", out, re.M)  # one or more
    column = lines[0].index("GRAD_FN")  # aligned: every row's grad_fn starts under the header
    assert all(line[column - 2:column] == "  " and line[column] != " " for line in lines)

    status, out, _ = run(capsys, "ops", "--json", "--target", target)
    assert status == 0
    ops = {op["name"]: op for op in json.loads(out)["ops"]}
    assert ops["sin"] == {"name": "sin", "arity": 1, "attrs": [], "grad_fn": "SinBackward0",
                          "kink": "", "variadic": False}
    assert (ops["cat"]["arity"], ops["cat"]["variadic"]) == (1, True)
    assert [attr["name"] for attr in ops["sum"]["attrs"]] == ["dim", "keepdim"]
    assert ops["sum"]["attrs"][1]["default"] is False


# --- health --------------------------------------------------------------------------------------

def test_health_of_a_serving_server_is_0(capsys: pytest.CaptureFixture[str],
                                         server: RunningServer) -> None:
    status, out, _ = run(capsys, "health", server.address)
    assert status == 0
    assert out.splitlines() == ["server: SERVING", f"{SERVICE}: SERVING"]


def test_health_of_a_service_not_serving_is_1(capsys: pytest.CaptureFixture[str],
                                              server: RunningServer) -> None:
    server.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        status, out, _ = run(capsys, "health", server.address)
    finally:
        server.health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    assert status == 1 and f"{SERVICE}: NOT_SERVING" in out


def test_health_of_a_closed_port_is_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    status, out, err = run(capsys, "health", f"127.0.0.1:{port}", "--timeout", "3")
    assert status == 2 and out == ""
    assert err.startswith(f"crossgrad: cannot reach 127.0.0.1:{port}")


# --- demo ----------------------------------------------------------------------------------------

def test_the_demo_runs_the_seed_notebook_s_cells() -> None:
    assert tuple(code for code, _ in CELLS) == cli.NOTEBOOK


def test_the_demo_prints_what_the_notebook_printed(
        capsys: pytest.CaptureFixture[str], target: str) -> None:
    status, out, err = run(capsys, "demo", "--target", target)
    assert status == 0
    expected = [line for _, shown in CELLS if shown for line in shown.splitlines()]
    assert out.splitlines() == expected
    assert err.startswith(f"UserWarning: {NON_LEAF_WARNING}") and err.count("\n") == 1


# --- the logistic regression example -------------------------------------------------------------

def test_the_logistic_regression_example_learns_in_one_call_a_step() -> None:
    environment = {name: value for name, value in os.environ.items()
                   if name != ADDRESS_VARIABLE}  # it starts its own server
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "logistic_regression.py")],
                          capture_output=True, text=True, timeout=120, env=environment,
                          check=False)
    assert done.returncode == 0, done.stderr
    losses = [float(loss) for loss in re.findall(r"^step\s+\d+\s+loss (\S+)$", done.stdout,
                                                 re.M)]
    assert len(losses) == 4
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    accuracy = re.search(r"^accuracy (\S+)$", done.stdout, re.M)
    assert accuracy is not None and float(accuracy.group(1)) > 0.7
    assert re.search(r"^RPCs per step: 1$", done.stdout, re.M)
