"""What the service's use cases take and give, without wire types.

A command is a request decoded once (``serde.py``): every field read, enums and durations mapped,
tensors checked. Two parts stay encoded until the session is known, as the session decides how
they decode: a graph (its constants may take the session's dtype; a known graph is not decoded
at all) and PutLeaf's value (likewise). A result is what a use case computed, for an encoder to
turn into an ``Encoded`` answer; the service checks the answer's size before it commits or sends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
from crossgrad.engine.check import CheckMode
from crossgrad.engine.dtypes import DType
from crossgrad.engine.gradient_check import Result
from crossgrad.engine.graph import Graph

from .idempotency import Key
from .sessions import LeafState

R = TypeVar("R")


class Encoded(Protocol):
    """An answer as it goes on the wire (a protobuf message)."""

    def ByteSize(self) -> int: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


M = TypeVar("M", bound=Encoded)


@dataclass(frozen=True)
class Answer(Generic[R, M]):
    """How a change's result goes on the wire: ``encode`` builds the answer, ``decode`` reads a
    remembered one back from its bytes (a retried request_id's first answer)."""

    encode: Callable[[R], M]
    decode: Callable[[bytes], M]


class GraphSource(Protocol):
    """A request's graph, still encoded."""

    @property
    def key(self) -> bytes:
        """Its canonical bytes: equal graphs, equal keys."""
        ...

    def decode(self, default_dtype: DType) -> Graph:
        """The graph, a constant without a dtype taking ``default_dtype``."""
        ...

    def field_of(self, node: str) -> str:
        """The path of node ``node`` in the request (``graph.nodes[3]``; "" if none has it)."""
        ...


class TensorSource(Protocol):
    """A request's tensor, still encoded."""

    def decode(self, default_dtype: DType) -> np.ndarray:
        """The tensor, of ``default_dtype`` when the request names no dtype."""
        ...


# Commands and results are plain slotted dataclasses, not frozen ones: they are built on every
# call, and a frozen one takes three times as long to build.

# --- commands ------------------------------------------------------------------------------------

@dataclass(slots=True)
class CreateSession:
    dtype: DType
    check: CheckMode
    idle_ttl: float | None  # None: the store's default
    request_id: str | None


@dataclass(slots=True)
class GetSession:
    session_id: str


@dataclass(slots=True)
class DeleteSession:
    session_id: str
    request_id: str | None


@dataclass(slots=True)
class PutLeaf:
    session_id: str
    name: str
    value: TensorSource | None
    requires_grad: bool | None  # None: as it is (False for a new leaf)
    expected_version: int | None  # 0: the leaf must not exist yet
    key: Key | None


@dataclass(slots=True)
class GetLeaf:
    session_id: str
    name: str
    with_value: bool
    with_grad: bool
    as_values: bool


@dataclass(slots=True)
class ZeroGrad:
    session_id: str
    names: tuple[str, ...]  # empty: every leaf
    set_to_none: bool
    key: Key | None


@dataclass(slots=True)
class Evaluate:
    session_id: str
    graph: GraphSource
    nodes: tuple[str, ...]  # empty: the output
    as_values: bool


@dataclass(slots=True)
class Backward:
    session_id: str
    graph: GraphSource
    gradient: np.ndarray | None
    retain: tuple[str, ...]
    check: CheckMode | None  # None: the session's
    as_values: bool
    key: Key | None


@dataclass(slots=True)
class Differentiate:
    source: Graph | str  # a graph or a formula
    values: Mapping[str, np.ndarray]
    wrt: tuple[str, ...]  # empty: every leaf
    seed: np.ndarray | None
    check: CheckMode | None  # None: STRICT
    hessian: bool
    as_values: bool


# A Run's steps (``Run``): each a change of the session, applied in order. ``grads`` lists the
# leaves whose grads a step's graph reads (its ``grad`` nodes), found when it was decoded.

@dataclass(slots=True)
class CreateLeafStep:
    name: str
    value: TensorSource
    requires_grad: bool


@dataclass(slots=True)
class KeepStep:
    graph: GraphSource
    grads: tuple[str, ...]
    nodes: tuple[tuple[str, str], ...]  # (node id, new leaf name)


@dataclass(slots=True)
class UpdateLeafStep:
    leaf: str
    graph: GraphSource
    grads: tuple[str, ...]


@dataclass(slots=True)
class UpdateGradStep:
    leaf: str
    graph: GraphSource | None  # None: the grad becomes None
    grads: tuple[str, ...]


@dataclass(slots=True)
class SetRequiresGradStep:
    leaf: str
    requires_grad: bool


@dataclass(slots=True)
class ZeroGradStep:
    leaves: tuple[str, ...]  # empty: every leaf
    set_to_none: bool


@dataclass(slots=True)
class FreeStep:
    leaves: tuple[str, ...]


@dataclass(slots=True)
class BackwardStep:
    graph: GraphSource
    grads: tuple[str, ...]
    gradient: np.ndarray | None
    retain: tuple[str, ...]
    check: CheckMode | None  # None: the session's
    return_grads: bool
    grads_only: bool  # the gradients answered, no grad changed


@dataclass(slots=True)
class ReadStep:
    graph: GraphSource
    grads: tuple[str, ...]
    nodes: tuple[str, ...]  # empty: the output


Step = (CreateLeafStep | KeepStep | UpdateLeafStep | UpdateGradStep | SetRequiresGradStep
        | ZeroGradStep | FreeStep | BackwardStep | ReadStep)


@dataclass(slots=True)
class Run:
    session_id: str
    steps: tuple[tuple[str, Step], ...]  # (the step's field name, the step)
    as_values: bool
    key: Key | None


# --- results -------------------------------------------------------------------------------------

@dataclass(slots=True)
class PutLeafResult:
    name: str
    leaf: LeafState
    created: bool


@dataclass(slots=True)
class GetLeafResult:
    name: str
    leaf: LeafState
    with_value: bool
    with_grad: bool
    as_values: bool


@dataclass(slots=True)
class ZeroGradResult:
    leaves: Sequence[tuple[str, LeafState]]  # the leaves whose grad changed, by name


@dataclass(slots=True)
class NodeValue:
    id: str
    value: np.ndarray
    requires_grad: bool = False
    grad_fn: str = ""


@dataclass(slots=True)
class EvaluateResult:
    values: Sequence[NodeValue]
    as_values: bool


@dataclass(slots=True)
class BackwardResult:
    checked: Result  # the output's value, the check, the closed forms
    leaves: Mapping[str, LeafState]  # the leaves differentiated, their gradients accumulated
    retained: Mapping[str, np.ndarray]
    as_values: bool


@dataclass(slots=True)
class BackwardStepResult:
    result: BackwardResult
    return_grads: bool


@dataclass(slots=True)
class RunResult:
    results: Sequence[BackwardStepResult | EvaluateResult | None]  # per step


@dataclass(slots=True)
class DifferentiateResult:
    result: Result
    order: Sequence[str]  # the leaves answered, in order
    as_values: bool = False
