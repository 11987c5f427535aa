"""Run end to end, through a real server on a loopback port: a session's program of steps
(create, keep, update, update_grad, set_requires_grad, zero_grad, free, backward, read) applied
in order as one change, all of them or none, and where a failing step is reported."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc

from .conftest import TEST_CONFIG
from .test_reliability import details
from .test_service import array, const, graph, leaf, op, session_state, tensor

Stub = pb_grpc.AutogradServiceStub
F64 = np.float64

# --- building requests -------------------------------------------------------------------------


def values(value: Any) -> pb.Tensor:
    """A tensor in the values form, without a dtype: it takes the session's."""
    a = np.asarray(value, dtype=F64)
    return pb.Tensor(shape=a.shape, values=a.ravel().tolist())


def number(node_id: str, value: Any) -> pb.Node:
    """A constant in the values form (the session's dtype)."""
    return pb.Node(id=node_id, constant=values(value))


def grad(node_id: str, name: str) -> pb.Node:
    """The accumulated grad of session leaf ``name`` (``name.grad``), read by a Run's graph."""
    return pb.Node(id=node_id, grad=name)


def create(name: str, value: Any, requires_grad: bool = False) -> pb.Step:
    tensor_value = value if isinstance(value, pb.Tensor) else values(value)
    return pb.Step(create=pb.CreateLeaf(name=name, value=tensor_value,
                                        requires_grad=requires_grad))


def keep(g: pb.Graph, **kept: str) -> pb.Step:
    """Keeps node ``kept[leaf]`` of ``g`` as the new leaf ``leaf``."""
    return pb.Step(keep=pb.Keep(graph=g, nodes=[pb.KeptNode(node=node, leaf=name)
                                               for name, node in kept.items()]))


def update(name: str, g: pb.Graph) -> pb.Step:
    return pb.Step(update=pb.UpdateLeaf(leaf=name, graph=g))


def update_grad(name: str, g: pb.Graph | None = None) -> pb.Step:
    if g is None:
        return pb.Step(update_grad=pb.UpdateGrad(leaf=name))
    return pb.Step(update_grad=pb.UpdateGrad(leaf=name, graph=g))


def set_requires_grad(name: str, flag: bool) -> pb.Step:
    return pb.Step(set_requires_grad=pb.SetRequiresGrad(leaf=name, requires_grad=flag))


def zero_grad(*names: str, set_to_none: bool = False) -> pb.Step:
    return pb.Step(zero_grad=pb.ZeroGradStep(leaves=list(names), set_to_none=set_to_none))


def free(*names: str) -> pb.Step:
    return pb.Step(free=pb.FreeLeaves(leaves=list(names)))


def backward(g: pb.Graph, *, return_grads: bool = False, **extra: Any) -> pb.Step:
    return pb.Step(backward=pb.BackwardStep(graph=g, return_grads=return_grads, **extra))


def read(g: pb.Graph, *nodes: str) -> pb.Step:
    return pb.Step(read=pb.ReadStep(graph=g, nodes=list(nodes)))


def new_session(stub: Stub, dtype: pb.Dtype = pb.DTYPE_FLOAT64) -> str:
    return stub.CreateSession(pb.CreateSessionRequest(dtype=dtype)).session.id


def run(stub: Stub, session: str, *steps: pb.Step, **extra: Any) -> pb.RunResponse:
    return stub.Run(pb.RunRequest(session_id=session, steps=list(steps), **extra))


