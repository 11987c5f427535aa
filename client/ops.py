"""The op table the SDK is generated from: the engine's (``crossgrad.engine.ops``), the one list."""

from crossgrad.engine.ops import ALL_DIMS, OPS, TABLE, Dims, Op

__all__ = ["ALL_DIMS", "OPS", "TABLE", "Dims", "Op"]
