"""Closed forms for a person to read: SymPy text and LaTeX, with the graph's own names and values.

The derivation works on internal symbols (``L0_3``, ``C1_0``) with constants left symbolic; here
leaf elements get their names back (``x`` for a 0-d leaf, ``x[0, 2]`` for a tensor's element),
constants are replaced by their values (integral ones as integers, so ``x**2`` reads ``2*x``), a
result whose gradient an op stopped shows as a call of that op (``detach(...)``), and small
expressions are simplified.

All of this is only for reading, and SymPy can take seconds on a seven-op formula: reading the
Piecewise forms of nested clamps, or simplifying nested exponentials (``exptrigsimp``). So
``render`` may be given a bound: past it, the forms are shown as substituted but unsimplified,
or, when SymPy had not read them yet, as SymEngine prints them, and ``ClosedForms.note`` says
so. SymPy cannot be interrupted from another thread, so the bound is a timer signal in the
calling thread, which must be a process's main thread (a symbolic worker's).

Substituting values lets SymPy evaluate, and it evaluates exactly: ``9**(0*y + 1000000000)`` would
become a number of a billion digits, ``1/0`` would become ``zoo``. So the substitution rebuilds
the expression bottom-up and, where SymPy would compute an exact power (or ``exp`` of a multiple
of a log) past ``_MAX_DIGITS`` digits, or a value with no meaning (``1/0``, ``log(0)``), keeps
that part as written: ``9**1000000000*x``, ``1/0``. Larger exact numbers from sums and products
(cheap to compute, but Python will not print an integer past 4,300 digits) read as floats.
Simplifying is skipped where it could expand a large power, including one with a symbolic
exponent (``powsimp`` turns ``9**(1000000000*y)`` into ``(9**1000000000)**y``).

A large power is kept as a ``_HeldPower``, an expression of its own with no arithmetic, not as
``UnevaluatedExpr(Pow(...))``: the printers look inside an ``UnevaluatedExpr``, and LaTeX's
``_print_Mul`` splits ``7**-1000000000`` into a fraction by building ``Pow(7, 1000000000)``,
which evaluates. A ``_HeldPower`` has a positive exponent only, and prints itself as the
unevaluated ``Pow`` it stands for (a positive power never evaluates while printing); a negative
exponent is kept as its reciprocal, ``1/_HeldPower(7, 1000000000)``, which SymPy's arithmetic,
printers and ``simplify`` handle like any ``1/x``, never looking inside.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import mpmath
import numpy as np
import symengine as se
import sympy
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.printer import Printer
from sympy.printing.str import StrPrinter

from .symbolic import Derivation, Plan

# Simplifying costs grow quickly with size; small expressions are where it pays off.
_SIMPLIFY_MAX_OPS = 40
# ... and with the degree of the powers of sums it may expand: (x + 1)**1000 takes seconds.
_SIMPLIFY_MAX_DEGREE = 100
# Digits of an exact number SymPy may compute while substituting values.
_MAX_DIGITS = 2000
_UNDEFINED = frozenset({sympy.zoo, sympy.nan, sympy.oo, -sympy.oo})
# Seconds between the timer's reminders, should SymPy swallow the first one in a broad except.
_REMIND = 0.05

T = TypeVar("T")


@dataclass(frozen=True)
class ClosedForms:
    """Per leaf (and per leaf pair for the Hessian): the closed form as text and as LaTeX."""

    text: dict[str, str]
    latex: dict[str, str]
    hessian_text: dict[tuple[str, str], str]
    hessian_latex: dict[tuple[str, str], str]
    note: str = ""  # why the forms are shown unsimplified, if they are


# What an answer carries of the closed forms, text and LaTeX together: an unsimplified form (or
# SymEngine's print of one, which writes a shared subexpression at each use) can run to hundreds
# of megabytes, past any message a service sends.
MAX_FORMS_CHARS = 1_000_000


def render(plan: Plan, derivation: Derivation, constants: Sequence[np.ndarray],
           seconds: float | None = None) -> ClosedForms:
    """The derivation's gradient (and Hessian) for reading, within ``seconds`` (unbounded when
    None): SymPy reads the forms and they are simplified; past the bound they are shown
    unsimplified, or as SymEngine prints them if SymPy had not even read them, and the note
    says so. Past ``MAX_FORMS_CHARS`` in all, a form is shown in part, and the note says so."""
    return _within_size(_rendered(plan, derivation, constants, seconds))


def _within_size(forms: ClosedForms) -> ClosedForms:
    """``forms`` with each text cut where the total passes ``MAX_FORMS_CHARS``."""
    left = MAX_FORMS_CHARS
    cut = False

    def shown(text: str) -> str:
        nonlocal left, cut
        if len(text) <= left:
            left -= len(text)
            return text
        cut, kept, left = True, left, 0
        return f"{text[:kept]}… (shown in part: {len(text):,} characters in all)"

    text = {leaf: shown(t) for leaf, t in forms.text.items()}
    hessian_text = {pair: shown(t) for pair, t in forms.hessian_text.items()}
    latex = {leaf: shown(t) for leaf, t in forms.latex.items()}
    hessian_latex = {pair: shown(t) for pair, t in forms.hessian_latex.items()}
    if not cut:
        return forms
    note = "; ".join(filter(None, (forms.note, f"the closed forms run past {MAX_FORMS_CHARS:,} "
                                               "characters: shown in part")))
    return ClosedForms(text, latex, hessian_text, hessian_latex, note)


def _rendered(plan: Plan, derivation: Derivation, constants: Sequence[np.ndarray],
              seconds: float | None) -> ClosedForms:
    ends = None if seconds is None else time.monotonic() + seconds

    def bounded(compute: Callable[[], T]) -> T | None:
        return compute() if ends is None else _within(ends - time.monotonic(), compute)

    if ends is not None and threading.current_thread() is not threading.main_thread():
        return _as_symengine_prints(plan, derivation, constants, "a bounded rendering with "
                                    "SymPy runs only in a process's main thread")
    try:
        read = bounded(lambda: _read(plan, derivation, constants))
    except (TypeError, ValueError, ZeroDivisionError) as error:  # SymPy's, on a form it folds
        return _as_symengine_prints(plan, derivation, constants,
                                    f"SymPy could not read it ({error})")
    if read is None:
        return _as_symengine_prints(plan, derivation, constants,
                                    f"reading it into SymPy passed the bound of {seconds:g} s")
    gradients, hessian = read
    note = ""
    simplified = bounded(lambda: (
        {leaf: [_simplified(e) for e in forms] for leaf, forms in gradients.items()},
        {pair: [_simplified(e) for e in forms] for pair, forms in hessian.items()}))
    if simplified is None:
        note = (f"the closed form is shown unsimplified: simplifying it for reading passed the "
                f"bound of {seconds:g} s")
    else:
        gradients, hessian = simplified
    shapes = dict(plan.leaves)
    text, latex = {}, {}
    for leaf, forms in gradients.items():
        text[leaf], latex[leaf] = _render(forms, shapes[leaf])
    hessian_text, hessian_latex = {}, {}
    for (row, column), forms in hessian.items():
        hessian_text[row, column], hessian_latex[row, column] = _render(
            forms, shapes[row] + shapes[column])
    return ClosedForms(text, latex, hessian_text, hessian_latex, note)


def _read(plan: Plan, derivation: Derivation, constants: Sequence[np.ndarray],
          ) -> tuple[dict[str, list[Any]], dict[tuple[str, str], list[Any]]]:
    """The gradient's and the Hessian's forms in SymPy, in the graph's names and values."""
    names = _names(plan, derivation, constants)
    return ({leaf: [_readable(e, names) for e in gradient]
             for leaf, gradient in derivation.gradients.items()},
            {pair: [_readable(e, names) for e in block]
             for pair, block in derivation.hessian.items()})