def failure_of(stub: Stub, session: str, *steps: pb.Step, **extra: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failure:
        run(stub, session, *steps, **extra)
    return failure.value


def get_leaf(stub: Stub, session: str, name: str) -> pb.Leaf:
    return stub.GetLeaf(pb.GetLeafRequest(session_id=session, name=name)).leaf


def value_of(stub: Stub, session: str, name: str) -> np.ndarray:
    return array(get_leaf(stub, session, name).value)


def grad_of(stub: Stub, session: str, name: str) -> np.ndarray | None:
    got = get_leaf(stub, session, name)
    return array(got.grad) if got.HasField("grad") else None


def snapshot(stub: Stub, session: str) -> tuple[pb.GetSessionResponse, list[pb.Leaf]]:
    """Everything a session holds: its settings, its leaf list, and each leaf in full."""
    state = session_state(stub, session)
    return state, [get_leaf(stub, session, info.name) for info in state.leaves]


def bad_field(error: grpc.RpcError) -> str:
    _, bad = details(error)
    assert bad is not None, "no BadRequest"
    (violation,) = bad.field_violations
    return violation.field


# loss = mean((w * x - y) ** 2), over leaves w, x and y
LOSS = graph(leaf("w"), leaf("x"), leaf("y"), op("wx", "mul", "w", "x"),
             op("r", "sub", "wx", "y"), const("two", 2.0), op("sq", "pow", "r", "two"),
             op("loss", "mean", "sq"))
SQUARE = graph(leaf("x"), const("two", 2.0), op("y", "pow", "x", "two"))


def sgd(name: str, lr: float) -> pb.Graph:
    """``name - lr * name.grad``: an optimizer step, computed where the grad is."""
    return graph(leaf(name), grad("g", name), const("lr", lr), op("step", "mul", "lr", "g"),
                 op("new", "sub", name, "step"))


# --- a training step ---------------------------------------------------------------------------

def test_a_backward_step_leaves_the_grads_on_the_server_without_returning_them(
        stub: Stub) -> None:
    session = new_session(stub)
    w, x, y = np.array([0.5, -1.0]), np.array([1.0, 2.0]), np.array([2.0, 1.0])
    answer = run(stub, session, create("w", w, requires_grad=True), create("x", x),
                 create("y", y), backward(LOSS))
    assert [r.WhichOneof("kind") for r in answer.results] == [None, None, None, "backward"]
    result = answer.results[3].backward
    assert array(result.output) == pytest.approx(np.mean((w * x - y) ** 2))  # 5.625
    (gradient,) = result.leaves  # x and y do not require grad
    assert (gradient.name, gradient.version) == ("w", 1)
    assert gradient.closed_form and gradient.latex
    assert not gradient.HasField("grad")
    np.testing.assert_allclose(np.asarray(grad_of(stub, session, "w")), (w * x - y) * x,
                               rtol=1e-12)  # [-1.5, -6.0]
    assert result.check.status == pb.CHECK_STATUS_AGREE


def test_an_optimizer_step_reads_the_grad_then_zero_grad_and_backward_again(stub: Stub) -> None:
    session = new_session(stub)
    w, x, y, lr = np.array([0.5, -1.0]), np.array([1.0, 2.0]), np.array([2.0, 1.0]), 0.1
    run(stub, session, create("w", w, requires_grad=True), create("x", x), create("y", y),
        backward(LOSS))
    first = (w * x - y) * x
    answer = run(stub, session, update("w", sgd("w", lr)), zero_grad(),
                 backward(LOSS, return_grads=True))
    stepped = w - lr * first  # [0.65, -0.4]
    (gradient,) = answer.results[2].backward.leaves
    assert (gradient.name, gradient.version) == ("w", 2)  # the update is a new version
    second = (stepped * x - y) * x  # from the zeroed grad: not added to the first
    np.testing.assert_allclose(array(gradient.grad), second, rtol=1e-12)
    assert array(answer.results[2].backward.output) == pytest.approx(
        np.mean((stepped * x - y) ** 2))
    got = get_leaf(stub, session, "w")
    np.testing.assert_allclose(array(got.value), stepped, rtol=1e-12)
    np.testing.assert_allclose(array(got.grad), second, rtol=1e-12)
    assert got.version == 2 and got.requires_grad


def test_backward_steps_in_one_run_accumulate_as_pytorch_does(stub: Stub) -> None:
    session = new_session(stub)
    answer = run(stub, session, create("x", 3.0, requires_grad=True),
                 backward(SQUARE, return_grads=True), backward(SQUARE, return_grads=True),
                 zero_grad("x"), backward(SQUARE, return_grads=True),
                 backward(SQUARE, return_grads=True))
    grads = [float(array(answer.results[i].backward.leaves[0].grad)) for i in (1, 2, 4, 5)]
    assert grads == [6.0, 12.0, 6.0, 12.0]
    assert grad_of(stub, session, "x") == 12.0


def test_a_whole_training_step_in_one_run_matches_its_hand_computation(stub: Stub) -> None:
    session = new_session(stub)
    w, x, y, lr = np.array([0.5, -1.0]), np.array([1.0, 2.0]), np.array([2.0, 1.0]), 0.1
    run(stub, session, create("w", w, requires_grad=True), create("x", x), create("y", y))
    for _ in range(3):  # forward + backward, optimizer step, zero_grad: one call each
        run(stub, session, backward(LOSS), update("w", sgd("w", lr)), zero_grad("w"))
        w = w - lr * (w * x - y) * x
    np.testing.assert_allclose(value_of(stub, session, "w"), w, rtol=1e-12)
    assert grad_of(stub, session, "w").tolist() == [0.0, 0.0]  # type: ignore[union-attr]
    assert get_leaf(stub, session, "w").version == 4


# --- all or none -------------------------------------------------------------------------------

def _setup(stub: Stub) -> str:
    session = new_session(stub)
    run(stub, session, create("w", [1.0, 2.0], requires_grad=True), create("x", [3.0, 4.0]),
        create("i", pb.Tensor(shape=[2], dtype=pb.DTYPE_INT64, values=[1, 2])),
        backward(graph(leaf("w"), leaf("x"), op("m", "mul", "w", "x"), op("s", "sum", "m"))))
    return session


# Steps that change every part of a session: a leaf created, a value updated, a grad updated,
# a requires_grad flag, a backward, a kept node, a freed leaf.
_CHANGES = [
    create("fresh", [5.0, 6.0], requires_grad=True),
    update("w", graph(leaf("w"), number("two", 2.0), op("m", "mul", "w", "two"))),
    update_grad("w", graph(grad("g", "w"), number("half", 0.5), op("m", "mul", "g", "half"))),
    set_requires_grad("x", True),
    backward(graph(leaf("w"), leaf("x"), op("m", "mul", "w", "x"), op("s", "sum", "m"))),
    keep(graph(leaf("w"), op("s", "sin", "w")), kept="s"),
    free("i"),
    zero_grad("x"),
]
_LAST = len(_CHANGES)  # the index of the failing step


@pytest.mark.parametrize(("failing", "code", "reason", "field"), [
    (read(graph(leaf("nobody"), op("y", "sin", "nobody"))), grpc.StatusCode.NOT_FOUND,
     "LEAF_NOT_FOUND", None),
    (update("w", graph(grad("g", "fresh"))),  # "fresh" was created without a grad
     grpc.StatusCode.FAILED_PRECONDITION, "USAGE_ERROR", None),
    (update("w", graph(number("c", [1.0, 2.0, 3.0]))), grpc.StatusCode.INVALID_ARGUMENT,
     "SHAPE_MISMATCH", f"steps[{_LAST}].update"),
    (update("x", graph(leaf("x"), op("y", "frobnicate", "x"))),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", f"steps[{_LAST}].update"),
    (create("w", [0.0, 0.0]), grpc.StatusCode.ABORTED, "VERSION_MISMATCH", None),
    (free("i"), grpc.StatusCode.NOT_FOUND, "LEAF_NOT_FOUND", None),  # freed by a step before
], ids=["unknown leaf", "grad of a leaf whose grad is None", "update that does not broadcast",
        "unknown op", "create of an existing name", "free of a freed leaf"])
def test_a_run_whose_last_step_fails_changes_nothing(
        stub: Stub, failing: pb.Step, code: grpc.StatusCode, reason: str,
        field: str | None) -> None:
    session = _setup(stub)
    before = snapshot(stub, session)
    failure = failure_of(stub, session, *_CHANGES, failing)
    assert failure.code() is code, failure.details()
    info, bad = details(failure)
    assert info.reason == reason
    assert info.metadata["step"] == str(_LAST)
    if field is None:
        assert bad is None
    else:
        assert bad is not None and bad.field_violations[0].field.startswith(field), bad
    assert snapshot(stub, session) == before
    # The same steps without the failing one apply, all of them.
    run(stub, session, *_CHANGES)
    after = session_state(stub, session)
    assert [leaf.name for leaf in after.leaves] == ["fresh", "kept", "w", "x"]
    assert get_leaf(stub, session, "w").version == 2


def test_the_failing_step_is_named_by_its_index_wherever_it_is(stub: Stub) -> None:
    session = _setup(stub)
    before = snapshot(stub, session)
    for index in range(3):
        steps = [zero_grad()] * index + [update("w", graph(number("c", [1.0, 2.0, 3.0]))),
                                         zero_grad()]
        failure = failure_of(stub, session, *steps)
        info, _ = details(failure)
        assert info.metadata["step"] == str(index)
        assert bad_field(failure) == f"steps[{index}].update"
        assert info.metadata["pythonException"] == "RuntimeError"
    assert snapshot(stub, session) == before


def test_a_failing_step_of_a_run_with_a_request_id_is_not_remembered(stub: Stub) -> None:
    session = new_session(stub)
    request = pb.RunRequest(session_id=session, request_id="try",
                            steps=[create("x", 3.0, requires_grad=True), free("nobody")])
    with pytest.raises(grpc.RpcError) as failure:
        stub.Run(request)
    assert failure.value.code() is grpc.StatusCode.NOT_FOUND
    del request.steps[1]  # the same request_id, now a request that succeeds: never answered
    stub.Run(request)
    assert [info.name for info in session_state(stub, session).leaves] == ["x"]


# --- keep and free -----------------------------------------------------------------------------

def test_kept_node_values_are_new_leaves_that_do_not_require_grad(stub: Stub) -> None:
    session = new_session(stub)
    w = np.array([0.5, 1.5])
    run(stub, session, create("w", w, requires_grad=True), backward(
        graph(leaf("w"), const("two", 2.0), op("p", "pow", "w", "two"), op("s", "sum", "p"))))
    g = graph(leaf("w"), op("sin", "sin", "w"), grad("dw", "w"), op("both", "add", "sin", "dw"))
    answer = run(stub, session, keep(g, kept_sin="sin", kept_grad="dw", kept_w="w"),
                 read(graph(leaf("kept_sin"), leaf("kept_grad"), op("m", "mul", "kept_sin",
                                                                       "kept_grad"))))
    # Leaves kept by a step are read by the steps after it, in the same call.
    np.testing.assert_allclose(array(answer.results[1].read.values[0].value),
                               np.sin(w) * 2 * w, rtol=1e-12)
    assert not answer.results[1].read.values[0].requires_grad
    for name, expected in (("kept_sin", np.sin(w)), ("kept_grad", 2 * w), ("kept_w", w)):
        kept = get_leaf(stub, session, name)
        np.testing.assert_allclose(array(kept.value), expected, rtol=1e-12)
        assert not kept.requires_grad and not kept.HasField("grad") and kept.version == 1
    # Kept values are copies: the leaves they came from move on without them.
    run(stub, session, update("w", graph(number("zero", 0.0))))
    np.testing.assert_allclose(value_of(stub, session, "kept_w"), w)
    evaluated = stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=graph(
        leaf("kept_sin"), op("c", "cos", "kept_sin"))))
    assert not evaluated.values[0].requires_grad and evaluated.values[0].grad_fn == ""


