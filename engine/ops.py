"""The op table: every operation crossgrad knows, declared once.

Each row carries what every part of crossgrad needs of an op, so adding an op is adding a row.
Rows are written with named fields:

- ``name``: the wire name (ops travel as strings, as in ONNX), and the name of the module
  function and Tensor method;
- ``forward``: the NumPy forward, ``forward(*inputs, **attrs) -> array`` (arithmetic uses Python's
  operators, which NumPy serves several times faster than the ufunc calls on scalars);
- ``vjps``: one hand-written vector-Jacobian product per input,
  ``vjp(g, out, *inputs, **attrs) -> array`` (``g`` the upstream gradient, ``out`` the forward
  result), ``None`` where the input is not differentiable. This is the numeric engine's derivative.
  A rule returns its gradient in the shape of the broadcast result; the engine sums it back to
  the input's shape (rules never un-broadcast);
- ``sympy``: the forward over NumPy object arrays of SymPy expressions. Forward only: SymPy derives
  the closed form itself, so the two derivations stay independent. At kinks it is written to
  agree with PyTorch (``Piecewise``, not SymPy's ``Max``/``Heaviside``, which give 1/2 at 0);
- ``composed``: for an op whose every result element depends on a whole slice (``softmax``), the
  same function as a few other rows, ``composed(**attrs) -> (Step, ...)``. The closed form derives
  the op through these steps, whose derivatives stay linear in the slice's length where the op's
  own Jacobian is dense (a softmax over n elements has n * n partials);
- ``elementwise``: each result element depends only on the same-position elements of the
  (broadcast) operands, so the closed form derives the op once on scalar symbols rather than
  over arrays of placeholders;
- ``view``: the result is a view of its input, as PyTorch's is: where NumPy's is one too (a
  reshape of a transposed matrix copies, in both), the two share storage and version counter;
  ``strided``: a view that may skip or reorder its input's elements, so that its result is not
  laid out contiguously (``x[:, 0]``, ``x.T``), which ``view()`` then may refuse;
- ``stops_gradient``: the value passes and no gradient flows back (``detach``): the closed form
  holds the result as a constant equal to its value;
- ``grad_fn``: the PyTorch 2.13 ``grad_fn`` name, or a function of the call that picks it
  (``1 - x`` is ``RsubBackward1``, ``2 / x`` is ``MulBackward0``, matmul depends on the ranks);
  ``tensor_grad_fn``: the name on tensor operands with the default attributes (on matrices for
  matmul), which is what ``ListOps`` lists; it defaults to ``grad_fn`` when that is a name;
- ``shape``: the shape rule (``shapes.py``), ``kink``: the convention at non-differentiable
  points, ``domain``: per input, the range the tests draw values from;
- ``variadic``: it takes one or more inputs, as many as the call gives (``cat``, ``stack``):
  ``vjps`` then holds one rule for all of them, ``vjp(position, g, out, *inputs, **attrs)``, the
  gradient of the input at ``position``, and ``domain`` the one range every input draws from;
  ``arity`` is the least number of inputs (1), ``takes`` says how many it accepts and
  ``vjps_for`` gives the per-input VJPs of a call;
- ``attrs``: the attributes it takes, each of a kind of ``ATTR_KINDS``, with a default;
- ``saves``: whether backward needs saved values, so a second backward without ``retain_graph``
  fails exactly where PyTorch's does (``x + 1`` can be backpropagated twice, ``x * 2`` cannot);
  ``saves_output``: backward reads the forward's result, so an in-place change of the result is
  refused; ``saves_inputs``: backward reads the operands (False where it reads only the result,
  as ``exp``'s does; the names of those it reads, ``where``'s condition), so an in-place change
  of one is refused; ``floating``: integer
  inputs give a floating result (sin of an int64 tensor is float32); ``counting``: bool inputs
  give int64 (the sum or product of a bool tensor); ``boolean``: the result is
  bool whatever the operands' dtype (comparisons, computed in the operands' promoted dtype);
  ``promoting``: attributes that take part in type promotion as Python numbers do;
  ``implicit_numbers``: the types of Python numbers the op applies besides its operands, which
  take part too (``square`` is ``x ** 2``: the int 2 makes a bool tensor's square int64).

The Python surface (the module function, the Tensor method, operators; generated from these rows
by ``scripts/generate_surface.py``) reads the rest: ``operands``, PyTorch's parameter names for the
operands (``input``, ``other`` unless given); ``operator``, the Python operator that writes the op
(``+``; ``-`` is ``sub`` with two operands and ``neg`` with one), which the formula parser reads
too; ``in_place``, whether it has an in-place method (``add_``); ``method``, False where Tensor
writes the method itself (``detach`` shares the tensor's storage and version counter, which no op
application does); ``public``, False for a row PyTorch has no function or method for (``slice``,
which indexing writes): the graph, the wire and formulas take it, the Python surface does not;
``tensors_only``, PyTorch's Python signature takes tensors only (``maximum``, ``matmul``): a
Python number in a call is a TypeError naming the argument, and the operator returns
NotImplemented for one (graphs and formulas take numbers); ``tensor_input``, PyTorch's function
takes a number as the other operand only (``gt``): ``torch.gt(2, x)`` is a TypeError listing its
overloads (the operator ``2 > x`` is Python's ``x < 2``);
``refuses_operands``, PyTorch's message refusing the operands (``-x`` of a bool tensor, ``a @ b``
of two dtypes, ``x ** -1`` of integers), from what the dtype rule sees of them, or None; in a
graph as in a call;
``refuses_integers`` and ``needs_one_of``, what PyTorch refuses of a call that a graph accepts
(``mean`` of an int64 tensor, PyTorch's message with ``{type}`` for the tensor type's name and
``{lastdim}`` for "_lastdim" where the call's ``dim`` is the last one;
``clamp`` without bounds); ``bool_overload``, the attribute a bool in place of the first
attribute is, in a Python call (PyTorch's ``var(unbiased)`` overload: ``x.var(False)``);
``warns``, the warning PyTorch gives for a call, by the input's shape
and the attributes ("" for none: ``var`` of one element); ``doc``, the docstring.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import scipy.special
import symengine as se
import sympy

from . import dtypes, shapes
from .dtypes import DType
from .errors import CrossgradError, DTypeError, UsageError, refusal

Array = Any  # np.ndarray, a NumPy scalar, or a Python number for a constant operand
Vjp = Callable[..., Array]
Dims = int | Sequence[int] | None


class Call(Protocol):
    """What PyTorch's name for a backward node can depend on (a backward node provides it)."""

    @property
    def values(self) -> Sequence[Array]: ...  # the operands' values; numbers stay numbers

    @property
    def out(self) -> Array: ...

    @property
    def attrs(self) -> Mapping[str, Any]: ...

    @property
    def targets(self) -> Sequence[Any]: ...  # per operand, None where it needs no gradient


# --- attribute kinds ------------------------------------------------------------------------------

class _AllDims:
    """The default of ``sum``/``mean``'s ``dim`` in a Python call: no dim given (not even
    ``None``, which is PyTorch's other overload)."""

    def __repr__(self) -> str:
        return "all dims"


ALL_DIMS: Any = _AllDims()
MAX_NDIM = 64  # NumPy's own limit on dimensions


class IllTyped(ValueError):
    """A value that is not of an attribute's kind."""


@dataclass(frozen=True)
class AttrKind:
    """A kind of op attribute, as each part of crossgrad reads it.

    ``text`` says what a value must be (for errors). In a graph, ``normalize`` checks a value and
    gives its canonical form (``None`` stays for the optional kinds, whose names end in "?"); on
    the wire, ``wire`` names the fields of the proto's ``AttrValue`` that may carry it. In a
    Python call (the generated surface), ``python`` is its type and ``python_default`` its default
    when the attribute's own would not do; ``from_python`` turns the call's argument into the
    attribute's value, where it is not the value as given; ``varargs``: a method takes it as
    separate arguments or as one sequence (``x.reshape(2, 3)``, ``x.reshape((2, 3))``), as
    PyTorch's do.
    """

    name: str
    text: str
    wire: tuple[str, ...]
    check: Callable[[Any], Any]  # a value other than None, in canonical form, or IllTyped
    python: str
    from_python: Callable[[Any], Any] | None = None  # None: the argument is the value
    python_default: str = ""
    varargs: bool = False

    @property
    def optional(self) -> bool:
        return self.name.endswith("?")

    def normalize(self, value: Any) -> Any:
        """``value`` in canonical form: floats for numbers, tuples of ints for dims; raises
        ``IllTyped`` for a value not of this kind."""
        if value is None and self.optional:
            return None
        return self.check(value)


# An operand as the dtype rule sees it: a tensor's (dtype, ndim); a Python number, or its type
# where only that is known (a graph's constant).
Described = tuple[DType, int] | type | int | float | bool


def is_int(value: Any) -> bool:
    """An integer, Python's or NumPy's, that is not a bool."""
    return type(value) is int or (isinstance(value, (int, np.integer))
                                  and not isinstance(value, (bool, np.bool_)))


def _check_condition(op: str, operand: Described) -> None:
    """PyTorch's refusal of a condition that is not a bool tensor."""
    if not isinstance(operand, tuple):
        number = operand if isinstance(operand, type) else type(operand)
        raise DTypeError(f"{op}(): argument 'condition' (position 1) must be Tensor, not "
                         f"{number.__name__}")
    if operand[0] is not dtypes.bool_:
        raise UsageError(f"{op} expected condition to be a boolean tensor, but got a tensor "
                         f"with dtype {_TORCH_DTYPE_NAMES[operand[0].name]}")


_INVERT_A_MASK = ("If you are trying to invert a mask, use the `~` or `logical_not()` operator "
                  "instead.")


def _is_bool(operand: Described) -> bool:
    return operand is bool or type(operand) is bool or (
        type(operand) is tuple and operand[0] is dtypes.bool_)


def _bools_refused(message: Callable[[int], str]) -> Callable[[Sequence[Described]], str | None]:
    """A row's ``refuses_operands`` that refuses any bool operand (tensor or Python bool), with
    PyTorch's message for their count."""
    def refuses(operands: Sequence[Described]) -> str | None:
        count = sum(_is_bool(o) for o in operands)
        return message(count) if count else None
    return refuses


def _subtraction_of_bools(count: int) -> str:
    if count == 2:
        return ("Subtraction, the `-` operator, with two bool tensors is not supported. Use the "
                "`^` or `logical_xor()` operator instead.")
    return f"Subtraction, the `-` operator, with a bool tensor is not supported. {_INVERT_A_MASK}"


def _negation_of_a_bool(count: int) -> str:
    return f"Negation, the `-` operator, on a bool tensor is not supported. {_INVERT_A_MASK}"


def _no_bool_kernel(kernel: str) -> str:
    return f'"{kernel}" not implemented for \'Bool\''


def _abs_of_a_bool(operands: Sequence[Described]) -> str | None:
    return _no_bool_kernel("abs_cpu") if _is_bool(operands[0]) else None


NEGATIVE_INTEGER_POWER = "Integers to negative integer powers are not allowed."


def _pow_refused(operands: Sequence[Described]) -> str | None:
    # A bool tensor as the exponent of a bool (a Python bool as the exponent is a scalar PyTorch
    # takes: mask ** True is the mask); a negative Python integer as an integer tensor's.
    base, exponent = operands
    if type(exponent) is tuple and _is_bool(exponent) and _is_bool(base):
        return _no_bool_kernel("pow")
    if (type(base) is tuple and not base[0].is_floating_point
            and isinstance(exponent, int) and exponent < 0):  # a bool is an int here
        return NEGATIVE_INTEGER_POWER
    return None


# PyTorch's C++ names for dtypes, in some of its messages.
_CPP_DTYPE_NAMES = {"float32": "float", "float64": "double", "int64": "long int", "bool": "bool"}