class _OutOfTime(BaseException):
    """Raised by the timer in ``_within``'s thread: a ``BaseException``, so that SymPy's broad
    ``except Exception`` clauses do not swallow it. Raised inside a callback (a weakref's, a
    ``__del__``), Python reports it and goes on; the next reminder stops the work."""


_expiry: float | None = None  # when ``_within``'s bound passes; None outside it


def _expire(signum: int, frame: Any) -> None:
    global _expiry
    if _expiry is not None and time.monotonic() >= _expiry:
        _expiry = time.monotonic() + _REMIND  # raised again only if this one is swallowed
        raise _OutOfTime


def _within(seconds: float, compute: Callable[[], T]) -> T | None:
    """``compute()``, or None once ``seconds`` have passed. In the main thread only: a timer
    signal reaches no other."""
    global _expiry
    if seconds <= 0:
        return None  # setitimer takes 0 to mean "no timer"
    previous = signal.signal(signal.SIGALRM, _expire)
    try:
        try:
            _expiry = time.monotonic() + seconds
            signal.setitimer(signal.ITIMER_REAL, seconds, _REMIND)
            return compute()
        finally:
            _disarm(previous)
    except _OutOfTime:
        # Raised in compute(), or as the finally began: disarmed again (_expire put the next
        # reminder _REMIND away, far more than this takes).
        _disarm(previous)
        return None