def test_keep_refuses_a_name_already_taken(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("x", [1.0, 2.0]))
    before = snapshot(stub, session)
    failure = failure_of(stub, session, keep(graph(leaf("x"), op("s", "sin", "x")), a="s", x="x"))
    assert failure.code() is grpc.StatusCode.ABORTED
    assert details(failure)[0].metadata["step"] == "0"
    assert snapshot(stub, session) == before  # "a", kept first, is not kept either


def test_free_removes_leaves_and_a_later_step_cannot_use_them(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("a", 1.0, requires_grad=True), create("b", 2.0),
        create("c", 3.0), backward(graph(leaf("a"), op("s", "sin", "a"))))
    run(stub, session, free("a", "c"))
    assert [info.name for info in session_state(stub, session).leaves] == ["b"]
    with pytest.raises(grpc.RpcError) as gone:
        get_leaf(stub, session, "a")
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND
    failure = failure_of(stub, session, free("b"), read(graph(leaf("b"))))
    assert failure.code() is grpc.StatusCode.NOT_FOUND
    info, _ = details(failure)
    assert (info.metadata["step"], info.metadata["leaf"]) == ("1", "b")
    assert [info.name for info in session_state(stub, session).leaves] == ["b"]


def test_free_of_an_unknown_leaf_is_not_found(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("a", 1.0))
    before = snapshot(stub, session)
    failure = failure_of(stub, session, free("a", "nobody"))
    assert failure.code() is grpc.StatusCode.NOT_FOUND
    info, _ = details(failure)
    assert (info.reason, info.metadata["leaf"], info.metadata["step"]) == (
        "LEAF_NOT_FOUND", "nobody", "0")
    assert snapshot(stub, session) == before  # "a" is not freed either


