"""The errors of a request field: where it is (its path) and what is wrong with it."""

from __future__ import annotations

from crossgrad.engine.errors import InvalidArgument, LimitExceeded, short_name


class InvalidField(InvalidArgument):
    """A malformed request field: ``field`` is its path (``values['x'].data``,
    ``graph.nodes[3].op.attrs['dim']``), which the message starts with; ``node`` the graph node,
    if any."""

    def __init__(self, field: str, problem: str, *, node: str | None = None) -> None:
        where = field if node is None else f"{field} (node {short_name(node)})"
        super().__init__(f"{where}: {problem}", node=node)
        self.field = field


class FieldLimitExceeded(LimitExceeded, InvalidField):
    """A request field past a size limit; ``limit`` names the limit (for ErrorInfo metadata)."""

    def __init__(self, field: str, problem: str, *, limit: str,
                 node: str | None = None) -> None:
        super().__init__(field, problem, node=node)
        self.limit = limit
