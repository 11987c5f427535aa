"""server/service.py called directly, without gRPC: PutLeaf's rules, Backward's versioned
accumulation and its retry, request_id, commit points, answer sizes and the known-graph cache."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from crossgrad.engine import dtypes
from crossgrad.engine.check import CheckMode
from crossgrad.engine.dtypes import DType
from crossgrad.engine.errors import InvalidArgument, UsageError
from crossgrad.engine.graph import Constant, Graph, Leaf, Operation
from crossgrad.engine.leaves import REQUIRES_GRAD_FLOAT_ONLY
from crossgrad.engine.solver import Symbolic
from crossgrad.server import serde
from crossgrad.server.commands import (
    Answer,
    Backward,
    BackwardResult,
    CreateSession,
    GetLeaf,
    PutLeaf,
    PutLeafResult,
)
from crossgrad.server.config import Config
from crossgrad.server.errors import (
    BudgetExceeded,
    CallCancelled,
    CallExpired,
    RequestIdReused,
    SessionBusy,
    VersionMismatch,
)
from crossgrad.server.idempotency import Key
from crossgrad.server.memory_store import MemoryStore
from crossgrad.server.service import Service
from crossgrad.server.sessions import Change, LeafState, R
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.wire.errors import InvalidField

from .conftest import TEST_CONFIG
from .test_service import const, graph, leaf, op


class Active:
    """A call whose client waits, without a deadline."""

    def __init__(self, remaining: float | None = None, active: bool = True) -> None:
        self.remaining, self.active = remaining, active

    def time_remaining(self) -> float | None:
        return self.remaining

    def is_active(self) -> bool:
        return self.active

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


CALL = Active()


class Pickled:
    """An answer that is its result, pickled: the service needs no protobuf."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.payload = pickle.dumps(result)

    def ByteSize(self) -> int:
        return len(self.payload)

    def SerializeToString(self, *, deterministic: bool = False) -> bytes:
        return self.payload


PICKLED: Answer[Any, Pickled] = Answer(Pickled, lambda payload: Pickled(pickle.loads(payload)))


@dataclasses.dataclass
class Given:
    """A request's tensor, already decoded; records the dtype the service offered it."""

    value: np.ndarray
    offered: DType | None = None

    def decode(self, default_dtype: DType) -> np.ndarray:
        self.offered = default_dtype
        return self.value


@dataclasses.dataclass
class GraphOf:
    """A request's graph, already decoded, under a key of its own."""

    key: bytes
    graph: Graph

    def decode(self, default_dtype: DType) -> Graph:
        return self.graph


SQUARE = GraphOf(b"square", Graph((Leaf("x", "x"), Constant("two", np.float64(2.0)),
                                    Operation("y", "pow", ("x", "two"))), "y"))


@pytest.fixture(scope="module")
def symbolic() -> Iterator[Symbolic]:
    symbolic = Symbolic(TEST_CONFIG.caps)
    yield symbolic
    symbolic.close()


def make(symbolic: Symbolic, config: Config = TEST_CONFIG) -> tuple[Service, MemoryStore]:
    store = MemoryStore(config.store_config)
    return Service(config, store, symbolic), store


@pytest.fixture
def service(symbolic: Symbolic) -> Service:
    return make(symbolic)[0]


def session(service: Service, dtype: DType = dtypes.float32) -> str:
    return service.create_session(CreateSession(dtype, CheckMode.OFF, None, None), CALL).id


def put(service: Service, session_id: str, name: str = "x", value: Any = None,
        requires_grad: bool | None = None, expected_version: int | None = None, *,
        key: Key | None = None, call: Active = CALL) -> PutLeafResult:
    command = PutLeaf(session_id, name, None if value is None else Given(np.asarray(value)),
                      requires_grad, expected_version, key)
    result: PutLeafResult = service.put_leaf(command, call, PICKLED).result
    return result


def backward(service: Service, session_id: str, *, key: Key | None = None,
             call: Active = CALL) -> BackwardResult:
    command = Backward(session_id, SQUARE, None, (), None, False, key)
    result: BackwardResult = service.backward(command, call, PICKLED).result
    return result


def grad_list(leaf: LeafState) -> Any:
    return None if leaf.grad is None else leaf.grad.tolist()


def grad(service: Service, session_id: str, name: str = "x") -> Any:
    return grad_list(service.get_leaf(GetLeaf(session_id, name, True, True, False),
                                      Pickled).result.leaf)


# --- what PutLeaf may do to a leaf ---------------------------------------------------------------

def test_put_leaf_creates_a_leaf_and_counts_its_changes(service: Service) -> None:
    sid = session(service)
    created = put(service, sid, value=np.float32(2.0))
    assert created.created and created.leaf.version == 1 and not created.leaf.requires_grad
    changed = put(service, sid, value=np.float32(3.0), expected_version=1)
    assert not changed.created and changed.leaf.version == 2 and changed.leaf.value == 3.0
    assert put(service, sid, requires_grad=False).leaf.version == 2  # no change: same version
    assert put(service, sid, requires_grad=True).leaf.version == 3