def test_a_freed_name_may_be_created_again_with_another_shape(stub: Stub) -> None:
    session = new_session(stub)
    g = graph(leaf("x"), op("s", "sum", "x"))
    run(stub, session, create("x", [1.0, 2.0]), read(g))  # the graph is known for shape [2]
    answer = run(stub, session, free("x"), create("x", [1.0, 2.0, 3.0]), read(g))
    assert float(array(answer.results[2].read.values[0].value)) == 6.0
    assert get_leaf(stub, session, "x").version == 1


# --- grads, requires_grad ----------------------------------------------------------------------

def test_update_grad_with_a_graph_replaces_the_grad_and_keeps_the_version(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("w", [1.0, 3.0], requires_grad=True),
        backward(graph(leaf("w"), const("two", 2.0), op("p", "pow", "w", "two"),
                       op("s", "sum", "p"))))  # grad 2w = [2, 6]
    version = get_leaf(stub, session, "w").version
    run(stub, session, update_grad("w", graph(grad("g", "w"), number("half", 0.5),
                                              op("m", "mul", "g", "half"))))
    got = get_leaf(stub, session, "w")
    assert array(got.grad).tolist() == [1.0, 3.0] and got.version == version
    # A scalar broadcasts to the leaf's shape, as an in-place fill does.
    run(stub, session, update_grad("w", graph(number("c", 7.0))))
    assert grad_of(stub, session, "w").tolist() == [7.0, 7.0]  # type: ignore[union-attr]


def test_update_grad_without_a_graph_sets_the_grad_to_none(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("w", 2.0, requires_grad=True), backward(
        graph(leaf("w"), op("s", "sin", "w"))))
    assert session_state(stub, session).leaves[0].has_grad
    run(stub, session, update_grad("w"))
    (info,) = session_state(stub, session).leaves
    assert not info.has_grad and info.version == 1
    assert grad_of(stub, session, "w") is None
    # Then a grad node of it is refused, as a graph cannot read None.
    failure = failure_of(stub, session, read(graph(grad("g", "w"))))
    assert failure.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert details(failure)[0].metadata["pythonException"] == "RuntimeError"


