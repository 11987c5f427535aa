import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[Dtype]
    DTYPE_FLOAT32: _ClassVar[Dtype]
    DTYPE_FLOAT64: _ClassVar[Dtype]
    DTYPE_INT64: _ClassVar[Dtype]
    DTYPE_BOOL: _ClassVar[Dtype]

class CheckMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_MODE_UNSPECIFIED: _ClassVar[CheckMode]
    CHECK_MODE_STRICT: _ClassVar[CheckMode]
    CHECK_MODE_REPORT: _ClassVar[CheckMode]
    CHECK_MODE_OFF: _ClassVar[CheckMode]

class CheckMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_METHOD_UNSPECIFIED: _ClassVar[CheckMethod]
    CHECK_METHOD_SYMBOLIC: _ClassVar[CheckMethod]
    CHECK_METHOD_FINITE_DIFFERENCE: _ClassVar[CheckMethod]
    CHECK_METHOD_NONE: _ClassVar[CheckMethod]

class CheckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_STATUS_UNSPECIFIED: _ClassVar[CheckStatus]
    CHECK_STATUS_AGREE: _ClassVar[CheckStatus]
    CHECK_STATUS_DISAGREE: _ClassVar[CheckStatus]
    CHECK_STATUS_SKIPPED: _ClassVar[CheckStatus]
    CHECK_STATUS_SINGULAR: _ClassVar[CheckStatus]

class LeafView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEAF_VIEW_UNSPECIFIED: _ClassVar[LeafView]
    LEAF_VIEW_FULL: _ClassVar[LeafView]
    LEAF_VIEW_VALUE: _ClassVar[LeafView]
    LEAF_VIEW_GRAD: _ClassVar[LeafView]
DTYPE_UNSPECIFIED: Dtype
DTYPE_FLOAT32: Dtype
DTYPE_FLOAT64: Dtype
DTYPE_INT64: Dtype
DTYPE_BOOL: Dtype
CHECK_MODE_UNSPECIFIED: CheckMode
CHECK_MODE_STRICT: CheckMode
CHECK_MODE_REPORT: CheckMode
CHECK_MODE_OFF: CheckMode
CHECK_METHOD_UNSPECIFIED: CheckMethod
CHECK_METHOD_SYMBOLIC: CheckMethod
CHECK_METHOD_FINITE_DIFFERENCE: CheckMethod
CHECK_METHOD_NONE: CheckMethod
CHECK_STATUS_UNSPECIFIED: CheckStatus
CHECK_STATUS_AGREE: CheckStatus
CHECK_STATUS_DISAGREE: CheckStatus
CHECK_STATUS_SKIPPED: CheckStatus
CHECK_STATUS_SINGULAR: CheckStatus
LEAF_VIEW_UNSPECIFIED: LeafView
LEAF_VIEW_FULL: LeafView
LEAF_VIEW_VALUE: LeafView
LEAF_VIEW_GRAD: LeafView

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data", "values")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: Dtype
    data: bytes
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., data: _Optional[bytes] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Graph(_message.Message):
    __slots__ = ("nodes", "output")
    NODES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    output: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., output: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "leaf", "constant", "op", "grad")
    ID_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    leaf: str
    constant: Tensor
    op: Operation
    grad: str
    def __init__(self, id: _Optional[str] = ..., leaf: _Optional[str] = ..., constant: _Optional[_Union[Tensor, _Mapping]] = ..., op: _Optional[_Union[Operation, _Mapping]] = ..., grad: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("op", "inputs", "attrs")
    class AttrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttrValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttrValue, _Mapping]] = ...) -> None: ...
    OP_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    op: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    attrs: _containers.MessageMap[str, AttrValue]
    def __init__(self, op: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., attrs: _Optional[_Mapping[str, AttrValue]] = ...) -> None: ...

class AttrValue(_message.Message):
    __slots__ = ("number", "integer", "integers", "flag")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    INTEGERS_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    integers: IntList
    flag: bool
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., integers: _Optional[_Union[IntList, _Mapping]] = ..., flag: _Optional[bool] = ...) -> None: ...