def _matmul_dtypes(operands: Sequence[Described]) -> str | None:
    """PyTorch's refusal of a matmul whose operands differ in dtype or are bools, in the words of
    the kernel the operands' ranks lead to (a 0-d operand: the shape rule's error)."""
    first, second = operands
    if type(first) is not tuple or type(second) is not tuple:
        return None  # a number: the shape rule's error (a graph may hold one)
    (a, rank_a), (b, rank_b) = first, second
    if not (rank_a and rank_b) or (a is b and a is not dtypes.bool_):
        return None
    name_a, name_b = _TORCH_DTYPE_NAMES[a.name], _TORCH_DTYPE_NAMES[b.name]
    if rank_b >= 3:  # a batched product: the dispatch on the first operand's dtype comes first
        if a is dtypes.bool_:
            return _no_bool_kernel("bmm")
        return f"expected scalar type {name_a} but found {name_b}"
    if a is not b:
        if rank_b == 1 and rank_a == 1:
            return ("dot : expected both vectors to have same dtype, but found "
                    f"{name_a} and {name_b}")
        if rank_b == 1:
            return ("addmv input tensors must have the same dtype, but got "
                    f"{name_b}, {name_a}, and {name_b}")
        return ("expected m1 and m2 to have the same dtype, but got: "
                f"{_CPP_DTYPE_NAMES[a.name]} != {_CPP_DTYPE_NAMES[b.name]}")
    return _no_bool_kernel("dot" if rank_a == rank_b == 1 else
                           "addmv_impl_cpu" if rank_b == 1 else "addmm_impl_cpu_")


# PyTorch's words for dtypes in its messages (ScalarType names).
_TORCH_DTYPE_NAMES = {"float32": "Float", "float64": "Double", "int64": "Long", "bool": "Bool"}