def test_update_grad_gives_a_grad_to_a_leaf_without_one(stub: Stub) -> None:
    session = new_session(stub)
    answer = run(stub, session, create("w", [1.0, 2.0], requires_grad=True),
                 update_grad("w", graph(leaf("w"), number("three", 3.0),
                                        op("m", "mul", "w", "three"))),
                 backward(graph(leaf("w"), op("s", "sum", "w")), return_grads=True))
    # The backward accumulates into the grad the step before set: [3, 6] + [1, 1].
    assert array(answer.results[2].backward.leaves[0].grad).tolist() == [4.0, 7.0]


def test_set_requires_grad_bumps_the_version_when_the_flag_changes(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("x", 2.0))
    run(stub, session, set_requires_grad("x", True))
    got = get_leaf(stub, session, "x")
    assert got.requires_grad and got.version == 2
    run(stub, session, set_requires_grad("x", True))  # no change: the same version
    assert get_leaf(stub, session, "x").version == 2
    answer = run(stub, session, backward(SQUARE, return_grads=True), set_requires_grad("x", False))
    assert array(answer.results[0].backward.leaves[0].grad) == 4.0
    got = get_leaf(stub, session, "x")
    assert not got.requires_grad and got.version == 3
    assert array(got.grad) == 4.0  # the grad stays, as requires_grad_(False) keeps it
    failure = failure_of(stub, session, backward(SQUARE))
    assert failure.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert failure.details() == ("element 0 of tensors does not require grad and does not have "
                                 "a grad_fn")


def test_an_integer_leaf_refuses_to_require_grad(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("i", pb.Tensor(shape=[2], dtype=pb.DTYPE_INT64, values=[1, 2])))
    before = snapshot(stub, session)
    failure = failure_of(stub, session, zero_grad(), set_requires_grad("i", True))
    assert failure.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert failure.details() == "only Tensors of floating point dtype can require gradients"
    info, _ = details(failure)
    assert (info.reason, info.metadata["step"], info.metadata["pythonException"]) == (
        "USAGE_ERROR", "1", "RuntimeError")
    assert snapshot(stub, session) == before
    run(stub, session, set_requires_grad("i", False))  # what it already is: allowed, no change
    assert snapshot(stub, session) == before
    failure = failure_of(stub, session, create("j", pb.Tensor(
        shape=[1], dtype=pb.DTYPE_INT64, values=[1]), requires_grad=True))
    assert failure.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert snapshot(stub, session) == before


def test_zero_grad_set_to_none_and_of_named_leaves(stub: Stub) -> None:
    session = new_session(stub)
    both = graph(leaf("a"), leaf("b"), op("m", "mul", "a", "b"))
    run(stub, session, create("a", 2.0, requires_grad=True), create("b", 3.0, requires_grad=True),
        create("c", 1.0, requires_grad=True), backward(both), zero_grad("a"))
    assert (grad_of(stub, session, "a"), grad_of(stub, session, "b")) == (0.0, 2.0)
    assert grad_of(stub, session, "c") is None  # zero_grad of every leaf skips it
    run(stub, session, zero_grad(set_to_none=True))
    assert [info.has_grad for info in session_state(stub, session).leaves] == [False] * 3


# --- updates -----------------------------------------------------------------------------------

def test_update_broadcasts_and_casts_to_the_leaf_and_keeps_its_grad(stub: Stub) -> None:
    session = new_session(stub, pb.DTYPE_FLOAT32)
    run(stub, session, create("w", [1.0, 2.0], requires_grad=True),
        backward(graph(leaf("w"), op("s", "sum", "w"))))
    # A float64 scalar into a float32 leaf of shape [2] (x.fill_(2.5)).
    run(stub, session, update("w", graph(pb.Node(id="c", constant=tensor(2.5, F64)))))
    got = get_leaf(stub, session, "w")
    assert array(got.value).dtype == np.float32 and array(got.value).tolist() == [2.5, 2.5]
    assert array(got.grad).tolist() == [1.0, 1.0] and got.requires_grad and got.version == 2


def test_update_reads_the_session_as_the_steps_before_left_it(stub: Stub) -> None:
    session = new_session(stub)
    double = graph(leaf("x"), number("two", 2.0), op("m", "mul", "x", "two"))
    answer = run(stub, session, create("x", 1.0), update("x", double), update("x", double),
                 read(graph(leaf("x"))))
    assert float(array(answer.results[3].read.values[0].value)) == 4.0
    assert get_leaf(stub, session, "x").version == 3


def test_update_refuses_a_float_value_for_an_integer_leaf(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("i", pb.Tensor(shape=[2], dtype=pb.DTYPE_INT64, values=[1, 2])))
    before = snapshot(stub, session)
    failure = failure_of(stub, session, update("i", graph(number("c", 1.5))))
    assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT
    info, _ = details(failure)
    assert (info.reason, info.metadata["pythonException"]) == ("DTYPE_MISMATCH", "TypeError")
    assert bad_field(failure).startswith("steps[0].update")
    assert snapshot(stub, session) == before


