"""Formulas as text, e.g. ``"sin(x**2)"``, parsed safely into a ``Graph``.

Python's ``ast`` reads the text; a whitelist decides what it may hold: int and float literals,
names (the leaves, an op's name too: ``t`` is a leaf, ``t(m)`` the op), the operators that write
the op table's ops (``+ - * / ** @``, unary ``-``, one comparison ``> < >= <= == !=``: a chain
``a < b < c`` is refused), unary ``+``, subscripts of literal integers, slices, ``...`` and None
(``x[0]``, ``x[1:3]``, ``x[:, -1]``, ``x[..., 0]``: the ops tensor indexing decomposes them into,
see ``indexing``), and calls of the op table's functions by name (``clamp(x, min=0, max=1)``,
``sum(x, 0)``, ``mean(x)``; ``cat([x, y], 1)``, a variadic op's operands as a list), with the
op's attributes as keywords or as literal arguments after the operands, in the table's order, as
in PyTorch's signatures. Everything else is refused with
an ``InvalidArgument`` naming it and its column. Nothing in the text is ever evaluated: no
``eval``, no ``compile``, no ``sympify``.

Arithmetic of numbers alone (``1 - 1e-8``, ``2**-3``, ``1000 * 1000``, ``-(1/3)``) is folded into
one constant, as Python computes it before PyTorch sees it: an int stays an int, ``/`` gives a
float, and the result is a Python-number constant exactly as if its value had been written. Only int
and float literals with ``+ - * / **`` and a sign are folded, one operation at a time, and the
limits apply to each result as to a written number: an integer past ``max_int_literal`` and a
float that is not finite are refused, and an integer power is refused from the sizes of its
operands before it is computed, so no huge number is ever built. A folded exponent meets the
exponent cap as a written one does; attributes (``clamp(x, 1e-8, 1 - 1e-8)``) fold the same way.

Python's parser recurses as deep as the expression nests and fails badly past about a thousand
levels (``MemoryError``, ``RecursionError``), so the length and a bound on the nesting are checked
on the raw text before it gets there; the tree is then walked with an explicit stack. A chain of
left-associative operators (``x + x + ... + x``) costs the parser no recursion, but its tree is
as deep as the chain is long and Python refuses to build it past about 3,000 levels, so chains
have their own, larger bound (``max_chain``).
"""

from __future__ import annotations

import ast
import bisect
import keyword
import math
import re
from typing import Any, NoReturn, TypeGuard

import numpy as np

from . import indexing
from .errors import CrossgradError, InvalidArgument
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
from .ops import OPERATORS, TABLE, Op

Number = int | float

# Python's operators as written; the op table says which ops they write (its ``operator``).
_OPERATOR_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**",
                  ast.MatMult: "@", ast.FloorDiv: "//", ast.Mod: "%", ast.LShift: "<<",
                  ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
                  ast.USub: "-", ast.UAdd: "+", ast.Not: "not", ast.Invert: "~",
                  ast.Gt: ">", ast.Lt: "<", ast.GtE: ">=", ast.LtE: "<=", ast.Eq: "==",
                  ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in",
                  ast.NotIn: "not in"}