def _disarm(previous: Any) -> None:
    global _expiry
    _expiry = None  # from here on, a reminder still due raises nothing
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def _as_symengine_prints(plan: Plan, derivation: Derivation, constants: Sequence[np.ndarray],
                         why: str) -> ClosedForms:
    """The closed forms as SymEngine prints them, names and values substituted in SymEngine, and
    no LaTeX: for forms SymPy does not read in time (the Piecewise of a few nested clamps can
    take it seconds) or cannot read (it folds the Piecewise of ``abs(log(abs(x)))``'s gradient
    into the condition ``0 < log(0)``, and raises)."""
    table: dict[Any, Any] = {}
    for symbol, meaning in _inputs(plan, derivation, constants):
        if isinstance(meaning, _Element):
            index = "" if meaning.index is None else f"[{', '.join(map(str, meaning.index))}]"
            table[symbol] = se.Symbol(meaning.base + index)
        else:
            number = _number(meaning)
            table[symbol] = (se.Integer(int(number)) if number.is_Integer
                             else se.RealDouble(float(number)))
    for symbol, expression, op in derivation.held:
        table[symbol] = se.function_symbol(op, expression.subs(table))
    shapes = dict(plan.leaves)

    def printed(elements: Sequence[Any], shape: tuple[int, ...]) -> str:
        forms = np.array([str(e.subs(table)) for e in elements], dtype=object).reshape(shape)
        return str(forms[()]) if not shape else _nested_text(forms, str)

    note = f"the closed form is shown as SymEngine prints it, without LaTeX: {why}"
    return ClosedForms(
        {leaf: printed(g, shapes[leaf]) for leaf, g in derivation.gradients.items()}, {},
        {(r, c): printed(b, shapes[r] + shapes[c]) for (r, c), b in derivation.hessian.items()},
        {}, note)


@dataclass(frozen=True)
class _Element:
    """What a leaf or seed symbol reads as: ``x`` for a 0-d leaf (``index`` None), else
    ``base[index]`` (``x[0, 2]``, ``seed[3]``)."""

    base: str
    index: tuple[int, ...] | None


def _inputs(plan: Plan, derivation: Derivation, constants: Sequence[np.ndarray],
            ) -> Iterator[tuple[Any, _Element | np.generic]]:
    """Each leaf, constant and seed symbol of the derivation with what it reads as: an element's
    name, or the constant's value."""
    for leaf, symbols in derivation.leaf_symbols.items():
        for index, symbol in np.ndenumerate(symbols):
            yield symbol, _Element(leaf, index if symbols.shape else None)
    for symbols, value in zip(derivation.constant_symbols, constants, strict=True):
        yield from zip(symbols.reshape(-1), np.ravel(value), strict=True)
    if plan.seeded:
        for k in range(int(np.prod(plan.nodes[plan.output].shape))):
            yield se.Symbol(f"S{k}"), _Element("seed", (k,))


def _names(plan: Plan, derivation: Derivation, constants: Sequence[np.ndarray],
           ) -> dict[sympy.Symbol, Any]:
    """What each internal symbol reads as."""
    names: dict[sympy.Symbol, Any] = {}
    for symbol, meaning in _inputs(plan, derivation, constants):
        if isinstance(meaning, _Element):
            names[sympy.Symbol(str(symbol))] = (
                sympy.Symbol(meaning.base) if meaning.index is None
                else sympy.IndexedBase(meaning.base)[meaning.index])
        else:
            names[sympy.Symbol(str(symbol))] = _number(meaning)
    for symbol, expression, op in derivation.held:
        names[sympy.Symbol(str(symbol))] = sympy.Function(op)(_readable(expression, names))
    return names


