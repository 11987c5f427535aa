"""``crossgrad``: the service from a shell.

::

    crossgrad grad "sin(x**2)" --at x=4            # gradient, closed form and check
    crossgrad grad "sum(w * y)" --at w=1,2 --at y=3,4 --wrt w --hessian --json
    crossgrad ops                                  # the op table
    crossgrad health localhost:50051               # exit 0 when serving
    crossgrad demo                                 # the seed notebook, run on the service

``grad``, ``ops`` and ``demo`` use ``--target``, else ``$CROSSGRAD_ADDRESS``, else a server
started in this process. Errors are printed as ``crossgrad: <message>`` and exit with status 1;
values given with ``--at`` are parsed as numbers, never evaluated.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
from crossgrad.engine.errors import CrossgradError
from crossgrad.v1 import crossgrad_pb2 as pb
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .connection import SERVICE, Connection
from .context import ADDRESS_VARIABLE

PROGRAM = "crossgrad"
HEALTH_TIMEOUT = 3.0  # seconds
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class InputError(Exception):
    """A command line the CLI refuses before calling the service."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``crossgrad`` command with ``argv`` (default: the process's); its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes the locale could not decode: the wire takes UTF-8
            print(f"{PROGRAM}: argument {arg!r} is not valid UTF-8", file=sys.stderr)
            return 1
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse has already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        status: int = args.run(args)
        return status
    except (InputError, CrossgradError) as error:
        # ServiceError (any failed call, mapped by the SDK) is a CrossgradError.
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Automatic differentiation as a service: gradients, their "
        "closed forms, and the check that the two agree.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grad = commands.add_parser(
        "grad", help="differentiate a formula at a point (the stateless Differentiate call)",
        description="Differentiate FORMULA at the values given with --at: its value, each "
        "leaf's gradient and closed form, and the check that compared them.")
    grad.add_argument("formula", help='e.g. "sin(x**2)" or "mean(sigmoid(w @ x + b))"')
    grad.add_argument("--at", action="append", default=[], metavar="NAME=VALUES",
                      help="a leaf's value: a number (a 0-d tensor) or comma-separated numbers "
                      "(a 1-D tensor; '4,' is one element); once per leaf")
    grad.add_argument("--wrt", action="append", default=[], metavar="NAME",
                      help="differentiate with respect to NAME (repeatable or comma-separated; "
                      "default: every leaf)")
    grad.add_argument("--hessian", action="store_true", help="also compute the Hessian")
    grad.add_argument("--check", choices=("strict", "report", "off"), default="strict",
                      help="strict: a disagreement is an error; report: reported only; off: no "
                      "closed form, no check (default: strict)")
    grad.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                      help="the leaves' dtype (default: float32)")
    _add_target(grad)
    grad.add_argument("--json", action="store_true", help="print one JSON object")
    grad.set_defaults(run=_grad)

    ops = commands.add_parser("ops", help="list the ops the service knows (ListOps)")
    _add_target(ops)
    ops.add_argument("--json", action="store_true", help="print one JSON object")
    ops.set_defaults(run=_ops)

    health = commands.add_parser(
        "health", help="check a server's health (exit 0 serving, 1 not, 2 unreachable)")
    health.add_argument("target", help="the server, HOST:PORT")
    health.add_argument("--timeout", type=float, default=HEALTH_TIMEOUT, metavar="SECONDS",
                        help=f"how long to wait for an answer (default: {HEALTH_TIMEOUT:g})")
    health.set_defaults(run=_health)

    demo = commands.add_parser(
        "demo", help="run the seed notebook (PyTorch's autograd tutorial) on the service",
        description="Run PyTorch's autograd tutorial, cell by cell, with crossgrad.client "
        "imported as torch, and print what each cell shows.")
    _add_target(demo)
    demo.add_argument("--echo", action="store_true", help="print each cell's code too")
    demo.set_defaults(run=_demo)
    return parser


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", metavar="HOST:PORT",
                        help=f"the server (default: ${ADDRESS_VARIABLE}, else a server started "
                        "in this process)")


def _target(given: str | None) -> str:
    if given:
        return given
    from_environment = os.environ.get(ADDRESS_VARIABLE)
    if from_environment:
        return from_environment
    from .embedded import address

    return address()


