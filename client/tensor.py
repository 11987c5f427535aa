"""``Tensor`` over the service: PyTorch's semantics, values on the server, graphs built lazily.

A tensor knows its shape, dtype, ``requires_grad`` and leaf status without asking the server: the
op table's shape rules and PyTorch's promotion give them as each op is recorded, and PyTorch's
errors are raised there, on the line PyTorch raises them. Its value lives on the server: a leaf's
in a session leaf (``Storage``), an op result's as the expression over leaves that computes it.
A value crosses the wire only when it is read (repr, ``item``, ``tolist``, ``numpy``).

Autograd bookkeeping is the engine's, kept here on expressions instead of values: the version
counters that make a backward through a value changed in place fail as PyTorch's does, the saved
values a backward frees, ``retain_grad``. A backward is one call, with the steps queued before it.

A lazy value depends on the leaves it is computed from. Before one of them changes in place (an
optimizer step, ``zero_()``, a backward accumulating into a grad), every lazy tensor still alive
that reads it is kept on the server as it is (a ``Keep`` step, in the same call), so it keeps the
value PyTorch's eager tensor would have.
"""

from __future__ import annotations

import sys
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from crossgrad.engine import dtypes, indexing, shapes
from crossgrad.engine.backward_graph import SECOND_BACKWARD, legacy_type_name, modified_message
from crossgrad.engine.dtypes import DType, Size
from crossgrad.engine.errors import DTypeError, ShapeError, UsageError
from crossgrad.engine.grad_mode import _enabled
from crossgrad.engine.ops import ALL_DIMS, TABLE, Dims, Op
from crossgrad.engine.printing import format_tensor
from crossgrad.engine.refusals import (
    LEAF_IN_PLACE,
    NON_LEAF_GRAD,
    T_NOT_2D,
    T_ON_0D,
    VIEW_IN_PLACE,
    VIEW_OF_LEAF_IN_PLACE,
    data_dtype,
    python_attrs,
    require_tensor_input,  # noqa: F401  (for the generated functions)
    require_tensors,
    tensor_list,
)
from crossgrad.engine.reverse import (
    FLOAT_ONLY,
    NO_GRAD,
    NO_RETAIN_GRAD,
    initial_gradient,
    next_sequence,
    schedule,
)
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.wire.codec import check_report_from_proto

from . import context, wire
from .graphs import (
    before_change,
    build,
    keep,
    layout,
    non_finite_number,
    read_values,
    stale,
)
from .session import LastBackward, Session, Storage

Operand = Any  # a Tensor or a Python number

_NO_ATTRS: dict[str, Any] = {}  # shared by every call without attributes; never written


class Expr:
    """An op applied to tensors and Python numbers: how a lazy tensor's value is computed, and,
    when it requires grad, its ``grad_fn`` (PyTorch's backward node, as the engine's ``Node``).

    ``targets[i]`` is where operand ``i``'s gradient goes (its ``Expr``, a leaf ``Tensor``, or
    None); ``versions`` the operands' version counters when recorded; ``out_version`` the
    version counter of the tensor it made (which an in-place update of that tensor moves, even
    after the tensor took a new ``grad_fn``); ``freed`` once a backward without ``retain_graph``
    dropped what the op saved.
    """

    __slots__ = ("_name", "_out", "args", "attrs", "freed", "op", "out_meta", "out_version",
                 "seq", "targets", "versions")

    def __init__(self, op: Op, args: tuple[Operand, ...], attrs: dict[str, Any],
                 targets: tuple[Any, ...]) -> None:
        self.op = op
        self.args = args
        self.attrs = attrs
        self.targets = targets
        for a in args:
            if type(a) is Tensor:
                a._uses += 1
        self.versions = tuple(a._version[0] if type(a) is Tensor else 0 for a in args)
        self.freed = False
        self.out_version = [0]
        self.out_meta: tuple[np.dtype[Any], tuple[int, ...]] = (np.dtype(np.float32), ())
        # The tensor it made (for a name the server gives), weakly: the tensor holds its Expr,
        # and a cycle would keep both until the cyclic collector ran.
        self._out: weakref.ref[Tensor] | None = None
        self._name: str | None = None
        self.seq = next_sequence()  # PyTorch's sequence number: backward's order

    def __del__(self) -> None:
        for a in self.args:
            if type(a) is Tensor:
                a._uses -= 1

    def name(self) -> str:
        """PyTorch's name for this node, e.g. ``"PowBackward0"``."""
        if self._name is None:
            grad_fn = self.op.grad_fn
            if isinstance(grad_fn, str):
                self._name = grad_fn
            elif any(non_finite_number(a) for a in self.args):
                # The server sees such a number as a tensor (see build): the name is picked
                # here, by the same rule, which looks at which operands are numbers.
                self._name = grad_fn(_Named(self))
            elif (out := self.out) is not None:
                out._read()  # a name picked by the call: the server's, with the value
            if self._name is None:
                self._name = self.op.tensor_grad_fn
        return self._name

    @property
    def out(self) -> Tensor | None:
        return None if self._out is None else self._out()

    @out.setter
    def out(self, tensor: Tensor) -> None:
        self._out = weakref.ref(tensor)

    @property
    def next_functions(self) -> tuple[tuple[Any, int], ...]:
        return tuple((t if t is None or isinstance(t, Expr) else _AccumulateGrad(t), 0)
                     for t in self.targets)

    def __repr__(self) -> str:
        return f"<{self.name()} object at {id(self):#x}>"


class _Named:
    """What a grad_fn naming rule reads of a call, for an ``Expr`` (its values' shapes only)."""

    def __init__(self, expr: Expr) -> None:
        self.values = [a if type(a) is not Tensor else np.empty(a._shape, a._dtype.numpy)
                       for a in expr.args]
        self.out = np.empty(expr.out_meta[1], expr.out_meta[0])
        self.attrs = expr.attrs
        self.targets = expr.targets


class _AccumulateGrad:
    __slots__ = ("variable",)

    def __init__(self, variable: Tensor) -> None:
        self.variable = variable

    def name(self) -> str:
        return "torch::autograd::AccumulateGrad"