def test_a_run_takes_nan_and_infinities_as_a_program_makes_them(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("w", [1.0, 2.0], requires_grad=True))
    # log(-1): a diverging step computes NaN, and the leaf takes it.
    run(stub, session, update("w", graph(number("minus", -1.0), op("l", "log", "minus"))))
    got = get_leaf(stub, session, "w")
    assert np.isnan(array(got.value)).all() and got.version == 2
    # A program's tensors and seeds may hold them too, as PyTorch's may.
    inf = float("inf")
    answer = run(stub, session, create("n", [1.0, inf, float("nan")], requires_grad=True),
                 create("c", -inf),
                 backward(graph(leaf("n"), leaf("c"), op("m", "mul", "n", "c"),
                                op("s", "sum", "m"))),
                 read(graph(leaf("n"))))
    np.testing.assert_array_equal(array(answer.results[3].read.values[0].value),
                                  [1.0, inf, float("nan")])
    np.testing.assert_array_equal(array(get_leaf(stub, session, "n").grad), [-inf] * 3)
    # Constants stay finite: a graph's constants are part of its closed form.
    failure = failure_of(stub, session, read(graph(number("c", inf))))
    assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT
    # PutLeaf keeps its rule: a client's value there must be finite.
    with pytest.raises(grpc.RpcError) as put:
        stub.PutLeaf(pb.PutLeafRequest(session_id=session, name="p", value=values([1.0, inf])))
    assert put.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(put.value).startswith("value")


# --- reads -------------------------------------------------------------------------------------

def test_read_answers_values_requires_grad_and_grad_fn(stub: Stub) -> None:
    session = new_session(stub)
    g = graph(leaf("x"), const("two", 2.0), op("y", "pow", "x", "two"), op("z", "sin", "y"))
    answer = run(stub, session, create("x", 3.0, requires_grad=True), read(g),
                 read(g, "y", "x", "two"))
    (z,) = answer.results[1].read.values
    assert (z.id, z.requires_grad, z.grad_fn) == ("z", True, "SinBackward0")
    assert float(array(z.value)) == pytest.approx(np.sin(9.0))
    y, x, two = answer.results[2].read.values
    assert (y.id, y.requires_grad, y.grad_fn, float(array(y.value))) == (
        "y", True, "PowBackward0", 9.0)
    assert (x.id, x.requires_grad, x.grad_fn, float(array(x.value))) == ("x", True, "", 3.0)
    assert (two.id, two.requires_grad, two.grad_fn) == ("two", False, "")
    assert get_leaf(stub, session, "x").version == 1  # reading changes nothing


def test_grads_are_read_through_grad_nodes_as_values_without_grad(stub: Stub) -> None:
    session = new_session(stub)
    answer = run(stub, session, create("x", [1.0, -2.0], requires_grad=True),
                 backward(graph(leaf("x"), const("two", 2.0), op("p", "pow", "x", "two"),
                                op("s", "sum", "p"))),
                 read(graph(leaf("x"), grad("g", "x"), op("m", "mul", "x", "g")), "g", "m"),
                 answer_as_values=True)
    g, m = answer.results[2].read.values
    assert list(g.value.values) == [2.0, -4.0]  # 2x
    assert not g.requires_grad and g.grad_fn == ""
    assert list(m.value.values) == [2.0, 8.0]  # x * 2x: tracked through x only
    assert m.requires_grad and m.grad_fn == "MulBackward0"


def test_a_read_asking_for_a_node_twice_is_refused_at_its_field(stub: Stub) -> None:
    session = new_session(stub)
    failure = failure_of(stub, session, create("x", 1.0), read(SQUARE, "y", "y"))
    assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(failure) == "steps[1].read.nodes"
    assert session_state(stub, session).leaves == []


# --- grad nodes outside Run, names -------------------------------------------------------------

def test_grad_nodes_are_refused_outside_run(stub: Stub) -> None:
    session = new_session(stub)
    g = graph(leaf("x"), grad("g", "x"), op("m", "mul", "x", "g"), op("s", "sum", "m"))
    # Known to the server from a Run first: its grad nodes are still refused elsewhere.
    run(stub, session, create("x", [1.0, 2.0], requires_grad=True),
        backward(graph(leaf("x"), op("s", "sum", "x"))), read(g))
    before = snapshot(stub, session)
    calls = [lambda: stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=g)),
             lambda: stub.Backward(pb.BackwardRequest(session_id=session, graph=g))]
    for call in calls:
        with pytest.raises(grpc.RpcError) as failure:
            call()
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert bad_field(failure.value) == "graph.nodes[1].grad"
        assert details(failure.value)[0].metadata["node"] == "g"
    assert snapshot(stub, session) == before


