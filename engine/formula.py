"""Formulas as text, e.g. ``"sin(x**2)"``, parsed safely into a ``Graph``.

Python's ``ast`` reads the text; a whitelist decides what it may hold: int and float literals,
names (the leaves), the operators ``+ - * / ** @``, unary ``-`` and ``+``, and calls of the op
table's functions by name (``clamp(x, min=0, max=1)``, ``sum(x, 0)``, ``mean(x)``), with the
op's attributes as keywords or as literal arguments after the operands, in the table's order, as
in PyTorch's signatures. Everything else is refused with an ``InvalidArgument`` naming it and its
column. Nothing in the text is ever evaluated: no ``eval``, no ``compile``, no ``sympify``, and no
arithmetic on its numbers (they become constant nodes; only a sign is folded into its number).

Python's parser recurses as deep as the expression nests and fails badly past about a thousand
levels (``MemoryError``, ``RecursionError``), so the length and a bound on the nesting are checked
on the raw text before it gets there; the tree is then walked with an explicit stack.
"""

from __future__ import annotations

import ast
import bisect
import keyword
import math
import re
from typing import Any, NoReturn

import numpy as np

from .errors import InvalidArgument
from .graph import (
    DEFAULT_LIMITS,
    Constant,
    Graph,
    Leaf,
    LimitExceeded,
    Limits,
    Node,
    Operation,
    normalize_attrs,
)
from .ops import TABLE, Op

_BINARY = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow",
           ast.MatMult: "matmul"}
_OPERATOR_TEXT = {ast.FloorDiv: "//", ast.Mod: "%", ast.LShift: "<<", ast.RShift: ">>",
                  ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&", ast.Not: "not",
                  ast.Invert: "~"}
_REFUSED = {
    ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Lambda: "lambda",
    ast.ListComp: "comprehension", ast.SetComp: "comprehension", ast.DictComp: "comprehension",
    ast.GeneratorExp: "generator expression", ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string", ast.Compare: "comparison", ast.BoolOp: "boolean operator",
    ast.NamedExpr: "assignment expression (:=)", ast.IfExp: "conditional expression",
    ast.Starred: "starred argument", ast.Tuple: "tuple", ast.List: "list", ast.Dict: "dict",
    ast.Set: "set", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.Slice: "slice",
}

# The nesting pre-scan reads the text as tokens: brackets nest; each operator or keyword can add
# one level of syntax tree. Numbers are matched whole so that the "." and "e-5" in them do not
# count as operators.
_TOKENS = re.compile(r"""
    (?P<quote>['"])
  | (?P<null>\0)
  | (?P<number>0[xXoObB]\w+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][-+]?\d[\d_]*)?[jJ]?)
  | (?P<word>[^\W\d]\w*)
  | (?P<open>[(\[{])
  | (?P<close>[)\]}])
  | (?P<op>\*\*|//|<<|>>|[<>=!:]=|->|[-+*/@%<>=&|^~.:])
""", re.VERBOSE)
_OPERATOR_WORDS = frozenset(keyword.kwlist) - {"True", "False", "None"}


