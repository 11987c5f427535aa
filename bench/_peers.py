"""The workloads of bench_sdk.py and the code its subprocesses run, in one module that every
process imports by the same name (``_peers``): torch.distributed.rpc pickles a remote function as
``module.qualified_name``, so the client and the worker must both see these functions as
``_peers.<name>``.

The same math everywhere: ``sin_square`` and ``logistic_loss`` take the tensor module as their
first argument (``torch``, or an SDK that mirrors it), so the eager reference, the gRPC handler,
the distributed-rpc worker and crossgrad's SDK all run one expression.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# --- the workloads --------------------------------------------------------------------------------

X0 = 4.0  # (a): the scalar leaf x of y = sin(x**2)
SAMPLES, FEATURES = 1_000, 5  # (b): logistic regression data
STEPS = 20  # (b): SGD steps per run
LR = 0.5  # (b): SGD step size
EPS = 1e-7  # (b): the clamp of the binary cross-entropy: [EPS, 1 - EPS]
SEED = 0
W_TRUE = (1.5, -2.0, 0.5, 1.0, -0.5)
NOISE = 0.5

Params = tuple[np.ndarray, np.ndarray]  # (w, b) as float32 arrays, shapes (5,) and ()


def logistic_data() -> tuple[np.ndarray, np.ndarray]:
    """(X, y): X ~ N(0, 1) of shape (1000, 5), y = (X @ w_true + noise > 0), both float32, from a
    fixed seed, so every process builds the same arrays."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((SAMPLES, FEATURES)).astype(np.float32)
    noise = NOISE * rng.standard_normal(SAMPLES)
    y = ((x.astype(np.float64) @ np.asarray(W_TRUE) + noise) > 0).astype(np.float32)
    return x, y


def sin_square(tm: Any, x: Any) -> Any:
    """(a)'s forward: y = sin(x**2)."""
    return tm.sin(x ** 2)


def logistic_loss(tm: Any, x: Any, y: Any, w: Any, b: Any) -> Any:
    """(b)'s forward: the mean binary cross-entropy of sigmoid(x @ w + b), written by hand."""
    p = tm.sigmoid(x @ w + b)
    c = tm.clamp(p, EPS, 1 - EPS)
    return -(y * tm.log(c) + (1 - y) * tm.log(1 - c)).mean()


def to_numpy(value: Any) -> np.ndarray:
    """A tensor of ``torch`` or of a module that mirrors it, as a float32 array."""
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy(), dtype=np.float32)
    if hasattr(value, "tolist"):
        return np.asarray(value.tolist(), dtype=np.float32)
    return np.asarray(value, dtype=np.float32)


class Eager:
    """Both workloads written against a torch-like module ``tm``, as a user writes them."""

    def __init__(self, tm: Any) -> None:
        self.tm = tm
        self.x = tm.tensor(np.float32(X0), requires_grad=True)
        features, labels = logistic_data()
        self.features = tm.tensor(features)
        self.labels = tm.tensor(labels)
        self.params = (tm.tensor(np.zeros(FEATURES, np.float32), requires_grad=True),
                       tm.tensor(np.float32(0.0), requires_grad=True))

    def sin_step(self) -> float:
        """One step of (a): forward, backward, read dx (then zero it for the next step)."""
        x = self.x
        y = sin_square(self.tm, x)
        y.backward()
        dx = float(x.grad.item())
        x.grad.zero_()
        return dx

    def logistic_run(self, steps: int = STEPS) -> Params:
        """(b): ``steps`` SGD steps from w = 0, b = 0; the final (w, b). The parameters are
        made once and set back to zero in place for each run, as a training script that
        restarts its loop would."""
        tm = self.tm
        w, b = self.params
        with tm.no_grad():
            w.zero_()
            b.zero_()
        w.grad = None
        b.grad = None
        for _ in range(steps):
            loss = logistic_loss(tm, self.features, self.labels, w, b)
            loss.backward()
            with tm.no_grad():
                w -= LR * w.grad
                b -= LR * b.grad
            w.grad.zero_()
            b.grad.zero_()
        return to_numpy(w), to_numpy(b)