def test_a_nul_in_a_leaf_name_is_refused(stub: Stub) -> None:
    session = new_session(stub)
    with pytest.raises(grpc.RpcError) as put:
        stub.PutLeaf(pb.PutLeafRequest(session_id=session, name="a\x00b", value=values(1.0)))
    assert put.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(put.value) == "name"
    failure = failure_of(stub, session, create("ok", 1.0), create("a\x00b", 1.0))
    assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(failure) == "steps[1].create.name"
    assert details(failure)[0].metadata["step"] == "1"
    # A name that spells a grad's binding is just a name nobody has.
    failure = failure_of(stub, session, create("x", 1.0, requires_grad=True),
                         backward(SQUARE), read(graph(leaf("g", "\x00grad\x00x"))))
    assert failure.code() is grpc.StatusCode.NOT_FOUND
    assert session_state(stub, session).leaves == []


# --- request_id --------------------------------------------------------------------------------

def test_a_retried_run_answers_its_first_answer_and_applies_once(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("x", 3.0, requires_grad=True))
    request = pb.RunRequest(session_id=session, request_id="train-1",
                            steps=[backward(SQUARE, return_grads=True), read(SQUARE)])
    first = stub.Run(request)
    assert array(first.results[0].backward.leaves[0].grad) == 6.0
    assert stub.Run(request) == first
    assert grad_of(stub, session, "x") == 6.0  # counted once, not 12
    # Whatever the session is now (x no longer requires grad: run again, it would fail).
    run(stub, session, set_requires_grad("x", False))
    assert stub.Run(request) == first
    assert grad_of(stub, session, "x") == 6.0


def test_a_request_id_sent_with_another_run_is_refused(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("x", 3.0, requires_grad=True))
    stub.Run(pb.RunRequest(session_id=session, request_id="train-1", steps=[backward(SQUARE)]))
    before = snapshot(stub, session)
    for other in (pb.RunRequest(session_id=session, request_id="train-1",
                                steps=[backward(SQUARE), zero_grad()]),
                  pb.RunRequest(session_id=session, request_id="train-1",
                                steps=[backward(SQUARE)], answer_as_values=True)):
        with pytest.raises(grpc.RpcError) as reused:
            stub.Run(other)
        assert reused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert details(reused.value)[0].reason == "REQUEST_ID_REUSED"
    with pytest.raises(grpc.RpcError) as across:  # one request_id, one request, across methods
        stub.ZeroGrad(pb.ZeroGradRequest(session_id=session, request_id="train-1"))
    assert details(across.value)[0].reason == "REQUEST_ID_REUSED"
    assert snapshot(stub, session) == before
    assert grad_of(stub, session, "x") == 6.0


# --- limits and malformed requests -------------------------------------------------------------

def test_a_run_over_max_steps_is_refused(stub: Stub) -> None:
    session = new_session(stub)
    limit = TEST_CONFIG.max_steps
    assert limit == 10_000
    failure = failure_of(stub, session, *[zero_grad()] * (limit + 1))
    assert failure.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = details(failure)
    assert (info.reason, info.metadata["limit"]) == ("LIMIT_EXCEEDED", "max_steps")
    assert "10,001 steps" in (failure.details() or "")
    assert len(run(stub, session, *[zero_grad()] * limit).results) == limit


def test_created_and_kept_leaves_count_toward_the_leaf_limit(stub: Stub) -> None:
    session = new_session(stub)
    limit = TEST_CONFIG.max_leaves
    steps = [create(f"l{k}", float(k)) for k in range(limit - 1)]
    failure = failure_of(stub, session, *steps, keep(graph(leaf("l0"), op("s", "sin", "l0")),
                                                     a="s", b="l0"))
    assert failure.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = details(failure)
    assert (info.metadata["limit"], info.metadata["step"]) == ("max_leaves", str(limit - 1))
    assert session_state(stub, session).leaves == []
    # Freeing a leaf first makes room, in the same call.
    run(stub, session, *steps, free("l1"), keep(graph(leaf("l0"), op("s", "sin", "l0")),
                                               a="s", b="l0"))
    assert len(session_state(stub, session).leaves) == limit


def test_a_step_without_a_kind_is_refused_at_its_index(stub: Stub) -> None:
    session = new_session(stub)
    failure = failure_of(stub, session, create("x", 1.0), pb.Step())
    assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(failure) == "steps[1]"
    assert session_state(stub, session).leaves == []


def test_a_run_of_an_unknown_session_is_not_found(stub: Stub) -> None:
    failure = failure_of(stub, "no-such-session", create("x", 1.0))
    assert failure.code() is grpc.StatusCode.NOT_FOUND
    assert details(failure)[0].reason == "SESSION_NOT_FOUND"


# --- locating errors, and edge cases ----------------------------------------------------------

def test_a_keep_of_no_nodes_is_not_an_internal_error(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("x", [1.0, 2.0]))
    before = snapshot(stub, session)
    try:
        run(stub, session, keep(graph(leaf("x"), op("s", "sin", "x"))))
    except grpc.RpcError as failure:
        assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT, failure.details()
        assert bad_field(failure).startswith("steps[0].keep")
    assert snapshot(stub, session) == before


