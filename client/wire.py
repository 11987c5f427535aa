"""The SDK's side of the wire: the codec it shares with the server (``crossgrad.wire.codec``),
and the few conversions only a client needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from crossgrad.engine.check import CheckMode
from crossgrad.engine.dtypes import DType
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.wire import codec

DTYPES: Mapping[int, DType] = codec.DTYPES
DTYPES_TO_PROTO: Mapping[DType, pb.Dtype] = {dtype: codec.dtype_to_proto(dtype)
                                             for dtype in DTYPES.values()}
CHECK_MODES: Mapping[str, pb.CheckMode] = {mode.name.lower(): codec.check_mode_to_proto(mode)
                                  for mode in CheckMode}
_UNLIMITED = 2**62


def tensor(array: np.ndarray) -> pb.Tensor:
    """An array as a wire tensor (raw bytes)."""
    return codec.tensor_to_proto(array)


def array(message: pb.Tensor) -> np.ndarray:
    """A wire tensor the server sent as an array (server values may hold NaN and ±inf)."""
    return codec.tensor_from_proto(message, field="answer", max_elements=_UNLIMITED,
                                   finite=False)


def number(value: bool | int | float) -> pb.Tensor:
    """A Python number as a 0-d constant: a float as FLOAT64 (its exact value), an int as INT64,
    a bool as BOOL, which the server treats as the weak scalars PyTorch makes of numbers."""
    kind = np.float64 if type(value) is float else np.int64 if type(value) is int else np.bool_
    return codec.tensor_to_proto(np.asarray(value, dtype=kind))


def attr(value: Any) -> pb.AttrValue | None:
    return codec.attr_to_proto(value)