# --- the hand-written gRPC endpoint -------------------------------------------------------------

TORCH_METHOD = "/crossgrad.bench.TorchGrad/Step"
TAG_SIN = b"SINQ"  # request: tag + x (float32); reply: y, dx (float32)
TAG_LOGISTIC = b"LOGR"  # request: tag + w (5 float32) + b (float32); reply: loss, dw (5), db
TAG_BYTES = 4


def sin_request(x: np.ndarray) -> bytes:
    return TAG_SIN + x.astype("<f4").tobytes()


def logistic_request(w: np.ndarray, b: np.ndarray) -> bytes:
    return TAG_LOGISTIC + w.astype("<f4").tobytes() + b.astype("<f4").tobytes()


class TorchHandler:
    """The server's side: the parameters come in as raw float32 bytes, PyTorch eager runs forward
    and backward, the loss (or y) and the gradients go back as raw float32 bytes."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        features, labels = logistic_data()
        self.features = torch.from_numpy(features)
        self.labels = torch.from_numpy(labels)

    def leaf(self, raw: np.ndarray) -> Any:
        return self.torch.from_numpy(raw.copy()).requires_grad_(True)

    def __call__(self, request: bytes, context: Any) -> bytes:
        torch = self.torch
        tag = request[:TAG_BYTES]
        values = np.frombuffer(request, dtype="<f4", offset=TAG_BYTES)
        if tag == TAG_SIN:
            x = self.leaf(values.reshape(()))
            y = sin_square(torch, x)
            y.backward()
            return np.asarray([y.item(), x.grad.item()], dtype="<f4").tobytes()
        if tag == TAG_LOGISTIC:
            w, b = self.leaf(values[:FEATURES]), self.leaf(values[FEATURES:].reshape(()))
            loss = logistic_loss(torch, self.features, self.labels, w, b)
            loss.backward()
            return b"".join(t.detach().numpy().astype("<f4").tobytes()
                            for t in (loss, w.grad, b.grad))
        raise ValueError(f"unknown workload tag {tag!r}")


# --- torch.distributed.rpc with distributed autograd ----------------------------------------

CLIENT, WORKER = "client", "worker"  # rank 0 (the benchmark) and rank 1 (the subprocess)
MARKER = "=====bench-sdk-marker "  # a line in a process's stderr that bounds a counted window
_DATA: dict[str, Any] = {}  # the worker's copy of X and y, sent once by rpc_set_data


def rpc_set_data(features: Any, labels: Any) -> None:
    """On the worker: keep (b)'s data, so the steps send only the parameters."""
    _DATA["features"], _DATA["labels"] = features, labels


def rpc_sin_square(x: Any) -> Any:
    """On the worker: (a)'s forward of the client's leaf x."""
    import torch

    return sin_square(torch, x)


def rpc_logistic_loss(w: Any, b: Any) -> Any:
    """On the worker: (b)'s loss of the client's parameters on the worker's data."""
    import torch

    return logistic_loss(torch, _DATA["features"], _DATA["labels"], w, b)


def rpc_marker(text: str) -> None:
    """On the worker: a marker line in its stderr, in order with TensorPipe's log lines."""
    os.write(2, f"{MARKER}{text}\n".encode())


def rpc_backend_options(tensorpipe_defaults: bool) -> Any:
    """TensorPipe over TCP on loopback (the ``uv`` transport, tensors through the same
    connection: ``basic``) unless ``tensorpipe_defaults``: then TensorPipe picks, and between two
    processes of one machine it picks shared memory."""
    from torch.distributed import rpc

    if tensorpipe_defaults:
        return rpc.TensorPipeRpcBackendOptions(rpc_timeout=60.0)
    return rpc.TensorPipeRpcBackendOptions(rpc_timeout=60.0, _transports=["uv"],
                                           _channels=["basic"])