def _call(target: str | None, method: str, request: Message) -> Any:
    connection = Connection(_target(target))
    try:
        return connection.call(method, request)
    finally:
        connection.close()


# --- grad ----------------------------------------------------------------------------------------

def _grad(args: argparse.Namespace) -> int:
    at = _parse_at(args.at)
    dtype = pb.Dtype.Value(f"DTYPE_{args.dtype.upper()}")
    wrt = [name.strip() for names in args.wrt for name in names.split(",") if name.strip()]
    request = pb.DifferentiateRequest(
        formula=args.formula, wrt=wrt, hessian=args.hessian, answer_as_values=True,
        check_mode=pb.CheckMode.Value(f"CHECK_MODE_{args.check.upper()}"),
        values={name: pb.Tensor(shape=[len(value)] if isinstance(value, list) else [],
                                dtype=dtype,
                                values=value if isinstance(value, list) else [value])
                for name, value in at.items()})
    response = _call(args.target, "Differentiate", request)
    result = _differentiation(args.formula, args.dtype, at, response)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        _print_differentiation(result)
    return 0


def _parse_at(specs: Sequence[str]) -> dict[str, float | list[float]]:
    """``--at`` values by leaf name: a float, or a list of floats for a 1-D tensor."""
    values: dict[str, float | list[float]] = {}
    for spec in specs:
        name, equals, text = spec.partition("=")
        name = name.strip()
        if not equals or not name:
            raise InputError(f"--at {spec!r}: expected NAME=VALUE or NAME=V1,V2,...")
        if name in values:
            raise InputError(f"--at: {name!r} is given twice")
        pieces = [piece.strip() for piece in text.split(",")]
        vector = len(pieces) > 1
        if vector and pieces[-1] == "":
            pieces.pop()  # a trailing comma: a 1-D tensor of the numbers before it
        numbers = [_number(name, piece) for piece in pieces]
        values[name] = numbers if vector else numbers[0]
    return values