# Arithmetic of numbers alone is folded as Python computes it.
_FOLDED = frozenset({ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow})
_REFUSED = {
    ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Lambda: "lambda",
    ast.ListComp: "comprehension", ast.SetComp: "comprehension", ast.DictComp: "comprehension",
    ast.GeneratorExp: "generator expression", ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string", ast.BoolOp: "boolean operator",
    ast.NamedExpr: "assignment expression (:=)", ast.IfExp: "conditional expression",
    ast.Starred: "starred argument", ast.Tuple: "tuple", ast.List: "list", ast.Dict: "dict",
    ast.Set: "set", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.Slice: "slice",
}
_SUBSCRIPT = ("a subscript takes integers, slices of integers (1:3, ::2), ... and None, written "
              "as literals")

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
  | (?P<chain>//|<<|>>|[-+*/@%&|^](?!\*))
  | (?P<op>\*\*|[<>=!:]=|->|[<>=~.:])
""", re.VERBOSE)
# Binary operators that Python's grammar reads as a left-recursive loop: a run of them adds one
# level of tree per operator but no recursion in the parser. After an operand they are binary;
# elsewhere "-" and "+" are signs, which the parser recurses on.
_OPERAND_ENDS = frozenset({"number", "word", "close"})
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
    _check_nesting(text, limits)
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


def _check_nesting(text: str, limits: Limits) -> None:
    """Refuse text whose syntax tree could nest more than ``limits`` allow, without parsing it.

    Two bounds, each counted along the deepest path of brackets: the nesting (each bracket adds
    two levels, a call and its argument, and each operator other than a binary chain operator
    one) is held to ``max_depth``; binary chain operators (``+ - * / @`` ...) to ``max_chain``.
    Python's tree is never deeper than the two together, so what passes here is safe to hand to
    ``ast.parse``. Quotes are refused here too: strings are never allowed, and brackets inside
    them would skew the count (and so are null characters, which Python's parser reports
    differently from version to version).
    """
    # Per open bracket: for the nesting, then the chain: levels above it, its own, its deepest
    # child's.
    frames = [[0, 0, 0, 0, 0, 0]]
    position = _Position(text)
    previous = ""
    for token in _TOKENS.finditer(text):
        kind = token.lastgroup or ""
        top = frames[-1]
        if kind in ("quote", "null"):
            what = "a string" if kind == "quote" else "a null character"
            raise InvalidArgument(f"{what} is not allowed in a formula (at "
                                  f"{position.describe_index(token.start())})")
        if kind == "open":
            frames.append([top[0] + top[1] + 2, 0, 0, top[3] + top[4], 0, 0])
            top = frames[-1]
        elif kind == "close" and len(frames) > 1:
            closed = frames.pop()
            top = frames[-1]
            top[2] = max(top[2], closed[1] + closed[2] + 2)
            top[5] = max(top[5], closed[4] + closed[5])
        elif kind == "chain" and previous in _OPERAND_ENDS:
            top[4] += 1
        elif kind in ("op", "chain") or (kind == "word" and token.group() in _OPERATOR_WORDS):
            top[1] += 1
        previous = "op" if kind == "word" and token.group() in _OPERATOR_WORDS else kind
        where = position.describe_index(token.start())
        if top[0] + top[1] + top[2] + 1 > limits.max_depth:
            raise LimitExceeded(f"the formula nests too deeply (at {where}): brackets and "
                                f"operators are limited to {limits.max_depth} levels")
        if top[3] + top[4] + top[5] + 1 > limits.max_chain:
            raise LimitExceeded(f"the formula chains too many terms (at {where}): a chain of "
                                f"+ - * / @ is limited to {limits.max_chain} terms, as Python's "
                                "parser builds it one level deeper per term")


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
    """Turns a checked expression tree into graph nodes, walking it with an explicit stack.

    Arithmetic of numbers alone is folded on the way up: such an expression gets a value, not a
    node, and becomes one constant node only where something else takes it as an operand.
    """

    def __init__(self, position: _Position, limits: Limits) -> None:
        self.position = position
        self.limits = limits
        self.nodes: list[Node] = []
        self.ids: dict[ast.AST, str] = {}  # the graph node each expression became
        self.calls: dict[ast.Call, tuple[Op, dict[str, Any]]] = {}
        self.subscripts: dict[ast.Subscript, list[indexing.Step]] = {}
        self.taken: set[str] = set()
        self.constant_valued: set[str] = set()  # nodes that depend on no leaf
        self.literals: dict[str, Number] = {}  # constants written as numbers, by node id
        self.folded: dict[ast.expr, Number] = {}  # numbers and arithmetic of numbers alone
        self.suffixes: dict[str, int] = {}  # the last suffix each node id base was given

    def build(self, root: ast.expr) -> Graph:
        stack: list[tuple[ast.expr, bool]] = [(root, False)]
        while stack:
            expr, operands_done = stack.pop()
            if operands_done:
                node_id = self._finish(expr)
                if node_id is not None:
                    self.ids[expr] = node_id
            else:
                stack.append((expr, True))
                stack.extend((operand, False) for operand in reversed(self._operands(expr)))
        output = self._id(root)  # a formula of numbers alone is one constant node
        return Graph(tuple(self.nodes), output)

    # --- checking, before the operands ------------------------------------------------------

    def _operands(self, expr: ast.expr) -> list[ast.expr]:
        """Refuse what the whitelist does not hold; the operands to build first."""
        if isinstance(expr, ast.BinOp):
            if not _op_of(expr.op, 2):
                self._refuse(f"the operator {_text(expr.op)}", expr)
            return [expr.left, expr.right]
        if isinstance(expr, ast.UnaryOp):
            if not isinstance(expr.op, ast.UAdd) and not _op_of(expr.op, 1):
                self._refuse(f"the operator {_text(expr.op)}", expr)
            return [expr.operand]
        if isinstance(expr, ast.Compare):
            return self._check_comparison(expr)
        if isinstance(expr, ast.Call):
            return self._check_call(expr)
        if isinstance(expr, ast.Subscript):
            return self._check_subscript(expr)
        if isinstance(expr, ast.Name):
            # A name is a leaf even where an op has it: only a call is the op (``t * t(m)``).
            self._check_name(expr.id, expr)
            return []
        if isinstance(expr, ast.Constant):
            self._number(expr)
            return []
        what = _REFUSED.get(type(expr), type(expr).__name__)
        if isinstance(expr, ast.Attribute):
            what = f"attribute access '.{expr.attr}'"
        self._refuse(what, expr)

    def _check_comparison(self, expr: ast.Compare) -> list[ast.expr]:
        if len(expr.ops) > 1:
            # Python reads a < b < c as (a < b) and (b < c), which is not elementwise on tensors.
            self._refuse("a chained comparison (write each comparison on its own)", expr)
        if not _op_of(expr.ops[0], 2):
            self._refuse(f"the operator {_text(expr.ops[0])}", expr)
        return [expr.left, expr.comparators[0]]

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
        if op.variadic and expr.args and not (
                isinstance(expr.args[0], (ast.List, ast.Tuple)) and expr.args[0].elts):
            self._fail(f"{op.name} takes a list of one or more operands first, as in "
                       f"{op.name}([x, y])", expr.args[0])
        if not op.arity <= len(expr.args) <= op.arity + len(op.attrs):
            then = f", then {', '.join(op.attrs)}" if op.attrs else ""
            what = ("a list of operands" if op.variadic else f"{op.arity} operand(s)")
            self._fail(f"{op.name} takes {what}{then}; got {len(expr.args)} argument(s)", expr)
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
        return _operands_of(op, expr)

    def _check_subscript(self, expr: ast.Subscript) -> list[ast.expr]:
        """``x[1:3, 0]``: the ops indexing decomposes the key into, as for a tensor (the shape is
        not known here: the rows check the bounds when the graph is validated)."""
        parts = expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice]
        key = tuple(self._index(part) for part in parts)
        try:
            self.subscripts[expr] = indexing.steps(
                key if isinstance(expr.slice, ast.Tuple) else key[0], None)
        except (CrossgradError, TypeError) as error:
            self._fail(str(error), expr.slice)
        return [expr.value]

    def _index(self, part: ast.expr) -> Any:
        """One index of a subscript: an int, a slice of ints, ``...`` or None, as literals."""
        if isinstance(part, ast.Constant) and (part.value is None or part.value is Ellipsis):
            return part.value
        if isinstance(part, ast.Slice):
            return slice(*(None if bound is None else self._integer(bound)
                           for bound in (part.lower, part.upper, part.step)))
        return self._integer(part)

    def _integer(self, expr: ast.expr) -> int:
        value = self._constant_value(expr)
        if type(value) is not int:
            self._fail(_SUBSCRIPT, expr)
        return value

    def _check_name(self, name: str, where: ast.AST) -> None:
        if name.startswith("_"):
            self._refuse(f"the name {name!r} (names may not start with '_')", where)

    def _number(self, expr: ast.Constant) -> Number:
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
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                self._refuse("a number that is not finite", expr)
            return value
        self._refuse("'...'" if value is Ellipsis else f"a {type(value).__name__} literal", expr)

    def _literal(self, expr: ast.expr, what: str) -> Any:
        """An attribute's value: a number (or arithmetic of numbers), True/False/None, or a
        tuple or list of ints."""
        if isinstance(expr, ast.Constant) and (expr.value is None or isinstance(expr.value, bool)):
            return expr.value
        value = self._constant_value(expr)
        if value is not None:
            return value
        if isinstance(expr, (ast.Tuple, ast.List)):
            values = [self._constant_value(e) for e in expr.elts]
            if all(v is not None for v in values):
                return tuple(values)
        self._fail(f"{what} must be a literal: a number, True, False, None or a tuple of ints",
                   expr)

    def _constant_value(self, root: ast.expr) -> Number | None:
        """The folded value of ``root`` if it is arithmetic of numbers alone, else None."""
        values: dict[ast.expr, Number] = {}
        stack: list[tuple[ast.expr, bool]] = [(root, False)]
        while stack:
            expr, operands_done = stack.pop()
            if _is_number(expr):
                values[expr] = self._number(expr)
            elif isinstance(expr, ast.UnaryOp) and isinstance(expr.op, (ast.USub, ast.UAdd)):
                if operands_done:
                    values[expr] = self._sign(expr, values[expr.operand])
                else:
                    stack += [(expr, True), (expr.operand, False)]
            elif isinstance(expr, ast.BinOp) and type(expr.op) in _FOLDED:
                if operands_done:
                    values[expr] = self._fold(expr, values[expr.left], values[expr.right])
                else:
                    stack += [(expr, True), (expr.right, False), (expr.left, False)]
            else:
                return None
        return values[root]

    # --- folding arithmetic of numbers ------------------------------------------------------

    @staticmethod
    def _sign(expr: ast.UnaryOp, value: Number) -> Number:
        return -value if isinstance(expr.op, ast.USub) else value

    def _fold(self, expr: ast.BinOp, left: Number, right: Number) -> Number:
        """``left <op> right`` as Python computes it, within the limits of a written number."""
        what = f"{left!r} {_text(expr.op)} {right!r}"
        op = expr.op
        try:
            if isinstance(op, ast.Pow):
                value: Any = self._power(expr, what, left, right)
            elif isinstance(op, ast.Add):
                value = left + right
            elif isinstance(op, ast.Sub):
                value = left - right
            elif isinstance(op, ast.Mult):
                value = left * right
            else:
                value = left / right
        except ZeroDivisionError:
            self._refuse(f"a division by zero ({what})", expr)
        except OverflowError:
            self._refuse(f"{what}, a number that is not finite,", expr)
        if isinstance(value, complex):  # (-8) ** (1/3)
            self._refuse(f"{what}, a complex number,", expr)
        if isinstance(value, int):
            if abs(value) > self.limits.max_int_literal:
                self._refuse(f"{what}, an integer past the limit of "
                             f"{self.limits.max_int_literal:.0e},", expr)
        elif not math.isfinite(value):
            self._refuse(f"{what}, a number that is not finite,", expr)
        return value

    def _power(self, expr: ast.BinOp, what: str, base: Number, exponent: Number) -> Any:
        # |base| ** exponent >= 2 ** (exponent * (bits - 1)): refusing from that bound, an exact
        # power is computed only when it has at most about twice the limit's bits.
        if (isinstance(base, int) and isinstance(exponent, int) and exponent > 0
                and exponent * (abs(base).bit_length() - 1)
                > self.limits.max_int_literal.bit_length()):
            self._refuse(f"{what}, an integer past the limit of "
                         f"{self.limits.max_int_literal:.0e},", expr)
        return base ** exponent  # floats overflow with OverflowError, never slowly

    # --- building, after the operands -------------------------------------------------------

    def _finish(self, expr: ast.expr) -> str | None:
        """The id of the graph node ``expr`` becomes (its operands are built), or None when it
        is folded into a number."""
        if isinstance(expr, ast.Constant):
            self.folded[expr] = self._number(expr)
            return None
        if isinstance(expr, ast.Name):
            if expr.id not in self.taken:
                self.taken.add(expr.id)
                self.nodes.append(Leaf(expr.id, expr.id))
            return expr.id
        if isinstance(expr, ast.UnaryOp):
            if expr.operand in self.folded:
                self.folded[expr] = self._sign(expr, self.folded[expr.operand])
                return None
            operand = self._id(expr.operand)
            if isinstance(expr.op, ast.UAdd):
                return operand  # +x is x, as in PyTorch
            return self._operation(expr, _op_of(expr.op, 1), [operand], {})
        if isinstance(expr, ast.BinOp):
            if type(expr.op) in _FOLDED and expr.left in self.folded and expr.right in self.folded:
                self.folded[expr] = self._fold(expr, self.folded[expr.left],
                                               self.folded[expr.right])
                return None
            left, right = self._id(expr.left), self._id(expr.right)
            if isinstance(expr.op, ast.Pow):
                self._check_power(expr, left, right)
            return self._operation(expr, _op_of(expr.op, 2), [left, right], {})
        if isinstance(expr, ast.Subscript):
            node_id = self._id(expr.value)
            for name, attrs in self.subscripts[expr]:
                node_id = self._operation(expr, name, [node_id],
                                          normalize_attrs(TABLE[name], attrs))
            return node_id
        if isinstance(expr, ast.Compare):
            operands = [self._id(expr.left), self._id(expr.comparators[0])]
            return self._operation(expr, _op_of(expr.ops[0], 2), operands, {})
        assert isinstance(expr, ast.Call)
        op, attrs = self.calls[expr]
        return self._operation(expr, op.name, [self._id(a) for a in _operands_of(op, expr)], attrs)

    def _id(self, expr: ast.expr) -> str:
        """The node ``expr`` became; a folded number becomes its constant node here."""
        node_id = self.ids.get(expr)
        if node_id is None:
            value = self.folded[expr]
            node_id = self.ids[expr] = self._add(Constant(self._new_id("const", expr),
                                                          np.array(value)))
            self.constant_valued.add(node_id)
            self.literals[node_id] = value
        return node_id

    def _check_power(self, expr: ast.BinOp, base: str, exponent: str) -> None:
        if base in self.constant_valued and exponent in self.constant_valued:
            # Numbers alone were folded (and bounded) above; this power has a function call on
            # one side, abs(9) ** abs(999999999), which would be computed exactly, digit by digit.
            self._refuse("a power of constants computed by functions (write its value instead)",
                         expr)
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
        # a + b + c: both sums start at column 1. Counting on from the last suffix given keeps
        # a chain of thousands of terms linear.
        n = self.suffixes.get(base, 1)
        node_id = base if n == 1 else f"{base}.{n}"
        while node_id in self.taken:
            n += 1
            node_id = f"{base}.{n}"
        self.suffixes[base] = n
        self.taken.add(node_id)
        return node_id

    def _where(self, node: ast.AST) -> str:
        return self.position.describe(getattr(node, "lineno", 1), getattr(node, "col_offset", 0))

    def _refuse(self, what: str, node: ast.AST) -> NoReturn:
        self._fail(f"{what} is not allowed in a formula", node)

    def _fail(self, message: str, node: ast.AST) -> NoReturn:
        raise InvalidArgument(f"{message} (at {self._where(node)})")


def _operands_of(op: Op, call: ast.Call) -> list[ast.expr]:
    """The operand expressions of a call of ``op``: its first arguments, or for a variadic op
    the elements of its first, a list (``cat([x, y], 1)``)."""
    if op.variadic:
        first = call.args[0]
        assert isinstance(first, (ast.List, ast.Tuple))
        return first.elts
    return call.args[:op.arity]


def _text(operator: ast.AST) -> str:
    return _OPERATOR_TEXT.get(type(operator), "?")


def _op_of(operator: ast.AST, arity: int) -> str:
    """The op that Python's ``operator`` writes on ``arity`` operands ("" where there is none)."""
    return OPERATORS.get((_text(operator), arity), "")


def _is_number(expr: ast.expr) -> TypeGuard[ast.Constant]:
    """An int or float literal."""
    return (isinstance(expr, ast.Constant) and isinstance(expr.value, (int, float))
            and not isinstance(expr.value, bool))
