"""``torch.autograd`` over the service: gradients returned, not accumulated into ``.grad``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from crossgrad.engine.errors import UsageError
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.wire.codec import check_report_from_proto

from . import wire
from .tensor import Tensor, _local, backward, build, tensor


def grad(outputs: Tensor, inputs: Tensor | Sequence[Tensor], grad_outputs: Any = None,
         retain_graph: bool | None = None, allow_unused: bool = False,
         ) -> tuple[Tensor | None, ...]:
    """d(outputs)/d(inputs), returned (``torch.autograd.grad``): one call to the service, which
    computes the gradients without accumulating them into any leaf's grad."""
    wanted = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    for t in wanted:
        if not t.requires_grad:
            raise UsageError("One of the differentiated Tensors does not require grad")
    seed = outputs._seed(grad_outputs)
    found = backward(outputs, seed, bool(retain_graph), inputs=wanted)
    result: list[Tensor | None] = []
    for t in wanted:
        value = found.get(id(t))
        if value is None and not allow_unused:
            raise UsageError(f"The differentiated Tensor at index {len(result)} appears to not "
                             "have been used in the graph. Set allow_unused=True if this is the "
                             "desired behavior.")
        result.append(None if value is None else _local(t.session, wire.array(value)))
    return tuple(result)


def hessian(func: Callable[..., Tensor], inputs: Tensor | Sequence[Tensor]) -> Any:
    """The Hessian of the scalar ``func(*inputs)`` (``torch.autograd.functional.hessian``):
    derived in closed form and checked by the service's ``Differentiate``. One input: a tensor of
    shape ``input.shape + input.shape``; several: a tuple of tuples of blocks."""
    wanted = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    session = wanted[0].session
    copies = [tensor(t.detach(), requires_grad=True, session=session) for t in wanted]
    output = func(*copies)
    if output.numel() != 1:
        raise UsageError("The function given to hessian should return a single Tensor with "
                         "one element")
    graph, _ = build(session, [output])
    leaves = {node.leaf for node in graph.nodes if node.WhichOneof("kind") == "leaf"}
    values = {}
    for name in sorted(leaves):
        storage = session.storages[name]
        owner = storage.owner() if storage.owner is not None else None
        source = owner if owner is not None else next(t for t in copies if t._storage is storage)
        values[name] = wire.tensor(source._read())
    names = [t._storage.name for t in copies if t._storage is not None]
    request = pb.DifferentiateRequest(graph=graph, values=values, wrt=names, hessian=True)
    response = session.connection.call("Differentiate", request)
    blocks = {(b.row, b.column): _local(session, wire.array(b.value))
              for b in response.hessian.blocks}
    session.last_hessian_check = check_report_from_proto(response.hessian.check)
    table = tuple(tuple(blocks[row, column] for column in names) for row in names)
    return table[0][0] if isinstance(inputs, Tensor) else table