class Tensor:
    """A tensor of a crossgrad session, with PyTorch's autograd semantics.

    >>> x = tensor(5.0, requires_grad=True)
    >>> y = x ** 2
    >>> y.backward()          # one call to the service
    >>> x.grad
    tensor(10.)
    """

    __slots__ = ("__weakref__", "_base", "_deps", "_dtype", "_expr", "_grad", "_retains", "_serial",
                 "_session", "_shape", "_stamp", "_storage", "_uses", "_value", "_value_at",
                 "_version", "requires_grad")
    __array_priority__ = 1000

    def __init__(self, session: Session, shape: tuple[int, ...], dtype: DType, *,
                 storage: Storage | None = None, expr: Expr | None = None,
                 requires_grad: bool = False, value: np.ndarray | None = None) -> None:
        self._session = session
        self._shape = shape
        self._dtype = dtype
        self._storage = storage
        self._expr = expr
        self.requires_grad = requires_grad
        self._value = value
        self._value_at = storage.changed_at if storage is not None else 0
        self._version = [0]
        self._base: Tensor | None = None  # the tensor this one is a view of (Op.view)
        self._grad: Tensor | None = None
        self._retains = False
        self._uses = 0  # the live Exprs that hold it as an operand
        self._serial = next(session.serials)
        self._deps: frozenset[Storage]
        if expr is not None:
            expr.out = self
            expr.out_version, expr.out_meta = self._version, (dtype.numpy, shape)
            deps: frozenset[Storage] = frozenset()
            for a in expr.args:
                if type(a) is Tensor:
                    deps = deps | a._deps if deps else a._deps
            self._deps = deps
            self._stamp = session.clock
            if value is None:
                session.lazy[self._serial] = self
        else:
            self._deps = frozenset((storage,)) if storage is not None else frozenset()
            self._stamp = session.clock

    # --- what it is ------------------------------------------------------------------------

    @property
    def shape(self) -> Size:
        return Size(self._shape)

    def size(self, dim: int | None = None) -> Any:
        shape = self.shape
        return shape if dim is None else shape[shapes.normalize_dim(dim, len(shape))]

    def dim(self) -> int:
        return len(self._shape)

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def numel(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64))

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d tensor")
        return self._shape[0]

    @property
    def dtype(self) -> DType:
        return self._dtype

    def type(self) -> str:
        return legacy_type_name(np.empty(0, self._dtype.numpy))

    def is_floating_point(self) -> bool:
        return self._dtype.is_floating_point

    @property
    def is_leaf(self) -> bool:
        return not (self.requires_grad and self._expr is not None)

    @property
    def grad_fn(self) -> Expr | None:
        return self._expr if self.requires_grad else None

    @property
    def retains_grad(self) -> bool:
        return self._retains and not self.is_leaf

    @property
    def session(self) -> Session:
        """The session whose server holds this tensor's value."""
        return self._session

    @property
    def grad(self) -> Tensor | None:
        """The accumulated gradient; None (and PyTorch's warning) for a non-leaf not retained."""
        if not self.is_leaf:
            if not self._retains:
                warnings.warn(NON_LEAF_GRAD, UserWarning, stacklevel=2)
            return self._grad
        storage = self._storage
        if storage is None or not self._owns(storage):
            return self._grad
        return storage.grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of "
                                f"type {type(value).__name__}")
            if value.shape != self.shape:
                raise ShapeError(f"assigned grad has data of a different size: {value.shape} "
                                 f"vs. {self.shape}")
        storage = self._storage
        if not self.is_leaf or storage is None or not self._owns(storage):
            self._grad = value
            return
        old = storage.grad
        if old is not None:
            _keep_if_referenced(old)
        if value is None:
            if old is not None:
                self._session.queue(pb.Step(update_grad=pb.UpdateGrad(leaf=storage.name)),
                                    "x.grad = None")
            storage.grad = None
            return
        graph, _ = build(self._session, [value])
        self._session.ensure_created(storage)
        self._session.queue(pb.Step(update_grad=pb.UpdateGrad(leaf=storage.name, graph=graph)),
                            "x.grad = ...")
        storage.grad = _grad_tensor(self._session, storage, self)

    def _owns(self, storage: Storage) -> bool:
        # A leaf's grad is its own: a detached alias of the same storage has none.
        return storage.owner is not None and storage.owner() is self

    @property
    def closed_form(self) -> str:
        """Beyond torch: for a leaf's ``.grad``, the last backward's contribution to it in closed
        form, as SymPy prints it ("" when none was derived; ``last_check()`` says why)."""
        storage = self._storage
        return storage.closed_form if storage is not None and storage.grad_of else ""

    @property
    def latex(self) -> str:
        """The closed form (see ``closed_form``) as LaTeX."""
        storage = self._storage
        return storage.latex if storage is not None and storage.grad_of else ""

    @property
    def T(self) -> Tensor:
        if self.ndim != 2:
            warnings.warn(T_ON_0D if self.ndim == 0 else T_NOT_2D, UserWarning, stacklevel=2)
        return apply(TABLE["permute"], (self,), {"dims": tuple(range(self.ndim))[::-1]})

    # --- values ----------------------------------------------------------------------------

    def _read(self) -> np.ndarray:
        """The value, from the server unless already known (with the queued steps)."""
        value = self._value
        if value is not None and (self._storage is None
                                  or self._value_at == self._storage.changed_at):
            return value
        read_values(self._session, [self])
        assert self._value is not None
        return self._value

    def item(self) -> Any:
        if self.numel() != 1:
            raise UsageError(f"a Tensor with {self.numel()} elements cannot be converted "
                             "to Scalar")
        return self._read().reshape(()).item()

    def tolist(self) -> Any:
        return self._read().tolist()

    def numpy(self) -> np.ndarray:
        """The value as a NumPy array (a copy: the value lives on the server)."""
        if self.requires_grad:
            raise UsageError("Can't call numpy() on Tensor that requires grad. "
                             "Use tensor.detach().numpy() instead.")
        return np.array(self._read())

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def __float__(self) -> float:
        if self.requires_grad:
            warnings.warn("Converting a tensor with requires_grad=True to a scalar may lead to "
                          "unexpected behavior.\nConsider using tensor.detach() first.",
                          UserWarning, stacklevel=2)
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise UsageError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(self.item())

    def __iter__(self) -> Iterator[Tensor]:
        if not self._shape:
            raise TypeError("iteration over a 0-d tensor")
        return (_local(self._session, np.array(row)) for row in self._read())

    def __repr__(self) -> str:
        value = self._read()
        grad_fn = self.grad_fn
        return format_tensor(value, self._dtype, requires_grad=self.requires_grad,
                             grad_fn=grad_fn.name() if grad_fn is not None else None)

    __hash__ = object.__hash__

    # --- autograd --------------------------------------------------------------------------

    def backward(self, gradient: Operand | None = None, retain_graph: bool | None = None,
                 create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into each leaf's ``.grad``: one call to the service."""
        if create_graph:
            raise NotImplementedError("create_graph=True (higher-order gradients) is not "
                                      "supported; use crossgrad.client.hessian")
        seed = self._seed(gradient)
        backward(self, seed, bool(retain_graph))

    def _seed(self, gradient: Operand | None) -> np.ndarray | None:
        if not self.requires_grad:
            raise UsageError(NO_GRAD)
        value = gradient._read() if isinstance(gradient, Tensor) else gradient
        seed = initial_gradient(np.empty(self._shape, self._dtype.numpy), value)
        return None if gradient is None else np.asarray(seed)

    def retain_grad(self) -> None:
        if not self.requires_grad:
            raise UsageError(NO_RETAIN_GRAD)
        if not self.is_leaf:
            self._retains = True

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf:
            if not requires_grad:
                raise UsageError(
                    "you can only change requires_grad flags of leaf variables. If you want to "
                    "use a computed variable in a subgraph that doesn't require differentiation "
                    "use var_no_grad = var.detach().")
            return self
        if requires_grad and not self._dtype.is_floating_point:
            raise UsageError("only Tensors of floating point dtype can require gradients")
        flag = bool(requires_grad)
        storage = self._stored()
        if self._expr is not None:
            # A value computed without grad becomes a leaf of its own, kept where it is.
            self._expr, self._deps = None, frozenset((storage,))
            storage.owner = weakref.ref(self)
            self._session.lazy.pop(self._serial, None)
        if not self._owns(storage):
            if flag:
                raise NotImplementedError("requires_grad_() on a tensor that shares another "
                                          "leaf's values (detach()) is not supported; use "
                                          "tensor(t) for a leaf of its own")
            self.requires_grad = False
            return self
        if storage.requires_grad != flag:
            if storage.created:
                self._session.queue(pb.Step(set_requires_grad=pb.SetRequiresGrad(
                    leaf=storage.name, requires_grad=flag)), "requires_grad_()")
            storage.requires_grad = flag
        self.requires_grad = flag
        return self

    def _stored(self) -> Storage:
        """This tensor's value kept on the server (kept now if it is still only an expression)."""
        if self._storage is None:
            keep(self._session, [self])
        assert self._storage is not None
        return self._storage

    def detach(self) -> Tensor:
        """A tensor sharing this one's values (and version counter), out of the graph."""
        storage = self._storage
        if storage is None or (self._expr is not None and stale(self)):
            storage = self._stored()
        result = Tensor(self._session, self._shape, self._dtype, storage=storage,
                        value=self._value)
        result._value_at = self._value_at if self._storage is not None else storage.changed_at
        result._version = self._version
        return result

    # --- in-place updates ------------------------------------------------------------------

    def _in_place(self, op: Op, operand: Operand) -> Tensor:
        """``self = op(self, operand)`` keeping this object, as PyTorch's ``add_`` and friends."""
        recording = _enabled.get() and (self.requires_grad or _requires_grad(operand))
        if self._base is not None:
            self._refuse_in_place_on_view(recording)
        if recording and self.is_leaf and self.requires_grad:
            raise UsageError(LEAF_IN_PLACE)
        if recording:
            before = Tensor(self._session, self._shape, self._dtype, storage=self._storage,
                            expr=None, requires_grad=self.requires_grad, value=self._value)
            before._expr, before._deps, before._stamp = self._expr, self._deps, self._stamp
            before._value_at = self._value_at
            if self._expr is not None:
                self._expr.out = before
            result = apply(op, (before, operand))
            if result.shape != self.shape:
                raise ShapeError(f"output with shape {list(self.shape)} doesn't match the "
                                 f"broadcast shape {list(result.shape)}")
            self._adopt(result)
            self._version[0] += 1
            return self
        return self._overwrite(op, operand)

    def _adopt(self, result: Tensor) -> None:
        """Become ``result`` (an op applied to this tensor's old self), keeping this object."""
        self._expr, self._storage, self._value = result._expr, None, None
        self._deps, self._stamp, self.requires_grad = result._deps, result._stamp, True
        assert self._expr is not None
        self._expr.out = self
        self._session.lazy[self._serial] = self

    def _overwrite(self, op: Op | None, operand: Operand) -> Tensor:
        """Write ``op(self, operand)`` (None: zeros) over this tensor's value where the server
        keeps it, after the lazy tensors that read it are kept as they are."""
        if op is not None:
            out = _result_meta(op, (self, operand), _NO_ATTRS)
            if out[0] != self._shape:
                raise ShapeError(f"output with shape {list(self.shape)} doesn't match the "
                                 f"broadcast shape {list(out[0])}")
            if not np.can_cast(out[1].numpy, self._dtype.numpy, "same_kind"):
                raise DTypeError(f"result type {out[1]} can't be cast to the desired output "
                                 f"type {self._dtype}")
        session = self._session
        storage = self._stored()
        if op is None:
            # Zeros: a lone 0, which the server broadcasts to the leaf's shape (``x * 0`` would
            # keep NaN and inf).
            zero = 0.0 if self._dtype.is_floating_point else 0
            graph = pb.Graph(nodes=[pb.Node(id="n0", constant=wire.number(zero))], output="n0")
        else:
            with _grad_off():
                graph, _ = build(session, [apply(op, (self, operand))])
        session.ensure_created(storage)
        before_change(session, storage, self if self._expr is not None else None)
        if storage.grad_of is not None:
            step = pb.Step(update_grad=pb.UpdateGrad(leaf=storage.name, graph=graph))
        else:
            step = pb.Step(update=pb.UpdateLeaf(leaf=storage.name, graph=graph))
        session.queue(step, f"in-place {op.name if op else 'zero'}_()")
        self._value = None
        self._version[0] += 1
        return self

    def _refuse_in_place_on_view(self, recording: bool) -> None:
        base = self._base
        assert base is not None
        if recording and base.is_leaf and base.requires_grad:
            raise UsageError(VIEW_OF_LEAF_IN_PLACE)
        raise NotImplementedError(VIEW_IN_PLACE if recording else _VIEW_IN_PLACE_OVER_SERVICE)

    def zero_(self) -> Tensor:
        """Set every value to 0 in place (``x.grad.zero_()``)."""
        if self._base is not None:
            self._refuse_in_place_on_view(_enabled.get() and self.requires_grad)
        if _enabled.get() and self.requires_grad:
            if self.is_leaf:
                raise UsageError(LEAF_IN_PLACE)
            return self.mul_(0)
        storage = self._storage
        if storage is not None and storage.grad_of is not None:
            # A grad zeroed where it is: NaN and inf become 0 too, as PyTorch's zero_() does.
            before_change(self._session, storage)
            self._session.queue(pb.Step(zero_grad=pb.ZeroGradStep(leaves=[storage.name])),
                                "grad.zero_()")
            self._value = np.zeros(self._shape, self._dtype.numpy)
            self._value_at = storage.changed_at
            self._version[0] += 1
            return self
        return self._overwrite(None, 0)

    # --- operators and methods named after ops ----------------------------------------------

    def __pos__(self) -> Tensor:
        return self

    def view(self, *shape: Any) -> Tensor:
        """``reshape`` that refuses, as PyTorch's does, where it would have to copy."""
        result = self.reshape(*shape)
        stand_in = layout(self)
        if stand_in is not None and result.numel() > 1:
            assert result._expr is not None
            if not np.shares_memory(stand_in, TABLE["reshape"].forward(stand_in,
                                                                      **result._expr.attrs)):
                raise ShapeError("view size is not compatible with input tensor's size and "
                                 "stride (at least one dimension spans across two contiguous "
                                 "subspaces). Use .reshape(...) instead.")
        return result

    def __getitem__(self, key: Any) -> Tensor:
        """Basic indexing, as the ops PyTorch decomposes it into (``indexing.steps``)."""
        result = self
        for name, attrs in indexing.steps(key, self.shape):
            result = apply(TABLE[name], (result,), attrs)
        return result

    def __setitem__(self, key: Any, value: Any) -> None:
        raise NotImplementedError(indexing.ASSIGNMENT)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Dimensions ``start_dim`` to ``end_dim`` merged into one (op ``flatten``); this tensor
        itself where that merges nothing, as PyTorch returns it."""
        if (type(start_dim) is int and type(end_dim) is int  # else the call says what is wrong
                and shapes.flattens_nothing(tuple(self.shape), start_dim, end_dim)):
            return self
        return _call("flatten", (self,), {"start_dim": start_dim, "end_dim": end_dim})
    # --- generated: op-methods (scripts/generate_surface.py writes them from the op table) ---
    def add(self, other: Operand) -> Tensor:
        """Elementwise add (op ``add``; backward node ``AddBackward0``)."""
        return _binary("add", self, other)

    def __add__(self, other: Operand) -> Tensor:
        return _binary("add", self, other)

    def __radd__(self, other: Operand) -> Tensor:
        return _binary("add", other, self)

    def add_(self, other: Operand) -> Tensor:
        return self._in_place(TABLE["add"], other)

    __iadd__ = add_

    def sub(self, other: Operand) -> Tensor:
        """Elementwise sub (op ``sub``; backward node ``SubBackward0``)."""
        return _binary("sub", self, other)

    def __sub__(self, other: Operand) -> Tensor:
        return _binary("sub", self, other)

    def __rsub__(self, other: Operand) -> Tensor:
        return _binary("sub", other, self)

    def sub_(self, other: Operand) -> Tensor:
        return self._in_place(TABLE["sub"], other)

    __isub__ = sub_

    def mul(self, other: Operand) -> Tensor:
        """Elementwise mul (op ``mul``; backward node ``MulBackward0``)."""
        return _binary("mul", self, other)

    def __mul__(self, other: Operand) -> Tensor:
        return _binary("mul", self, other)

    def __rmul__(self, other: Operand) -> Tensor:
        return _binary("mul", other, self)

    def mul_(self, other: Operand) -> Tensor:
        return self._in_place(TABLE["mul"], other)

    __imul__ = mul_

    def div(self, other: Operand) -> Tensor:
        """Elementwise div (op ``div``; backward node ``DivBackward0``)."""
        return _binary("div", self, other)

    def __truediv__(self, other: Operand) -> Tensor:
        return _binary("div", self, other)

    def __rtruediv__(self, other: Operand) -> Tensor:
        return _binary("div", other, self)

    def div_(self, other: Operand) -> Tensor:
        return self._in_place(TABLE["div"], other)

    __itruediv__ = div_

    def neg(self) -> Tensor:
        """Elementwise neg (op ``neg``; backward node ``NegBackward0``)."""
        return _apply_unary(TABLE["neg"], self, _NO_ATTRS)

    def __neg__(self) -> Tensor:
        return _apply_unary(TABLE["neg"], self, _NO_ATTRS)

    def pow(self, exponent: Operand) -> Tensor:
        """Elementwise pow (op ``pow``; backward node ``PowBackward1``)."""
        return _binary("pow", self, exponent)

    def __pow__(self, exponent: Operand) -> Tensor:
        return _binary("pow", self, exponent)

    def __rpow__(self, exponent: Operand) -> Tensor:
        return _binary("pow", exponent, self)

    def maximum(self, other: Tensor) -> Tensor:
        """Elementwise maximum (op ``maximum``; backward node ``MaximumBackward0``)."""
        require_tensors("maximum", {"other": other}, Tensor)
        return _binary("maximum", self, other)

    def minimum(self, other: Tensor) -> Tensor:
        """Elementwise minimum (op ``minimum``; backward node ``MinimumBackward0``)."""
        require_tensors("minimum", {"other": other}, Tensor)
        return _binary("minimum", self, other)

    def atan2(self, other: Tensor) -> Tensor:
        """Elementwise atan2 (op ``atan2``; backward node ``Atan2Backward0``)."""
        require_tensors("atan2", {"other": other}, Tensor)
        return _binary("atan2", self, other)

    def gt(self, other: Operand) -> Tensor:
        """Elementwise ``input > other`` (greater than): a bool tensor without grad."""
        return _binary("gt", self, other)

    def __gt__(self, other: Operand) -> Tensor:
        return _compare("gt", self, other)

    def lt(self, other: Operand) -> Tensor:
        """Elementwise ``input < other`` (less than): a bool tensor without grad."""
        return _binary("lt", self, other)

    def __lt__(self, other: Operand) -> Tensor:
        return _compare("lt", self, other)

    def ge(self, other: Operand) -> Tensor:
        """Elementwise ``input >= other`` (greater than or equal): a bool tensor without grad."""
        return _binary("ge", self, other)

    def __ge__(self, other: Operand) -> Tensor:
        return _compare("ge", self, other)

    def le(self, other: Operand) -> Tensor:
        """Elementwise ``input <= other`` (less than or equal): a bool tensor without grad."""
        return _binary("le", self, other)

    def __le__(self, other: Operand) -> Tensor:
        return _compare("le", self, other)

    def eq(self, other: Operand) -> Tensor:
        """Elementwise ``input == other`` (equal): a bool tensor without grad."""
        return _binary("eq", self, other)

    def __eq__(self, other: Operand) -> Tensor:  # type: ignore[override]
        return _compare("eq", self, other)

    def ne(self, other: Operand) -> Tensor:
        """Elementwise ``input != other`` (not equal): a bool tensor without grad."""
        return _binary("ne", self, other)

    def __ne__(self, other: Operand) -> Tensor:  # type: ignore[override]
        return _compare("ne", self, other)

    def where(self, condition: Operand, other: Operand) -> Tensor:
        """``input`` where ``condition`` holds, else ``other`` (``condition`` a bool tensor)."""
        return _call("where", (condition, self, other), {})

    def exp(self) -> Tensor:
        """Elementwise exp (op ``exp``; backward node ``ExpBackward0``)."""
        return _apply_unary(TABLE["exp"], self, _NO_ATTRS)

    def log(self) -> Tensor:
        """Elementwise log (op ``log``; backward node ``LogBackward0``)."""
        return _apply_unary(TABLE["log"], self, _NO_ATTRS)

    def sin(self) -> Tensor:
        """Elementwise sin (op ``sin``; backward node ``SinBackward0``)."""
        return _apply_unary(TABLE["sin"], self, _NO_ATTRS)

    def cos(self) -> Tensor:
        """Elementwise cos (op ``cos``; backward node ``CosBackward0``)."""
        return _apply_unary(TABLE["cos"], self, _NO_ATTRS)

    def tan(self) -> Tensor:
        """Elementwise tan (op ``tan``; backward node ``TanBackward0``)."""
        return _apply_unary(TABLE["tan"], self, _NO_ATTRS)

    def tanh(self) -> Tensor:
        """Elementwise tanh (op ``tanh``; backward node ``TanhBackward0``)."""
        return _apply_unary(TABLE["tanh"], self, _NO_ATTRS)

    def sigmoid(self) -> Tensor:
        """Elementwise sigmoid (op ``sigmoid``; backward node ``SigmoidBackward0``)."""
        return _apply_unary(TABLE["sigmoid"], self, _NO_ATTRS)

    def relu(self) -> Tensor:
        """Elementwise relu (op ``relu``; backward node ``ReluBackward0``)."""
        return _apply_unary(TABLE["relu"], self, _NO_ATTRS)

    def abs(self) -> Tensor:
        """Elementwise abs (op ``abs``; backward node ``AbsBackward0``)."""
        return _apply_unary(TABLE["abs"], self, _NO_ATTRS)

    def sqrt(self) -> Tensor:
        """Elementwise sqrt (op ``sqrt``; backward node ``SqrtBackward0``)."""
        return _apply_unary(TABLE["sqrt"], self, _NO_ATTRS)

    def square(self) -> Tensor:
        """Elementwise square (op ``square``; backward node ``PowBackward0``)."""
        return _apply_unary(TABLE["square"], self, _NO_ATTRS)

    def log1p(self) -> Tensor:
        """Elementwise log1p (op ``log1p``; backward node ``Log1PBackward0``)."""
        return _apply_unary(TABLE["log1p"], self, _NO_ATTRS)

    def expm1(self) -> Tensor:
        """Elementwise expm1 (op ``expm1``; backward node ``Expm1Backward0``)."""
        return _apply_unary(TABLE["expm1"], self, _NO_ATTRS)

    def log2(self) -> Tensor:
        """Elementwise log2 (op ``log2``; backward node ``Log2Backward0``)."""
        return _apply_unary(TABLE["log2"], self, _NO_ATTRS)

    def log10(self) -> Tensor:
        """Elementwise log10 (op ``log10``; backward node ``Log10Backward0``)."""
        return _apply_unary(TABLE["log10"], self, _NO_ATTRS)

    def rsqrt(self) -> Tensor:
        """Elementwise rsqrt (op ``rsqrt``; backward node ``RsqrtBackward0``)."""
        return _apply_unary(TABLE["rsqrt"], self, _NO_ATTRS)

    def reciprocal(self) -> Tensor:
        """Elementwise reciprocal (op ``reciprocal``; backward node ``ReciprocalBackward0``)."""
        return _apply_unary(TABLE["reciprocal"], self, _NO_ATTRS)

    def sinh(self) -> Tensor:
        """Elementwise sinh (op ``sinh``; backward node ``SinhBackward0``)."""
        return _apply_unary(TABLE["sinh"], self, _NO_ATTRS)

    def cosh(self) -> Tensor:
        """Elementwise cosh (op ``cosh``; backward node ``CoshBackward0``)."""
        return _apply_unary(TABLE["cosh"], self, _NO_ATTRS)

    def asin(self) -> Tensor:
        """Elementwise asin (op ``asin``; backward node ``AsinBackward0``)."""
        return _apply_unary(TABLE["asin"], self, _NO_ATTRS)

    def acos(self) -> Tensor:
        """Elementwise acos (op ``acos``; backward node ``AcosBackward0``)."""
        return _apply_unary(TABLE["acos"], self, _NO_ATTRS)

    def atan(self) -> Tensor:
        """Elementwise atan (op ``atan``; backward node ``AtanBackward0``)."""
        return _apply_unary(TABLE["atan"], self, _NO_ATTRS)

    def asinh(self) -> Tensor:
        """Elementwise asinh (op ``asinh``; backward node ``AsinhBackward0``)."""
        return _apply_unary(TABLE["asinh"], self, _NO_ATTRS)

    def atanh(self) -> Tensor:
        """Elementwise atanh (op ``atanh``; backward node ``AtanhBackward0``)."""
        return _apply_unary(TABLE["atanh"], self, _NO_ATTRS)

    def erf(self) -> Tensor:
        """Elementwise erf (op ``erf``; backward node ``ErfBackward0``)."""
        return _apply_unary(TABLE["erf"], self, _NO_ATTRS)

    def sign(self) -> Tensor:
        """Elementwise sign (op ``sign``; backward node ``SignBackward0``)."""
        return _apply_unary(TABLE["sign"], self, _NO_ATTRS)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        """Limit values to ``[min, max]``; the gradient passes where ``min <= x <= max``."""
        return _call("clamp", (self,), {"min": min, "max": max})

    def sum(self, dim: Dims = ALL_DIMS, keepdim: bool = False) -> Tensor:
        """The sum of all elements, or over the dimensions ``dim``."""
        return _call("sum", (self,), {"dim": dim, "keepdim": keepdim})

    def mean(self, dim: Dims = ALL_DIMS, keepdim: bool = False) -> Tensor:
        """The mean of all elements, or over the dimensions ``dim``."""
        return _call("mean", (self,), {"dim": dim, "keepdim": keepdim})

    def prod(self, dim: int = ALL_DIMS, keepdim: bool = False) -> Tensor:
        """The product of all elements, or along the dimension ``dim``."""
        return _call("prod", (self,), {"dim": dim, "keepdim": keepdim})

    def amax(self, dim: Dims = ALL_DIMS, keepdim: bool = False) -> Tensor:
        """The maximum of all elements, or over the dimensions ``dim``."""
        return _call("amax", (self,), {"dim": dim, "keepdim": keepdim})

    def amin(self, dim: Dims = ALL_DIMS, keepdim: bool = False) -> Tensor:
        """The minimum of all elements, or over the dimensions ``dim``."""
        return _call("amin", (self,), {"dim": dim, "keepdim": keepdim})

    def max(self) -> Tensor:
        """The maximum of all elements; tied maxima share the gradient evenly."""
        return _apply_unary(TABLE["max"], self, _NO_ATTRS)

    def min(self) -> Tensor:
        """The minimum of all elements; tied minima share the gradient evenly."""
        return _apply_unary(TABLE["min"], self, _NO_ATTRS)

    def logsumexp(self, dim: Dims, keepdim: bool = False) -> Tensor:
        """log(sum(exp(x))) over the dimensions ``dim``, computed without overflow."""
        return _call("logsumexp", (self,), {"dim": dim, "keepdim": keepdim})

    def softmax(self, dim: int) -> Tensor:
        """exp(x) normalized to sum to 1 along ``dim``."""
        return _call("softmax", (self,), {"dim": dim})

    def log_softmax(self, dim: int) -> Tensor:
        """log(softmax(x)) along ``dim``, computed without overflow."""
        return _call("log_softmax", (self,), {"dim": dim})

    def var(
        self,
        dim: Dims = ALL_DIMS,
        unbiased: bool = True,
        keepdim: bool = False,
        correction: float | None = None,
    ) -> Tensor:
        """The variance over ``dim``, divided by n - ``correction`` (default 1)."""
        return _call(
            "var",
            (self,),
            {"dim": dim, "unbiased": unbiased, "keepdim": keepdim, "correction": correction},
        )

    def std(
        self,
        dim: Dims = ALL_DIMS,
        unbiased: bool = True,
        keepdim: bool = False,
        correction: float | None = None,
    ) -> Tensor:
        """The standard deviation over ``dim``, with var's ``correction``."""
        return _call(
            "std",
            (self,),
            {"dim": dim, "unbiased": unbiased, "keepdim": keepdim, "correction": correction},
        )

    def norm(
        self,
        p: float | str | None = None,
        dim: Dims = ALL_DIMS,
        keepdim: bool = False,
    ) -> Tensor:
        """The 2-norm of all elements, or over ``dim``; its gradient is 0 at 0."""
        return _call("norm", (self,), {"p": p, "dim": dim, "keepdim": keepdim})

    def matmul(self, other: Tensor) -> Tensor:
        """The matrix product (1-D operands promoted, batch dimensions broadcast)."""
        require_tensors("matmul", {"other": other}, Tensor)
        return _binary("matmul", self, other)

    def __matmul__(self, other: Operand) -> Tensor:
        if isinstance(other, (int, float, np.number)):
            return NotImplemented
        return _binary("matmul", self, other)

    def __rmatmul__(self, other: Operand) -> Tensor:
        if isinstance(other, (int, float, np.number)):
            return NotImplemented
        return _binary("matmul", other, self)

    def reshape(self, *shape: int | Sequence[int]) -> Tensor:
        """The same values in a new shape (one size may be -1: inferred)."""
        if not shape:
            raise TypeError('reshape() missing 1 required positional arguments: "shape"')
        return _call("reshape", (self,), {"shape": shape})

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """Dimensions ``dim0`` and ``dim1`` swapped."""
        return _call("transpose", (self,), {"dim0": dim0, "dim1": dim1})

    def t(self) -> Tensor:
        """A matrix transposed; a vector or a number as it is (at most two dimensions)."""
        return _apply_unary(TABLE["t"], self, _NO_ATTRS)

    def permute(self, *dims: int | Sequence[int]) -> Tensor:
        """The dimensions reordered: dimension ``i`` of the result is ``dims[i]`` of the input."""
        if not dims:
            raise TypeError('permute() missing 1 required positional arguments: "dims"')
        return _call("permute", (self,), {"dims": dims})

    def squeeze(self, dim: int | Sequence[int] = ALL_DIMS) -> Tensor:
        """The dimensions of size 1 removed: all of them, or those among ``dim``."""
        return _call("squeeze", (self,), {"dim": dim})

    def unsqueeze(self, dim: int) -> Tensor:
        """A dimension of size 1 inserted at ``dim``."""
        return _call("unsqueeze", (self,), {"dim": dim})

    def select(self, dim: int, index: int) -> Tensor:
        """Element ``index`` along dimension ``dim``, that dimension removed."""
        return _call("select", (self,), {"dim": dim, "index": index})
    # --- end generated: op-methods ---


# --- making tensors ------------------------------------------------------------------------------

def _requires_grad(operand: Operand) -> bool:
    return type(operand) is Tensor and operand.requires_grad


def _local(session: Session, value: np.ndarray, requires_grad: bool = False,
           name: str | None = None) -> Tensor:
    """A new leaf holding ``value``, created on the server when first used there."""
    storage = session.storage(value, requires_grad=requires_grad, name=name)
    result = Tensor(session, value.shape, dtypes.from_numpy(value.dtype), storage=storage,
                    requires_grad=requires_grad, value=value)
    storage.owner = weakref.ref(result)
    return result


def tensor(data: Any, dtype: DType | None = None, requires_grad: bool = False, *,
           name: str | None = None, session: Session | None = None) -> Tensor:
    """A new leaf holding a copy of ``data``, as ``torch.tensor`` (floats become float32, ints
    int64). Beyond torch: ``name``, the leaf's name on the server (closed forms show it);
    ``session``, the session to make it in (default: the current one)."""
    if isinstance(data, Tensor):
        data = data._read()
    target = dtype or data_dtype(data)
    value = np.array(data, dtype=target.numpy)
    if requires_grad and not target.is_floating_point:
        raise UsageError(FLOAT_ONLY)
    return _local(session or context.current(), value, requires_grad, name)


def _as_operand(value: Any) -> Operand:
    if type(value) in (float, int, bool) or isinstance(value, Tensor):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, list, tuple)):
        return tensor(value)
    raise TypeError(f"unsupported operand type: {type(value).__name__}")


