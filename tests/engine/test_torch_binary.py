"""Differential scenarios of the binary elementwise ops against PyTorch: ties, NaN, signed zeros,
integer inputs. Each runs on PyTorch, the engine and the SDK (``assert_same``); the per-op random
cases live in ``test_torch_differential.py`` (``op_cases``)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

# The SDK's server and a session per test (autouse) come with the harness; scenarios with NaN
# leaves run the SDK without the closed-form check, which refuses values that are not finite.
from .test_torch_differential import (  # noqa: F401
    Recorder,
    assert_same,
    sdk_server,
    sdk_session,
    sdk_unchecked,
)

NAN = float("nan")
INF = float("inf")


def _log_grads(rec: Recorder, leaves: list[Any]) -> None:
    """Each leaf's gradient, and the sign bit of each of its elements (-0.0 against +0.0)."""
    for i, leaf in enumerate(leaves):
        rec.log(f"leaf{i}.grad", leaf.grad)
        if leaf.grad is not None:
            rec.log(f"leaf{i}.grad signbit", np.signbit(np.array(leaf.grad.tolist())).tolist())


def _backward_scenario(inputs: list[list[float]], fn: Callable[[ModuleType, list[Any]], Any],
                       upstream: list[float], dtype: str = "float32",
                       ) -> Callable[[ModuleType, Recorder], None]:
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        leaves = [lib.tensor(values, dtype=getattr(lib, dtype), requires_grad=True)
                  for values in inputs]
        out = rec.call("out", lambda: fn(lib, leaves))
        rec.call("backward", lambda: out.backward(lib.tensor(upstream, dtype=getattr(lib, dtype))))
        _log_grads(rec, leaves)

    return scenario