def _number(value: Any) -> sympy.Expr:
    if isinstance(value, (bool, np.bool_)):
        return sympy.Integer(int(value))
    number = float(value)
    if number.is_integer() and abs(number) < 2**53:
        return sympy.Integer(int(number))
    # The shortest text that reads back as the value in its own precision (1e-08, not 1e-08 in
    # float32's 9.99999993922529e-09).
    return sympy.Float(np.format_float_positional(value, unique=True, trim="-")
                       if abs(number) >= 1e-4 else str(value))


def _readable(expression: Any, names: Mapping[sympy.Symbol, Any]) -> Any:
    """A derived expression in the graph's names and values."""
    return _substitute(expression._sympy_(), names)


def _simplified(readable: Any) -> Any:
    """``readable`` simplified, where that is cheap enough to try and can expand no huge
    power."""
    if (sympy.count_ops(readable) <= _SIMPLIFY_MAX_OPS
            and not readable.has(sympy.UnevaluatedExpr, _HeldPower)
            and _degree(readable) <= _SIMPLIFY_MAX_DEGREE
            and _symbolic_power_digits(readable) <= _MAX_DIGITS):
        try:
            return sympy.simplify(readable)
        except Exception:
            # Some rewrites SymPy tries fail on forms it cannot handle (a non-real value in a
            # Piecewise condition: TypeError; erfinv outside [-1, 1] while solving a condition
            # with erf: ValueError): the form stays as derived, which is as correct.
            pass
    return readable


def _substitute(root: sympy.Basic, names: Mapping[sympy.Symbol, Any]) -> sympy.Basic:
    """``root.xreplace(names)``, rebuilt bottom-up (with an explicit stack) through ``_build``."""
    done: dict[sympy.Basic, sympy.Basic] = {}
    stack: list[tuple[sympy.Basic, bool]] = [(root, False)]
    while stack:
        node, operands_done = stack.pop()
        if node in done:
            continue
        if node in names or not node.args:
            done[node] = names.get(node, node)
        elif not operands_done:
            stack.append((node, True))
            stack.extend((arg, False) for arg in node.args if arg not in done)
        else:
            args = [done[arg] for arg in node.args]
            same = all(new is old for new, old in zip(args, node.args, strict=True))
            done[node] = node if same else _build(node.func, args)
    return done[root]


def _build(func: Any, args: list[sympy.Basic]) -> sympy.Basic:
    """``func(*args)`` as SymPy evaluates it, except what would be too large or meaningless."""
    if func is sympy.Pow and _power_digits(*args) > _MAX_DIGITS:
        base, exponent = args
        if exponent.is_negative:
            return 1 / _HeldPower(base, -exponent)
        return _HeldPower(base, exponent)
    if func is sympy.exp and _exp_digits(args[0]) > _MAX_DIGITS:  # exp(n*log(9)) is 9**n
        return sympy.UnevaluatedExpr(sympy.exp(args[0], evaluate=False))
    built = func(*args)
    if built in _UNDEFINED or ((built.is_Mul or built.is_Add)
                               and any(a in _UNDEFINED for a in built.args)):
        # 1/0 reads 1/0 and log(0) log(0), not zoo: kept as written.
        held = [sympy.UnevaluatedExpr(a) if a.is_zero and a.is_Number else a for a in args]
        if func is not sympy.Pow and any(a is not b for a, b in zip(held, args, strict=True)):
            return func(*held)
        return sympy.UnevaluatedExpr(func(*args, evaluate=False))
    if built.is_Rational and _digits(built) > _MAX_DIGITS:
        return _float(built)
    if (built.is_Mul or built.is_Add) and any(a.is_Rational and _digits(a) > _MAX_DIGITS
                                              for a in built.args):
        return built.func(*(_float(a) if a.is_Rational else a for a in built.args))
    return built


class _HeldPower(sympy.Expr):
    """``base**exponent`` (``exponent`` positive), never computed: it has no arithmetic of its
    own, and prints as the unevaluated ``Pow`` it stands for."""

    is_commutative = True
    # Parenthesized as a power: (9**1000000000)**2, 2*9**1000000000.
    precedence = PRECEDENCE["Pow"]

    def _written(self) -> sympy.Pow:
        return sympy.Pow(*self.args, evaluate=False)

    def _sympystr(self, printer: Printer) -> str:
        return str(printer._print(self._written()))

    _latex = _sympystr  # each printer prints the written power its own way