def _binary(name: str, a: Operand, b: Operand) -> Tensor:
    if type(a) is not Tensor:
        a = _as_operand(a)
    if type(b) is not Tensor:
        b = _as_operand(b)
    return apply(TABLE[name], (a, b))


def _compare(name: str, a: Tensor, b: Any) -> Any:
    """A comparison operator: NotImplemented for an operand that is neither a tensor nor a number,
    so that Python falls back to identity (``x == None`` is False), as PyTorch's operators do."""
    if type(b) is not Tensor and not isinstance(b, (int, float, np.number, np.bool_)):
        return NotImplemented
    return _binary(name, a, b)


def _apply_unary(op: Op, a: Tensor, attrs: dict[str, Any]) -> Tensor:
    return apply(op, (a,), attrs)


def _call(name: str, operands: tuple[Operand, ...], args: dict[str, Any]) -> Tensor:
    op = TABLE[name]
    operands = tuple(o if type(o) is Tensor else _as_operand(o) for o in operands)
    if not args:  # no attributes (where): nothing to check or convert
        return apply(op, operands)
    return apply(op, operands, python_attrs(op, operands[0].dtype, args,
                                               operands[0]._shape))


def _call_variadic(name: str, operands: Sequence[Tensor], args: dict[str, Any]) -> Tensor:
    """Variadic op ``name`` called from Python with its operands as one sequence
    (``cat([a, b], dim=1)``)."""
    return _call(name, tensor_list(TABLE[name], operands, Tensor), args)


