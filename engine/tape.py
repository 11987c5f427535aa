"""The name the server knows the executor by: a ``Tape`` is an ``executor.Executor``."""

from .executor import Executor as Tape
from .executor import Sweep

__all__ = ["Sweep", "Tape"]
