"""The wire API: the committed stubs are fresh, the messages round-trip, the service is complete.

The staleness check regenerates ``proto/crossgrad/v1/*_pb2*.py[i]`` into a temporary directory
with ``scripts/generate_proto.py`` and compares them byte for byte with the committed ones. It
skips, with a visible reason, when grpcio-tools is not installed, except under CI=true, where it
fails instead, so CI can never silently stop checking.
"""

from __future__ import annotations

import importlib.util
import json
import os
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import numpy as np
import pytest
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc
from google.protobuf import json_format

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "generate_proto.py"

RPCS = {
    "CreateSession", "GetSession", "DeleteSession",
    "PutLeaf", "GetLeaf", "ZeroGrad",
    "Evaluate", "Backward", "Differentiate", "Run",
    "ListOps",
}
MUTATING = {"CreateSession", "DeleteSession", "PutLeaf", "ZeroGrad", "Backward", "Run"}


def _generator() -> ModuleType:
    """scripts/generate_proto.py as a module; skips (fails under CI=true) without grpc_tools."""
    if importlib.util.find_spec("grpc_tools") is None:
        reason = ("grpcio-tools is not installed, so the committed stubs cannot be checked "
                  "against a fresh generation; install the 'test' extra")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    spec = importlib.util.spec_from_file_location("generate_proto", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the stubs are fresh -------------------------------------------------------------------------

def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    gen = _generator()
    try:
        gen.generate(tmp_path)
    except SystemExit as exit_:
        pytest.fail(f"regenerating the stubs failed: {exit_}")
    committed_root: Path = gen.PROTO_ROOT
    fresh = gen.stub_paths(tmp_path)
    assert fresh, "no .proto files found under proto/crossgrad/v1"
    stale, missing = [], []
    for path in fresh:
        assert path.exists(), f"protoc did not write {path.name}"
        committed = committed_root / path.relative_to(tmp_path)
        shown = str(committed.relative_to(ROOT))
        if not committed.exists():
            missing.append(shown)
        elif committed.read_bytes() != path.read_bytes():
            stale.append(shown)
    expected = {committed_root / p.relative_to(tmp_path) for p in fresh}
    package_dir: Path = gen.PACKAGE_DIR
    orphans = sorted(str(p.relative_to(ROOT)) for p in package_dir.iterdir()
                     if p.name.endswith(gen.GENERATED_SUFFIXES) and p not in expected)
    problems = ([f"stale: {p}" for p in stale] + [f"missing: {p}" for p in missing]
                + [f"generated from no .proto: {p}" for p in orphans])
    assert not problems, ("the committed stubs differ from a fresh generation ("
                          + "; ".join(problems)
                          + "); run: python scripts/generate_proto.py, and commit the result")


def test_generation_command_is_the_documented_one() -> None:
    gen = _generator()
    command = gen.command(Path("proto"))
    assert command[1:] == ["-m", "grpc_tools.protoc", "-Iproto", "--python_out=proto",
                           "--pyi_out=proto", "--grpc_python_out=proto",
                           "proto/crossgrad/v1/crossgrad.proto"]


# --- messages round-trip -------------------------------------------------------------------------

def _tensor(array: np.ndarray) -> pb.Tensor:
    dtype = {np.dtype(np.float32): pb.DTYPE_FLOAT32, np.dtype(np.float64): pb.DTYPE_FLOAT64,
             np.dtype(np.int64): pb.DTYPE_INT64, np.dtype(np.bool_): pb.DTYPE_BOOL}[array.dtype]
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return pb.Tensor(shape=array.shape, dtype=dtype, data=np.ascontiguousarray(little).tobytes())


def _array(tensor: pb.Tensor) -> np.ndarray:
    dtype = {pb.DTYPE_FLOAT32: "<f4", pb.DTYPE_FLOAT64: "<f8", pb.DTYPE_INT64: "<i8",
             pb.DTYPE_BOOL: "|b1"}[tensor.dtype]
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape))


