"""Graphs a server has validated, kept for the next call that sends them.

A client sends the same graph call after call (a training loop): validating it, planning its
executor and preparing its gradient check are done once, and a call pays only for running them.
Everything kept is bounded, in count and in bytes, since clients choose the keys.
"""

from __future__ import annotations

from collections.abc import Mapping

from crossgrad.engine import dtypes
from crossgrad.engine import graph as graphs
from crossgrad.engine.cache import Cache
from crossgrad.engine.graph import Leaf, Limits, ValidGraph
from crossgrad.engine.prepared import Prepared
from crossgrad.engine.solver import Symbolic

from .commands import GraphSource
from .errors import LeafNotFound
from .sessions import LeafState, Session

# Graphs kept validated, and the largest kept (serialized): a graph with large constants costs
# its size to validate anyway, and the cache must stay small in bytes (keys are whole graphs).
_KNOWN_GRAPHS = 256
_KNOWN_GRAPH_BYTES = 64 * 1024
# The most a kept executor may hold in values computed from constants alone (a 16 kB graph can
# broadcast its constants to megabytes): a larger one is built for its call and not kept.
_KEPT_EXECUTOR_BYTES = 16 * 1024


class Known(Prepared):
    """A graph validated over a session's leaves: the engine's prepared graph (its executors
    and gradient checks, built on first use with the op table as it is then), and the leaves'
    shapes and dtypes it was validated with."""

    def __init__(self, valid: ValidGraph, symbolic: Symbolic) -> None:
        super().__init__(valid, symbolic, kept_executor_bytes=_KEPT_EXECUTOR_BYTES)
        # What the graph was validated with: (leaf name, shape, NumPy dtype).
        self.signature = [(name, shape, dtype.numpy)
                          for name, (shape, dtype) in valid.leaves.items()]

    def fits(self, leaves: Mapping[str, LeafState]) -> bool:
        """Whether the session's leaves still have the shapes and dtypes it was validated with."""
        for name, shape, dtype in self.signature:
            leaf = leaves.get(name)
            if leaf is None or leaf.value.shape != shape or leaf.value.dtype != dtype:
                return False
        return True


class KnownGraphs:
    """Validated graphs by their bytes and the session's dtype (which their constants may take),
    reused while the session's leaves they use keep the shapes and dtypes they were validated
    with."""

    def __init__(self, limits: Limits, symbolic: Symbolic) -> None:
        self._limits = limits
        self._symbolic = symbolic
        self._graphs = Cache(_KNOWN_GRAPHS)

    def get(self, source: GraphSource, session: Session) -> Known:
        """``source`` validated over ``session``'s leaves."""
        key = (source.key, session.dtype)
        kept = len(key[0]) <= _KNOWN_GRAPH_BYTES
        known: Known | None = self._graphs.get(key) if kept else None
        if known is not None and known.fits(session.leaves):
            return known
        graph = source.decode(session.dtype)
        for node in graph.nodes:
            if isinstance(node, Leaf) and node.name not in session.leaves:
                raise LeafNotFound(node.name, node=node.id)
        declared = {name: (leaf.value.shape, dtypes.from_numpy(leaf.value.dtype))
                    for name, leaf in session.leaves.items()}
        known = Known(graphs.validate(graph, declared, self._limits), self._symbolic)
        if kept:
            self._graphs.put(key, known)
        return known