def rpc_environment(port: int) -> dict[str, str]:
    """The rendezvous on 127.0.0.1:``port`` and TensorPipe's own listener on the loopback."""
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "TP_SOCKET_IFNAME": "lo"}


def init_rpc(rank: int, port: int, tensorpipe_defaults: bool) -> None:
    import warnings

    from torch.distributed import rpc

    os.environ.update(rpc_environment(port))
    with warnings.catch_warnings():  # the deprecation note of the Gloo group it makes
        warnings.simplefilter("ignore", UserWarning)
        rpc.init_rpc(CLIENT if rank == 0 else WORKER, rank=rank, world_size=2,
                     rpc_backend_options=rpc_backend_options(tensorpipe_defaults))


class DistAutograd:
    """The client's side: the parameters are leaves here, the forward runs on the worker, the
    backward is distributed autograd's, and the gradients come back to these leaves."""

    def __init__(self) -> None:
        import torch
        from torch.distributed import autograd as dist_autograd
        from torch.distributed import rpc

        self.torch, self.rpc, self.dist_autograd = torch, rpc, dist_autograd
        self.x = torch.tensor(X0, dtype=torch.float32, requires_grad=True)
        self.calls = 0  # rpc_sync calls made by the steps

    def send_data(self) -> None:
        features, labels = logistic_data()
        self.rpc.rpc_sync(WORKER, rpc_set_data,
                          args=(self.torch.from_numpy(features), self.torch.from_numpy(labels)))

    def sin_step(self) -> float:
        dist_autograd, x = self.dist_autograd, self.x
        with dist_autograd.context() as context_id:
            y = self.rpc.rpc_sync(WORKER, rpc_sin_square, args=(x,))
            self.calls += 1
            dist_autograd.backward(context_id, [y])
            dx = dist_autograd.get_gradients(context_id)[x]
        return float(dx.item())

    def logistic_run(self, steps: int = STEPS) -> Params:
        torch, dist_autograd = self.torch, self.dist_autograd
        w = torch.zeros(FEATURES, dtype=torch.float32, requires_grad=True)
        b = torch.zeros((), dtype=torch.float32, requires_grad=True)
        for _ in range(steps):
            with dist_autograd.context() as context_id:
                loss = self.rpc.rpc_sync(WORKER, rpc_logistic_loss, args=(w, b))
                self.calls += 1
                dist_autograd.backward(context_id, [loss])
                grads = dist_autograd.get_gradients(context_id)
            with torch.no_grad():
                w -= LR * grads[w]
                b -= LR * grads[b]
        return to_numpy(w), to_numpy(b)


def count_client(port: int, tensorpipe_defaults: bool, steps: int) -> None:
    """Rank 0 of the counting run (TP_VERBOSE_LOGGING set by the parent): each workload's steps
    between marker lines in both processes' stderr, so the requests TensorPipe writes in that
    window can be counted afterwards."""
    from torch.distributed import rpc

    init_rpc(0, port, tensorpipe_defaults)
    try:
        peer = DistAutograd()
        peer.send_data()
        runs: dict[str, Callable[[], object]] = {"sin": peer.sin_step,
                                                 "logistic": lambda: peer.logistic_run(1)}
        for name, run in runs.items():
            for _ in range(2):  # warm
                run()
            time.sleep(0.2)
            rpc.rpc_sync(WORKER, rpc_marker, args=(f"begin {name}",))
            os.write(2, f"{MARKER}begin {name}\n".encode())
            for _ in range(steps):
                run()
            time.sleep(0.2)  # the context cleanups, sent asynchronously, land in the window
            os.write(2, f"{MARKER}end {name}\n".encode())
            rpc.rpc_sync(WORKER, rpc_marker, args=(f"end {name}",))
    finally:
        rpc.shutdown()


# --- subprocesses ------------------------------------------------------------------------------

def exit_when_orphaned(poll: float = 1.0) -> None:
    """A daemon thread that ends this process once its parent is gone (the benchmark was killed
    without its cleanup running), so no server outlives it."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="orphan-watch").start()