def test_put_leaf_keeps_a_leafs_grad_and_dtype(service: Service) -> None:
    sid = session(service)
    put(service, sid, value=np.float32(3.0), requires_grad=True)
    backward(service, sid)
    updated = put(service, sid, value=np.float64(4.0)).leaf  # a float64 value, cast
    assert updated.value.dtype == np.float32 and updated.version == 2
    assert updated.grad is not None and updated.grad.tolist() == 6.0


def test_a_value_without_a_dtype_is_offered_the_sessions(service: Service) -> None:
    sid = session(service, dtypes.float64)
    value = Given(np.array([1.0, 2.0]))
    service.put_leaf(PutLeaf(sid, "w", value, None, None, None), CALL, PICKLED)
    assert value.offered is dtypes.float64


def test_put_leaf_refusals_change_nothing(service: Service) -> None:
    sid = session(service)
    put(service, sid, "n", np.array([1, 2], np.int64))
    put(service, sid, "f", np.zeros(2, np.float32))
    refusals: list[tuple[dict[str, Any], type[Exception], str]] = [
        (dict(name="i", value=np.int64(1), requires_grad=True), UsageError,
         REQUIRES_GRAD_FLOAT_ONLY),
        (dict(name="n", requires_grad=True), UsageError, REQUIRES_GRAD_FLOAT_ONLY),
        (dict(name="n", value=np.zeros(3, np.int64)), InvalidField,
         r"^value: leaf 'n' has shape \[2\]; the new value has shape \[3\]$"),
        (dict(name="n", value=np.zeros(2)), InvalidField,
         "^value: leaf 'n' is int64; a float64 value does not convert to it$"),
        (dict(name="f", value=np.full(2, 1e300)), InvalidField, "overflows it"),
        (dict(name="new"), InvalidField, "^value: leaf 'new' does not exist"),
        (dict(name="f"), InvalidArgument, "^PutLeaf changes nothing"),
        (dict(name="f", requires_grad=True, expected_version=0), VersionMismatch,
         "is at version 1, not the expected 0"),
        (dict(name=""), InvalidField, "^name: a leaf needs a name$"),
        (dict(name="x" * 1025), InvalidField, "^name: 1,025 characters"),
    ]
    for fields, error, message in refusals:
        with pytest.raises(error, match=message):
            put(service, sid, **fields)
    snapshot = service.get_session(serde.get_session_from_proto(
        pb.GetSessionRequest(session_id=sid)), Pickled).result
    assert sorted(snapshot.leaves) == ["f", "n"]
    assert [snapshot.leaves[n].version for n in ("f", "n")] == [1, 1]


def test_a_session_holds_at_most_max_leaves(symbolic: Symbolic) -> None:
    service, _ = make(symbolic, dataclasses.replace(TEST_CONFIG, max_leaves=2))
    sid = session(service)
    for name in "ab":
        put(service, sid, name, np.float32(1.0))
    put(service, sid, "a", np.float32(2.0))  # a change of a leaf it holds is no new leaf
    with pytest.raises(BudgetExceeded, match="holds 2 leaves") as refused:
        put(service, sid, "c", np.float32(1.0))
    assert refused.value.limit == "max_leaves"


# --- Backward: the versioned accumulation and its retry ------------------------------------------

def test_backward_accumulates_into_the_leaves(service: Service) -> None:
    sid = session(service)
    put(service, sid, value=np.float32(3.0), requires_grad=True)
    result = backward(service, sid)
    assert result.checked.value.tolist() == 9.0
    assert [(name, leaf.version, grad_list(leaf)) for name, leaf in result.leaves.items()] == [
        ("x", 1, 6.0)]
    backward(service, sid)
    assert grad(service, sid) == 12.0


def _raced(symbolic: Symbolic, monkeypatch: pytest.MonkeyPatch, times: int) -> tuple[Service, str]:
    """A session whose leaf x = 3 requires grad, and whose next ``times`` updates each find that
    a PutLeaf landed just before them: x gains 1."""
    service, store = make(symbolic)
    sid = session(service)
    put(service, sid, value=np.float32(3.0), requires_grad=True)
    update = store.update
    left = [times]

    def raced(session_id: str, change: Change[R], *args: Any, **kwargs: Any) -> R:
        if left[0]:
            left[0] -= 1
            update(session_id, lambda s: (s.with_leaves(
                {"x": s.leaves["x"].with_value(s.leaves["x"].value + 1)}), None))
        return update(session_id, change, *args, **kwargs)

    monkeypatch.setattr(store, "update", raced)
    return service, sid


def test_backward_computes_again_from_a_leaf_changed_under_it(
        symbolic: Symbolic, monkeypatch: pytest.MonkeyPatch) -> None:
    service, sid = _raced(symbolic, monkeypatch, 2)
    result = backward(service, sid)
    assert result.checked.value.tolist() == 25.0  # x = 5 after two changes
    assert (result.leaves["x"].version, grad_list(result.leaves["x"])) == (3, 10.0)


