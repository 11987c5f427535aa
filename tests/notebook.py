"""The seed notebook (PyTorch's autograd tutorial), cell by cell, with what each cell printed.

The cells are listed in the order the notebook ran them (its ``In [n]`` counters): the cell that
re-creates ``x`` in "Disable gradient tracking" ran after the ``requires_grad_`` and ``detach``
cells, which is why ``y = x**2`` shows a ``grad_fn`` again there. ``lib`` stands for the module
imported as ``torch``.
"""

from __future__ import annotations

import ast
import contextlib
import io
import warnings
from types import ModuleType
from typing import Any

NON_LEAF_WARNING = "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed."

# (code, printed output); a cell whose last line is an expression shows its repr, as Jupyter does.
CELLS: list[tuple[str, str]] = [
    ("x = torch.tensor(5.0, requires_grad = True)\ny = x ** 2\n\nprint(x)\nprint(y)",
     "tensor(5., requires_grad=True)\ntensor(25., grad_fn=<PowBackward0>)"),
    ("y.backward()", ""),
    ("x.grad", "tensor(10.)"),
    ("x2 = torch.tensor(4.0, requires_grad= True)\ny2 = x2 ** 2\nz2 = torch.sin(y2)\n\n"
     "print(x2)\nprint(y2)\nprint(z2)",
     "tensor(4., requires_grad=True)\ntensor(16., grad_fn=<PowBackward0>)\n"
     "tensor(-0.2879, grad_fn=<SinBackward0>)"),
    ("z2.backward()", ""),
    ("x2.grad", "tensor(-7.6613)"),
    ("y2.grad", ""),  # None, with PyTorch's non-leaf warning
    ("x3 = torch.tensor(6.7)\ny3 = torch.tensor(0.0)", ""),
    ("w = torch.tensor(1.0, requires_grad=True)\nb = torch.tensor(0.0, requires_grad=True)\n"
     "print(w)\nprint(b)",
     "tensor(1., requires_grad=True)\ntensor(0., requires_grad=True)"),
    ("z = w*x3 + b\ny_pred = torch.sigmoid(z)\nprint(z)\nprint(y_pred)",
     "tensor(6.7000, grad_fn=<AddBackward0>)\ntensor(0.9988, grad_fn=<SigmoidBackward0>)"),
    ("def binary_cross_entropy(y_pred, y_true):\n  # to prevent log(0)\n  e = 1e-8\n\n"
     "  # clamp func. restricts values of a tensor to a given range\n"
     "  y_pred = torch.clamp(y_pred, e, 1-e)\n\n"
     "  return -(y_true*torch.log(y_pred) + (1-y_true)*torch.log(1-y_pred))", ""),
    ("loss = binary_cross_entropy(y_pred, y3)\nloss", "tensor(6.7012, grad_fn=<NegBackward0>)"),
    ("loss.backward()", ""),
    ("print(w.grad)\nprint(b.grad)", "tensor(6.6918)\ntensor(0.9988)"),
    ("x = torch.tensor([1.0, 3.0, 4.0], requires_grad=True)\nprint(x.shape)\nprint(x)",
     "torch.Size([3])\ntensor([1., 3., 4.], requires_grad=True)"),
    ("y = (x**2).mean()\ny", "tensor(8.6667, grad_fn=<MeanBackward0>)"),
    ("y.backward()", ""),
    ("x.grad", "tensor([0.6667, 2.0000, 2.6667])"),
    # Clearing gradients
    ("x = torch.tensor(2.0, requires_grad=True)\nx", "tensor(2., requires_grad=True)"),
    ("y = x**2\ny", "tensor(4., grad_fn=<PowBackward0>)"),
    ("y.backward()\nx.grad", "tensor(4.)"),
    ("y = x**2\ny", "tensor(4., grad_fn=<PowBackward0>)"),
    ("y.backward()\nx.grad", "tensor(8.)"),
    ("x.grad.zero_()", "tensor(0.)"),
    ("y = x**2\ny.backward()\nx.grad", "tensor(4.)"),
    # Disable gradient tracking, in execution order: In [82], [83], [84], [86], [87], ...
    ("y = x**2\ny", "tensor(4., grad_fn=<PowBackward0>)"),
    ("x.requires_grad_(False)", "tensor(2.)"),
    ("z = x.detach()\nz", "tensor(2.)"),
    ("x = torch.tensor(2.0, requires_grad=True)\nx", "tensor(2., requires_grad=True)"),
    ("y = x**2\ny", "tensor(4., grad_fn=<PowBackward0>)"),
    ("y = z**2\ny", "tensor(4.)"),
    ("with torch.no_grad():\n  y = x**2", ""),
    ("y", "tensor(4.)"),
]


def run_cell(code: str, namespace: dict[str, Any]) -> str:
    """Run one cell in ``namespace``; return what it printed, as Jupyter would show it."""
    tree = ast.parse(code)
    shown: ast.expr | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        shown = tree.body.pop().value  # type: ignore[attr-defined]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(tree, "<cell>", "exec"), namespace)
        if shown is not None:
            value = eval(compile(ast.Expression(shown), "<cell>", "eval"), namespace)
            if value is not None:
                print(repr(value))
    return out.getvalue().rstrip("\n")


def run_notebook(lib: ModuleType) -> list[tuple[str, str, list[str]]]:
    """Run every cell with ``lib`` as ``torch``: (expected, printed, warning messages) per cell."""
    namespace: dict[str, Any] = {"torch": lib}
    results = []
    for code, expected in CELLS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            printed = run_cell(code, namespace)
        results.append((expected, printed, [str(w.message) for w in caught]))
    return results