@pytest.mark.usefixtures("sdk_unchecked")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_ties_and_nan_as_pytorch(require_torch: ModuleType, name: str, dtype: str) -> None:
    # Equal inputs share the gradient in half; at a NaN (either side or both) both get all of it;
    # the input that loses gets +0 even for a negative upstream gradient. (Not -0.0 against 0.0:
    # which of the two PyTorch returns depends on the length of the tensor, by its kernel.)
    a = [1.0, 2.0, 3.0, NAN, NAN, 2.0, 0.0, INF, -INF]
    b = [1.0, 1.0, 4.0, 1.0, NAN, NAN, 0.0, INF, 5.0]
    upstream = [-1.0, -2.0, -3.0, -1.0, 2.0, -0.5, -1.0, -4.0, -1.0]
    assert_same(require_torch, _backward_scenario(
        [a, b], lambda lib, xs: getattr(lib, name)(xs[0], xs[1]), upstream, dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_atan2_at_signed_zeros_as_pytorch(require_torch: ModuleType, dtype: str) -> None:
    # atan2(0, -0) is pi, atan2(-0, -0) is -pi; the gradient at the origin is (signed) 0.
    y = [0.0, 0.0, -0.0, -0.0, 1.0, 0.0, -2.0]
    x = [0.0, -0.0, 0.0, -0.0, 0.0, -3.0, -2.0]
    upstream = [1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 2.0]
    assert_same(require_torch, _backward_scenario(
        [y, x], lambda lib, xs: lib.atan2(xs[0], xs[1]), upstream, dtype))


@pytest.mark.usefixtures("sdk_unchecked")
def test_atan2_near_the_origin_masks_only_a_zero_sum_of_squares(require_torch: ModuleType,
                                                                ) -> None:
    # PyTorch masks the gradient where y^2 + x^2 is 0, underflowed squares included, and not
    # where only its reciprocal overflows: there the gradient is inf.
    y = [3.88e-162, 0.0, 1e-170, 1e-200]
    x = [3.88e-162, 1e-170, 0.0, 1e-100]
    assert_same(require_torch, _backward_scenario(
        [y, x], lambda lib, xs: lib.atan2(xs[0], xs[1]), [1.0] * 4, "float64"))


@pytest.mark.usefixtures("sdk_unchecked")
def test_relu_and_clamp_select_the_gradient(require_torch: ModuleType) -> None:
    # PyTorch's backward of relu and clamp selects (where), so a negative upstream gradient gives
    # +0 where the input is cut off, and the NaN input of relu lets the gradient through.
    x = [-1.0, 0.0, NAN, 2.0, 0.5, -3.0]
    upstream = [-1.0, -2.0, -1.0, -1.0, -1.0, -1.0]
    forms: list[Callable[[ModuleType, list[Any]], Any]] = [
        lambda lib, xs: xs[0].relu(),
        lambda lib, xs: xs[0].clamp(-0.5, 1.0),
        lambda lib, xs: xs[0].clamp(min=0.0),
        lambda lib, xs: xs[0].clamp(max=0.0),
        lambda lib, xs: lib.maximum(xs[0], lib.zeros(6)),
    ]
    for form in forms:
        assert_same(require_torch, _backward_scenario([x], form, upstream))


@pytest.mark.parametrize("name", ["maximum", "minimum", "atan2"])
def test_integer_and_mixed_dtypes_as_pytorch(require_torch: ModuleType, name: str) -> None:
    # maximum of int64 stays int64, atan2 of int64 is float32; int64 with float32 is float32.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        fn = getattr(lib, name)
        i = lib.tensor([1, -2, 3])
        j = lib.tensor([[2], [-2]])
        f = lib.tensor([0.5, -2.0, 7.0])
        d = lib.tensor(1.5, dtype=lib.float64)
        rec.log("int, int", fn(i, j))
        rec.log("int, float", fn(i, f))
        rec.log("float, 0-d double", fn(f, d))
        rec.log("bool, int", fn(lib.tensor([True, False, True]), i))

    assert_same(require_torch, scenario)


@pytest.mark.parametrize("name", ["maximum", "minimum", "atan2"])
def test_method_and_grad_fn_names(require_torch: ModuleType, name: str) -> None:
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor([[0.5, -1.0], [2.0, 0.0]], requires_grad=True)
        t = lib.tensor([0.5, 1.0], requires_grad=True)
        out = getattr(x, name)(t)
        rec.log("out", out)
        rec.log("grad_fn", out.grad_fn.name())
        out.sum().backward()
        _log_grads(rec, [x, t])

    assert_same(require_torch, scenario)


# --- comparisons --------------------------------------------------------------------------------

# A number on the left is Python's reflected comparison: 1.5 >= x runs x <= 1.5.
COMPARISON_FORMS: list[tuple[str, Callable[[ModuleType, Any, Any], Any]]] = [
    ("x > t", lambda lib, x, t: x > t), ("x < 1", lambda lib, x, t: x < 1),
    ("1.5 >= x", lambda lib, x, t: 1.5 >= x),  # noqa: SIM300
    ("x <= t", lambda lib, x, t: x <= t), ("x == t", lambda lib, x, t: x == t),
    ("2 == x", lambda lib, x, t: 2 == x),  # noqa: SIM300
    ("x != t", lambda lib, x, t: x != t), ("x != 0.5", lambda lib, x, t: x != 0.5),
    ("lib.gt(x, t)", lambda lib, x, t: lib.gt(x, t)), ("x.le(t)", lambda lib, x, t: x.le(t)),
    ("lib.eq(x, 2)", lambda lib, x, t: lib.eq(x, 2)), ("x.ne(x)", lambda lib, x, t: x.ne(x)),
]


@pytest.mark.parametrize(("text", "form"), COMPARISON_FORMS, ids=[f[0] for f in COMPARISON_FORMS])
def test_comparisons_as_pytorch(require_torch: ModuleType, text: str,
                                form: Callable[[ModuleType, Any, Any], Any]) -> None:
    # A bool result with PyTorch's repr, no grad_fn and no requires_grad, broadcasting.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor([[0.5, 2.0, 3.0], [1.0, 2.0, -1.0]], requires_grad=True)
        t = lib.tensor([0.5, 1.0, 3.0], requires_grad=True)
        result = rec.call(text, lambda: form(lib, x, t))
        rec.log("grad_fn", result.grad_fn)
        rec.call("backward", lambda: result.sum().backward())

    assert_same(require_torch, scenario)


def test_comparisons_of_other_dtypes_as_pytorch(require_torch: ModuleType) -> None:
    # Computed in the promoted dtype (int64 with a float compares as float32), the result bool.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        i = lib.tensor([1, 2, 3])
        b = lib.tensor([True, False, True])
        d = lib.tensor([1.5, 2.0, 2.5], dtype=lib.float64)
        rec.log("int > 1.5", i > 1.5)
        rec.log("int == int", i == lib.tensor([[1], [3]]))
        rec.log("int <= double", i <= d)
        rec.log("bool == 1", b == 1)
        rec.log("bool != bool", b != lib.tensor(True))
        rec.log("0-d", lib.tensor(2.0) > 1)
        rec.log("0-d int vs float tensor", lib.tensor(2) < lib.tensor([1.5, 2.5]))

    assert_same(require_torch, scenario)


def test_a_mask_in_a_loss_as_pytorch(require_torch: ModuleType) -> None:
    # The mask multiplies, as a hand-written relu does; its ties and the gradient through it.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor([-1.0, 0.0, 2.0, 3.0], requires_grad=True)
        t = lib.tensor([0.0, 0.0, 1.0, 4.0], requires_grad=True)
        loss = (x * (x > 0) + t * (x <= t) * (t != 4)).sum()
        rec.log("loss", loss)
        loss.backward()
        _log_grads(rec, [x, t])

    assert_same(require_torch, scenario)


def test_equality_with_other_objects_as_pytorch(require_torch: ModuleType) -> None:
    # == and != on a tensor are elementwise; with an object that is neither a tensor nor a
    # number, Python's identity decides, as for PyTorch's tensors; < refuses such an object.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor([1.0, 2.0])
        rec.log("x == None", x == None)  # noqa: E711
        rec.log("x != None", x != None)  # noqa: E711
        rec.log("x == 'x'", x == "x")
        rec.log("x == [1.0, 2.0]", x == [1.0, 2.0])
        rec.call("x < None", lambda: x < None)

    assert_same(require_torch, scenario)


def test_tensors_in_sets_and_dicts_as_pytorch(require_torch: ModuleType) -> None:
    # Tensors hash by identity: equal values are still two keys, and membership is identity.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x, y = lib.tensor([1.0, 2.0]), lib.tensor([1.0, 2.0])
        seen = {x, y}
        rec.log("len", len(seen))
        rec.log("x in set", x in seen)
        rec.log("x in list", x in [x])
        rec.log("dict", {x: "x", y: "y"}[y])

    assert_same(require_torch, scenario)


# --- where --------------------------------------------------------------------------------------

@pytest.mark.usefixtures("sdk_unchecked")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_where_gives_the_unselected_branch_exactly_zero(require_torch: ModuleType,
                                                        dtype: str) -> None:
    # inf and NaN in the branch not taken do not leak into either gradient; the zeros are +0
    # even for a negative upstream gradient.
    x = [1.0, 2.0, INF, NAN, -0.0]
    y = [NAN, INF, 3.0, 4.0, -1.0]
    upstream = [-1.0, -2.0, -3.0, -4.0, -5.0]

    def select(lib: ModuleType, xs: list[Any]) -> Any:
        return lib.where(lib.tensor([True, False, True, False, True]), xs[0], xs[1])

    assert_same(require_torch, _backward_scenario([x, y], select, upstream, dtype))


WHERE_FORMS: list[tuple[str, Callable[[ModuleType, Any, Any, Any], Any]]] = [
    ("where(c, x, t)", lambda lib, c, x, t: lib.where(c, x, t)),
    ("where(c, x, 2.5)", lambda lib, c, x, t: lib.where(c, x, 2.5)),
    ("where(c, 1, t)", lambda lib, c, x, t: lib.where(c, 1, t)),
    ("x.where(c, t)", lambda lib, c, x, t: x.where(c, t)),
    ("x.where(c, 0.0)", lambda lib, c, x, t: x.where(c, 0.0)),
    ("where(x > t, x, t)", lambda lib, c, x, t: lib.where(x > t, x, t)),
]


@pytest.mark.parametrize(("text", "form"), WHERE_FORMS, ids=[f[0] for f in WHERE_FORMS])
def test_where_forms_as_pytorch(require_torch: ModuleType, text: str,
                                form: Callable[[ModuleType, Any, Any, Any], Any]) -> None:
    # Broadcasting of the three operands, grad_fn names, gradients summed back to each shape.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        c = lib.tensor([[True], [False]])
        x = lib.tensor([[0.5, 2.0, 3.0], [1.0, 2.0, -1.0]], requires_grad=True)
        t = lib.tensor([0.5, 1.0, 3.0], requires_grad=True)
        out = rec.call(text, lambda: form(lib, c, x, t))
        rec.call("backward", lambda: out.sum().backward())
        _log_grads(rec, [x, t])

    assert_same(require_torch, scenario)


def test_where_dtypes_and_refusals_as_pytorch(require_torch: ModuleType) -> None:
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        c = lib.tensor([True, False, True])
        x = lib.tensor([1.0, 2.0, 3.0])
        rec.log("numbers int", lib.where(c, 1, 2))
        rec.log("numbers float, int", lib.where(c, 1.0, 2))
        rec.log("int tensor, float", lib.where(c, lib.tensor([1, 2, 3]), 2.5))
        rec.log("double, float", lib.where(c, lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64), x))
        rec.log("0-d double, float", lib.where(c, lib.tensor(1.0, dtype=lib.float64), x))
        rec.call("float condition", lambda: lib.where(x, x, x))
        rec.call("int condition", lambda: lib.where(lib.tensor([1, 0, 1]), x, x))

    assert_same(require_torch, scenario)


def _two_layer_network(lib: ModuleType, rec: Recorder, dtype: str) -> None:
    """A 2-layer network with a relu written as maximum and a softmax head, its cross-entropy
    written by hand, trained ten SGD steps."""
    rng = np.random.default_rng(11)
    kind = getattr(lib, dtype)
    inputs = lib.tensor(rng.uniform(-2, 2, (8, 4)), dtype=kind)
    onehot = lib.tensor(np.eye(3)[rng.integers(0, 3, 8)], dtype=kind)
    w1 = lib.tensor(rng.uniform(-1, 1, (4, 6)), dtype=kind, requires_grad=True)
    b1 = lib.tensor(rng.uniform(-0.5, 0.5, (6,)), dtype=kind, requires_grad=True)
    w2 = lib.tensor(rng.uniform(-1, 1, (6, 3)), dtype=kind, requires_grad=True)
    b2 = lib.tensor(rng.uniform(-0.5, 0.5, (3,)), dtype=kind, requires_grad=True)
    zero = lib.tensor(0.0, dtype=kind)
    params = [w1, b1, w2, b2]
    for step in range(10):
        hidden = lib.maximum(inputs @ w1 + b1, zero)
        probabilities = lib.softmax(hidden @ w2 + b2, dim=1)
        loss = -(lib.log(probabilities) * onehot).sum() / 8
        rec.log(f"loss {step}", loss)
        rec.call(f"backward {step}", loss.backward)
        for name, p in zip(("w1", "b1", "w2", "b2"), params, strict=True):
            rec.log(f"{name}.grad {step}", p.grad)
        with lib.no_grad():
            for p in params:
                p -= 0.3 * p.grad
        for p in params:
            p.grad = None
    rec.log("trained probabilities", lib.softmax(lib.maximum(inputs @ w1 + b1, zero) @ w2 + b2,
                                                 dim=1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_two_layer_network_with_a_softmax_head_trains_as_pytorch(require_torch: ModuleType,
                                                                   dtype: str) -> None:
    assert_same(require_torch, lambda lib, rec: _two_layer_network(lib, rec, dtype),
                reprs=False)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_a_tie_of_signed_zeros_gives_the_first_operand(require_torch: ModuleType,
                                                       name: str) -> None:
    # 1 / x shows a zero's sign: PyTorch's maximum(-0.0, 0.0) is -0.0, NumPy's 0.0.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        a = lib.tensor([-0.0, 0.0, -0.0, 1.0])
        b = lib.tensor([0.0, -0.0, -0.0, 1.0])
        rec.log(f"1 / {name}(a, b)", 1 / getattr(lib, name)(a, b))
        rec.log(f"1 / {name}(b, a)", 1 / getattr(lib, name)(b, a))

    assert_same(require_torch, scenario)


@pytest.mark.parametrize("name", ["maximum", "minimum", "atan2", "matmul"])
def test_a_number_for_a_tensors_only_operand_is_refused_as_pytorch(require_torch: ModuleType,
                                                                   name: str) -> None:
    # PyTorch's signatures of these take tensors only: the function and the method name the
    # argument and its position; matmul's operator leaves the number to Python.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
        fn = getattr(lib, name)
        rec.call("function, number second", lambda: fn(x, 2.0))
        rec.call("function, number first", lambda: fn(2, x))
        rec.call("method", lambda: getattr(x, name)(2.0))
        rec.call("array", lambda: fn(x, np.ones(2)))
        if name == "matmul":
            rec.call("x @ 2", lambda: x @ 2)
            rec.call("2.0 @ x", lambda: 2.0 @ x)
        rec.log("tensors", fn(x, x))

    assert_same(require_torch, scenario)


def test_bool_operands_refused_as_pytorch(require_torch: ModuleType) -> None:
    # Subtraction and negation of bools, and relu of one, are refused in PyTorch's words (a
    # Python bool counts as a bool tensor); the ops that take bools keep their dtypes.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        mask = lib.tensor([True, False, True])
        other = lib.tensor([False, False, True])
        floats = lib.tensor([1.0, 2.0, 3.0])
        rec.call("-mask", lambda: -mask)
        rec.call("mask - other", lambda: mask - other)
        rec.call("mask - 1", lambda: mask - 1)
        rec.call("1 - mask", lambda: 1 - mask)
        rec.call("mask - True", lambda: mask - True)
        rec.call("floats - True", lambda: floats - True)
        rec.call("floats - mask", lambda: floats - mask)
        rec.call("relu(mask)", lambda: lib.relu(mask))
        rec.call("mask + other", lambda: mask + other)
        rec.call("mask * 2", lambda: mask * 2)
        rec.call("floats - 1", lambda: floats - 1)

    assert_same(require_torch, scenario)


def test_dtypes_without_a_kernel_refused_as_pytorch(require_torch: ModuleType) -> None:
    # abs of a bool and a bool to a bool tensor's power have no kernel in PyTorch
    # (NotImplementedError); a mask to a Python bool's power stays a mask.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        mask = lib.tensor([True, False, True])
        rec.call("abs(mask)", lambda: lib.abs(mask))
        rec.call("mask ** mask", lambda: mask ** mask)
        rec.call("True ** mask", lambda: True ** mask)
        rec.call("mask ** True", lambda: mask ** True)
        rec.call("mask ** False", lambda: mask ** False)
        rec.call("mask ** 2", lambda: mask ** 2)
        rec.call("2 ** mask", lambda: 2 ** mask)
        rec.call("abs(ints)", lambda: lib.abs(lib.tensor([-2, 3])))

    assert_same(require_torch, scenario)


def test_comparison_functions_take_a_number_as_other_only(require_torch: ModuleType) -> None:
    # torch.gt(2, x) matches none of gt's signatures; 2 > x is Python's x < 2.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        x = lib.tensor([1.0, 2.0, 3.0])
        for name in ("gt", "lt", "ge", "le", "eq", "ne"):
            fn = getattr(lib, name)
            rec.call(f"{name}(2, x)", functools.partial(fn, 2, x))
            rec.call(f"{name}(x, 2)", functools.partial(fn, x, 2))
        rec.call("gt(True, x)", functools.partial(lib.gt, True, x))
        rec.call("gt(np.float64(2.5), x)", functools.partial(lib.gt, np.float64(2.5), x))
        rec.call("gt(2, 3)", functools.partial(lib.gt, 2, 3))
        rec.call("2 > x", functools.partial(operator.gt, 2, x))

    assert_same(require_torch, scenario)


def test_powers_at_zeros_and_infinities_as_pytorch(require_torch: ModuleType) -> None:
    # PyTorch computes x ** 0.5 as sqrt, x ** -0.5 as 1 / sqrt, x ** 3 as x * x * x, ...: at -0.0
    # and -inf their values are not pow's (sqrt(-0.0) is -0.0, 1 / sqrt(-0.0) is -inf), and its
    # backward multiplies the gradient last, so signed and NaN zeros follow the gradient's sign.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        seed = lib.tensor([-1.0, -1.0, -1.0, -1.0, float("-inf")])
        for exponent in (0.5, -0.5, 3, -2, 0, 1.5):
            x = lib.tensor([0.0, -0.0, float("-inf"), float("inf"), 4.0], requires_grad=True)
            y = rec.call(f"x ** {exponent}", functools.partial(operator.pow, x, exponent))
            rec.call("backward", functools.partial(y.backward, seed))
            rec.log(f"x.grad at {exponent}", x.grad)
        x = lib.tensor([0.0, 0.0, 0.0, 2.0, 0.0], requires_grad=True)
        e = lib.tensor([0.0, 2.0, -1.0, 0.0, 1.0], requires_grad=True)
        rec.call("x ** e backward", lambda: (x ** e).backward(seed))
        rec.log("x.grad", x.grad)
        rec.log("e.grad", e.grad)
        e2 = lib.tensor([0.0, 2.0, -1.0, 0.0, 1.0], requires_grad=True)
        rec.call("0 ** e backward", lambda: (0.0 ** e2).backward(seed))
        rec.log("e2.grad", e2.grad)

    assert_same(require_torch, scenario)


def test_integer_powers_as_pytorch(require_torch: ModuleType) -> None:
    # NumPy refuses integers to negative integer powers; PyTorch computes them elementwise (1 at a
    # base of 1, +-1 at -1, else 0) and refuses only a negative Python number as the exponent.
    def scenario(lib: ModuleType, rec: Recorder) -> None:
        ints = lib.tensor([2, -3, 0, 1, -1])
        rec.call("ints ** ints", lambda: ints ** ints)
        rec.call("ints ** -ints", lambda: ints ** -ints)
        rec.call("2 ** negatives", lambda: 2 ** lib.tensor([-1, -2, 3]))
        rec.call("-1 ** ints", lambda: lib.pow(-1, ints))
        rec.call("ints ** 0-d", lambda: ints ** lib.tensor(-2))
        rec.call("ints ** computed 0-d", lambda: ints ** -lib.tensor(2))
        rec.call("0-d ** 0-d", lambda: lib.tensor(0) ** lib.tensor(-1))
        rec.call("mask ** ints", lambda: lib.tensor([True, False]) ** lib.tensor([-1, 2]))
        rec.call("ints ** -2", lambda: ints ** -2)
        rec.call("pow(ints, -1)", lambda: lib.pow(ints, -1))
        rec.call("ints ** -2.0", lambda: ints ** -2.0)

    assert_same(require_torch, scenario)


MATMUL_RANKS = [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 2)),
                ((4, 2, 3), (3,)), ((4, 2, 3), (3, 2)), ((3,), (4, 3, 2)), ((4, 2, 3), (4, 3, 2))]


@pytest.mark.parametrize(("a", "b"), MATMUL_RANKS, ids=[f"{a}@{b}" for a, b in MATMUL_RANKS])
def test_matmul_dtypes_as_pytorch(require_torch: ModuleType, a: tuple[int, ...],
                                  b: tuple[int, ...]) -> None:
    # PyTorch multiplies tensors of one dtype, bools not at all, in the words of the kernel the
    # ranks lead to (dot, addmv, addmm, bmm).
    pairs = [("bool", "bool"), ("float32", "float64"), ("float64", "float32"),
             ("int64", "float32"), ("float32", "bool"), ("bool", "float32"), ("int64", "int64")]

    def scenario(lib: ModuleType, rec: Recorder) -> None:
        for first, second in pairs:
            x = lib.ones(*a, dtype=getattr(lib, first))
            y = lib.ones(*b, dtype=getattr(lib, second))
            rec.call(f"{first} @ {second}", functools.partial(operator.matmul, x, y))

    assert_same(require_torch, scenario)
