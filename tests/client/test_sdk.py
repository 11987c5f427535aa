"""The SDK against a real server: the seed notebook, round trips, a session's life, replicas."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import crossgrad.client as cg
import crossgrad.engine as engine
import grpc
import numpy as np
import pytest
from crossgrad.client.session import Session
from crossgrad.server.main import RunningServer, serve
from crossgrad.server.memory_store import MemoryStore
from crossgrad.v1 import crossgrad_pb2 as pb
from crossgrad.v1 import crossgrad_pb2_grpc as pb_grpc

from tests.client.conftest import CONFIG, ROOT
from tests.notebook import CELLS, NON_LEAF_WARNING, run_notebook


@pytest.fixture
def session(server: RunningServer) -> Iterator[Session]:
    with cg.connect(server.address) as made:
        yield made


def calls(session: Session) -> int:
    return session.rpc_count


# --- the seed notebook ---------------------------------------------------------------------------

def test_the_seed_notebook_prints_what_it_printed(session: Session) -> None:
    results = run_notebook(cg)
    for (expected, printed, _), (code, _) in zip(results, CELLS, strict=True):
        assert printed == expected, code
    caught = next(w for (_, _, w), (code, _) in zip(results, CELLS, strict=True)
                  if code == "y2.grad")
    assert len(caught) == 1 and caught[0].startswith(NON_LEAF_WARNING)


def test_the_seed_example_runs_with_only_its_import_changed(server: RunningServer) -> None:
    source = (ROOT / "examples" / "seed_notebook.py").read_text(encoding="utf-8")
    assert "import crossgrad.client as torch" in source and "crossgrad.engine" not in source
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "seed_notebook.py")],
                         capture_output=True, text=True, timeout=120, check=True,
                         env={**os.environ, "CROSSGRAD_ADDRESS": server.address}).stdout
    # Line by line what the notebook's cells showed, in its order.
    assert out.splitlines() == [line for _, shown in CELLS for line in shown.splitlines()]


# --- round trips ---------------------------------------------------------------------------------

def test_making_tensors_and_in_place_updates_cost_no_call(session: Session) -> None:
    before = calls(session)
    w = cg.tensor([0.5, -1.0], requires_grad=True)
    x = cg.tensor([1.0, 2.0])
    y = (w + x).sum()  # add saves nothing: x may change in place before the backward
    with cg.no_grad():
        x.mul_(2)
        x.zero_()
    assert (w.shape, y.shape, y.requires_grad, y.is_leaf) == ((2,), (), True, False)
    assert calls(session) == before
    y.backward()
    assert calls(session) == before + 1


def test_a_training_step_is_one_call_and_trains_as_pytorch(session: Session) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 3)).astype(np.float32)
    labels = (data @ np.array([1.0, -2.0, 0.5]) > 0).astype(np.float32)

    def train(lib: object, steps: int) -> tuple[list[float], list[float]]:
        t: object = lib
        x, y = t.tensor(data), t.tensor(labels)  # type: ignore[attr-defined]
        w = t.tensor([0.0, 0.0, 0.0], requires_grad=True)  # type: ignore[attr-defined]
        b = t.tensor(0.0, requires_grad=True)  # type: ignore[attr-defined]
        for _ in range(steps):
            p = t.sigmoid(x @ w + b)  # type: ignore[attr-defined]
            loss = -(y * t.log(p) + (1 - y) * t.log(1 - p)).mean()  # type: ignore[attr-defined]
            loss.backward()
            with t.no_grad():  # type: ignore[attr-defined]
                w -= 0.5 * w.grad
                b -= 0.5 * b.grad
                w.grad.zero_()
                b.grad.zero_()
        return w.tolist(), [b.item(), loss.item()]

    train(cg, 1)  # the first step derives the closed form
    before = calls(session)
    mine = train(cg, 10)
    # 10 steps, then the reads at the end: the queued last update and the three values.
    assert calls(session) - before <= 10 + 3
    theirs = train(engine, 10)
    np.testing.assert_allclose(mine[0], theirs[0], rtol=1e-5)
    np.testing.assert_allclose(mine[1], theirs[1], rtol=1e-5)


def test_an_optimizer_step_moves_no_gradient_to_the_client(session: Session,
                                                          server: RunningServer) -> None:
    w = cg.tensor(np.ones(1000, np.float32), requires_grad=True)
    (w * w).sum().backward()
    with cg.no_grad():
        w -= 0.1 * w.grad
    grad = w.grad
    assert grad is not None and grad._value is None  # never sent: the update ran on the server
    assert w.tolist()[0] == pytest.approx(0.8)
    assert grad._value is None
    channel = grpc.insecure_channel(server.address)
    leaf = pb_grpc.AutogradServiceStub(channel).GetLeaf(pb.GetLeafRequest(
        session_id=session.id, name=w._storage.name))
    channel.close()
    assert np.frombuffer(leaf.leaf.grad.data, np.float32)[0] == 2.0


def test_pending_values_come_in_one_call(session: Session) -> None:
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    (y.sum()).backward()
    with cg.no_grad():
        x.add_(1)
    before = calls(session)
    assert repr(x) == "tensor([2., 3.], requires_grad=True)"
    assert calls(session) == before + 1
    assert repr(y) == "tensor([3., 6.], grad_fn=<MulBackward0>)"  # kept before the update
    assert calls(session) == before + 2


def test_only_tensors_the_program_holds_are_kept_before_an_update(session: Session) -> None:
    w = cg.tensor([1.0, 2.0], requires_grad=True)
    held = w * 2
    loss = (held.sin() + 1).sum()  # sin(held) and the sum's operand: held by loss's graph only
    loss.backward()
    with cg.no_grad():
        w.sub_(1)
    keeps = [step.keep for step in session._pending if step.WhichOneof("kind") == "keep"]
    assert [len(keep.nodes) for keep in keeps] == [1]  # `held`; loss's value came with backward
    assert held.tolist() == [2.0, 4.0]  # as it was computed, before the update
    assert w.tolist() == [0.0, 1.0]


# --- a session's life ----------------------------------------------------------------------------

def test_fresh_tensors_per_step_never_fill_the_leaf_limit(session: Session) -> None:
    w = cg.tensor([1.0, 2.0], requires_grad=True)
    for step in range(10_000):
        batch = cg.tensor([float(step % 3), 1.0])
        (w * batch).sum().backward()
        with cg.no_grad():
            w -= 0.0 * w.grad
            w.grad.zero_()
    assert w.tolist() == [1.0, 2.0]  # 50 leaves at most on this server: the batches were freed


def test_an_idle_session_keeps_its_grads_past_its_ttl(server: RunningServer) -> None:
    with cg.connect(server.address, idle_ttl=1.0) as idle:
        x = cg.tensor(3.0, requires_grad=True, session=idle)
        (x * x).backward()
        time.sleep(2.5)
        assert repr(x.grad) == "tensor(6.)"


def test_a_deleted_session_raises_an_error_naming_it(server: RunningServer) -> None:
    session = cg.connect(server.address)
    x = cg.tensor(3.0, requires_grad=True)
    channel = grpc.insecure_channel(server.address)
    pb_grpc.AutogradServiceStub(channel).DeleteSession(
        pb.DeleteSessionRequest(session_id=session.id))
    channel.close()
    with pytest.raises(cg.SessionGone, match=session.id[:8]):
        (x * x).backward()
    session.close()


def test_backward_from_several_threads_is_atomic(session: Session) -> None:
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                (x * 2).sum().backward()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert x.grad.tolist() == [160.0, 160.0]


def test_the_embedded_server_serves_without_any_server_running() -> None:
    code = ("import crossgrad.client as torch\n"
            "x = torch.tensor(4.0, requires_grad=True)\n"
            "torch.sin(x ** 2).backward()\n"
            "print(x.grad, torch.last_check().status.value)\n")
    env = {k: v for k, v in os.environ.items() if k != "CROSSGRAD_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True, env=env).stdout
    assert out.strip() == "tensor(-7.6613) AGREE"


def test_two_replicas_one_stopped_mid_run() -> None:
    store = MemoryStore(CONFIG.store_config)
    first, second = serve(CONFIG, store), serve(CONFIG, store)
    ports = [server.address.rsplit(":", 1)[1] for server in (first, second)]
    try:
        with cg.connect(f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"):
            w = cg.tensor([1.0, -1.0], requires_grad=True)
            for step in range(40):
                if step == 20:
                    first.stop(0)
                (w * w).sum().backward()
            assert w.grad.tolist() == [80.0, -80.0]
    finally:
        first.stop(0)
        second.stop(0)


# --- beyond torch --------------------------------------------------------------------------------

def test_closed_form_and_check_of_the_last_backward(session: Session) -> None:
    x = cg.tensor(4.0, requires_grad=True, name="x")
    cg.sin(x**2).backward()
    assert x.grad is not None and x.grad.closed_form == "2*x*cos(x**2)"
    report = cg.last_check()
    assert report is not None and report.status.value == "AGREE"


def test_autograd_grad_accumulates_nothing(session: Session) -> None:
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    (dx,) = cg.autograd.grad((x**3).sum(), x)
    assert dx.tolist() == [3.0, 12.0]
    assert x.grad is None


def test_hessian_of_a_scalar_function(session: Session) -> None:
    x = cg.tensor([1.0, 2.0], dtype=cg.float64)
    h = cg.hessian(lambda t: (t**3).sum(), x)
    np.testing.assert_allclose(h.tolist(), [[6.0, 0.0], [0.0, 12.0]])


def test_errors_are_raised_where_pytorch_raises_them(session: Session) -> None:
    a = cg.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    before = calls(session)
    with pytest.raises(RuntimeError, match="must match the size"):
        a + cg.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar"):
        (a * 2).backward()
    assert calls(session) == before