def _graph() -> pb.Graph:
    """mean(clamp(sum(x, dim=[0], keepdim=True) * w, min=0) ** 2) with one node of each kind."""
    attrs = pb.AttrValue
    return pb.Graph(output="loss", nodes=[
        pb.Node(id="x", leaf="x"),
        pb.Node(id="w", constant=_tensor(np.array([[0.5, -1.0, 2.0]], dtype=np.float32))),
        pb.Node(id="two", constant=pb.Tensor(dtype=pb.DTYPE_INT64, values=[2])),
        pb.Node(id="s", op=pb.Operation(op="sum", inputs=["x"], attrs={
            "dim": attrs(integers=pb.IntList(values=[0])), "keepdim": attrs(flag=True)})),
        pb.Node(id="sw", op=pb.Operation(op="mul", inputs=["s", "w"])),
        pb.Node(id="c", op=pb.Operation(op="clamp", inputs=["sw"],
                                        attrs={"min": attrs(number=0.0)})),
        pb.Node(id="p", op=pb.Operation(op="pow", inputs=["c", "two"])),
        pb.Node(id="t", op=pb.Operation(op="transpose", inputs=["p"], attrs={
            "dim0": attrs(integer=0), "dim1": attrs(integer=-1)})),
        pb.Node(id="loss", op=pb.Operation(op="mean", inputs=["t"], attrs={
            "dim": attrs(integers=pb.IntList())})),
    ])


def test_graph_round_trips_with_every_node_and_attribute_kind() -> None:
    graph = _graph()
    parsed = pb.Graph.FromString(graph.SerializeToString())
    assert parsed == graph
    kinds = [node.WhichOneof("kind") for node in parsed.nodes]
    assert kinds == ["leaf", "constant", "constant"] + ["op"] * 6
    by_id = {node.id: node for node in parsed.nodes}
    assert _array(by_id["w"].constant).tolist() == [[0.5, -1.0, 2.0]]
    assert by_id["c"].op.attrs["min"].WhichOneof("value") == "number"
    assert by_id["t"].op.attrs["dim1"].integer == -1
    # An empty dim list is present (PyTorch's dim=[]), distinct from an absent dim (None).
    dim = by_id["loss"].op.attrs["dim"]
    assert dim.WhichOneof("value") == "integers" and list(dim.integers.values) == []
    assert "min" not in by_id["sw"].op.attrs


def test_graph_round_trips_through_json_as_grpcurl_sends_it() -> None:
    graph = _graph()
    text = json_format.MessageToJson(graph)
    assert json_format.Parse(text, pb.Graph()) == graph
    # A hand-written request: tensors in the `values` form, enums by name.
    request = json_format.Parse(json.dumps({
        "formula": "sin(x**2)",
        "values": {"x": {"values": [4.0], "dtype": "DTYPE_FLOAT64"}},
        "checkMode": "CHECK_MODE_REPORT",
        "hessian": True,
    }), pb.DifferentiateRequest())
    assert request.WhichOneof("source") == "formula"
    assert list(request.values["x"].values) == [4.0]
    assert request.values["x"].dtype == pb.DTYPE_FLOAT64 and not request.values["x"].data
    assert request.check_mode == pb.CHECK_MODE_REPORT


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    np.array(np.pi),  # 0-d float64
    np.array([-(2**62), 3], dtype=np.int64),
    np.array([[True], [False]]),
    np.zeros((0, 4), dtype=np.float32),
], ids=["float32", "float64-0d", "int64", "bool", "empty"])
def test_tensor_raw_bytes_round_trip(array: np.ndarray) -> None:
    tensor = _tensor(array)
    assert len(tensor.data) == array.size * array.itemsize
    parsed = pb.Tensor.FromString(tensor.SerializeToString())
    assert list(parsed.shape) == list(array.shape)
    back = _array(parsed)
    assert back.dtype == array.dtype and np.array_equal(back, array)


def test_little_endian_layout_is_explicit() -> None:
    tensor = _tensor(np.array([1.0, -2.0], dtype=np.float32))
    assert tensor.data == bytes.fromhex("0000803f" "000000c0")