def parse(text: str, limits: Limits = DEFAULT_LIMITS) -> Graph:
    """The graph of the formula ``text``: one leaf per distinct name, one constant per number.

    Leaf nodes take the name as their id; the other ids name the op (or "const") and the column,
    e.g. ``"pow@5"``, so errors found later can still be traced to the text.
    """
    if not isinstance(text, str):
        raise InvalidArgument(f"a formula must be a string, got {type(text).__name__}")
    if len(text) > limits.max_formula_chars:
        raise LimitExceeded(f"the formula has {len(text)} characters; the limit is "
                            f"{limits.max_formula_chars}")
    _check_nesting(text, limits.max_depth)
    # Leading blanks would be an "unexpected indent" to ast.parse in "eval" mode; the column
    # numbers in error messages still count them.
    body = text.lstrip(" \t")
    position = _Position(text, indent=len(text) - len(body))
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError as error:
        where = position.describe(error.lineno or 1, (error.offset or 1) - 1, chars=True)
        raise InvalidArgument(f"syntax error in the formula at {where}: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError) as error:  # Python's own limits
        raise InvalidArgument(f"the formula cannot be parsed: {error}") from None
    return _Builder(position, limits).build(tree.body)


def _check_nesting(text: str, limit: int) -> None:
    """Refuse text whose syntax tree could nest more than ``limit`` levels, without parsing it.

    The bound: each bracket adds two levels (a call and its argument) plus one per operator
    inside it, and the levels of the deepest bracket nested in it. Python's tree is never deeper
    than that, so what passes here is safe to hand to ``ast.parse``. Quotes are refused here
    too: strings are never allowed, and brackets inside them would skew the count (and so are
    null characters, which Python's parser reports differently from version to version).
    """
    frames = [[0, 0, 0]]  # per open bracket: levels above it, operators in it, deepest child
    position = _Position(text)
    for token in _TOKENS.finditer(text):
        kind = token.lastgroup
        top = frames[-1]
        if kind in ("quote", "null"):
            what = "a string" if kind == "quote" else "a null character"
            raise InvalidArgument(f"{what} is not allowed in a formula (at "
                                  f"{position.describe_index(token.start())})")
        if kind == "open":
            frames.append([top[0] + top[1] + 2, 0, 0])
            top = frames[-1]
        elif kind == "close" and len(frames) > 1:
            _, ops, child = frames.pop()
            top = frames[-1]
            top[2] = max(top[2], ops + child + 2)
        elif kind == "op" or (kind == "word" and token.group() in _OPERATOR_WORDS):
            top[1] += 1
        if top[0] + top[1] + top[2] + 1 > limit:
            raise LimitExceeded(f"the formula nests too deeply (at "
                                f"{position.describe_index(token.start())}): brackets and "
                                f"chained operators are limited to {limit} levels")


class _Position:
    """Columns as people count them: 1-based characters (``ast`` gives UTF-8 byte offsets)."""

    def __init__(self, text: str, indent: int = 0) -> None:
        self.lines = re.split(r"\r\n|\r|\n", text)
        self.starts = [0, *(m.end() for m in re.finditer(r"\r\n|\r|\n", text))]
        self.indent = indent  # blanks stripped from the start of the text before parsing

    def column(self, lineno: int, offset: int, chars: bool = False) -> int:
        """The column of an offset into the parsed text (in bytes unless ``chars``)."""
        shift = self.indent if lineno == 1 else 0
        if chars:
            return offset + shift + 1
        line = self.lines[lineno - 1][shift:] if 0 < lineno <= len(self.lines) else ""
        return len(line.encode()[:offset].decode(errors="ignore")) + shift + 1

    def describe(self, lineno: int, offset: int, chars: bool = False) -> str:
        column = self.column(lineno, offset, chars)
        return f"line {lineno}, column {column}" if len(self.lines) > 1 else f"column {column}"

    def tag(self, lineno: int, offset: int) -> str:
        column = self.column(lineno, offset)
        return f"{lineno}:{column}" if len(self.lines) > 1 else str(column)

    def describe_index(self, index: int) -> str:
        """Where an index into the whole text is (the text as given, before stripping)."""
        lineno = bisect.bisect_right(self.starts, index)
        offset = index - self.starts[lineno - 1] - (self.indent if lineno == 1 else 0)
        return self.describe(lineno, offset, chars=True)


class _Builder:
    """Turns a checked expression tree into graph nodes, walking it with an explicit stack."""

    def __init__(self, position: _Position, limits: Limits) -> None:
        self.position = position
        self.limits = limits
        self.nodes: list[Node] = []
        self.ids: dict[ast.AST, str] = {}  # the graph node each expression became
        self.calls: dict[ast.Call, tuple[Op, dict[str, Any]]] = {}
        self.taken: set[str] = set()
        self.constant_valued: set[str] = set()  # nodes that depend on no leaf
        self.literals: dict[str, float] = {}  # constants written as numbers, by node id

    def build(self, root: ast.expr) -> Graph:
        stack: list[tuple[ast.expr, bool]] = [(root, False)]
        while stack:
            expr, operands_done = stack.pop()
            if operands_done:
                self.ids[expr] = self._finish(expr)
            else:
                stack.append((expr, True))
                stack.extend((operand, False) for operand in reversed(self._operands(expr)))
        return Graph(tuple(self.nodes), self.ids[root])

    # --- checking, before the operands ------------------------------------------------------

    def _operands(self, expr: ast.expr) -> list[ast.expr]:
        """Refuse what the whitelist does not hold; the operands to build first."""
        if isinstance(expr, ast.BinOp):
            if type(expr.op) not in _BINARY:
                self._refuse(f"the operator {_OPERATOR_TEXT.get(type(expr.op), '?')}", expr)
            return [expr.left, expr.right]
        if isinstance(expr, ast.UnaryOp):
            if not isinstance(expr.op, (ast.USub, ast.UAdd)):
                self._refuse(f"the operator {_OPERATOR_TEXT.get(type(expr.op), '?')}", expr)
            return [] if _is_number(expr) else [expr.operand]
        if isinstance(expr, ast.Call):
            return self._check_call(expr)
        if isinstance(expr, ast.Name):
            self._check_name(expr.id, expr)
            if expr.id in TABLE:
                self._fail(f"{expr.id!r} is a function: call it", expr)
            return []
        if isinstance(expr, ast.Constant):
            self._number(expr)
            return []
        what = _REFUSED.get(type(expr), type(expr).__name__)
        if isinstance(expr, ast.Attribute):
            what = f"attribute access '.{expr.attr}'"
        self._refuse(what, expr)

    def _check_call(self, expr: ast.Call) -> list[ast.expr]:
        func = expr.func
        if isinstance(func, ast.Attribute):
            self._refuse(f"attribute access '.{func.attr}'", func)
        if not isinstance(func, ast.Name):
            self._refuse("calling anything but a function name", func)
        self._check_name(func.id, func)
        op = TABLE.get(func.id)
        if op is None:
            self._fail(f"unknown function {func.id!r}; the functions are "
                       f"{', '.join(sorted(TABLE))}", func)
        for arg in expr.args:
            if isinstance(arg, ast.Starred):
                self._refuse("a starred argument", arg)
        for kw in expr.keywords:
            if kw.arg is None:
                self._refuse("a ** argument", kw)
        if not op.arity <= len(expr.args) <= op.arity + len(op.attrs):
            then = f", then {', '.join(op.attrs)}" if op.attrs else ""
            self._fail(f"{op.name} takes {op.arity} operand(s){then}; got {len(expr.args)} "
                       "argument(s)", expr)
        # Arguments past the operands are attributes in the table's order, as in PyTorch.
        attrs = {name: self._literal(value, f"{op.name}'s {name}")
                 for name, value in zip(op.attrs, expr.args[op.arity:], strict=False)}
        for kw in expr.keywords:
            assert kw.arg is not None  # ** arguments are refused above
            if kw.arg not in op.attrs:
                self._fail(f"{op.name} has no keyword {kw.arg!r} (its keywords: "
                           f"{', '.join(op.attrs) or 'none'})", kw)
            if kw.arg in attrs:
                self._fail(f"{op.name} got two values for {kw.arg}", kw)
            attrs[kw.arg] = self._literal(kw.value, f"{op.name}'s {kw.arg}")
        try:
            normalized = normalize_attrs(op, attrs)
        except InvalidArgument as error:
            self._fail(error.message, expr)
        self.calls[expr] = (op, normalized)
        return expr.args[:op.arity]

    def _check_name(self, name: str, where: ast.AST) -> None:
        if name.startswith("_"):
            self._refuse(f"the name {name!r} (names may not start with '_')", where)

    def _number(self, expr: ast.Constant, sign: int = 1) -> int | float:
        """The value of a number literal, within the limits; refuses other constants."""
        value = expr.value
        if isinstance(value, bool) or value is None:
            self._refuse(f"{value} as a value (numbers only)", expr)
        if isinstance(value, (str, bytes)):
            self._refuse("a string", expr)
        if isinstance(value, int):
            if abs(value) > self.limits.max_int_literal:
                self._refuse(f"an integer past the limit of {self.limits.max_int_literal:.0e}",
                             expr)
            return sign * value
        if isinstance(value, float):
            if not math.isfinite(value):
                self._refuse("a number that is not finite", expr)
            return sign * value
        self._refuse("'...'" if value is Ellipsis else f"a {type(value).__name__} literal", expr)

    def _literal(self, expr: ast.expr, what: str) -> Any:
        """An attribute's value: a number, True/False/None, or a tuple or list of ints."""
        if isinstance(expr, ast.Constant) and (expr.value is None or isinstance(expr.value, bool)):
            return expr.value
        if _is_number(expr):
            return self._signed(expr)
        if isinstance(expr, (ast.Tuple, ast.List)) and all(_is_number(e) for e in expr.elts):
            return tuple(self._signed(e) for e in expr.elts)
        self._fail(f"{what} must be a literal: a number, True, False, None or a tuple of ints",
                   expr)

    def _signed(self, expr: ast.expr) -> int | float:
        if isinstance(expr, ast.UnaryOp):
            assert isinstance(expr.operand, ast.Constant)
            return self._number(expr.operand, -1 if isinstance(expr.op, ast.USub) else 1)
        assert isinstance(expr, ast.Constant)
        return self._number(expr)

    # --- building, after the operands -------------------------------------------------------

    def _finish(self, expr: ast.expr) -> str:
        """The id of the graph node ``expr`` becomes (its operands are built)."""
        if isinstance(expr, ast.Name):
            if expr.id not in self.taken:
                self.taken.add(expr.id)
                self.nodes.append(Leaf(expr.id, expr.id))
            return expr.id
        if isinstance(expr, ast.Constant) or _is_number(expr):
            value = self._signed(expr)
            node_id = self._add(Constant(self._new_id("const", expr), np.array(value)))
            self.constant_valued.add(node_id)
            self.literals[node_id] = value
            return node_id
        if isinstance(expr, ast.UnaryOp):
            operand = self.ids[expr.operand]
            if isinstance(expr.op, ast.UAdd):
                return operand  # +x is x, as in PyTorch
            return self._operation(expr, "neg", [operand], {})
        if isinstance(expr, ast.BinOp):
            left, right = self.ids[expr.left], self.ids[expr.right]
            if isinstance(expr.op, ast.Pow):
                self._check_power(expr, left, right)
            return self._operation(expr, _BINARY[type(expr.op)], [left, right], {})
        assert isinstance(expr, ast.Call)
        op, attrs = self.calls[expr]
        return self._operation(expr, op.name, [self.ids[a] for a in expr.args[:op.arity]], attrs)

    def _check_power(self, expr: ast.BinOp, base: str, exponent: str) -> None:
        if base in self.constant_valued and exponent in self.constant_valued:
            # 9**9**9 would be computed exactly, digit by digit, by Python and SymPy alike.
            self._refuse("a power of constants (write its value instead)", expr)
        value = self.literals.get(exponent)
        if value is not None and abs(value) > self.limits.max_exponent:
            self._refuse(f"the exponent {value} (at most {self.limits.max_exponent:g} in "
                         "absolute value)", expr.right)

    def _operation(self, expr: ast.expr, op: str, inputs: list[str],
                   attrs: dict[str, Any]) -> str:
        node_id = self._add(Operation(self._new_id(op, expr), op, tuple(inputs), attrs))
        if all(i in self.constant_valued for i in inputs):
            self.constant_valued.add(node_id)
        return node_id

    def _add(self, node: Node) -> str:
        self.nodes.append(node)
        return node.id

    def _new_id(self, label: str, expr: ast.expr) -> str:
        base = f"{label}@{self.position.tag(expr.lineno, expr.col_offset)}"
        node_id, n = base, 1
        while node_id in self.taken:  # a + b + c: both sums start at column 1
            n += 1
            node_id = f"{base}.{n}"
        self.taken.add(node_id)
        return node_id

    def _where(self, node: ast.AST) -> str:
        return self.position.describe(getattr(node, "lineno", 1), getattr(node, "col_offset", 0))

    def _refuse(self, what: str, node: ast.AST) -> NoReturn:
        self._fail(f"{what} is not allowed in a formula", node)

    def _fail(self, message: str, node: ast.AST) -> NoReturn:
        raise InvalidArgument(f"{message} (at {self._where(node)})")


def _is_number(expr: ast.expr) -> bool:
    """An int or float literal, or one with a sign: ``-2`` is one constant, not ``neg(2)``."""
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, (ast.USub, ast.UAdd)):
        expr = expr.operand
    return (isinstance(expr, ast.Constant) and isinstance(expr.value, (int, float))
            and not isinstance(expr.value, bool))