def _number(name: str, text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise InputError(f"--at {name}: {text!r} is not a number") from None
    if not math.isfinite(number):
        raise InputError(f"--at {name}: {text!r} is not finite (values must be finite)")
    return number


def _differentiation(formula: str, dtype: str, at: dict[str, float | list[float]],
                     response: pb.DifferentiateResponse) -> dict[str, Any]:
    """Differentiate's answer as plain data, the one content both outputs show."""
    result: dict[str, Any] = {
        "formula": formula,
        "dtype": dtype,
        "at": at,
        "output": _tensor(response.output),
        "gradients": [
            {"leaf": gradient.leaf,
             **(_tensor(gradient.value) if gradient.HasField("value") else
                {"shape": None, "dtype": None, "value": None}),
             "closed_form": gradient.closed_form, "latex": gradient.latex}
            for gradient in response.gradients],
        "check": _check(response.check),
        "hessian": None,
    }
    if response.HasField("hessian"):
        result["hessian"] = {
            "blocks": [{"row": block.row, "column": block.column, **_tensor(block.value),
                        "closed_form": block.closed_form, "latex": block.latex}
                       for block in response.hessian.blocks],
            "check": _check(response.hessian.check)}
    return result


def _tensor(message: pb.Tensor) -> dict[str, Any]:
    """A tensor answered as numbers: its shape, dtype name and value (a number or nested lists;
    NaN and infinities as the strings "NaN", "Infinity", "-Infinity", as protobuf's JSON has
    them)."""
    dtype = pb.Dtype.Name(message.dtype).removeprefix("DTYPE_").lower()
    array = np.asarray(message.values, dtype=np.float64).reshape(tuple(message.shape))
    return {"shape": list(message.shape), "dtype": dtype, "value": _plain(array, dtype)}


def _plain(array: np.ndarray, dtype: str) -> Any:
    if array.ndim:
        return [_plain(row, dtype) for row in array]
    number = float(array)
    if dtype == "bool":
        return bool(number)
    if dtype == "int64":
        return int(number)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if dtype == "float32":  # the shortest decimal that is this float32, not its float64 digits
        return float(np.format_float_positional(np.float32(number), unique=True, trim="-"))
    return number


def _check(report: pb.CheckReport) -> dict[str, Any]:
    return {"method": pb.CheckMethod.Name(report.method).removeprefix("CHECK_METHOD_"),
            "status": pb.CheckStatus.Name(report.status).removeprefix("CHECK_STATUS_"),
            "max_abs_error": report.max_abs_error, "max_rel_error": report.max_rel_error,
            "atol": report.atol, "rtol": report.rtol, "reason": report.reason}


def _print_differentiation(result: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = [("formula", result["formula"])]
    if result["at"]:
        rows.append(("at", ", ".join(f"{name} = {_shown(value)}"
                                     for name, value in result["at"].items())))
    output = result["output"]
    rows.append(("output", f"{_shown(output['value'])}  ({output['dtype']})"))
    for gradient in result["gradients"]:
        if gradient["value"] is None:
            rows.append((f"grad {gradient['leaf']}",
                         "None (the output does not depend on it)"))
            continue
        rows.append((f"grad {gradient['leaf']}", _shown(gradient["value"])))
        rows.append(("  closed form", gradient["closed_form"] or "(not derived)"))
    rows.extend(_check_rows("check", result["check"]))
    hessian = result["hessian"]
    if hessian is not None:
        for block in hessian["blocks"]:
            rows.append((f"hessian {block['row']}, {block['column']}", _shown(block["value"])))
            rows.append(("  closed form", block["closed_form"] or "(not derived)"))
        rows.extend(_check_rows("hessian check", hessian["check"]))
    width = max(len(label) for label, _ in rows) + 2
    for label, text in rows:
        lines = text.splitlines() or [""]
        print(f"{label:<{width}}{lines[0]}".rstrip())
        for line in lines[1:]:
            print(f"{'':<{width}}{line}")


def _check_rows(label: str, check: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(label, f"{check['method']} {check['status']}")]
    if check["method"] != "NONE":
        rows.append(("  max error", f"abs {check['max_abs_error']:.3g}, rel "
                     f"{check['max_rel_error']:.3g} (atol {check['atol']:g}, rtol "
                     f"{check['rtol']:g})"))
    if check["reason"]:
        rows.append(("  reason", check["reason"]))
    return rows


def _shown(value: Any, depth: int = 0) -> str:
    """A value as numbers print; nested lists one row a line, as NumPy prints them."""
    if not isinstance(value, list):
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return str(value)
    if value and isinstance(value[0], list):
        return "[" + (",\n" + " " * (depth + 1)).join(_shown(row, depth + 1)
                                                       for row in value) + "]"
    return "[" + ", ".join(_shown(item) for item in value) + "]"


# --- ops -----------------------------------------------------------------------------------------

def _ops(args: argparse.Namespace) -> int:
    response = _call(args.target, "ListOps", pb.ListOpsRequest())
    ops = [{"name": op.name, "arity": op.arity,
            "attrs": [{"name": attr.name, "kind": attr.kind, "required": attr.required,
                       "default": _attr(attr.default_value)
                       if attr.HasField("default_value") else None}
                      for attr in op.attrs],
            "grad_fn": op.grad_fn, "kink": op.kink, "variadic": op.variadic}
           for op in response.ops]
    if args.json:
        print(json.dumps({"ops": ops}, indent=2, ensure_ascii=False))
        return 0
    table = [("NAME", "ARITY", "ATTRS", "GRAD_FN", "KINK")]
    table += [(op["name"], f"{op['arity']}+" if op["variadic"] else str(op["arity"]),
               ", ".join(_signature(attr) for attr in op["attrs"]) or "-",
               op["grad_fn"] or "-", op["kink"] or "-") for op in ops]
    widths = [max(len(row[column]) for row in table) for column in range(4)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]).rstrip())
    return 0


def _attr(value: pb.AttrValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "integers":
        return list(value.integers.values)
    return None if kind is None else getattr(value, kind)


def _signature(attr: dict[str, Any]) -> str:
    """An attribute as a Python parameter: ``min: number? = None``, ``shape: dims``."""
    if attr["required"]:
        return f"{attr['name']}: {attr['kind']}"
    return f"{attr['name']}: {attr['kind']} = {attr['default']!r}"


# --- health --------------------------------------------------------------------------------------

def _health(args: argparse.Namespace) -> int:
    """Health.Check of the server ("") and of crossgrad's service: 0 when both are SERVING, 1
    otherwise, 2 when the server cannot be reached."""
    statuses = []
    with grpc.insecure_channel(args.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=service),
                                    timeout=args.timeout)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else None
                if code in _UNREACHABLE:
                    print(f"{PROGRAM}: cannot reach {args.target}: "
                          f"{error.details() if isinstance(error, grpc.Call) else error}",
                          file=sys.stderr)
                    return 2
                status = "SERVICE_UNKNOWN" if code == grpc.StatusCode.NOT_FOUND else (
                    code.name if code is not None else "UNKNOWN")
            statuses.append(status)
            print(f"{service or 'server'}: {status}")
    return 0 if all(status == "SERVING" for status in statuses) else 1