def test_backward_gives_up_when_the_leaves_keep_changing(
        symbolic: Symbolic, monkeypatch: pytest.MonkeyPatch) -> None:
    service, sid = _raced(symbolic, monkeypatch, 5)
    with pytest.raises(SessionBusy, match="changed under backward 5 times in a row"):
        backward(service, sid)
    assert grad(service, sid) is None


# --- request_id ----------------------------------------------------------------------------------

def test_a_retried_request_id_gets_its_first_answer_and_applies_once(service: Service) -> None:
    sid = session(service)
    put(service, sid, value=np.float32(3.0), requires_grad=True)
    key = Key("step-1", "the request's fingerprint")
    first = backward(service, sid, key=key)
    put(service, sid, value=np.float32(10.0))  # the session moves on
    again = backward(service, sid, key=key)
    assert again.checked.value.tolist() == first.checked.value.tolist() == 9.0
    assert grad(service, sid) == 6.0
    with pytest.raises(RequestIdReused):
        backward(service, sid, key=Key("step-1", "another request"))
    with pytest.raises(RequestIdReused):
        put(service, sid, value=np.float32(1.0), key=Key("step-1", "another request"))


# --- commit points and answer sizes --------------------------------------------------------------

@pytest.mark.parametrize(("call", "error"), [(Active(None, active=False), CallCancelled),
                                             (Active(0.0, active=False), CallExpired)])
def test_a_call_nobody_waits_for_commits_nothing(service: Service, call: Active,
                                                 error: type[Exception]) -> None:
    sid = session(service)
    put(service, sid, value=np.float32(3.0), requires_grad=True)
    with pytest.raises(error, match="nothing was changed"):
        backward(service, sid, call=call)
    with pytest.raises(error):
        put(service, sid, "y", np.float32(1.0), call=call)
    assert grad(service, sid) is None
    with pytest.raises(error):
        service.create_session(CreateSession(dtypes.float32, None, None, None), call)


def test_an_answer_past_the_message_limit_commits_nothing(symbolic: Symbolic) -> None:
    service, _ = make(symbolic, dataclasses.replace(TEST_CONFIG, max_message_bytes=4000))
    sid = session(service)
    put(service, sid, value=np.zeros(600, np.float32), requires_grad=True)  # 2.4 kB
    total = GraphOf(b"sum", Graph((Leaf("x", "x"), Operation("y", "sum", ("x",))), "y"))
    command = Backward(sid, total, None, (), None, True, None)  # as numbers: 4.8 kB of grad
    with pytest.raises(BudgetExceeded, match=r"message size limit of 4,000; nothing was changed$"):
        service.backward(command, CALL, PICKLED)
    assert grad(service, sid) is None
    with pytest.raises(BudgetExceeded, match=r"ask for the value and the grad one at a time"):
        service.get_leaf(GetLeaf(sid, "x", True, True, True), serde.get_leaf_to_proto)


# --- the known-graph cache is bounded in bytes ---------------------------------------------------

def test_executors_with_large_values_of_constants_are_not_kept(service: Service) -> None:
    sid = session(service)
    put(service, sid, value=np.float32(2.0), requires_grad=True)
    for size in (10, 300):  # [size, 1] * [1, size]: 400 B, then 360 kB, from a small graph
        column = const("a", np.ones((size, 1), np.float32))
        row = const("b", np.full((1, size), 2.0, np.float32))
        square = graph(leaf("x"), column, row, op("ab", "mul", "a", "b"), op("s", "sum", "ab"),
                       op("y", "mul", "x", "s"))
        command = serde.backward_from_proto(
            pb.BackwardRequest(session_id=sid, graph=square), TEST_CONFIG.limits)
        answer = service.backward(command, CALL, serde.BACKWARD)
        assert np.frombuffer(answer.leaves[0].grad.data, np.float32)[0] > 0
    kept = [known._executors._items for known in service._graphs._graphs._items.values()]
    assert [len(executors) for executors in kept] == [1, 0]


def test_graphs_with_large_constants_are_not_kept(service: Service) -> None:
    sid = session(service)
    put(service, sid, value=np.float32(2.0))
    small = graph(leaf("x"), const("c", 3.0), op("y", "mul", "x", "c"))
    for k in range(20):  # distinct 400 kB constants: each graph is new
        big = graph(leaf("x"), const("c", np.full(100_000, float(k), np.float32)),
                    op("y", "mul", "x", "c"))
        service.evaluate(serde.evaluate_from_proto(
            pb.EvaluateRequest(session_id=sid, graph=big), TEST_CONFIG.limits),
            serde.evaluate_to_proto)
    service.evaluate(serde.evaluate_from_proto(
        pb.EvaluateRequest(session_id=sid, graph=small), TEST_CONFIG.limits),
        serde.evaluate_to_proto)
    kept = [key for key, _ in service._graphs._graphs._items.items()]
    assert len(kept) == 1 and len(kept[0][0]) < 1024