def test_a_closed_form_over_a_read_grad_does_not_show_an_internal_name(stub: Stub) -> None:
    session = new_session(stub)
    answer = run(stub, session, create("w", [1.0, 2.0], requires_grad=True),
                 create("v", 2.0, requires_grad=True),
                 backward(graph(leaf("w"), op("s", "sum", "w"))),
                 backward(graph(leaf("v"), grad("g", "w"), op("m", "mul", "v", "g"),
                                op("s", "sum", "m"))))
    (gradient,) = (g for g in answer.results[3].backward.leaves if g.name == "v")
    assert gradient.closed_form  # grad(w) is [1, 1]: d/dv sum(v * grad(w)) = sum(grad(w))
    assert "\x00" not in gradient.closed_form and "\x00" not in gradient.latex


def test_a_kept_leaf_name_is_refused_at_its_kept_node(stub: Stub) -> None:
    session = new_session(stub)
    run(stub, session, create("x", 1.0))
    failure = failure_of(stub, session, keep(graph(leaf("x"), op("s", "sin", "x")),
                                             **{"a\x00b": "s"}))
    assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(failure) == "steps[0].keep.nodes[0].leaf"


@pytest.mark.parametrize("bad", [
    pb.Step(),
    backward(SQUARE, gradient=pb.Tensor(shape=[2], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 3)),
    pb.Step(create=pb.CreateLeaf(name="y")),
], ids=["no kind", "malformed gradient", "create without a value"])
def test_a_step_refused_as_it_is_decoded_names_its_index_in_the_metadata(
        stub: Stub, bad: pb.Step) -> None:
    session = new_session(stub)
    failure = failure_of(stub, session, create("x", 1.0, requires_grad=True), bad)
    assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(failure).startswith("steps[1]")
    assert details(failure)[0].metadata["step"] == "1"


def test_a_graph_error_in_a_step_names_its_node_index_as_backward_does(stub: Stub) -> None:
    session = new_session(stub)
    g = graph(leaf("x"), op("y", "frobnicate", "x"))
    run(stub, session, create("x", 1.0))
    with pytest.raises(grpc.RpcError) as plain:
        stub.Evaluate(pb.EvaluateRequest(session_id=session, graph=g))
    assert bad_field(plain.value) == "graph.nodes[1]"
    failure = failure_of(stub, session, zero_grad(), read(g))
    assert bad_field(failure) == "steps[1].read.graph.nodes[1]"


def test_an_invalid_field_message_names_the_same_path_as_its_bad_request(stub: Stub) -> None:
    session = new_session(stub)
    failure = failure_of(stub, session, create("ok", 1.0), create("a\x00b", 1.0))
    assert (failure.details() or "").startswith(bad_field(failure))


def test_an_op_without_a_kernel_for_the_dtype_is_refused_as_pytorch_refuses_it(stub: Stub) -> None:
    # abs of a bool tensor: PyTorch's NotImplementedError, an INVALID_ARGUMENT on the wire that
    # names the node and the type, and the session as it was.
    session = new_session(stub)
    run(stub, session, create("m", pb.Tensor(shape=[2], dtype=pb.DTYPE_BOOL, values=[1, 0])))
    before = snapshot(stub, session)
    failure = failure_of(stub, session, read(graph(leaf("m"), op("a", "abs", "m"))))
    assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "\"abs_cpu\" not implemented for 'Bool'" in failure.details()
    info, _ = details(failure)
    assert (info.reason, info.metadata["pythonException"]) == ("DTYPE_MISMATCH",
                                                               "NotImplementedError")
    assert info.metadata["node"] == "a"
    assert snapshot(stub, session) == before


def test_integers_to_negative_powers_as_pytorch(stub: Stub) -> None:
    # NumPy refuses them all; PyTorch computes them elementwise (1 at a base of 1, +-1 at -1,
    # else 0) and refuses only a negative number as the exponent.
    session = new_session(stub)
    ints = tensor([2, -3, 0, 1, -1], np.int64)
    run(stub, session, create("i", ints))
    powers = graph(leaf("i"), op("n", "neg", "i"), op("p", "pow", "i", "n"))
    answer = run(stub, session, read(powers))
    assert array(answer.results[0].read.values[0].value).tolist() == [0, -27, 1, 1, -1]
    before = snapshot(stub, session)
    failure = failure_of(stub, session, read(graph(
        leaf("i"), pb.Node(id="c", constant=tensor(-2, np.int64)), op("p", "pow", "i", "c"))))
    assert failure.code() is grpc.StatusCode.FAILED_PRECONDITION  # PyTorch's RuntimeError
    assert failure.details() == "Integers to negative integer powers are not allowed."
    info, _ = details(failure)
    assert (info.metadata["node"], info.metadata["pythonException"]) == ("p", "RuntimeError")
    assert snapshot(stub, session) == before