def _result_meta(op: Op, args: tuple[Operand, ...], attrs: Mapping[str, Any],
                 ) -> tuple[tuple[int, ...], DType]:
    """The shape and dtype of ``op`` on ``args``, by the table's shape rule and PyTorch's
    promotion; raises PyTorch's error for operands the op does not take."""
    tensors = [a for a in args if type(a) is Tensor]
    shape = op.shape(*[a._shape if type(a) is Tensor else () for a in args], **attrs)
    first = tensors[0]._dtype
    # The common case, typed without promotion: float tensors of one dtype, numbers that are
    # not bools (which some ops refuse).
    if first.is_floating_point and all(t._dtype is first for t in tensors) and not (
            (attrs and op.number_types(attrs)) or op.conditioned
            or any(type(a) is bool for a in args)):
        return tuple(shape), op.result_dtype(first)
    computed = op.computed_dtype([(a._dtype, len(a._shape)) if type(a) is Tensor else a
                                  for a in args], attrs)
    return tuple(shape), op.result_dtype(computed)


def apply(op: Op, args: tuple[Operand, ...], attrs: dict[str, Any] = _NO_ATTRS) -> Tensor:
    """Record ``op`` on tensors and Python numbers: the result's metadata now, its value lazily."""
    shape, dtype = _result_meta(op, args, attrs)
    session = next(a._session for a in args if type(a) is Tensor)
    for a in args:
        if type(a) is Tensor and a._session is not session:
            raise RuntimeError("tensors of two crossgrad sessions cannot be used in one op")
    vjps = op.vjps_for(len(args))
    records = _enabled.get() and any(type(a) is Tensor and a.requires_grad and vjp is not None
                                     for a, vjp in zip(args, vjps, strict=True))
    targets = tuple((a._expr if not a.is_leaf else a)
                    if records and type(a) is Tensor and a.requires_grad and vjp else None
                    for a, vjp in zip(args, vjps, strict=True))
    result = Tensor(session, shape, dtype, expr=Expr(op, args, attrs, targets),
                    requires_grad=records)
    if op.view:
        _share_storage(args[0], result)
    return result


