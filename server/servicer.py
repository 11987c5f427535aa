"""The gRPC servicer: each method decodes its request (``serde.py``), makes one call of the service
(``service.py``) and encodes its answer.

A method answers or raises; the server's one mapping (``status.py``) makes the status.
"""

from __future__ import annotations

from crossgrad.engine.solver import Symbolic
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc

from . import serde
from .config import Config
from .service import Call, Service
from .sessions import SessionStore


class Servicer(pb_grpc.AutogradServiceServicer):
    def __init__(self, config: Config, store: SessionStore, symbolic: Symbolic) -> None:
        self._service = Service(config, store, symbolic)
        self._limits = config.limits
        self._max_steps = config.max_steps

    def CreateSession(self, request: pb.CreateSessionRequest, call: Call,
                      ) -> pb.CreateSessionResponse:
        command = serde.create_session_from_proto(request)
        return serde.create_session_to_proto(self._service.create_session(command, call))

    def GetSession(self, request: pb.GetSessionRequest, call: Call) -> pb.GetSessionResponse:
        return self._service.get_session(serde.get_session_from_proto(request),
                                         serde.get_session_to_proto)

    def DeleteSession(self, request: pb.DeleteSessionRequest, call: Call,
                      ) -> pb.DeleteSessionResponse:
        self._service.delete_session(serde.delete_session_from_proto(request), call)
        return serde.delete_session_to_proto()

    def PutLeaf(self, request: pb.PutLeafRequest, call: Call) -> pb.PutLeafResponse:
        return self._service.put_leaf(serde.put_leaf_from_proto(request, self._limits), call,
                                      serde.PUT_LEAF)

    def GetLeaf(self, request: pb.GetLeafRequest, call: Call) -> pb.GetLeafResponse:
        return self._service.get_leaf(serde.get_leaf_from_proto(request), serde.get_leaf_to_proto)

    def ZeroGrad(self, request: pb.ZeroGradRequest, call: Call) -> pb.ZeroGradResponse:
        return self._service.zero_grad(serde.zero_grad_from_proto(request), call,
                                       serde.ZERO_GRAD)

    def Evaluate(self, request: pb.EvaluateRequest, call: Call) -> pb.EvaluateResponse:
        return self._service.evaluate(serde.evaluate_from_proto(request, self._limits),
                                      serde.evaluate_to_proto)

    def Backward(self, request: pb.BackwardRequest, call: Call) -> pb.BackwardResponse:
        return self._service.backward(serde.backward_from_proto(request, self._limits), call,
                                      serde.BACKWARD)

    def Differentiate(self, request: pb.DifferentiateRequest, call: Call,
                      ) -> pb.DifferentiateResponse:
        return self._service.differentiate(serde.differentiate_from_proto(request, self._limits),
                                           call, serde.differentiate_to_proto)

    def Run(self, request: pb.RunRequest, call: Call) -> pb.RunResponse:
        command = serde.run_from_proto(request, self._limits, self._max_steps)
        return self._service.run(command, call, serde.RUN)

    def ListOps(self, request: pb.ListOpsRequest, call: Call) -> pb.ListOpsResponse:
        return serde.list_ops_to_proto()