def _finite_number(value: Any) -> float:
    if (is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(value):
        return float(value)
    raise IllTyped(value)


def _dims(value: Any) -> tuple[int, ...]:
    if is_int(value):
        return (int(value),)
    if (isinstance(value, (list, tuple)) and len(value) <= MAX_NDIM
            and all(is_int(d) for d in value)):
        return tuple(int(d) for d in value)
    raise IllTyped(value)


def _int(value: Any) -> int:
    if type(value) is int:  # the common case first: every Python call converts its ints
        return value
    if is_int(value):
        return int(value)
    raise IllTyped(value)


def _bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise IllTyped(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _python_number(value: Any) -> float | int | None:
    # A NumPy number as the Python number it holds: an np.int64 correction must not make a
    # float32 variance float64.
    return value.item() if isinstance(value, np.generic) else value


def _norm_order(p: Any) -> Any:
    # PyTorch's default order is "fro", which for a vector norm (any dim but a matrix norm's
    # three or more) is the 2-norm, as None is; other strings are left to the shape rule.
    return None if isinstance(p, str) and p == "fro" else _python_number(p)


def _dims_or_all(dim: Any) -> tuple[int, ...] | None:
    # No dim at all is PyTorch's reduce-everything overload; an explicit ``dim=None`` is the
    # other overload (its own grad_fn name), passed on as ``dim=()``, which also reduces all.
    if dim is ALL_DIMS:
        return None
    if dim is None:
        return ()
    dims = (dim,) if is_int(dim) or isinstance(dim, (bool, np.bool_)) else tuple(dim)
    if any(isinstance(d, (bool, np.bool_)) for d in dims):
        # A bool is an int to Python, not to PyTorch: x.var(False) is not dim 0.
        raise TypeError("argument 'dim' must be tuple of ints, not bool")
    return tuple(_int(d) for d in dims)


def _one_dim(value: Any) -> tuple[int, ...]:
    # One dimension, kept as a 1-tuple so that it reads as the "dims?" kind's values do.
    if is_int(value):
        return (int(value),)
    if isinstance(value, (list, tuple)) and len(value) == 1 and is_int(value[0]):
        return (int(value[0]),)
    raise IllTyped(value)


def _dim_or_all(dim: Any) -> tuple[int, ...] | None:
    # ``prod`` takes no dim (a total) or one int: PyTorch has no overload for ``dim=None``.
    if dim is ALL_DIMS:
        return None
    if not is_int(dim):
        raise TypeError(f"argument 'dim' must be int, not {type(dim).__name__}")
    return (int(dim),)


def _int_or_dims(value: Any) -> int | tuple[int, ...]:
    # An int stays an int: ``squeeze(1)`` and ``squeeze((1,))`` are different overloads in
    # PyTorch, each with its own grad_fn name.
    return _int(value) if is_int(value) else _dims(value)


def _dim_or_dims(dim: Any) -> int | tuple[int, ...] | None:
    # No dim at all is PyTorch's squeeze-everything overload; it has no ``dim=None`` overload.
    if dim is ALL_DIMS:
        return None
    if dim is None:
        raise TypeError("dim must be an int or a tuple of ints, not None")
    return _int_or_dims(dim)


def _sizes(values: tuple[Any, ...]) -> tuple[int, ...]:
    # A method's arguments: the sizes themselves, or one sequence of them.
    sizes = values[0] if len(values) == 1 and not is_int(values[0]) else values
    if all([type(d) is int for d in sizes]):  # the common case, without a call per size
        return tuple(sizes)
    return tuple(_int(d) for d in sizes)


ATTR_KINDS: Mapping[str, AttrKind] = {kind.name: kind for kind in (
    AttrKind("number?", "a finite number or None", ("number", "integer"), _finite_number,
             "float | None", _python_number),
    AttrKind("order?", "a finite number or None, the norm's order", ("number", "integer"),
             _finite_number, "float | str | None", _norm_order),
    AttrKind("dims?", "an int, a sequence of ints or None", ("integers", "integer"), _dims,
             "Dims", _dims_or_all, python_default="ALL_DIMS"),
    AttrKind("dim?", "an int or None", ("integers", "integer"), _one_dim, "int", _dim_or_all,
             python_default="ALL_DIMS"),
    AttrKind("dims", "an int or a sequence of ints", ("integers", "integer"), _dims,
             "Sequence[int]", _sizes, varargs=True),
    AttrKind("int|dims?", "an int, a sequence of ints or None", ("integer", "integers"),
             _int_or_dims, "int | Sequence[int]", _dim_or_dims, python_default="ALL_DIMS"),
    AttrKind("int", "an int", ("integer",), _int, "int", _int),
    AttrKind("int?", "an int or None", ("integer",), _int, "int | None", _optional_int),
    AttrKind("bool", "a bool", ("flag",), _bool, "bool", _bool),
)}


@dataclass(frozen=True)
class Attr:
    """An op attribute: ``kind`` is a key of ``ATTR_KINDS``."""

    kind: str
    default: Any = None
    required: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ATTR_KINDS:
            raise ValueError(f"unknown attribute kind {self.kind!r}; the kinds are "
                             f"{', '.join(ATTR_KINDS)}")


# --- rows -----------------------------------------------------------------------------------------

class Step(NamedTuple):
    """One op of a composed row: the op's name, its inputs (the row's operands by position, then
    the results of the steps before it) and its attributes."""

    op: str
    inputs: tuple[int, ...]
    attrs: Mapping[str, Any] = {}


@dataclass(frozen=True, kw_only=True)
class Op:
    """One row of the table (the fields are described in the module's docstring)."""

    name: str
    forward: Callable[..., Array]
    vjps: tuple[Vjp | None, ...]
    sympy: Callable[..., Any]
    elementwise: bool
    grad_fn: str | Callable[[Call], str] | None
    shape: Callable[..., shapes.Shape]
    domain: tuple[tuple[float, float], ...]
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    kink: str = ""
    stops_gradient: bool = False
    view: bool = False
    strided: bool = False
    tensor_grad_fn: str = ""
    saves: bool = True
    saves_output: bool = False
    saves_inputs: bool | tuple[str, ...] = True
    floating: bool = False
    counting: bool = False
    boolean: bool = False
    promoting: tuple[str, ...] = ()
    implicit_numbers: tuple[type, ...] = ()
    operands: tuple[str, ...] = ()
    operator: str = ""
    in_place: bool = False
    method: bool = True
    public: bool = True
    variadic: bool = False
    tensors_only: bool = False
    tensor_input: bool = False
    refuses_operands: Callable[[Sequence[Described]], str | None] | None = None
    refuses_integers: str = ""
    needs_one_of: tuple[str, ...] = ()
    bool_overload: str = ""
    warns: Callable[[tuple[int, ...], Mapping[str, Any]], str] | None = None
    composed: Callable[..., tuple[Step, ...]] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.stops_gradient != all(vjp is None for vjp in self.vjps):
            raise ValueError(f"{self.name}: a row stops the gradient exactly when none of its "
                             "inputs has a VJP")
        if self.stops_gradient and self.grad_fn:
            raise ValueError(f"{self.name}: a row that stops the gradient has no backward node")
        if not self.saves:
            object.__setattr__(self, "saves_inputs", False)  # nothing saved, nothing read
        elif not (self.saves_inputs or self.saves_output):
            raise ValueError(f"{self.name}: a row that saves values reads its inputs, its "
                             "result or both")
        if not self.tensor_grad_fn:
            if callable(self.grad_fn):
                raise ValueError(f"{self.name}: a grad_fn picked by the call needs the name on "
                                 "tensor operands in tensor_grad_fn")
            object.__setattr__(self, "tensor_grad_fn", self.grad_fn or "")
        if not self.operands:
            if self.arity > 2:
                raise ValueError(f"{self.name}: name the operands of an op of {self.arity}")
            object.__setattr__(self, "operands", ("input", "other")[:self.arity])
        if len(self.operands) != self.arity:
            raise ValueError(f"{self.name}: {len(self.operands)} operand names for "
                             f"{self.arity} operands")

    def saves_operand(self, position: int) -> bool:
        """Whether backward reads the operand at ``position`` (so it refuses an in-place change
        of it made after the op)."""
        if isinstance(self.saves_inputs, bool):
            return self.saves_inputs
        name = self.operands[0] if self.variadic else self.operands[position]
        return name in self.saves_inputs

    @property
    def arity(self) -> int:
        """The number of inputs; for a variadic op, the least (1)."""
        return len(self.vjps)

    def takes(self, count: int) -> bool:
        """Whether the op takes ``count`` inputs: its arity, or for a variadic op one or more."""
        return count >= 1 if self.variadic else count == self.arity

    @property
    def inputs_text(self) -> str:
        """How many inputs it takes, for messages: "2", "one or more"."""
        return "one or more" if self.variadic else str(self.arity)

    def vjps_for(self, count: int) -> tuple[Vjp | None, ...]:
        """The VJP of each of ``count`` inputs: the row's own, or for a variadic op its rule
        bound to each position."""
        return _positional(self.vjps[0], count) if self.variadic else self.vjps

    def number_types(self, attrs: Mapping[str, Any]) -> list[type]:
        """The types of the promoting attributes given in ``attrs``."""
        return [type(attrs[name]) for name in self.promoting if attrs.get(name) is not None]

    def computed_dtype(self, operands: Sequence[Described],
                       attrs: Mapping[str, Any] | None = None) -> DType:
        """The dtype PyTorch computes this op in, per operand a tensor's (dtype, ndim) or a
        Python number (or its type): their promoted type, the promoting attributes in ``attrs``
        taking part as Python numbers; a float where the op makes floats of integers. A
        ``condition`` operand (``where``'s) takes no part, and must be a bool tensor. What
        PyTorch refuses of the operands (``refuses_operands``) raises its error."""
        tensors: list[tuple[DType, int]] = []
        numbers: list[type] = []
        names = self.operands * len(operands) if self.variadic else self.operands
        for name, operand in zip(names, operands, strict=True):
            if name == "condition":
                _check_condition(self.name, operand)
            elif isinstance(operand, tuple):
                tensors.append(operand)
            else:
                numbers.append(operand if isinstance(operand, type) else type(operand))
        if self.refuses_operands is not None and (message := self.refuses_operands(operands)):
            raise refusal(message)
        if attrs:
            numbers += self.number_types(attrs)
        numbers += self.implicit_numbers
        return dtypes.result_type(tensors, numbers, self.floating, self.counting)

    @functools.cached_property
    def conditioned(self) -> bool:
        """Whether an operand is a condition (``where``'s): a bool tensor that takes no part in
        type promotion, so the operands' dtypes alone do not type a call."""
        return "condition" in self.operands

    def result_dtype(self, computed: DType) -> DType:
        """The dtype of the result of this op computed in ``computed``: bool for a comparison."""
        return dtypes.bool_ if self.boolean else computed

    @functools.cached_property
    def python_forms(self) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
        """Per attribute whose kind converts a Python call's argument, its converter; a required
        attribute's refuses None, which a kind may take for graphs (all dimensions) where
        PyTorch's signature takes none (logsumexp's dim)."""
        return tuple((name, _refusing_none(convert) if attr.required else convert)
                     for name, attr in self.attrs.items()
                     if (convert := ATTR_KINDS[attr.kind].from_python) is not None)

    def grad_fn_name(self, call: Call) -> str:
        """PyTorch's name for the backward node of this call."""
        if callable(self.grad_fn):
            return self.grad_fn(call)
        return self.grad_fn or ""


def _refusing_none(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def converted(value: Any) -> Any:
        if value is None:
            raise IllTyped(value)
        return convert(value)
    return converted


@functools.lru_cache(maxsize=256)
def _positional(rule: Vjp | None, count: int) -> tuple[Vjp | None, ...]:
    # Built once per rule and count: backward asks for them at every node.
    if rule is None:
        return (None,) * count
    return tuple(functools.partial(rule, position) for position in range(count))


def _is_number(value: Array) -> bool:
    """Whether an operand is a Python number (PyTorch's "wrapped scalar") rather than a tensor
    (whose value may be a NumPy scalar: np.float64 is a float subclass, not a number here)."""
    return type(value) in (int, float, bool)


def _elementwise(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Lift a scalar SymPy function to object arrays of expressions."""
    return np.frompyfunc(fn, 1, 1)


def _positive_part(x: Any) -> Any:
    # relu with PyTorch's relu'(0) = 0: the x > 0 branch is open at 0.
    return sympy.Piecewise((x, x > 0), (0, True))


def _abs(x: Any) -> Any:
    # |x| with abs'(0) = 0: a branch of its own at 0 (SymEngine cannot differentiate Abs).
    return sympy.Piecewise((x, x > 0), (-x, x < 0), (0, True))


def _clamp_symbolic(x: Any, min: float | None = None, max: float | None = None) -> Any:
    # The gradient passes where min <= x <= max, bounds included, as in PyTorch.
    if min is not None and max is not None and min > max:
        return sympy.Float(max)  # PyTorch's clamp gives max everywhere then
    branches = []
    if min is not None:
        branches.append((sympy.Float(min), x < min))
    if max is not None:
        branches.append((sympy.Float(max), x > max))
    return sympy.Piecewise(*branches, (x, True)) if branches else x


def _sigmoid(x: Array) -> Array:
    # 1 / (1 + e^-x) without overflow for large |x|.
    return np.exp(-np.logaddexp(0, -x))


def _sum_back(g: Array, x: Array, dim: Sequence[int] | None, keepdim: bool) -> Array:
    """Spread a reduced gradient back over the input's shape."""
    shape = x.shape
    if dim is None:  # a total (kept dims or not): g everywhere, as np.full would, more cheaply
        spread = np.empty(shape, g.dtype)
        spread[...] = g
        return spread
    if not keepdim:
        g = np.expand_dims(g, shapes.normalize_dims(dim, len(shape)))
    return np.broadcast_to(g, shape)


def _reduced_count(x: Array, dim: Sequence[int] | None) -> int:
    if dim is None:
        return int(np.size(x))
    shape = np.shape(x)
    return int(np.prod([shape[d] for d in shapes.normalize_dims(dim, len(shape))]))


def _axis(x: Array, dim: Sequence[int] | None) -> tuple[int, ...]:
    return shapes.normalize_dims(dim, np.ndim(x))


# np.add.reduce rather than np.sum/np.mean: the same pairwise summation without their Python-level
# argument handling, which dominates on small tensors.
def _sum(x: Array, dim: Sequence[int] | None = None, keepdim: bool = False) -> Array:
    axis = None if dim is None else _axis(x, dim)
    return np.add.reduce(x, axis=axis, keepdims=keepdim)  # type: ignore[call-overload]


def _mean(x: Array, dim: Sequence[int] | None = None, keepdim: bool = False) -> Array:
    return _sum(x, dim, keepdim) / _reduced_count(x, dim)


def _mean_symbolic(x: Any, dim: Sequence[int] | None = None, keepdim: bool = False) -> Any:
    # An exact count: SymPy and SymEngine divide by it as a rational, NumPy (evaluating the form
    # on numbers) as a float.
    return _sum(x, dim, keepdim) / _reduced_count(x, dim)


# --- reductions beyond sums: extremes, products, log-sum-exp, softmax, moments, norms ---------
# Each VJP is PyTorch's backward formula, in its order of operations, so that the sign of a zero
# and the NaN of a degenerate input come out as PyTorch's. The SymPy forwards are written over
# SymPy or SymEngine expressions (``_cas`` picks the library of the operands: the closed form
# derives over SymEngine placeholders, the tests over SymPy symbols).

class _Numbers:
    """The few SymPy functions the forwards below use, on plain numbers: the closed form's
    op-by-op evaluator runs the forwards on values."""

    exp, log, sqrt, oo, Float = np.exp, np.log, np.sqrt, math.inf, float

    @staticmethod
    def Piecewise(*pairs: tuple[Any, Any]) -> Any:
        return next(value for value, holds in pairs if holds)

    @staticmethod
    def Max(*values: Any) -> Any:
        return np.max(values)

    @staticmethod
    def Min(*values: Any) -> Any:
        return np.min(values)

    @staticmethod
    def Eq(a: Any, b: Any) -> bool:
        return bool(a == b)


def _cas(x: Any) -> Any:
    first = x.flat[0] if isinstance(x, np.ndarray) and x.size else x
    if isinstance(first, se.Basic):
        return se
    return sympy if isinstance(first, sympy.Basic) else _Numbers


def _reduced_axes(x: Array, dim: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if dim is None else _axis(x, dim)


def _restore(r: Array, x: Array, dim: Sequence[int] | None, keepdim: bool) -> Array:
    """A reduced result (or its gradient) with the reduced dimensions back as size 1, so that it
    broadcasts against the input."""
    if dim is None or keepdim:
        return r  # a total is 0-d; kept dimensions are in place
    return np.expand_dims(r, _axis(x, dim))


def _slices(x: Any, dim: Sequence[int] | None, keepdim: bool,
            fn: Callable[[list[Any]], Any]) -> Any:
    """``fn`` of each reduced slice of an object array (a flat list of its expressions)."""
    axes = _axis(x, dim)
    kept = [d for d in range(np.ndim(x)) if d not in axes]
    size = math.prod(np.shape(x)[d] for d in axes)
    lines = np.transpose(x, kept + list(axes)).reshape(
        [np.shape(x)[d] for d in kept] + [size])
    out = np.empty(lines.shape[:-1], dtype=object)
    for index in np.ndindex(out.shape):
        out[index] = fn(list(lines[index]))
    if keepdim:
        out = out.reshape([1 if d in axes else n for d, n in enumerate(np.shape(x))])
    return out


def _amax(x: Array, dim: Sequence[int] | None = None, keepdim: bool = False) -> Array:
    return np.amax(x, axis=_reduced_axes(x, dim), keepdims=keepdim)


def _amin(x: Array, dim: Sequence[int] | None = None, keepdim: bool = False) -> Array:
    return np.amin(x, axis=_reduced_axes(x, dim), keepdims=keepdim)


def _amax_vjp(g: Array, out: Array, x: Array, dim: Sequence[int] | None = None,
              keepdim: bool = False) -> Array:
    # PyTorch's amax/amin backward: (g / count) * mask, ties sharing the gradient evenly; the
    # product keeps the sign of zero elsewhere (-0.0 under a negative g), and a slice holding a
    # NaN matches no element: 0 / 0 there, NaN.
    mask = x == _restore(out, x, dim, keepdim)
    g = _restore(g, x, dim, keepdim)
    count = np.add.reduce(mask, axis=_reduced_axes(x, dim), keepdims=True)
    return g / count.astype(np.result_type(g)) * mask


def _extremum_symbolic(above: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """The maximum (``above`` >=) or minimum (<=) of each slice, as the mean of the elements at
    the extreme: each element weighted by a branch constant in the elements (1 where it is the
    slice's Max or Min), so that the derivative is 1/count at each of count tied extremes, 0
    elsewhere (PyTorch's tie rule). One comparison per element, with the Max or Min shared."""

    def extreme(line: list[Any], cas: Any) -> Any:
        if len(line) == 1:
            return line[0]
        top = (cas.Max if above is operator.ge else cas.Min)(*line)
        at_extreme = [cas.Piecewise((1, above(e, top)), (0, True)) for e in line]
        return sum(e * w for e, w in zip(line, at_extreme, strict=True)) / sum(at_extreme)

    def forward(x: Any, dim: Sequence[int] | None = None, keepdim: bool = False) -> Any:
        cas = _cas(x)
        return _slices(x, dim, keepdim, lambda line: extreme(line, cas))

    return forward


def _whole_extremum_vjp(g: Array, out: Array, x: Array) -> Array:
    # PyTorch's max()/min() backward (evenly_distribute_backward): the gradient shared evenly
    # among the elements equal to the result, or among the NaNs if the result is NaN; +0.0
    # elsewhere (a selection, not a product).
    mask = np.isnan(x) if np.isnan(out) else x == out
    return np.where(mask, g / np.count_nonzero(mask), 0)


def _prod(x: Array, dim: Sequence[int] | None = None, keepdim: bool = False) -> Array:
    return np.prod(x, axis=_reduced_axes(x, dim), keepdims=keepdim)


def _exclusive_products(x: Array, axis: int) -> Array:
    """Per element, the product of the others along ``axis`` (exact where elements are 0): the
    products of the elements before it times those after it."""
    n = np.shape(x)[axis]
    ones = np.ones_like(np.take(x, [0], axis=axis))
    before = np.cumprod(np.concatenate([ones, np.take(x, range(n - 1), axis=axis)], axis), axis)
    after = np.flip(np.cumprod(np.concatenate(
        [ones, np.flip(np.take(x, range(1, n), axis=axis), axis)], axis), axis), axis)
    return before * after


def _prod_vjp(g: Array, out: Array, x: Array, dim: Sequence[int] | None = None,
              keepdim: bool = False) -> Array:
    # PyTorch's prod backward: g * (out / x) without zeros; with zeros the products of the
    # others, exactly (g * out / x would be 0 / 0). A total with two zeros or more gives zeros.
    if np.ndim(x) == 0:
        return g
    if dim is None:
        zeros = np.count_nonzero(x == 0)
        if zeros == 0:
            return g * (out / x)
        if zeros > 1:
            return np.zeros_like(x)
        return g * _exclusive_products(np.reshape(x, -1), 0).reshape(np.shape(x))
    g, out = _restore(g, x, dim, keepdim), _restore(out, x, dim, keepdim)
    if not (x == 0).any():
        return g * (out / x)
    return g * _exclusive_products(x, _axis(x, dim)[0])


def _prod_symbolic(x: Any, dim: Sequence[int] | None = None, keepdim: bool = False) -> Any:
    # The plain product: its derivative is the product of the others, exact at zeros.
    return _prod(x, dim, keepdim)


def _logsumexp(x: Array, dim: Sequence[int] | None, keepdim: bool = False) -> Array:
    # PyTorch's: the maximum subtracted (left at 0 where it is infinite), so exp cannot overflow.
    axes = _axis(x, dim)
    peak = np.amax(x, axis=axes, keepdims=True, initial=-np.inf)
    peak = np.where(np.isinf(peak), 0, peak)
    with np.errstate(divide="ignore"):  # log(0): -inf, as PyTorch gives for all -inf
        total = np.log(np.add.reduce(np.exp(x - peak), axis=axes, keepdims=True)) + peak
    return total if keepdim else np.squeeze(total, axes)


def _logsumexp_vjp(g: Array, out: Array, x: Array, dim: Sequence[int] | None,
                   keepdim: bool = False) -> Array:
    return _restore(g, x, dim, keepdim) * np.exp(x - _restore(out, x, dim, keepdim))


def _logsumexp_symbolic(x: Any, dim: Sequence[int] | None, keepdim: bool = False) -> Any:
    # Shifted by the slice's first element, an identity with no kink: the closed form evaluates
    # in float64 without overflow unless the slice's elements are ~700 apart.
    cas = _cas(x)

    def line_logsumexp(line: list[Any]) -> Any:
        if not line:
            return -cas.oo
        first = line[0]
        return first + cas.log(sum(cas.exp(e - first) for e in line))

    return _slices(x, dim, keepdim, line_logsumexp)


def _along(x: Array, dim: int) -> int | None:
    # The axis of a softmax; None for a 0-d tensor, which PyTorch takes with dim 0 or -1.
    ndim = x.ndim if type(x) is np.ndarray else np.ndim(x)
    if -ndim <= dim < ndim:  # the common case, which NumPy takes as it is
        return dim
    shapes.normalize_dim(dim, ndim)  # PyTorch's error, or a 0-d tensor's dim 0 or -1
    return None


def _shifted(x: Array, axis: int | None) -> Array:
    # x less its slice's maximum, so exp cannot overflow (np.amax's ``initial`` costs twice the
    # reduction, and only an empty tensor, with no slice to shift, needs it).
    size = x.size if type(x) is np.ndarray else np.size(x)  # x may be a graph's number
    return x - np.maximum.reduce(x, axis=axis, keepdims=True) if size else x


def _softmax(x: Array, dim: int) -> Array:
    axis = _along(x, dim)
    e = _shifted(x, axis)
    if e is x or type(e) is not np.ndarray:  # empty, or 0-d (a number): no array of its own
        e = np.exp(e)
        return e / np.add.reduce(e, axis=axis, keepdims=True)
    np.exp(e, out=e)  # in place: the shifted values are this call's own array
    e /= np.add.reduce(e, axis=axis, keepdims=True)
    return e


def _log_softmax(x: Array, dim: int) -> Array:
    axis = _along(x, dim)
    shifted = _shifted(x, axis)
    return shifted - np.log(np.add.reduce(np.exp(shifted), axis=axis, keepdims=True))


def _softmax_vjp(g: Array, out: Array, x: Array, dim: int) -> Array:
    # PyTorch's: out * (g - sum(g * out)); a product, so out = 0 (at -inf) gives a signed zero.
    axis = _along(x, dim)
    if axis is None:  # a 0-d tensor: its one element is the whole slice
        return out * (g - g * out)
    # vecdot: the product and its sum in one call (with keepdims, two calls' worth of overhead
    # less on a small tensor)
    grad = g - np.vecdot(g, out, axis=axis, keepdims=True)  # type: ignore[call-overload]
    grad *= out  # in place: the difference is this call's own array
    return grad


def _log_softmax_vjp(g: Array, out: Array, x: Array, dim: int) -> Array:
    return g - np.exp(out) * np.add.reduce(g, axis=_along(x, dim), keepdims=True)


def _shifted_exps(x: Any, dim: int) -> tuple[Any, Any, int]:
    """exp(x - first element) along ``dim`` (the last axis), x so shifted, and ``dim``'s axis:
    the exponentials of a softmax, by an identity with no kink that keeps float64 in range."""
    d = shapes.normalize_dim(dim, np.ndim(x))
    moved = np.moveaxis(x, d, -1)
    shifted = moved - moved[..., :1]
    return np.frompyfunc(_cas(x).exp, 1, 1)(shifted), shifted, d


def _softmax_symbolic(x: Any, dim: int) -> Any:
    if np.ndim(x) == 0:
        return np.array(1, dtype=object)
    e, _, d = _shifted_exps(x, dim)
    return np.moveaxis(e / np.add.reduce(e, axis=-1, keepdims=True), -1, d)


def _log_softmax_symbolic(x: Any, dim: int) -> Any:
    if np.ndim(x) == 0:
        return np.array(0, dtype=object)
    e, shifted, d = _shifted_exps(x, dim)
    log = np.frompyfunc(_cas(x).log, 1, 1)
    return np.moveaxis(shifted - log(np.add.reduce(e, axis=-1, keepdims=True)), -1, d)


def _log_softmax_steps(dim: int) -> tuple[Step, ...]:
    # x - logsumexp(x, dim, keepdim=True)
    return (Step("logsumexp", (0,), {"dim": (dim,), "keepdim": True}), Step("sub", (0, 1)))


def _softmax_steps(dim: int) -> tuple[Step, ...]:
    # exp(log_softmax(x, dim))
    return (*_log_softmax_steps(dim), Step("exp", (2,)))


def _correction(unbiased: bool, correction: float | None) -> float:
    # PyTorch's ``correction`` (default 1) or, in its older form, ``unbiased`` (1 or 0).
    if correction is not None:
        return correction
    return 1 if unbiased else 0


def _degrees_of_freedom(shape: tuple[int, ...], dim: Sequence[int] | None,
                        correction: float) -> float:
    count = math.prod(shape[d] for d in shapes.normalize_dims(dim, len(shape)))
    return max(0, count - correction)


def _less_first(x: Any, dim: Sequence[int] | None) -> Any:
    """The values less the first element of their reduced slice (a constant slice is then
    exactly 0)."""
    if not np.ndim(x):  # a number (a graph's constant) is its own slice
        return x - x
    axes = _axis(x, dim)
    first = tuple(slice(0, 1) if d in axes else slice(None) for d in range(np.ndim(x)))
    return x - x[first] if np.size(x) else x


def _var(x: Array, dim: Sequence[int] | None = None, unbiased: bool = True,
         keepdim: bool = False, correction: float | None = None) -> Array:
    # Two passes (the mean, then the squared deviations) over the values less a slice's first
    # element: a slice of equal values is then exactly 0, in both dtypes, as the closed form has
    # it. (PyTorch's two passes often keep the rounding of the mean there, ~1e-33 for 0.2, 0.2,
    # 0.2 in float64, and std's gradient from it.) No degrees of freedom left gives inf, or nan
    # for no spread, as in PyTorch.
    with np.errstate(divide="ignore", invalid="ignore"):
        shifted = _less_first(x, dim)
        deviations = shifted - _sum(shifted, dim, True) / _reduced_count(x, dim)
        squares = _sum(deviations * deviations, dim, keepdim)
        return squares / _degrees_of_freedom(np.shape(x), dim, _correction(unbiased, correction))


def _std(x: Array, dim: Sequence[int] | None = None, unbiased: bool = True,
         keepdim: bool = False, correction: float | None = None) -> Array:
    return np.sqrt(_var(x, dim, unbiased, keepdim, correction))


def _var_vjp(g: Array, out: Array, x: Array, dim: Sequence[int] | None = None,
             unbiased: bool = True, keepdim: bool = False,
             correction: float | None = None) -> Array:
    # PyTorch's var_backward: 2 / (n - correction) * g * (x - mean); a total with no degrees of
    # freedom gives g * (nan where x is the mean, else inf), a reduction over dims 2 / 0 = inf.
    c = _correction(unbiased, correction)
    if not dim or np.ndim(x) == 0:
        dof = np.size(x) - c
        mean = np.add.reduce(x, axis=None) / np.size(x)
        if dof <= 0:
            return g * np.where(x == mean, np.nan, np.inf).astype(np.result_type(x))
        return (2.0 / dof) * g * (x - mean)
    dof = _reduced_count(x, dim) - c
    scale = 2.0 / dof if dof else math.inf
    mean = np.add.reduce(x, axis=_axis(x, dim), keepdims=True) / _reduced_count(x, dim)
    return scale * _restore(g, x, dim, keepdim) * (x - mean)


def _std_vjp(g: Array, out: Array, x: Array, dim: Sequence[int] | None = None,
             unbiased: bool = True, keepdim: bool = False,
             correction: float | None = None) -> Array:
    # PyTorch's std_backward: var's backward of g / (2 std), 0 where std is 0 (no spread).
    with np.errstate(divide="ignore", invalid="ignore"):
        of_var = np.where(out == 0, 0, g / (out * 2))
    return _var_vjp(of_var, out, x, dim, unbiased, keepdim, correction)


def _squared_deviations(x: Any, dim: Sequence[int] | None, keepdim: bool,
                        correction: float) -> Any:
    # The sum of squared deviations over the degrees of freedom, with exact counts, as
    # sum(s * s) - sum(s)**2 / count for s, the values less their slice's first: each element's
    # partial is then 2 * (s - sum(s) / count), sums shared by all, where the deviations from
    # the mean would give each element a sum over its slice (n * n terms in all).
    count = _reduced_count(x, dim)
    shifted = _less_first(x, dim)
    total = _sum(shifted, dim, keepdim)
    squares = _sum(shifted * shifted, dim, keepdim)
    if count:  # an empty slice has no sum to take away (and 0 / 0 would raise on objects)
        squares = squares - total * total / count
    dof = count - correction
    if dof <= 0:  # PyTorch divides by 0: inf, or nan for no spread (0 * oo is nan)
        with np.errstate(invalid="ignore"):  # on numbers, nan as on symbols, without a warning
            return squares * _cas(x).oo
    return squares / (int(dof) if float(dof).is_integer() else _cas(x).Float(dof))


def _var_symbolic(x: Any, dim: Sequence[int] | None = None, unbiased: bool = True,
                  keepdim: bool = False, correction: float | None = None) -> Any:
    return _squared_deviations(x, dim, keepdim, _correction(unbiased, correction))


def _root_masked_at_zero(cas: Any) -> Callable[[Any], Any]:
    # sqrt(s) with a branch of its own where s == 0, so that the derivative there is 0, as
    # PyTorch's std and norm backwards mask it (sqrt' would be infinite).
    return np.frompyfunc(lambda s: cas.Piecewise((0, cas.Eq(s, 0)), (cas.sqrt(s), True)), 1, 1)


def _std_symbolic(x: Any, dim: Sequence[int] | None = None, unbiased: bool = True,
                  keepdim: bool = False, correction: float | None = None) -> Any:
    return _root_masked_at_zero(_cas(x))(
        _squared_deviations(x, dim, keepdim, _correction(unbiased, correction)))


def _norm(x: Array, p: float | None = None, dim: Sequence[int] | None = None,
          keepdim: bool = False) -> Array:
    shapes.two_norm_only(p, dim)
    if _reduced_count(x, dim) == 1:
        return _sum(np.abs(x), dim, keepdim)  # PyTorch's too: |x|, where x * x could underflow
    return np.sqrt(_sum(x * x, dim, keepdim))


def _norm_vjp(g: Array, out: Array, x: Array, p: float | None = None,
              dim: Sequence[int] | None = None, keepdim: bool = False) -> Array:
    # PyTorch's: g * (x / norm), with x / norm set to 0 where the norm is 0.
    out = _restore(out, x, dim, keepdim)
    with np.errstate(divide="ignore", invalid="ignore"):
        direction = np.where(out == 0, 0, x / out)
    return _restore(g, x, dim, keepdim) * direction


def _norm_symbolic(x: Any, p: float | None = None, dim: Sequence[int] | None = None,
                   keepdim: bool = False) -> Any:
    shapes.two_norm_only(p, dim)
    cas = _cas(x)
    if _reduced_count(x, dim) == 1:
        # |x|, as the forward computes it (x * x could underflow), with abs'(0) = 0.
        magnitude = np.frompyfunc(lambda e: cas.Piecewise((e, e > 0), (-e, e < 0), (0, True)),
                                  1, 1)
        return _sum(magnitude(x), dim, keepdim)
    return _root_masked_at_zero(cas)(_sum(x * x, dim, keepdim))


def _degenerate_variance(name: str) -> Callable[[tuple[int, ...], Mapping[str, Any]], str]:
    """PyTorch's warning for a ``var`` or ``std`` call left with no degrees of freedom."""

    def warning(shape: tuple[int, ...], attrs: Mapping[str, Any]) -> str:
        correction = _correction(attrs["unbiased"], attrs["correction"])
        try:
            dof = _degrees_of_freedom(shape, attrs["dim"], correction)
        except CrossgradError:
            return ""  # the dims are wrong: the shape rule says so
        return "" if dof > 0 else (
            f"{name}(): degrees of freedom is <= 0. Correction should be strictly less than the "
            "reduction factor (input numel divided by output numel).")

    return warning


# matmul: 1-D operands are promoted to matrices (a row on the left, a column on the right), so
# d(a @ b)/da = g @ b^T and d(a @ b)/db = a^T @ g on the promoted shapes, then demoted again.
def _matmul_vjp_a(g: Array, out: Array, a: Array, b: Array) -> Array:
    if np.ndim(b) == 1:
        return np.multiply.outer(g, b) if np.ndim(a) > 1 else g * b
    if np.ndim(a) == 1:
        return np.matmul(b, np.expand_dims(g, -1))[..., 0]
    return np.matmul(g, np.swapaxes(b, -1, -2))


def _matmul_vjp_b(g: Array, out: Array, a: Array, b: Array) -> Array:
    if np.ndim(a) == 1:
        return np.multiply.outer(a, g) if np.ndim(b) == 1 else (
            np.expand_dims(a, -1) * np.expand_dims(g, -2))
    if np.ndim(b) == 1:
        return np.matmul(np.expand_dims(g, -2), a)[..., 0, :]
    return np.matmul(np.swapaxes(a, -1, -2), g)


def _matmul_grad_fn(call: Call) -> str:
    # PyTorch dispatches matmul by the operands' ranks to different kernels, each with its own
    # backward node; batched products end in a view or a copy of the folded result.
    a, b = (np.shape(x) for x in call.values)
    if len(a) <= 2 and len(b) <= 2:
        return {(1, 1): "DotBackward0", (2, 1): "MvBackward0",
                (1, 2): "SqueezeBackward4", (2, 2): "MmBackward0"}[len(a), len(b)]
    if len(b) <= 2 or len(a) == 1:
        return "UnsafeViewBackward0"
    folds_transposed = len(a) == 2 or (len(a) == len(b) == 3 and a[0] == 1 and b[0] != 1)
    if folds_transposed and call.targets[0] is not None:
        # PyTorch computes (b^T @ a^T)^T, copied unless the transpose is contiguous already.
        return "TransposeBackward0" if a[-2] == 1 or b[-1] == 1 else "CloneBackward0"
    return "UnsafeViewBackward0"


def _reshape_grad_fn(call: Call) -> str:
    # A view when the input is contiguous, an aliasing view when NumPy could still avoid a copy.
    x = call.values[0]
    if not isinstance(x, np.ndarray) or x.flags.c_contiguous:
        return "ViewBackward0"
    return "ReshapeAliasBackward0" if np.shares_memory(x, call.out) else "UnsafeViewBackward0"


def _by_dim(unreduced: str, reduced: str) -> Callable[..., str]:
    # ``x.sum()`` and ``x.sum(dim=None)`` are different overloads in PyTorch; the latter
    # arrives here as ``dim=()``.
    return lambda call: unreduced if call.attrs.get("dim") is None else reduced


def _transpose(x: Array, dim0: int, dim1: int) -> Array:
    if np.ndim(x):
        return np.swapaxes(x, dim0, dim1)
    shapes.transpose((), dim0, dim1)  # a 0-d tensor takes dims 0 and -1 only, as in PyTorch
    return x


def _inverse_permutation(dims: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort([d % len(dims) for d in dims]))


def _reshaped_by(rule: Callable[..., shapes.Shape]) -> Callable[..., Array]:
    """The forward of a view whose result shape ``rule`` gives (squeeze, unsqueeze, flatten):
    the rule runs first, so a bad dim raises PyTorch's error, not NumPy's."""
    return lambda x, **attrs: np.reshape(x, rule(np.shape(x), **attrs))


def _back_to_input_shape(g: Array, out: Array, x: Array, **attrs: Any) -> Array:
    return np.reshape(g, np.shape(x))


def _squeeze_grad_fn(call: Call) -> str:
    # Three overloads in PyTorch: no dim, one dim, a tuple of dims.
    dim = call.attrs.get("dim")
    return ("SqueezeBackward0" if dim is None else
            "SqueezeBackward1" if is_int(dim) else "SqueezeBackward2")


def _reshape(x: Array, shape: Sequence[int]) -> Array:
    if type(x) is not np.ndarray:  # a number (a graph's constant; NumPy's functions are slower)
        x = np.asarray(x)
    return x.reshape(shapes.reshape(x.shape, shape))


def _t(x: Array) -> Array:
    shapes.t(np.shape(x))  # PyTorch's error past two dimensions, all of which NumPy would reverse
    return np.transpose(x)


def _select_key(x: Array, dim: int, index: int) -> tuple[int | slice, ...]:
    shape = x.shape
    d = dim + len(shape) if dim < 0 else dim
    if not (0 <= d < len(shape) and -shape[d] <= index < shape[d]):
        shapes.select(shape, dim, index)  # PyTorch's error, where NumPy's would differ
    return (slice(None),) * d + (index,)


def _slice_key(x: Array, dim: int, start: int | None, end: int | None,
               step: int) -> tuple[int | slice, ...]:
    # For a positive step, Python's slices read None, negative and out-of-range bounds exactly
    # as PyTorch's slice does (shapes.slice_bounds).
    ndim = x.ndim
    d = dim + ndim if dim < 0 else dim
    if not (0 <= d < ndim and step > 0):
        shapes.slice_(x.shape, dim, start, end, step)  # PyTorch's error
    return (slice(None),) * d + (slice(start, end, step),)


def _scattered(g: Array, x: Array, key: tuple[int | slice, ...]) -> Array:
    # The gradient of a view: g in the viewed positions, zeros in the others.
    grad = np.zeros(x.shape, g.dtype)
    grad[key] = g
    return grad


def _select(x: Array, dim: int, index: int) -> Array:
    # The ellipsis makes even a 0-d result a view (an array), as PyTorch's x[0] is.
    return x[(*_select_key(x, dim, index), ...)]


def _select_vjp(g: Array, out: Array, x: Array, dim: int, index: int) -> Array:
    return _scattered(g, x, _select_key(x, dim, index))


def _slice(x: Array, dim: int = 0, start: int | None = None, end: int | None = None,
           step: int = 1) -> Array:
    return x[_slice_key(x, dim, start, end, step)]


def _slice_vjp(g: Array, out: Array, x: Array, dim: int = 0, start: int | None = None,
               end: int | None = None, step: int = 1) -> Array:
    return _scattered(g, x, _slice_key(x, dim, start, end, step))


def _cat(*tensors: Array, dim: int = 0) -> Array:
    try:
        return np.concatenate(tensors, axis=dim)
    except ValueError:  # NumPy's refusal: PyTorch's error, or a legacy empty tensor to skip
        shapes.cat(*(np.shape(x) for x in tensors), dim=dim)
    kept = [x for x in tensors if not shapes.is_legacy_empty(np.shape(x))]
    return np.concatenate(kept, axis=dim)


def _cat_vjp(position: int, g: Array, out: Array, *tensors: Array, dim: int = 0) -> Array:
    # The input's own stretch of the result along ``dim``; nothing for a legacy empty tensor
    # (1-d among tensors of more dimensions), which also takes no room before the others'.
    x = tensors[position]
    if x.ndim != g.ndim:
        return np.zeros(x.shape, dtype=g.dtype)
    d = dim + g.ndim if dim < 0 else dim
    start = sum([t.shape[d] for t in tensors[:position] if t.ndim > d])
    return g[(slice(None),) * d + (slice(start, start + x.shape[d]),)]


def _stack(*tensors: Array, dim: int = 0) -> Array:
    try:
        return np.stack(tensors, axis=dim)
    except ValueError:
        shapes.stack(*(np.shape(x) for x in tensors), dim=dim)  # PyTorch's error, not NumPy's
        raise


def _stack_vjp(position: int, g: Array, out: Array, *tensors: Array, dim: int = 0) -> Array:
    return g[(slice(None),) * (dim + g.ndim if dim < 0 else dim) + (position,)]


# The exponents PyTorch computes a tensor's power to a number by other means than pow: products
# where pow would round once (x * x * x), roots with their own values at -0.0 and -inf
# (sqrt(-0.0) is -0.0 where pow gives 0.0, 1 / sqrt(-0.0) is -inf where pow gives inf).
_SPECIAL_POWERS: dict[float, Callable[[Array], Array]] = {
    0.5: np.sqrt, 2: np.square, 3: lambda x: x * x * x, -0.5: lambda x: 1 / np.sqrt(x),
    -1: np.reciprocal, -2: lambda x: 1 / (x * x)}


def _pow(x: Array, y: Array) -> Array:
    if type(y) is float or type(y) is int:
        special = _SPECIAL_POWERS.get(y)
        if special is not None and np.result_type(x).kind == "f":
            return special(x)
    elif type(y) is bool and np.result_type(x) == np.bool_:
        # NumPy has no bool power (it computes in int8); PyTorch keeps a mask's dtype:
        # mask ** True is the mask, mask ** False all True.
        return np.power(x, y).astype(np.bool_)
    try:
        return x ** y
    except ValueError:  # NumPy refuses an integer to a negative integer power
        if _is_number(y):  # a graph's constant (a call's is refused before it runs)
            raise UsageError(NEGATIVE_INTEGER_POWER) from None
        return _integer_power(x, y)  # a tensor's values (a 0-d one's: a NumPy scalar)


def _integer_power(x: Array, y: Array) -> Array:
    """Integers to integer powers as PyTorch computes them, some exponents negative: 1 at a base
    of 1, -1 or 1 by the exponent's parity at a base of -1, else 0 (the power's integer part)."""
    at_negative = np.where(x == 1, 1, np.where(x == -1, 1 - 2 * (y % 2), 0))
    return np.where(y < 0, at_negative, np.power(x, np.maximum(y, 0)))


def _pow_base_vjp(g: Array, out: Array, x: Array, y: Array) -> Array:
    # d/dx x**y = y * x**(y-1); PyTorch gives 0 where y == 0 (even at x == 0).
    if _is_number(y):  # as PyTorch: y * x ** (y - 1), the power by pow's own special cases
        return np.zeros_like(g) if y == 0 else g * (y * _pow(x, y - 1))
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** negative where y == 0 is masked
        return np.where(y == 0, 0.0, g * (y * np.power(x, y - 1)))


def _pow_exponent_vjp(g: Array, out: Array, x: Array, y: Array) -> Array:
    # d/dy x**y = x**y * log(x); PyTorch's: g * (0 where x == 0 and y >= 0, else out * log(x)),
    # so a signed or NaN zero where g is negative or not finite. A number's log is a Python
    # float, which a float32 product takes as float32, as PyTorch takes a scalar.
    with np.errstate(divide="ignore", invalid="ignore"):
        log = float(np.log(x)) if _is_number(x) else np.log(x)
        return g * np.where((x == 0) & (y >= 0), 0.0, out * log)


def _elementwise2(fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """Lift a scalar SymPy function of two operands to (broadcast) object arrays."""
    return np.frompyfunc(fn, 2, 1)


# maximum/minimum: PyTorch's backward gives each input the gradient where it is the result, half
# of it at a tie, and all of it to both at a NaN (where no comparison holds); zeros are +0.
def _first_on_ties(ufunc: np.ufunc) -> Callable[[Array, Array], Array]:
    # NumPy's maximum gives its second operand where they tie (maximum(-0.0, 0.0) is 0.0),
    # PyTorch's its first (-0.0): with the operands swapped, NumPy's gives PyTorch's.
    return lambda a, b: ufunc(b, a)


def _maximum_vjp(g: Array, out: Array, a: Array, b: Array) -> Array:
    return np.where(a < b, 0.0, np.where(a == b, g / 2, g))


def _maximum_other_vjp(g: Array, out: Array, a: Array, b: Array) -> Array:
    return np.where(a > b, 0.0, np.where(a == b, g / 2, g))


def _tie_split(a: Any, b: Any, a_wins: Any, b_wins: Any) -> Any:
    # The same conventions in the closed form: half each at a tie, a sum at a NaN (no comparison
    # holds there: the value stays NaN and the derivative is 1 for both).
    return sympy.Piecewise((a, a_wins), (b, b_wins), ((a + b) / 2, sympy.Eq(a, b)),
                           (a + b, True))


def _maximum_symbolic(a: Any, b: Any) -> Any:
    return _tie_split(a, b, a > b, a < b)


def _minimum_symbolic(a: Any, b: Any) -> Any:
    return _tie_split(a, b, a < b, a > b)


def _atan2_reciprocal(y: Array, x: Array) -> Array:
    # 1 / (y^2 + x^2), with 0 where the sum is 0 (the origin, or squares that underflow): PyTorch's
    # backward masks it there, so atan2 has gradient 0 at (0, 0). A sum only tiny gives inf, as
    # in PyTorch (its reciprocal overflows; the sum is not 0).
    squares = y * y + x * x
    with np.errstate(divide="ignore", over="ignore"):
        reciprocal = 1 / squares
    return np.where(squares == 0, 0, reciprocal)


def _atan2_symbolic(y: Any, x: Any) -> Any:
    # A constant branch at the origin, so the derivative there is 0 as in PyTorch.
    return sympy.Piecewise((sympy.atan2(y, x), sympy.Ne(y * y + x * x, 0)), (0, True))


def _comparison_symbolic(relation: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    # 1 where the relation holds, else 0: a value the closed form holds as a constant.
    return _elementwise2(lambda a, b: sympy.Piecewise((1, relation(a, b)), (0, True)))


def _comparison(name: str, symbol: str, forward: Callable[..., Array],
                relation: Callable[[Any, Any], Any], doc: str) -> Op:
    """A comparison row: a bool result that never requires grad, written with ``symbol``."""
    return Op(name=name, operator=symbol, elementwise=True, boolean=True, stops_gradient=True,
              tensor_input=True, forward=forward, vjps=(None, None),
              sympy=_comparison_symbolic(relation), grad_fn=None, shape=shapes.broadcast,
              domain=_REAL * 2, saves=False,
              doc=f"Elementwise ``input {symbol} other`` ({doc}): a bool tensor without grad.")


def _where(condition: Array, x: Array, y: Array) -> Array:
    out: Array = np.where(condition, x, y)
    if _is_number(x) and _is_number(y):
        # Only the condition is a tensor: PyTorch's default dtype for the numbers (NumPy's
        # would be float64 or int64 whatever they are).
        return out.astype(dtypes.result_type([], [type(x), type(y)]).numpy)
    return out


def _where_symbolic(condition: Any, x: Any, y: Any) -> Any:
    # The condition's 0/1 picks a branch: the other branch's derivative is exactly 0.
    return sympy.Piecewise((x, sympy.Ne(condition, 0)), (y, True))


def _sign(x: Array) -> Array:
    # NumPy's sign has no bool loop (PyTorch's sign of a bool tensor is the tensor itself), and
    # gives nan at nan, where PyTorch gives 0.
    if np.result_type(x) == np.bool_:
        return np.array(x, copy=True)
    out = np.sign(x)
    return np.nan_to_num(out, nan=0.0) if np.result_type(out).kind == "f" else out


def _sign_symbolic(x: Any) -> Any:
    # sign with sign'(x) = 0 everywhere, as in PyTorch: constant branches, 0 at 0.
    return sympy.Piecewise((1, x > 0), (-1, x < 0), (0, True))


_REAL = ((-3.0, 3.0),)
_POSITIVE = ((0.1, 3.0),)
_UNIT = ((-0.9, 0.9),)  # inside (-1, 1), off the poles of asin', acos', atanh
_REDUCTION_ATTRS = {"dim": Attr("dims?"), "keepdim": Attr("bool", False)}

OPS: tuple[Op, ...] = (
    Op(name="add", operator="+", in_place=True, elementwise=True,
       forward=operator.add, vjps=(lambda g, out, a, b: g, lambda g, out, a, b: g),
       sympy=lambda a, b: a + b, grad_fn="AddBackward0",
       shape=shapes.broadcast, domain=_REAL * 2, saves=False),
    Op(name="sub", operator="-", in_place=True, elementwise=True,
       refuses_operands=_bools_refused(_subtraction_of_bools),
       forward=operator.sub, vjps=(lambda g, out, a, b: g, lambda g, out, a, b: -g),
       sympy=lambda a, b: a - b,
       grad_fn=lambda call: "RsubBackward1" if _is_number(call.values[0]) else "SubBackward0",
       tensor_grad_fn="SubBackward0", shape=shapes.broadcast, domain=_REAL * 2, saves=False),
    # d(ab) = b da + a db
    Op(name="mul", operator="*", in_place=True, elementwise=True,
       forward=operator.mul, vjps=(lambda g, out, a, b: g * b, lambda g, out, a, b: g * a),
       sympy=lambda a, b: a * b, grad_fn="MulBackward0",
       shape=shapes.broadcast, domain=_REAL * 2),
    # d(a/b) = da / b - a db / b^2; PyTorch computes number / x as x.reciprocal() * number
    Op(name="div", operator="/", in_place=True, elementwise=True,
       forward=operator.truediv,
       vjps=(lambda g, out, a, b: g / b, lambda g, out, a, b: -g * a / (b * b)),
       sympy=lambda a, b: a / b,
       grad_fn=lambda call: "MulBackward0" if _is_number(call.values[0]) else "DivBackward0",
       tensor_grad_fn="DivBackward0", shape=shapes.broadcast, domain=((-3.0, 3.0), (0.5, 3.0)),
       floating=True),
    Op(name="neg", operator="-", elementwise=True,
       refuses_operands=_bools_refused(_negation_of_a_bool),
       forward=operator.neg, vjps=(lambda g, out, x: -g,), sympy=lambda x: -x,
       grad_fn="NegBackward0", shape=shapes.broadcast, domain=_REAL, saves=False),
    Op(name="pow", operator="**", operands=("input", "exponent"), elementwise=True,
       refuses_operands=_pow_refused,
       forward=_pow, vjps=(_pow_base_vjp, _pow_exponent_vjp), sympy=lambda a, b: a ** b,
       grad_fn=lambda call: ("PowBackward0" if _is_number(call.values[1]) else
                             "PowBackward2" if _is_number(call.values[0]) else "PowBackward1"),
       tensor_grad_fn="PowBackward1", shape=shapes.broadcast, domain=((0.2, 3.0), (-2.0, 2.0)),
       kink="numeric: d/dx is 0 where y == 0, d/dy is 0 where x == 0 and y >= 0 (PyTorch's); "
            "the closed form x**y leaves these undefined (nan) at x == 0", saves_output=True),
    Op(name="maximum", elementwise=True, tensors_only=True,
       forward=_first_on_ties(np.maximum), vjps=(_maximum_vjp, _maximum_other_vjp),
       sympy=_elementwise2(_maximum_symbolic), grad_fn="MaximumBackward0",
       shape=shapes.broadcast, domain=_REAL * 2,
       kink="equal inputs get half the gradient each; at a NaN both get all of it"),
    Op(name="minimum", elementwise=True, tensors_only=True,
       forward=_first_on_ties(np.minimum), vjps=(_maximum_other_vjp, _maximum_vjp),
       sympy=_elementwise2(_minimum_symbolic), grad_fn="MinimumBackward0",
       shape=shapes.broadcast, domain=_REAL * 2,
       kink="equal inputs get half the gradient each; at a NaN both get all of it"),
    # d/dy atan2(y, x) = x / (y^2 + x^2), d/dx = -y / (y^2 + x^2), written in PyTorch's order
    Op(name="atan2", elementwise=True, tensors_only=True,
       forward=np.arctan2,
       vjps=(lambda g, out, y, x: g * x * _atan2_reciprocal(y, x),
             lambda g, out, y, x: g * -y * _atan2_reciprocal(y, x)),
       sympy=_elementwise2(_atan2_symbolic), grad_fn="Atan2Backward0",
       shape=shapes.broadcast, domain=((-3.0, 3.0), (0.2, 3.0)), floating=True,
       kink="the gradient at (0, 0) is 0 for both inputs; the closed form's value there is 0 "
            "(PyTorch's atan2(0, -0) is pi)"),
    _comparison("gt", ">", np.greater, operator.gt, "greater than"),
    _comparison("lt", "<", np.less, operator.lt, "less than"),
    _comparison("ge", ">=", np.greater_equal, operator.ge, "greater than or equal"),
    _comparison("le", "<=", np.less_equal, operator.le, "less than or equal"),
    _comparison("eq", "==", np.equal, sympy.Eq, "equal"),
    _comparison("ne", "!=", np.not_equal, sympy.Ne, "not equal"),
    # The gradient is selected (np.where), not multiplied: the unselected branch gets exactly +0,
    # whatever inf or NaN it holds, as in PyTorch.
    Op(name="where", operands=("condition", "input", "other"), elementwise=True,
       forward=_where,
       vjps=(None, lambda g, out, c, x, y: np.where(c, g, 0.0),
             lambda g, out, c, x, y: np.where(c, 0.0, g)),
       sympy=np.frompyfunc(_where_symbolic, 3, 1), grad_fn="WhereBackward0",
       shape=shapes.broadcast, domain=((-1.0, 1.0), *_REAL, *_REAL),
       saves_inputs=("condition",),
       doc="``input`` where ``condition`` holds, else ``other`` (``condition`` a bool tensor)."),
    Op(name="exp", elementwise=True,
       forward=np.exp, vjps=(lambda g, out, x: g * out,), sympy=_elementwise(sympy.exp),
       grad_fn="ExpBackward0", shape=shapes.broadcast, domain=_REAL,
       floating=True, saves_output=True, saves_inputs=False),
    Op(name="log", elementwise=True,
       forward=np.log, vjps=(lambda g, out, x: g / x,), sympy=_elementwise(sympy.log),
       grad_fn="LogBackward0", shape=shapes.broadcast, domain=_POSITIVE, floating=True),
    Op(name="sin", elementwise=True,
       forward=np.sin, vjps=(lambda g, out, x: g * np.cos(x),), sympy=_elementwise(sympy.sin),
       grad_fn="SinBackward0", shape=shapes.broadcast, domain=_REAL, floating=True),
    Op(name="cos", elementwise=True,
       forward=np.cos, vjps=(lambda g, out, x: -g * np.sin(x),), sympy=_elementwise(sympy.cos),
       grad_fn="CosBackward0", shape=shapes.broadcast, domain=_REAL, floating=True),
    # tan' = 1 + tan^2
    Op(name="tan", elementwise=True,
       forward=np.tan, vjps=(lambda g, out, x: g * (1 + out * out),),
       sympy=_elementwise(sympy.tan), grad_fn="TanBackward0",
       shape=shapes.broadcast, domain=((-1.2, 1.2),), floating=True, saves_output=True,
       saves_inputs=False),
    # tanh' = 1 - tanh^2
    Op(name="tanh", elementwise=True,
       forward=np.tanh, vjps=(lambda g, out, x: g * (1 - out * out),),
       sympy=_elementwise(sympy.tanh), grad_fn="TanhBackward0",
       shape=shapes.broadcast, domain=_REAL, floating=True, saves_output=True, saves_inputs=False),
    # sigmoid' = sigmoid (1 - sigmoid)
    Op(name="sigmoid", elementwise=True,
       forward=_sigmoid, vjps=(lambda g, out, x: g * out * (1 - out),),
       sympy=_elementwise(lambda x: 1 / (1 + sympy.exp(-x))), grad_fn="SigmoidBackward0",
       shape=shapes.broadcast, domain=_REAL, floating=True, saves_output=True, saves_inputs=False),
    Op(name="relu", elementwise=True,
       refuses_operands=_bools_refused(lambda count: "Boolean inputs not supported for relu"),
       # maximum(0, x): NumPy's maximum gives its second operand at a tie, so relu(-0.0) is
       # -0.0, as PyTorch's (which keeps x unless x < 0).
       forward=lambda x: np.maximum(0, x), vjps=(lambda g, out, x: np.where(x <= 0, 0.0, g),),
       sympy=_elementwise(_positive_part), grad_fn="ReluBackward0",
       shape=shapes.broadcast, domain=_REAL, kink="relu'(0) = 0"),
    Op(name="abs", elementwise=True, refuses_operands=_abs_of_a_bool,
       forward=np.abs, vjps=(lambda g, out, x: g * _sign(x),), sympy=_elementwise(_abs),
       grad_fn="AbsBackward0", shape=shapes.broadcast, domain=_REAL, kink="abs'(0) = 0"),
    # sqrt' = 1 / (2 sqrt)
    Op(name="sqrt", elementwise=True,
       forward=np.sqrt, vjps=(lambda g, out, x: g / (2 * out),), sympy=_elementwise(sympy.sqrt),
       grad_fn="SqrtBackward0", shape=shapes.broadcast, domain=_POSITIVE,
       floating=True, saves_output=True, saves_inputs=False, kink="sqrt'(0) = inf"),
    # PyTorch computes square as pow(x, 2): PowBackward0, saving x; the 2 makes a bool tensor's
    # square int64.
    Op(name="square", elementwise=True,
       forward=lambda x: x * x, vjps=(lambda g, out, x: g * 2 * x,), sympy=lambda x: x * x,
       grad_fn="PowBackward0", shape=shapes.broadcast, domain=_REAL, implicit_numbers=(int,)),
    # The closed forms of log1p and expm1 are written to keep log1p's and expm1's precision
    # near 0, where log(1 + x) and exp(x) - 1 round to 0 (SymEngine has neither function):
    # log1p(x) = asinh(sinh(log(1 + x))), sinh(log(1 + x)) = x (x + 2) / (2 (x + 1)), and
    # expm1(x) = e^(x/2) (e^(x/2) - e^(-x/2)).
    Op(name="log1p", elementwise=True,
       forward=np.log1p, vjps=(lambda g, out, x: g / (1 + x),),
       sympy=_elementwise(lambda x: sympy.asinh(x / 2 * ((x + 2) / (x + 1)))),
       grad_fn="Log1PBackward0",
       shape=shapes.broadcast, domain=((-0.5, 3.0),), floating=True),
    # expm1' = expm1 + 1
    Op(name="expm1", elementwise=True,
       forward=np.expm1, vjps=(lambda g, out, x: g * (out + 1),),
       sympy=_elementwise(lambda x: 2 * sympy.sinh(x / 2) * sympy.exp(x / 2)),
       grad_fn="Expm1Backward0", shape=shapes.broadcast, domain=_REAL,
       floating=True, saves_output=True, saves_inputs=False),
    Op(name="log2", elementwise=True,
       forward=np.log2, vjps=(lambda g, out, x: g / (x * math.log(2)),),
       sympy=_elementwise(lambda x: sympy.log(x, 2)), grad_fn="Log2Backward0",
       shape=shapes.broadcast, domain=_POSITIVE, floating=True),
    Op(name="log10", elementwise=True,
       forward=np.log10, vjps=(lambda g, out, x: g / (x * math.log(10)),),
       sympy=_elementwise(lambda x: sympy.log(x, 10)), grad_fn="Log10Backward0",
       shape=shapes.broadcast, domain=_POSITIVE, floating=True),
    # rsqrt' = -rsqrt^3 / 2
    Op(name="rsqrt", elementwise=True,
       forward=lambda x: 1 / np.sqrt(x), vjps=(lambda g, out, x: -0.5 * g * out * out * out,),
       sympy=_elementwise(lambda x: 1 / sympy.sqrt(x)), grad_fn="RsqrtBackward0",
       shape=shapes.broadcast, domain=_POSITIVE, floating=True, saves_output=True,
       saves_inputs=False),
    # reciprocal' = -reciprocal^2
    Op(name="reciprocal", elementwise=True,
       forward=np.reciprocal, vjps=(lambda g, out, x: -g * (out * out),),
       sympy=_elementwise(lambda x: 1 / x), grad_fn="ReciprocalBackward0",
       shape=shapes.broadcast, domain=((0.5, 3.0),), floating=True, saves_output=True,
       saves_inputs=False),
    Op(name="sinh", elementwise=True,
       forward=np.sinh, vjps=(lambda g, out, x: g * np.cosh(x),),
       sympy=_elementwise(sympy.sinh), grad_fn="SinhBackward0",
       shape=shapes.broadcast, domain=_REAL, floating=True),
    Op(name="cosh", elementwise=True,
       forward=np.cosh, vjps=(lambda g, out, x: g * np.sinh(x),),
       sympy=_elementwise(sympy.cosh), grad_fn="CoshBackward0",
       shape=shapes.broadcast, domain=_REAL, floating=True),
    # asin' = 1 / sqrt(1 - x^2), acos' = -asin'
    Op(name="asin", elementwise=True,
       forward=np.arcsin, vjps=(lambda g, out, x: g / np.sqrt(1 - x * x),),
       sympy=_elementwise(sympy.asin), grad_fn="AsinBackward0",
       shape=shapes.broadcast, domain=_UNIT, floating=True),
    Op(name="acos", elementwise=True,
       forward=np.arccos, vjps=(lambda g, out, x: -g / np.sqrt(1 - x * x),),
       sympy=_elementwise(sympy.acos), grad_fn="AcosBackward0",
       shape=shapes.broadcast, domain=_UNIT, floating=True),
    # atan' = 1 / (1 + x^2)
    Op(name="atan", elementwise=True,
       forward=np.arctan, vjps=(lambda g, out, x: g / (x * x + 1),),
       sympy=_elementwise(sympy.atan), grad_fn="AtanBackward0",
       shape=shapes.broadcast, domain=_REAL, floating=True),
    # asinh' = 1 / sqrt(x^2 + 1)
    Op(name="asinh", elementwise=True,
       forward=np.arcsinh, vjps=(lambda g, out, x: g / np.sqrt(x * x + 1),),
       sympy=_elementwise(sympy.asinh), grad_fn="AsinhBackward0",
       shape=shapes.broadcast, domain=_REAL, floating=True),
    # atanh' = 1 / (1 - x^2)
    Op(name="atanh", elementwise=True,
       forward=np.arctanh, vjps=(lambda g, out, x: g / (1 - x * x),),
       sympy=_elementwise(sympy.atanh), grad_fn="AtanhBackward0",
       shape=shapes.broadcast, domain=_UNIT, floating=True),
    # erf' = 2 / sqrt(pi) e^(-x^2)
    Op(name="erf", elementwise=True,
       forward=scipy.special.erf,
       vjps=(lambda g, out, x: g * (2 / math.sqrt(math.pi)) * np.exp(-(x * x)),),
       sympy=_elementwise(sympy.erf), grad_fn="ErfBackward0",
       shape=shapes.broadcast, domain=_REAL, floating=True),
    # The result keeps the input's dtype (bool included); no gradient flows through, but the
    # backward node exists (SignBackward0 gives zeros) and saves nothing.
    Op(name="sign", elementwise=True,
       forward=_sign, vjps=(lambda g, out, x: np.zeros_like(g),),
       sympy=_elementwise(_sign_symbolic),
       grad_fn="SignBackward0", shape=shapes.broadcast, domain=_REAL, saves=False,
       kink="sign'(x) = 0 everywhere, sign'(0) included"),
    Op(name="clamp", elementwise=True,
       forward=lambda x, min=None, max=None: np.clip(x, min, max),
       vjps=(lambda g, out, x, min=None, max=None: np.where(
           (True if min is None else x >= min) & (True if max is None else x <= max), g, 0.0),),
       sympy=lambda x, min=None, max=None: _elementwise(
           lambda e: _clamp_symbolic(e, min, max))(x),
       grad_fn="ClampBackward1", shape=shapes.same, domain=_REAL,
       attrs={"min": Attr("number?"), "max": Attr("number?")}, promoting=("min", "max"),
       needs_one_of=("min", "max"),
       kink="the gradient passes where min <= x <= max, bounds included",
       doc="Limit values to ``[min, max]``; the gradient passes where ``min <= x <= max``."),
    Op(name="sum", elementwise=False,
       forward=_sum,
       vjps=(lambda g, out, x, dim=None, keepdim=False: _sum_back(g, x, dim, keepdim),),
       sympy=_sum, grad_fn=_by_dim("SumBackward0", "SumBackward1"),
       tensor_grad_fn="SumBackward0", shape=shapes.reduce, domain=_REAL,
       attrs=_REDUCTION_ATTRS, saves=False, counting=True,
       doc="The sum of all elements, or over the dimensions ``dim``."),
    Op(name="mean", elementwise=False,
       forward=_mean,
       vjps=(lambda g, out, x, dim=None, keepdim=False: _sum_back(
           g / _reduced_count(x, dim), x, dim, keepdim),),
       sympy=_mean_symbolic, grad_fn=_by_dim("MeanBackward0", "MeanBackward1"),
       tensor_grad_fn="MeanBackward0", shape=shapes.reduce, domain=_REAL,
       attrs=_REDUCTION_ATTRS, saves=False, floating=True, refuses_integers=(
           "mean(): could not infer output dtype. Input dtype must be either a floating point "
           "or complex dtype. Got: {type}"),
       doc="The mean of all elements, or over the dimensions ``dim``."),
    Op(name="prod", elementwise=False,
       forward=_prod, vjps=(_prod_vjp,), sympy=_prod_symbolic,
       grad_fn=_by_dim("ProdBackward0", "ProdBackward1"), tensor_grad_fn="ProdBackward0",
       shape=shapes.reduce, domain=_REAL,
       attrs={"dim": Attr("dim?"), "keepdim": Attr("bool", False)}, saves_output=True,
       counting=True,
       kink="at zeros the products of the other elements, exactly (PyTorch's); a total with "
            "two zeros or more gives zeros",
       doc="The product of all elements, or along the dimension ``dim``."),
    Op(name="amax", elementwise=False,
       forward=_amax, vjps=(_amax_vjp,), sympy=_extremum_symbolic(operator.ge),
       grad_fn="AmaxBackward0", shape=shapes.extremum("amax"), domain=_REAL,
       attrs=_REDUCTION_ATTRS, saves_output=True,
       kink="tied maxima share the gradient evenly; a NaN makes its slice's gradient NaN",
       doc="The maximum of all elements, or over the dimensions ``dim``."),
    Op(name="amin", elementwise=False,
       forward=_amin, vjps=(_amax_vjp,), sympy=_extremum_symbolic(operator.le),
       grad_fn="AminBackward0", shape=shapes.extremum("amin"), domain=_REAL,
       attrs=_REDUCTION_ATTRS, saves_output=True,
       kink="tied minima share the gradient evenly; a NaN makes its slice's gradient NaN",
       doc="The minimum of all elements, or over the dimensions ``dim``."),
    # The whole tensor's maximum only: PyTorch's max(x, dim) gives (values, indices), and
    # max(a, b) is maximum.
    Op(name="max", elementwise=False,
       forward=np.max, vjps=(_whole_extremum_vjp,), sympy=_extremum_symbolic(operator.ge),
       grad_fn="MaxBackward1", shape=shapes.extremum("max"), domain=_REAL, saves_output=True,
       kink="tied maxima share the gradient evenly (+0.0 elsewhere); at a NaN result the NaNs "
            "share it",
       doc="The maximum of all elements; tied maxima share the gradient evenly."),
    Op(name="min", elementwise=False,
       forward=np.min, vjps=(_whole_extremum_vjp,), sympy=_extremum_symbolic(operator.le),
       grad_fn="MinBackward1", shape=shapes.extremum("min"), domain=_REAL, saves_output=True,
       kink="tied minima share the gradient evenly (+0.0 elsewhere); at a NaN result the NaNs "
            "share it",
       doc="The minimum of all elements; tied minima share the gradient evenly."),
    Op(name="logsumexp", elementwise=False,
       forward=_logsumexp, vjps=(_logsumexp_vjp,), sympy=_logsumexp_symbolic,
       grad_fn="LogsumexpBackward0", shape=shapes.reduce, domain=_REAL,
       attrs={"dim": Attr("dims?", required=True), "keepdim": Attr("bool", False)},
       floating=True, saves_output=True,
       doc="log(sum(exp(x))) over the dimensions ``dim``, computed without overflow."),
    Op(name="softmax", elementwise=False,
       forward=_softmax, vjps=(_softmax_vjp,), sympy=_softmax_symbolic,
       grad_fn="SoftmaxBackward0", shape=shapes.along, domain=_REAL,
       attrs={"dim": Attr("int", required=True)}, saves_output=True, saves_inputs=False,
       floating=True,
       refuses_integers="\"softmax{lastdim}_kernel_impl\" not implemented for '{type}'",
       composed=_softmax_steps,
       doc="exp(x) normalized to sum to 1 along ``dim``."),
    Op(name="log_softmax", elementwise=False,
       forward=_log_softmax, vjps=(_log_softmax_vjp,), sympy=_log_softmax_symbolic,
       grad_fn="LogSoftmaxBackward0", shape=shapes.along, domain=_REAL,
       attrs={"dim": Attr("int", required=True)}, saves_output=True, saves_inputs=False,
       floating=True,
       refuses_integers="\"log_softmax{lastdim}_kernel_impl\" not implemented for '{type}'",
       composed=_log_softmax_steps,
       doc="log(softmax(x)) along ``dim``, computed without overflow."),
    # PyTorch's positional order: dim, unbiased, keepdim; correction (default 1) by keyword.
    Op(name="var", elementwise=False,
       forward=_var, vjps=(_var_vjp,), sympy=_var_symbolic,
       grad_fn="VarBackward0", shape=shapes.variance, domain=_REAL,
       attrs={"dim": Attr("dims?"), "unbiased": Attr("bool", True),
              "keepdim": Attr("bool", False), "correction": Attr("number?")},
       floating=True,
       bool_overload="unbiased",
       refuses_integers="std and var only support floating point and complex dtypes",
       warns=_degenerate_variance("var"),
       doc="The variance over ``dim``, divided by n - ``correction`` (default 1)."),
    Op(name="std", elementwise=False,
       forward=_std, vjps=(_std_vjp,), sympy=_std_symbolic,
       grad_fn="StdBackward0", shape=shapes.variance, domain=_REAL,
       attrs={"dim": Attr("dims?"), "unbiased": Attr("bool", True),
              "keepdim": Attr("bool", False), "correction": Attr("number?")},
       saves_output=True, floating=True,
       bool_overload="unbiased",
       refuses_integers="std and var only support floating point and complex dtypes",
       warns=_degenerate_variance("std"), kink="std'(x) = 0 where all elements are equal",
       doc="The standard deviation over ``dim``, with var's ``correction``."),
    Op(name="norm", elementwise=False,
       forward=_norm, vjps=(_norm_vjp,), sympy=_norm_symbolic,
       grad_fn="LinalgVectorNormBackward0", shape=shapes.vector_norm, domain=_REAL,
       # p None is PyTorch's default "fro", the 2-norm of the elements.
       attrs={"p": Attr("order?"), "dim": Attr("dims?"), "keepdim": Attr("bool", False)},
       saves_output=True, floating=True,
       refuses_integers="linalg.vector_norm: Expected a floating point or complex tensor as "
                        "input. Got {type}",
       kink="norm'(0) = 0, as PyTorch's backward masks it",
       doc="The 2-norm of all elements, or over ``dim``; its gradient is 0 at 0."),
    Op(name="matmul", operator="@", elementwise=False, tensors_only=True,
       refuses_operands=_matmul_dtypes,
       forward=np.matmul, vjps=(_matmul_vjp_a, _matmul_vjp_b), sympy=np.matmul,
       grad_fn=_matmul_grad_fn, tensor_grad_fn="MmBackward0",
       shape=shapes.matmul, domain=_REAL * 2,
       doc="The matrix product (1-D operands promoted, batch dimensions broadcast)."),
    # The shape rule runs on every call: NumPy would read any negative size as "infer".
    Op(name="reshape", elementwise=False, view=True,
       forward=_reshape,
       vjps=(lambda g, out, x, shape: g.reshape(x.shape),),
       sympy=_reshape, grad_fn=_reshape_grad_fn, tensor_grad_fn="ViewBackward0",
       shape=shapes.reshape, domain=_REAL,
       attrs={"shape": Attr("dims", required=True)}, saves=False,
       doc="The same values in a new shape (one size may be -1: inferred)."),
    Op(name="transpose", elementwise=False, view=True, strided=True,
       forward=_transpose, vjps=(lambda g, out, x, dim0, dim1: _transpose(g, dim0, dim1),),
       sympy=_transpose, grad_fn="TransposeBackward0",
       shape=shapes.transpose, domain=_REAL,
       attrs={"dim0": Attr("int", required=True), "dim1": Attr("int", required=True)},
       saves=False, doc="Dimensions ``dim0`` and ``dim1`` swapped."),
    Op(name="t", elementwise=False, view=True, strided=True,
       forward=_t, vjps=(lambda g, out, x: np.transpose(g),), sympy=_t, grad_fn="TBackward0",
       shape=shapes.t, domain=_REAL, saves=False,
       doc="A matrix transposed; a vector or a number as it is (at most two dimensions)."),
    Op(name="permute", elementwise=False, view=True, strided=True,
       forward=lambda x, dims: np.transpose(x, dims),
       vjps=(lambda g, out, x, dims: np.transpose(g, _inverse_permutation(dims)),),
       sympy=lambda x, dims: np.transpose(x, dims), grad_fn="PermuteBackward0",
       shape=shapes.permute, domain=_REAL,
       attrs={"dims": Attr("dims", required=True)}, saves=False,
       doc="The dimensions reordered: dimension ``i`` of the result is ``dims[i]`` of the input."),
    Op(name="squeeze", elementwise=False, view=True,
       forward=_reshaped_by(shapes.squeeze), vjps=(_back_to_input_shape,),
       sympy=_reshaped_by(shapes.squeeze), grad_fn=_squeeze_grad_fn,
       tensor_grad_fn="SqueezeBackward0", shape=shapes.squeeze, domain=_REAL,
       attrs={"dim": Attr("int|dims?")}, saves=False,
       doc="The dimensions of size 1 removed: all of them, or those among ``dim``."),
    Op(name="unsqueeze", elementwise=False, view=True,
       forward=_reshaped_by(shapes.unsqueeze), vjps=(_back_to_input_shape,),
       sympy=_reshaped_by(shapes.unsqueeze), grad_fn="UnsqueezeBackward0",
       shape=shapes.unsqueeze, domain=_REAL, attrs={"dim": Attr("int", required=True)},
       saves=False, doc="A dimension of size 1 inserted at ``dim``."),
    # Tensor writes the method: PyTorch returns the tensor itself when nothing is merged.
    Op(name="flatten", elementwise=False, view=True, method=False,
       forward=_reshaped_by(shapes.flatten), vjps=(_back_to_input_shape,),
       sympy=_reshaped_by(shapes.flatten), grad_fn=_reshape_grad_fn,
       tensor_grad_fn="ViewBackward0", shape=shapes.flatten, domain=_REAL,
       attrs={"start_dim": Attr("int", 0), "end_dim": Attr("int", -1)}, saves=False,
       doc="Dimensions ``start_dim`` to ``end_dim`` merged into one."),
    Op(name="select", elementwise=False, view=True, strided=True,
       forward=_select, vjps=(_select_vjp,), sympy=_select, grad_fn="SelectBackward0",
       shape=shapes.select, domain=_REAL,
       attrs={"dim": Attr("int", required=True), "index": Attr("int", required=True)},
       saves=False, doc="Element ``index`` along dimension ``dim``, that dimension removed."),
    # Indexing writes these two (``x[1:3]``, ``x[...]``); PyTorch has no function for either.
    Op(name="slice", elementwise=False, view=True, strided=True, public=False,
       forward=_slice, vjps=(_slice_vjp,), sympy=_slice, grad_fn="SliceBackward0",
       shape=shapes.slice_, domain=_REAL,
       attrs={"dim": Attr("int", 0), "start": Attr("int?"), "end": Attr("int?"),
              "step": Attr("int", 1)}, saves=False,
       doc="Every ``step``-th position from ``start`` to ``end`` along dimension ``dim``."),
    Op(name="alias", elementwise=True, view=True, public=False,
       forward=lambda x: x[...], vjps=(lambda g, out, x: g,), sympy=lambda x: x,
       grad_fn="AliasBackward0", shape=shapes.same, domain=_REAL, saves=False,
       doc="The same values, as a view of their own (``x[...]``)."),
    # Any number of inputs; the result's dtype is their promoted one.
    Op(name="cat", elementwise=False, variadic=True, operands=("tensors",),
       forward=_cat, vjps=(_cat_vjp,), sympy=_cat, grad_fn="CatBackward0",
       shape=shapes.cat, domain=_REAL, attrs={"dim": Attr("int", 0)}, saves=False,
       doc="The tensors joined along dimension ``dim``."),
    Op(name="stack", elementwise=False, variadic=True, operands=("tensors",),
       forward=_stack, vjps=(_stack_vjp,), sympy=_stack, grad_fn="StackBackward0",
       shape=shapes.stack, domain=_REAL, attrs={"dim": Attr("int", 0)}, saves=False,
       doc="The tensors, of one shape, stacked along a new dimension ``dim``."),
    # The value passes, nothing flows back; Tensor.detach also shares the version counter.
    Op(name="detach", stops_gradient=True, method=False, elementwise=True,
       forward=lambda x: x, vjps=(None,), sympy=lambda x: x, grad_fn=None,
       shape=shapes.broadcast, domain=_REAL, saves=False,
       doc="A new leaf sharing the input's values, out of the graph."),
)

TABLE: Mapping[str, Op] = {op.name: op for op in OPS}
# Python's operators by (operator, number of operands): the op each one writes.
OPERATORS: Mapping[tuple[str, int], str] = {(op.operator, op.arity): op.name for op in OPS
                                            if op.operator}


def get(name: str) -> Op:
    """The row for wire name ``name``; ``KeyError`` names the known ops."""
    try:
        return TABLE[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known ops: {', '.join(sorted(TABLE))}") from None