class _TextPrinter(StrPrinter):
    """``sympy.sstr``, but a held power's lone reciprocal reads ``1/7**1000000000``, as it does in
    ``x/7**1000000000``: ``sstr`` brackets the base of a lone ``1/b`` when ``b`` is a power."""

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        if expr.exp is sympy.S.NegativeOne and isinstance(expr.base, _HeldPower):
            return "1/" + self._print(expr.base)
        return str(super()._print_Pow(expr, rational))


def _text(expression: Any) -> str:
    return _TextPrinter().doprint(expression)


def _float(number: sympy.Rational) -> sympy.Float:
    # Through mpmath: sympy.Float(Integer) goes through the integer's decimal text.
    return sympy.Float(mpmath.mpf(number.p) / number.q, 15)


def _digits(number: sympy.Rational) -> float:
    """About how many decimal digits the numerator or denominator has."""
    return max(abs(number.p), number.q).bit_length() * math.log10(2)


def _exact_digits(expression: sympy.Basic) -> float:
    """About how many digits of exact number raising ``expression`` to a power would compute
    per unit of exponent: ``(2*x)**n`` computes ``2**n``, ``sqrt(2)**n`` computes ``2**(n/2)``."""
    if expression.is_Rational:  # 0**n and 1**n are cheap
        return _digits(expression) if abs(expression) not in (0, 1) else 0.0
    if expression.is_Pow and expression.base.is_Rational and expression.exp.is_Rational:
        return float(abs(expression.exp)) * _exact_digits(expression.base)
    if expression.is_Mul:
        return sum(_exact_digits(factor) for factor in expression.args)
    return 0.0


def _power_digits(base: sympy.Basic, exponent: sympy.Basic) -> float:
    if not exponent.is_Rational:  # symbolic, or a float: mpmath's floats cost nothing to raise
        return 0.0
    return float(abs(exponent)) * _exact_digits(base)


def _exp_digits(argument: sympy.Basic) -> float:
    """A bound on the digits of the power SymPy makes of ``exp(n*log(b))``."""
    bases = [log.args[0] for log in argument.atoms(sympy.log) if log.args[0].is_Rational]
    if not bases:
        return 0.0
    largest = max((abs(float(r)) for r in argument.atoms(sympy.Rational)), default=0.0)
    return largest * max(_exact_digits(b) for b in bases)


def _degree(expression: sympy.Basic) -> float:
    """The sum of the exponents of the powers of anything but a symbol: what expanding costs."""
    return sum(float(abs(power.exp)) for power in expression.atoms(sympy.Pow)
               if power.exp.is_Rational and not (power.base.is_Symbol or power.base.is_Indexed))


def _symbolic_power_digits(expression: sympy.Basic) -> float:
    """A bound on the digits of an exact power that simplifying may take out of a symbolic
    exponent: ``9**(1000000000*y)`` as ``(9**1000000000)**y``, ``exp(n*y*log(9))`` likewise."""
    digits = [_exp_digits(e.args[0]) for e in expression.atoms(sympy.exp)]
    for power in expression.atoms(sympy.Pow):
        largest = max((abs(float(r)) for r in power.exp.atoms(sympy.Rational)), default=0.0)
        digits.append(largest * _exact_digits(power.base))
    return max(digits, default=0.0)


def _render(forms: Sequence[Any], shape: tuple[int, ...]) -> tuple[str, str]:
    """Text and LaTeX of a block of readable forms of ``shape``."""
    if not shape:
        return _text(forms[0]), sympy.latex(forms[0])
    nested = np.array(forms, dtype=object).reshape(shape)
    if len(shape) <= 2:
        matrix = sympy.Matrix(nested.reshape(shape[0], -1) if len(shape) == 2 else nested)
        latex = sympy.latex(matrix if len(shape) == 2 else matrix.T)
    else:
        latex = sympy.latex(nested.tolist())
    return _nested_text(nested), latex


def _nested_text(array: np.ndarray, show: Callable[[Any], str] = _text) -> str:
    if array.ndim == 1:
        return "[" + ", ".join(show(e) for e in array) + "]"
    return "[" + ", ".join(_nested_text(part, show) for part in array) + "]"