# The engine writes through NumPy's views; the server keeps a view's values apart from its base's.
_VIEW_IN_PLACE_OVER_SERVICE = (
    "an in-place operation on a view (x[0], x.T, x.reshape(...)) is not supported over the "
    "service: the server keeps a view's values apart from its base's. Change the base, or "
    "compute the new tensor out of place (torch.where, torch.cat)")


def _share_storage(base: Tensor, view: Tensor) -> None:
    """A view shares its base's version counter where PyTorch's (and the engine's) shares its
    storage: always, but for a reshape that must copy a strided layout."""
    expr = view._expr
    assert expr is not None
    # A strided view (x.T, x[:, 0]) is always one; another may copy a strided base.
    if not expr.op.strided and (found := layout(base)) is not None and not np.may_share_memory(
            expr.op.forward(found, **expr.attrs), found):
        return
    view._version = base._version
    view._base = base if base._base is None else base._base


class _grad_off:
    """Grad mode off for recording an update's expression."""

    def __enter__(self) -> None:
        self._token = _enabled.set(False)

    def __exit__(self, *exc: object) -> None:
        _enabled.reset(self._token)


def _grad_tensor(session: Session, leaf: Storage, owner: Tensor) -> Tensor:
    return Tensor(session, owner._shape, owner._dtype, storage=session.grad_storage(leaf))


