"""Graphs a server has validated, kept for the next call that sends them.

A client sends the same graph call after call (a training loop): validating it, building its tape
and preparing its gradient check are done once, and a call pays only for running them. Everything
kept is bounded, in count and in bytes, since clients choose the keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from crossgrad.engine import dtypes
from crossgrad.engine import graph as graphs
from crossgrad.engine.cache import Cache
from crossgrad.engine.differentiation import GradientCheck
from crossgrad.engine.graph import Leaf, Limits, ValidGraph
from crossgrad.engine.solver import Symbolic
from crossgrad.engine.tape import Tape

from .commands import GraphSource
from .errors import LeafNotFound
from .sessions import LeafState, Session

_PER_GRAPH = 16  # tapes and checks kept per known graph
# Graphs kept validated, and the largest kept (serialized): a graph with large constants costs
# its size to validate anyway, and the cache must stay small in bytes (keys are whole graphs).
_KNOWN_GRAPHS = 256
_KNOWN_GRAPH_BYTES = 64 * 1024
# The most a kept tape may hold in values computed from constants alone (a 16 kB graph can
# broadcast its constants to megabytes): a larger one is built for its call and not kept.
_KEPT_TAPE_BYTES = 16 * 1024


class Known:
    """A validated graph, with its gradient checks (by the leaves differentiated) and its tapes
    (by the leaves that require grad and the nodes retained), each built on first use with the
    op table as it is then."""

    def __init__(self, valid: ValidGraph, symbolic: Symbolic) -> None:
        self.valid = valid
        self.symbolic = symbolic
        # What the graph was validated with: (leaf name, shape, NumPy dtype).
        self.signature = [(name, shape, dtype.numpy)
                          for name, (shape, dtype) in valid.leaves.items()]
        self.checks = Cache(_PER_GRAPH)
        self.tapes = Cache(_PER_GRAPH)

    def check(self, wrt: tuple[str, ...]) -> GradientCheck:
        return self.checks.get_or_put(wrt, lambda: GradientCheck(self.valid, wrt, self.symbolic))

    def tape(self, tracking: tuple[str, ...], retain: Sequence[str]) -> Tape:
        key = (tracking, tuple(retain))
        tape: Tape | None = self.tapes.get(key)
        if tape is None:
            tape = Tape(self.valid, tracking, key[1])
            if tape.static_nbytes <= _KEPT_TAPE_BYTES:
                self.tapes.put(key, tape)
        return tape

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