def test_optional_fields_keep_presence() -> None:
    request = pb.PutLeafRequest(session_id="s", name="w", requires_grad=False,
                                expected_version=0)
    parsed = pb.PutLeafRequest.FromString(request.SerializeToString())
    assert parsed.HasField("requires_grad") and not parsed.requires_grad
    assert parsed.HasField("expected_version") and parsed.expected_version == 0
    assert not parsed.HasField("value")
    bare = pb.PutLeafRequest.FromString(pb.PutLeafRequest(name="w").SerializeToString())
    assert not bare.HasField("requires_grad") and not bare.HasField("expected_version")
    leaf = pb.Leaf(name="w", value=_tensor(np.ones(2, dtype=np.float32)), version=1)
    assert not pb.Leaf.FromString(leaf.SerializeToString()).HasField("grad")  # grad None


def test_differentiate_response_with_a_hessian_round_trips() -> None:
    report = pb.CheckReport(method=pb.CHECK_METHOD_SYMBOLIC, status=pb.CHECK_STATUS_AGREE,
                            max_abs_error=1e-7, max_rel_error=2e-7, atol=1e-5, rtol=1.3e-6)
    response = pb.DifferentiateResponse(
        output=_tensor(np.array(np.sin(16.0))),
        gradients=[pb.Gradient(leaf="x", value=_tensor(np.array(8 * np.cos(16.0))),
                               closed_form="2*x*cos(x**2)",
                               latex=r"2 x \cos{\left(x^{2} \right)}")],
        check=report,
        hessian=pb.Hessian(check=report, blocks=[pb.HessianBlock(
            row="x", column="x", value=_tensor(np.array(-1.0)),
            closed_form="-4*x**2*sin(x**2) + 2*cos(x**2)")]))
    assert pb.DifferentiateResponse.FromString(response.SerializeToString()) == response


def test_enums_have_unspecified_zero_values() -> None:
    assert pb.Dtype.Name(0) == "DTYPE_UNSPECIFIED"
    assert set(pb.Dtype.keys()) == {"DTYPE_UNSPECIFIED", "DTYPE_FLOAT32", "DTYPE_FLOAT64",
                                    "DTYPE_INT64", "DTYPE_BOOL"}
    assert pb.CheckMode.Name(0) == "CHECK_MODE_UNSPECIFIED"
    assert pb.CheckMethod.Name(0) == "CHECK_METHOD_UNSPECIFIED"
    assert set(pb.CheckStatus.keys()) == {"CHECK_STATUS_UNSPECIFIED", "CHECK_STATUS_AGREE",
                                          "CHECK_STATUS_DISAGREE", "CHECK_STATUS_SKIPPED",
                                          "CHECK_STATUS_SINGULAR"}


# --- the service -------------------------------------------------------------------------------

def test_service_has_exactly_the_rpcs() -> None:
    assert list(pb.DESCRIPTOR.services_by_name) == ["AutogradService"]
    service = pb.DESCRIPTOR.services_by_name["AutogradService"]
    assert service.full_name == "crossgrad.v1.AutogradService"
    assert {m.name for m in service.methods} == RPCS
    for method in service.methods:
        assert not method.client_streaming and not method.server_streaming, method.name
        assert method.input_type.full_name == f"crossgrad.v1.{method.name}Request"
        assert method.output_type.full_name == f"crossgrad.v1.{method.name}Response"
        has_request_id = "request_id" in method.input_type.fields_by_name
        assert has_request_id == (method.name in MUTATING), method.name


class _OpsOnly(pb_grpc.AutogradServiceServicer):
    def ListOps(self, request: pb.ListOpsRequest, context: grpc.ServicerContext,
                ) -> pb.ListOpsResponse:
        return pb.ListOpsResponse(ops=[pb.OpInfo(
            name="clamp", arity=1, grad_fn="ClampBackward1",
            kink="the gradient passes where min <= x <= max, bounds included",
            attrs=[pb.AttrInfo(name="min", kind="number?"),
                   pb.AttrInfo(name="max", kind="number?")])])


def test_stubs_serve_over_a_real_channel() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_AutogradServiceServicer_to_server(_OpsOnly(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AutogradServiceStub(channel)
            ops = stub.ListOps(pb.ListOpsRequest(), timeout=10).ops
            assert [op.name for op in ops] == ["clamp"]
            assert not ops[0].attrs[0].HasField("default_value")  # None
            with pytest.raises(grpc.RpcError) as error:
                stub.GetSession(pb.GetSessionRequest(session_id="s"), timeout=10)
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(None)