def _keep_if_referenced(grad: Tensor) -> None:
    """A leaf's grad tensor about to stop being its grad: kept as it is if anyone holds it."""
    if sys.getrefcount(grad) > 3:  # the caller's reference, the argument's and getrefcount's
        keep(grad._session, [grad])


# --- backward ------------------------------------------------------------------------------------

def _targets(expr: Expr) -> tuple[Any, ...]:
    return expr.targets


def _sequence(expr: Expr) -> int:
    return expr.seq


def check_graph(root: Tensor) -> list[Expr]:
    """The backward order below ``root``, checked as the engine checks it at backward time:
    freed saved values, operands changed in place since they were saved."""
    if root._expr is None or root.is_leaf:
        return []
    order = schedule(root._expr, _targets, Expr, _sequence)
    for expr in order:
        if expr.freed:
            raise UsageError(SECOND_BACKWARD)
        if expr.op.saves:
            for i, arg in enumerate(expr.args):
                if type(arg) is not Tensor:
                    continue
                changed = arg._version[0] != expr.versions[i]
                if changed and expr.op.saves_operand(i):
                    producer = arg.grad_fn
                    raise UsageError(modified_message(
                        arg._dtype.numpy, arg._shape,
                        producer.name() if producer is not None else None,
                        arg._version[0], expr.versions[i], arg._base is not None))
                if changed or (arg._storage is None and stale(arg)):
                    # PyTorch's backward reads what it saved; the service recomputes the
                    # forward from the operands, whose values are no longer those it saw.
                    raise RuntimeError(
                        f"crossgrad: {expr.op.name}'s backward needs the value of an operand "
                        "as it was before an in-place update; the service recomputes values, "
                        "so record the operation again after the update")
        if expr.op.saves_output and expr.out_version[0]:
            raise UsageError(modified_message(*expr.out_meta, expr.name(),
                                              expr.out_version[0], 0))
    return order