class IntList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class CheckReport(_message.Message):
    __slots__ = ("method", "status", "max_abs_error", "max_rel_error", "atol", "rtol", "reason")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_ERROR_FIELD_NUMBER: _ClassVar[int]
    ATOL_FIELD_NUMBER: _ClassVar[int]
    RTOL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    method: CheckMethod
    status: CheckStatus
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float
    reason: str
    def __init__(self, method: _Optional[_Union[CheckMethod, str]] = ..., status: _Optional[_Union[CheckStatus, str]] = ..., max_abs_error: _Optional[float] = ..., max_rel_error: _Optional[float] = ..., atol: _Optional[float] = ..., rtol: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("id", "dtype", "check_mode", "idle_ttl", "expire_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CHECK_MODE_FIELD_NUMBER: _ClassVar[int]
    IDLE_TTL_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    dtype: Dtype
    check_mode: CheckMode
    idle_ttl: _duration_pb2.Duration
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., check_mode: _Optional[_Union[CheckMode, str]] = ..., idle_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("dtype", "check_mode", "idle_ttl", "request_id")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CHECK_MODE_FIELD_NUMBER: _ClassVar[int]
    IDLE_TTL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    dtype: Dtype
    check_mode: CheckMode
    idle_ttl: _duration_pb2.Duration
    request_id: str
    def __init__(self, dtype: _Optional[_Union[Dtype, str]] = ..., check_mode: _Optional[_Union[CheckMode, str]] = ..., idle_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session", "leaves")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    session: Session
    leaves: _containers.RepeatedCompositeFieldContainer[LeafInfo]
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., leaves: _Optional[_Iterable[_Union[LeafInfo, _Mapping]]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Leaf(_message.Message):
    __slots__ = ("name", "value", "requires_grad", "grad", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: Tensor
    requires_grad: bool
    grad: Tensor
    version: int
    def __init__(self, name: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ..., requires_grad: _Optional[bool] = ..., grad: _Optional[_Union[Tensor, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class LeafInfo(_message.Message):
    __slots__ = ("name", "shape", "dtype", "requires_grad", "has_grad", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    HAS_GRAD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: Dtype
    requires_grad: bool
    has_grad: bool
    version: int
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., requires_grad: _Optional[bool] = ..., has_grad: _Optional[bool] = ..., version: _Optional[int] = ...) -> None: ...

class PutLeafRequest(_message.Message):
    __slots__ = ("session_id", "name", "value", "requires_grad", "expected_version", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    value: Tensor
    requires_grad: bool
    expected_version: int
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ..., requires_grad: _Optional[bool] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class PutLeafResponse(_message.Message):
    __slots__ = ("leaf", "created")
    LEAF_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    leaf: LeafInfo
    created: bool
    def __init__(self, leaf: _Optional[_Union[LeafInfo, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetLeafRequest(_message.Message):
    __slots__ = ("session_id", "name", "view", "answer_as_values")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    ANSWER_AS_VALUES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    view: LeafView
    answer_as_values: bool
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., view: _Optional[_Union[LeafView, str]] = ..., answer_as_values: _Optional[bool] = ...) -> None: ...

class GetLeafResponse(_message.Message):
    __slots__ = ("leaf",)
    LEAF_FIELD_NUMBER: _ClassVar[int]
    leaf: Leaf
    def __init__(self, leaf: _Optional[_Union[Leaf, _Mapping]] = ...) -> None: ...

class ZeroGradRequest(_message.Message):
    __slots__ = ("session_id", "names", "set_to_none", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    SET_TO_NONE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    names: _containers.RepeatedScalarFieldContainer[str]
    set_to_none: bool
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., set_to_none: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class ZeroGradResponse(_message.Message):
    __slots__ = ("leaves",)
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    leaves: _containers.RepeatedCompositeFieldContainer[LeafInfo]
    def __init__(self, leaves: _Optional[_Iterable[_Union[LeafInfo, _Mapping]]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("session_id", "graph", "nodes", "answer_as_values")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ANSWER_AS_VALUES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    graph: Graph
    nodes: _containers.RepeatedScalarFieldContainer[str]
    answer_as_values: bool
    def __init__(self, session_id: _Optional[str] = ..., graph: _Optional[_Union[Graph, _Mapping]] = ..., nodes: _Optional[_Iterable[str]] = ..., answer_as_values: _Optional[bool] = ...) -> None: ...

class NodeValue(_message.Message):
    __slots__ = ("id", "value", "requires_grad", "grad_fn")
    ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    GRAD_FN_FIELD_NUMBER: _ClassVar[int]
    id: str
    value: Tensor
    requires_grad: bool
    grad_fn: str
    def __init__(self, id: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ..., requires_grad: _Optional[bool] = ..., grad_fn: _Optional[str] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[NodeValue]
    def __init__(self, values: _Optional[_Iterable[_Union[NodeValue, _Mapping]]] = ...) -> None: ...

class BackwardRequest(_message.Message):
    __slots__ = ("session_id", "graph", "gradient", "retain", "check_mode", "request_id", "answer_as_values")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    RETAIN_FIELD_NUMBER: _ClassVar[int]
    CHECK_MODE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_AS_VALUES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    graph: Graph
    gradient: Tensor
    retain: _containers.RepeatedScalarFieldContainer[str]
    check_mode: CheckMode
    request_id: str
    answer_as_values: bool
    def __init__(self, session_id: _Optional[str] = ..., graph: _Optional[_Union[Graph, _Mapping]] = ..., gradient: _Optional[_Union[Tensor, _Mapping]] = ..., retain: _Optional[_Iterable[str]] = ..., check_mode: _Optional[_Union[CheckMode, str]] = ..., request_id: _Optional[str] = ..., answer_as_values: _Optional[bool] = ...) -> None: ...

class LeafGradient(_message.Message):
    __slots__ = ("name", "grad", "version", "closed_form", "latex")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FORM_FIELD_NUMBER: _ClassVar[int]
    LATEX_FIELD_NUMBER: _ClassVar[int]
    name: str
    grad: Tensor
    version: int
    closed_form: str
    latex: str
    def __init__(self, name: _Optional[str] = ..., grad: _Optional[_Union[Tensor, _Mapping]] = ..., version: _Optional[int] = ..., closed_form: _Optional[str] = ..., latex: _Optional[str] = ...) -> None: ...

class BackwardResponse(_message.Message):
    __slots__ = ("output", "leaves", "retained", "check")
    class RetainedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    RETAINED_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    output: Tensor
    leaves: _containers.RepeatedCompositeFieldContainer[LeafGradient]
    retained: _containers.MessageMap[str, Tensor]
    check: CheckReport
    def __init__(self, output: _Optional[_Union[Tensor, _Mapping]] = ..., leaves: _Optional[_Iterable[_Union[LeafGradient, _Mapping]]] = ..., retained: _Optional[_Mapping[str, Tensor]] = ..., check: _Optional[_Union[CheckReport, _Mapping]] = ...) -> None: ...

class DifferentiateRequest(_message.Message):
    __slots__ = ("graph", "formula", "values", "wrt", "seed", "check_mode", "hessian", "answer_as_values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    FORMULA_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CHECK_MODE_FIELD_NUMBER: _ClassVar[int]
    HESSIAN_FIELD_NUMBER: _ClassVar[int]
    ANSWER_AS_VALUES_FIELD_NUMBER: _ClassVar[int]
    graph: Graph
    formula: str
    values: _containers.MessageMap[str, Tensor]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    seed: Tensor
    check_mode: CheckMode
    hessian: bool
    answer_as_values: bool
    def __init__(self, graph: _Optional[_Union[Graph, _Mapping]] = ..., formula: _Optional[str] = ..., values: _Optional[_Mapping[str, Tensor]] = ..., wrt: _Optional[_Iterable[str]] = ..., seed: _Optional[_Union[Tensor, _Mapping]] = ..., check_mode: _Optional[_Union[CheckMode, str]] = ..., hessian: _Optional[bool] = ..., answer_as_values: _Optional[bool] = ...) -> None: ...

class Gradient(_message.Message):
    __slots__ = ("leaf", "value", "closed_form", "latex")
    LEAF_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FORM_FIELD_NUMBER: _ClassVar[int]
    LATEX_FIELD_NUMBER: _ClassVar[int]
    leaf: str
    value: Tensor
    closed_form: str
    latex: str
    def __init__(self, leaf: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ..., closed_form: _Optional[str] = ..., latex: _Optional[str] = ...) -> None: ...

class HessianBlock(_message.Message):
    __slots__ = ("row", "column", "value", "closed_form", "latex")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FORM_FIELD_NUMBER: _ClassVar[int]
    LATEX_FIELD_NUMBER: _ClassVar[int]
    row: str
    column: str
    value: Tensor
    closed_form: str
    latex: str
    def __init__(self, row: _Optional[str] = ..., column: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ..., closed_form: _Optional[str] = ..., latex: _Optional[str] = ...) -> None: ...

class Hessian(_message.Message):
    __slots__ = ("blocks", "check")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    blocks: _containers.RepeatedCompositeFieldContainer[HessianBlock]
    check: CheckReport
    def __init__(self, blocks: _Optional[_Iterable[_Union[HessianBlock, _Mapping]]] = ..., check: _Optional[_Union[CheckReport, _Mapping]] = ...) -> None: ...

class DifferentiateResponse(_message.Message):
    __slots__ = ("output", "gradients", "check", "hessian")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    HESSIAN_FIELD_NUMBER: _ClassVar[int]
    output: Tensor
    gradients: _containers.RepeatedCompositeFieldContainer[Gradient]
    check: CheckReport
    hessian: Hessian
    def __init__(self, output: _Optional[_Union[Tensor, _Mapping]] = ..., gradients: _Optional[_Iterable[_Union[Gradient, _Mapping]]] = ..., check: _Optional[_Union[CheckReport, _Mapping]] = ..., hessian: _Optional[_Union[Hessian, _Mapping]] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("session_id", "steps", "request_id", "answer_as_values")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_AS_VALUES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    request_id: str
    answer_as_values: bool
    def __init__(self, session_id: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., request_id: _Optional[str] = ..., answer_as_values: _Optional[bool] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("create", "keep", "update", "update_grad", "set_requires_grad", "zero_grad", "free", "backward", "read")
    CREATE_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_GRAD_FIELD_NUMBER: _ClassVar[int]
    SET_REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    ZERO_GRAD_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    create: CreateLeaf
    keep: Keep
    update: UpdateLeaf
    update_grad: UpdateGrad
    set_requires_grad: SetRequiresGrad
    zero_grad: ZeroGradStep
    free: FreeLeaves
    backward: BackwardStep
    read: ReadStep
    def __init__(self, create: _Optional[_Union[CreateLeaf, _Mapping]] = ..., keep: _Optional[_Union[Keep, _Mapping]] = ..., update: _Optional[_Union[UpdateLeaf, _Mapping]] = ..., update_grad: _Optional[_Union[UpdateGrad, _Mapping]] = ..., set_requires_grad: _Optional[_Union[SetRequiresGrad, _Mapping]] = ..., zero_grad: _Optional[_Union[ZeroGradStep, _Mapping]] = ..., free: _Optional[_Union[FreeLeaves, _Mapping]] = ..., backward: _Optional[_Union[BackwardStep, _Mapping]] = ..., read: _Optional[_Union[ReadStep, _Mapping]] = ...) -> None: ...

class CreateLeaf(_message.Message):
    __slots__ = ("name", "value", "requires_grad")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: Tensor
    requires_grad: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ..., requires_grad: _Optional[bool] = ...) -> None: ...

class Keep(_message.Message):
    __slots__ = ("graph", "nodes")
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    graph: Graph
    nodes: _containers.RepeatedCompositeFieldContainer[KeptNode]
    def __init__(self, graph: _Optional[_Union[Graph, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[KeptNode, _Mapping]]] = ...) -> None: ...

class KeptNode(_message.Message):
    __slots__ = ("node", "leaf")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    node: str
    leaf: str
    def __init__(self, node: _Optional[str] = ..., leaf: _Optional[str] = ...) -> None: ...

class UpdateLeaf(_message.Message):
    __slots__ = ("leaf", "graph")
    LEAF_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    leaf: str
    graph: Graph
    def __init__(self, leaf: _Optional[str] = ..., graph: _Optional[_Union[Graph, _Mapping]] = ...) -> None: ...

class UpdateGrad(_message.Message):
    __slots__ = ("leaf", "graph")
    LEAF_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    leaf: str
    graph: Graph
    def __init__(self, leaf: _Optional[str] = ..., graph: _Optional[_Union[Graph, _Mapping]] = ...) -> None: ...

class SetRequiresGrad(_message.Message):
    __slots__ = ("leaf", "requires_grad")
    LEAF_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    leaf: str
    requires_grad: bool
    def __init__(self, leaf: _Optional[str] = ..., requires_grad: _Optional[bool] = ...) -> None: ...

class ZeroGradStep(_message.Message):
    __slots__ = ("leaves", "set_to_none")
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    SET_TO_NONE_FIELD_NUMBER: _ClassVar[int]
    leaves: _containers.RepeatedScalarFieldContainer[str]
    set_to_none: bool
    def __init__(self, leaves: _Optional[_Iterable[str]] = ..., set_to_none: _Optional[bool] = ...) -> None: ...

class FreeLeaves(_message.Message):
    __slots__ = ("leaves",)
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    leaves: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, leaves: _Optional[_Iterable[str]] = ...) -> None: ...

class BackwardStep(_message.Message):
    __slots__ = ("graph", "gradient", "retain", "check_mode", "return_grads", "grads_only")
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    RETAIN_FIELD_NUMBER: _ClassVar[int]
    CHECK_MODE_FIELD_NUMBER: _ClassVar[int]
    RETURN_GRADS_FIELD_NUMBER: _ClassVar[int]
    GRADS_ONLY_FIELD_NUMBER: _ClassVar[int]
    graph: Graph
    gradient: Tensor
    retain: _containers.RepeatedScalarFieldContainer[str]
    check_mode: CheckMode
    return_grads: bool
    grads_only: bool
    def __init__(self, graph: _Optional[_Union[Graph, _Mapping]] = ..., gradient: _Optional[_Union[Tensor, _Mapping]] = ..., retain: _Optional[_Iterable[str]] = ..., check_mode: _Optional[_Union[CheckMode, str]] = ..., return_grads: _Optional[bool] = ..., grads_only: _Optional[bool] = ...) -> None: ...

class ReadStep(_message.Message):
    __slots__ = ("graph", "nodes")
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    graph: Graph
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, graph: _Optional[_Union[Graph, _Mapping]] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class StepResult(_message.Message):
    __slots__ = ("backward", "read")
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    backward: BackwardResponse
    read: EvaluateResponse
    def __init__(self, backward: _Optional[_Union[BackwardResponse, _Mapping]] = ..., read: _Optional[_Union[EvaluateResponse, _Mapping]] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StepResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StepResult, _Mapping]]] = ...) -> None: ...

class ListOpsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AttrInfo(_message.Message):
    __slots__ = ("name", "kind", "default_value", "required")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    default_value: AttrValue
    required: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., default_value: _Optional[_Union[AttrValue, _Mapping]] = ..., required: _Optional[bool] = ...) -> None: ...

class OpInfo(_message.Message):
    __slots__ = ("name", "arity", "attrs", "grad_fn", "kink", "variadic")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARITY_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    GRAD_FN_FIELD_NUMBER: _ClassVar[int]
    KINK_FIELD_NUMBER: _ClassVar[int]
    VARIADIC_FIELD_NUMBER: _ClassVar[int]
    name: str
    arity: int
    attrs: _containers.RepeatedCompositeFieldContainer[AttrInfo]
    grad_fn: str
    kink: str
    variadic: bool
    def __init__(self, name: _Optional[str] = ..., arity: _Optional[int] = ..., attrs: _Optional[_Iterable[_Union[AttrInfo, _Mapping]]] = ..., grad_fn: _Optional[str] = ..., kink: _Optional[str] = ..., variadic: _Optional[bool] = ...) -> None: ...

class ListOpsResponse(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[OpInfo]
    def __init__(self, ops: _Optional[_Iterable[_Union[OpInfo, _Mapping]]] = ...) -> None: ...