# --- demo ----------------------------------------------------------------------------------------

# The seed notebook (PyTorch's autograd tutorial), its cells in the order the notebook ran them
# (its In [n] counters), with ``crossgrad.client`` imported as ``torch``. A cell whose last line
# is an expression shows that expression's repr, as Jupyter does.
NOTEBOOK: tuple[str, ...] = (
    "x = torch.tensor(5.0, requires_grad = True)\ny = x ** 2\n\nprint(x)\nprint(y)",
    "y.backward()",
    "x.grad",
    "x2 = torch.tensor(4.0, requires_grad= True)\ny2 = x2 ** 2\nz2 = torch.sin(y2)\n\n"
    "print(x2)\nprint(y2)\nprint(z2)",
    "z2.backward()",
    "x2.grad",
    "y2.grad",
    "x3 = torch.tensor(6.7)\ny3 = torch.tensor(0.0)",
    "w = torch.tensor(1.0, requires_grad=True)\nb = torch.tensor(0.0, requires_grad=True)\n"
    "print(w)\nprint(b)",
    "z = w*x3 + b\ny_pred = torch.sigmoid(z)\nprint(z)\nprint(y_pred)",
    "def binary_cross_entropy(y_pred, y_true):\n  # to prevent log(0)\n  e = 1e-8\n\n"
    "  # clamp func. restricts values of a tensor to a given range\n"
    "  y_pred = torch.clamp(y_pred, e, 1-e)\n\n"
    "  return -(y_true*torch.log(y_pred) + (1-y_true)*torch.log(1-y_pred))",
    "loss = binary_cross_entropy(y_pred, y3)\nloss",
    "loss.backward()",
    "print(w.grad)\nprint(b.grad)",
    "x = torch.tensor([1.0, 3.0, 4.0], requires_grad=True)\nprint(x.shape)\nprint(x)",
    "y = (x**2).mean()\ny",
    "y.backward()",
    "x.grad",
    "x = torch.tensor(2.0, requires_grad=True)\nx",
    "y = x**2\ny",
    "y.backward()\nx.grad",
    "y = x**2\ny",
    "y.backward()\nx.grad",
    "x.grad.zero_()",
    "y = x**2\ny.backward()\nx.grad",
    "y = x**2\ny",
    "x.requires_grad_(False)",
    "z = x.detach()\nz",
    "x = torch.tensor(2.0, requires_grad=True)\nx",
    "y = x**2\ny",
    "y = z**2\ny",
    "with torch.no_grad():\n  y = x**2",
    "y",
)


def _demo(args: argparse.Namespace) -> int:
    import crossgrad.client as torch

    namespace: dict[str, Any] = {"torch": torch}
    with torch.connect(_target(args.target)):
        try:
            for number, code in enumerate(NOTEBOOK, 1):
                if args.echo:
                    print(f"\nIn [{number}]:" if number > 1 else f"In [{number}]:")
                    print("\n".join(f"    {line}".rstrip() for line in code.splitlines()))
                _run_cell(code, namespace)
        finally:
            namespace.clear()  # the cells' tensors go before their session does
    return 0


def _run_cell(code: str, namespace: dict[str, Any]) -> None:
    """Run a cell; show its last expression's value unless None, and its warnings on stderr."""
    tree = ast.parse(code, "<cell>")
    last = tree.body[-1] if tree.body else None
    shown = last.value if isinstance(last, ast.Expr) else None
    if shown is not None:
        tree.body.pop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(tree, "<cell>", "exec"), namespace)
        if shown is not None:
            value = eval(compile(ast.Expression(shown), "<cell>", "eval"), namespace)
            if value is not None:
                print(repr(value))
    sys.stdout.flush()
    for warning in caught:
        print(f"{warning.category.__name__}: {warning.message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