def backward(root: Tensor, seed: np.ndarray | None, retain_graph: bool,
             inputs: Sequence[Tensor] = ()) -> dict[int, pb.Tensor]:
    """``root.backward(seed)``: one Run with the queued steps; grads accumulate on the server.
    With ``inputs`` (``autograd.grad``), nothing accumulates: the gradients of ``inputs`` are
    answered, by ``id()`` of each input (absent: not reached)."""
    session = root._session
    order = check_graph(root)
    leaves: dict[int, Tensor] = {}
    retained: list[Tensor] = []
    for expr in order:
        out = expr.out
        if out is not None and ((out._retains and not inputs) or any(out is t for t in inputs)):
            retained.append(out)
        for target in expr.targets:
            if type(target) is Tensor:
                leaves[id(target)] = target
    if root.is_leaf:
        leaves[id(root)] = root
    if not inputs:
        for leaf in leaves.values():
            storage = leaf._stored()
            if storage.grad is not None:
                before_change(session, _grad_of(storage))
    graph, ids = build(session, [root, *retained], backward=True)
    step = pb.BackwardStep(graph=graph, retain=[ids[id(t)] for t in retained],
                           grads_only=bool(inputs))
    if seed is not None:
        step.gradient.CopyFrom(wire.tensor(seed))
    response = session.run([pb.Step(backward=step)]).results[0].backward
    if root._value is None and not stale(root):
        root._value = wire.array(response.output)
        session.lazy.pop(root._serial, None)
    if not retain_graph:
        for expr in order:
            if expr.op.saves:
                expr.freed = True
    if inputs:
        found = {id(t): response.retained[ids[id(t)]] for t in retained
                 if ids[id(t)] in response.retained}
        for answer in response.leaves:
            for t in inputs:
                if t.is_leaf and t._storage is not None and t._storage.name == answer.name:
                    found[id(t)] = answer.grad
        return found
    closed_forms, latex = {}, {}
    for answer in response.leaves:
        closed_forms[answer.name], latex[answer.name] = answer.closed_form, answer.latex
        found_storage = session.storages.get(answer.name)
        if found_storage is None:
            continue
        storage = found_storage
        owner = storage.owner() if storage.owner is not None else None
        if storage.grad is None and owner is not None:
            storage.grad = _grad_tensor(session, storage, owner)
        grad = storage.grad
        if grad is not None:
            grad._value = None
            assert grad._storage is not None
            grad._storage.closed_form, grad._storage.latex = answer.closed_form, answer.latex
    for t in retained:
        node = ids[id(t)]
        if node in response.retained:
            value = wire.array(response.retained[node])
            if t._grad is not None:
                value = t._grad._read() + value
            t._grad = _local(session, value)
    report = check_report_from_proto(response.check)
    session.last_backward = LastBackward(report, closed_forms, latex)
    return {}


def _grad_of(storage: Storage) -> Storage:
    grad = storage.grad
    assert grad is not None and grad._storage is not None
    return grad._storage
