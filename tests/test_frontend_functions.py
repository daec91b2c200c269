"""Front ends: functions, reductions, softmax, norms and BatchNorm, from PyTorch and ONNX.

Each translates to NNIR whose float32 semantics (``compiler.nnir.Interpreter``) give
PyTorch's (or the ONNX reference implementation's) results; the limits give one clear
error; reductions stream unless they reduce time. What the machine computes from these
graphs is checked against PyTorch in ``tests/test_compiler_functions.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _models import Fn
from onnx import helper
from test_frontend import to_nnir_error
from test_onnx import check_against_reference, export, make_model
from torch import nn

import compiler.frontend as vollo_torch
from compiler import Config
from compiler.frontend import onnx as onnx_frontend
from compiler.nnir import Interpreter, StreamingError

F32 = np.float32
I64 = np.int64


def _bn(c: int) -> nn.BatchNorm1d:
    torch.manual_seed(5)
    bn = nn.BatchNorm1d(c)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return bn.eval()


#: name -> (forward(m, x), modules, input shape).
CASES: dict[str, tuple[Callable[..., torch.Tensor], dict[str, nn.Module], tuple[int, ...]]] = {
    "tanh": (lambda m, x: torch.tanh(x) + F.tanh(x) + x.tanh() + m.a(x), {"a": nn.Tanh()},
             (2, 5)),
    "sigmoid": (lambda m, x: torch.sigmoid(x) + F.sigmoid(x) + x.sigmoid() + m.a(x),
                {"a": nn.Sigmoid()}, (2, 5)),
    "exp_log_abs": (lambda m, x: torch.exp(x) + x.exp() + torch.log(x.abs() + 1)
                    + torch.absolute(x) + (x.abs() + 2).log(), {}, (2, 5)),
    "roots": (lambda m, x: torch.sqrt(x.abs()) + x.abs().sqrt() + torch.rsqrt(x.abs() + 1)
              + (x.abs() + 1).rsqrt() + torch.reciprocal(x.abs() + 1)
              + (x.abs() + 2).reciprocal(), {}, (2, 5)),
    "pow": (lambda m, x: x ** 2 + torch.pow(x.abs() + 1, 0.5) + (x.abs() + 1).pow(-0.5)
            + (x.abs() + 1) ** -1 + x ** 1, {}, (2, 5)),
    "silu_gelu": (lambda m, x: F.silu(x) + m.s(x) + F.gelu(x) + m.g(x)
                  + F.gelu(x, approximate="tanh") + m.t(x),
                  {"s": nn.SiLU(), "g": nn.GELU(), "t": nn.GELU("tanh")}, (2, 5)),
    "softplus_elu": (lambda m, x: F.softplus(x) + m.sp(x) + F.softplus(x, beta=2.0)
                     + F.elu(x) + m.e(x) + F.elu(x, alpha=0.3),
                     {"sp": nn.Softplus(), "e": nn.ELU(1.5)}, (2, 5)),
    "leaky_hard": (lambda m, x: F.leaky_relu(x) + m.l(x) + F.leaky_relu(x, -0.5)
                   + F.leaky_relu(x, 2.0) + F.hardsigmoid(x * 4) + m.hs(x * 4)
                   + F.hardswish(x * 4) + m.hw(x * 4),
                   {"l": nn.LeakyReLU(0.2), "hs": nn.Hardsigmoid(), "hw": nn.Hardswish()},
                   (2, 5)),
    "divide": (lambda m, x: x / (x.abs() + 1) + torch.div(x, x.abs() + 1) + x.div(x.abs() + 1)
               + 3 / (x.abs() + 1), {}, (2, 5)),
    "reductions": (lambda m, x: x.sum(-1, keepdim=True) + torch.mean(x, dim=-1, keepdim=True)
                   + x.amax(-1, keepdim=True) + torch.amax(x, -1, True)
                   + x.mean(1).unsqueeze(1) + torch.sum(x, (1,), keepdim=True)
                   + x.sum(0, keepdim=True), {}, (2, 3, 5)),
    "softmax": (lambda m, x: F.softmax(x, -1) + torch.softmax(x, dim=2) + x.softmax(-1)
                + m.s(x) + F.log_softmax(x, -1) + torch.log_softmax(x, 2) + m.ls(x)
                + F.softmax(x, dim=1),
                {"s": nn.Softmax(-1), "ls": nn.LogSoftmax(dim=-1)}, (2, 3, 5)),
    "norms": (lambda m, x: m.ln(x) + m.ln0(x) + F.layer_norm(x, (5,)) + m.rms(x) + m.rms0(x)
              + F.rms_norm(x, [5], eps=1e-3),
              {"ln": nn.LayerNorm(5), "ln0": nn.LayerNorm(5, elementwise_affine=False),
               "rms": nn.RMSNorm(5, eps=1e-4), "rms0": nn.RMSNorm(5, elementwise_affine=False)},
              (2, 3, 5)),
    "batch_norm": (lambda m, x: m.bn(x) + m.bn3(x.unsqueeze(2)).squeeze(2), {
        "bn": _bn(5), "bn3": _bn(5)}, (4, 5)),
}


def translate(forward: Callable[..., torch.Tensor], modules: dict[str, nn.Module],
              x: torch.Tensor) -> tuple[object, torch.Tensor]:
    model = Fn(forward, **modules).eval()
    with torch.no_grad():
        for p in model.parameters():  # norms' weights away from their ones and zeros
            p.add_(0.25 * torch.randn_like(p))
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    return vollo_torch.fx.nnir.to_nnir(gm), expected


@pytest.mark.parametrize("case", list(CASES))
def test_pytorch_ops_translate_to_their_semantics(case: str) -> None:
    forward, modules, shape = CASES[case]
    torch.manual_seed(7)
    x = torch.randn(*shape)
    nnir, expected = translate(forward, modules, x)
    (got,) = Interpreter(nnir).run(x.numpy())
    np.testing.assert_allclose(got, expected.numpy(), rtol=2e-5, atol=2e-5)


def test_batch_norm_folds_into_the_layer_before_it() -> None:
    torch.manual_seed(8)
    x = torch.randn(1, 4, 6)
    conv = vollo_torch.nn.PaddedConv1d(4, 5, 3)
    nnir, expected = translate(lambda m, x: m.bn(m.c(x)), {"c": conv, "bn": _bn(5)}, x)
    assert [n.op for n in nnir.nodes] == ["input", "conv1d", "output"]
    np.testing.assert_allclose(Interpreter(nnir).run(x.numpy())[0], expected.numpy(),
                               rtol=1e-5, atol=1e-5)
    # Used elsewhere too, the layer's output stays: a per-channel scale and shift.
    for forward, layer, shape in (
            (lambda m, x: m.bn(y := m.c(x)) + y, conv, (1, 4, 6)),
            (lambda m, x: m.bn(y := m.c(x)) - y, nn.Linear(4, 5), (3, 4)),
            (lambda m, x: m.bn(F.dropout(y := m.c(x), training=False)) - y, nn.Linear(4, 5),
             (3, 4))):
        x = torch.randn(*shape)
        nnir, expected = translate(forward, {"c": layer, "bn": _bn(5)}, x)
        assert [n.op for n in nnir.nodes].count("mul") == 1
        np.testing.assert_allclose(Interpreter(nnir).run(x.numpy())[0], expected.numpy(),
                                   rtol=1e-5, atol=1e-5)


def test_norms_leave_out_weights_of_ones_and_biases_of_zeros() -> None:
    gm, _ = vollo_torch.fx.prepare_shape(nn.LayerNorm(6).eval(), torch.randn(2, 6))
    ops = [n.op for n in vollo_torch.fx.nnir.to_nnir(gm).nodes]
    assert ops == ["input", "mean", "sub", "mul", "mean", "add", "fn", "mul", "output"]


@pytest.mark.parametrize(("forward", "modules", "message"), [
    (lambda m, x: x.sum((1, 2)), {}, "sum over axes [1, 2] of a 3-d tensor: only over one axis"),
    (lambda m, x: F.layer_norm(x, (3, 4)), {},
     "normalized_shape [3, 4] of input [2, 3, 4]: only the last axis"),
    (lambda m, x: x ** 3, {}, "exponent 3: only 1, 2, 0.5, -0.5 and -1"),
    (lambda m, x: F.softplus(x, threshold=5.0), {}, "threshold=5.0 with beta=1.0"),
    (lambda m, x: m.bn(x), {"bn": nn.BatchNorm1d(3).train()}, "batch norm in training mode"),
    (lambda m, x: m.bn(x), {"bn": nn.BatchNorm1d(3, track_running_stats=False).eval()},
     "track_running_stats=False"),
    (lambda m, x: torch.max(x, -1).values, {}, "only the pointwise form"),
    (lambda m, x: torch.erf(x), {}, "unsupported function torch.erf"),
    (lambda m, x: m.mish(x), {"mish": nn.Mish()}, "unsupported module torch.nn.Mish"),
])
def test_limits_give_one_clear_error(forward: Callable[..., torch.Tensor],
                                     modules: dict[str, nn.Module], message: str) -> None:
    assert message in to_nnir_error(Fn(forward, **modules), torch.randn(2, 3, 4))


def test_reductions_stream_unless_over_time() -> None:
    x = torch.randn(1, 4, 6)
    conv = vollo_torch.nn.PaddedConv1d(4, 4, 2)
    # Over channels (axis 1 of [N, C, T]): the last axis once time is removed.
    nnir, expected = translate(lambda m, x: m.c(x) * torch.rsqrt(
        m.c(x).pow(2).mean(1, keepdim=True) + 1e-3) + F.softmax(x, 1), {"c": conv}, x)
    stream, axis = nnir.streaming_transform(2)
    run = Interpreter(stream)
    steps = [run.run(x[:, :, t].numpy())[0] for t in range(6)]
    np.testing.assert_allclose(np.stack(steps, axis), expected.numpy(), rtol=1e-5, atol=1e-5)
    program = stream.to_program(Config.ip_core(2, 8))
    got = program.to_vm().run_timesteps(x.numpy(), 2, axis)
    np.testing.assert_allclose(got, expected.numpy(), rtol=0.05, atol=0.05)
    # Over time: refused by the streaming transform.
    nnir, _ = translate(lambda m, x: x - x.mean(-1, keepdim=True), {}, x)
    with pytest.raises(StreamingError, match=r"cannot stream node %1 \(mean, .*it reduces the "
                                             r"time axis 2 of \[1, 4, 6\], which mixes"):
        nnir.streaming_transform(2)


def test_back_end_reduces_the_last_axis_only() -> None:
    nnir, _ = translate(lambda m, x: x.sum(1, keepdim=True), {}, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"sum over axis 1 of \[2, 3, 4\]: the machine reduces "
                                         r"over the last \(data\) axis only"):
        nnir.to_program(Config.ip_core(1, 4))


# -- ONNX ---------------------------------------------------------------------------------------

ONNX_CASES = {
    "unary": ([helper.make_node(op, ["x"], [op]) for op in (
        "Tanh", "Sigmoid", "Exp", "Abs", "Softplus", "Elu", "HardSwish")]
        + [helper.make_node("LeakyRelu", ["x"], ["lr"], alpha=0.3),
           helper.make_node("HardSigmoid", ["x"], ["hs"], alpha=0.25, beta=0.4),
           helper.make_node("Elu", ["x"], ["e2"], alpha=0.5),
           helper.make_node("Sum", ["Tanh", "Sigmoid", "Exp", "Abs", "Softplus", "Elu",
                                    "HardSwish", "lr", "hs", "e2"], ["y"])], {}, 18),
    "roots": ([helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Add", ["a", "one"], ["p"]),
               helper.make_node("Sqrt", ["p"], ["s"]), helper.make_node("Reciprocal", ["p"], ["r"]),
               helper.make_node("Log", ["p"], ["l"]), helper.make_node("Pow", ["p", "h"], ["q"]),
               helper.make_node("Div", ["x", "p"], ["d"]),
               helper.make_node("Sum", ["s", "r", "l", "q", "d"], ["y"])],
              {"one": np.array(1.0, F32), "h": np.array(-0.5, F32)}, 18),
    "gelu": ([helper.make_node("Gelu", ["x"], ["a"]),
              helper.make_node("Gelu", ["x"], ["b"], approximate="tanh"),
              helper.make_node("Add", ["a", "b"], ["y"])], {}, 20),
    "reduce": ([helper.make_node("ReduceSum", ["x", "ax"], ["s"]),
                helper.make_node("ReduceMean", ["x", "ax"], ["m"], keepdims=1),
                helper.make_node("ReduceMax", ["x", "ax"], ["mx"]),
                helper.make_node("Sum", ["x", "s", "m", "mx"], ["y"])],
               {"ax": np.array([-1], I64)}, 18),
    "reduce_attribute": ([helper.make_node("ReduceMean", ["x"], ["m"], axes=[2]),
                          helper.make_node("Sub", ["x", "m"], ["y"])], {}, 13),
    "softmax": ([helper.make_node("Softmax", ["x"], ["a"]),
                 helper.make_node("LogSoftmax", ["x"], ["b"], axis=1),
                 helper.make_node("Add", ["a", "b"], ["y"])], {}, 18),
    "layer_norm": ([helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"],
                                     epsilon=1e-3)],
                   {"w": np.linspace(0.5, 1.5, 5).astype(F32),
                    "b": np.linspace(-1, 1, 5).astype(F32)}, 18),
    "batch_norm": ([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
                   {"s": np.array([0.5, 2, 1], F32), "b": np.array([1, 0, -1], F32),
                    "m": np.array([0.1, -0.2, 0.3], F32), "v": np.array([1, 2, 0.5], F32)},
                   18),
}


@pytest.mark.parametrize("case", list(ONNX_CASES))
def test_onnx_ops_translate_to_their_semantics(case: str) -> None:
    nodes, initializers, opset = ONNX_CASES[case]
    check_against_reference(make_model(nodes, [2, 3, 5], initializers, opset))


def test_onnx_batch_norm_folds_into_the_conv_before_it() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[2, 0]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])]
    init = {"w": np.random.default_rng(1).standard_normal((3, 3, 3)).astype(F32),
            "s": np.array([0.5, 2, 1], F32), "b": np.array([1, 0, -1], F32),
            "m": np.array([0.1, -0.2, 0.3], F32), "v": np.array([1, 2, 0.5], F32)}
    nnir = check_against_reference(make_model(nodes, [1, 3, 4], init))
    assert [n.op for n in nnir.nodes] == ["input", "conv1d", "output"]


@pytest.mark.parametrize(("nodes", "init", "message"), [
    ([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], {}, None),
    ([helper.make_node("ReduceSum", ["x"], ["y"])], {},
     "sum over axes [0, 1, 2] of a 3-d tensor: only over one axis"),
    ([helper.make_node("LayerNormalization", ["x", "w"], ["y"], axis=1)],
     {"w": np.ones((3, 5), F32)}, "axis=1: only the last axis"),
    ([helper.make_node("Pow", ["x", "e"], ["y"])], {"e": np.array(3.0, F32)},
     "exponent must be a constant 1, 2, 0.5, -0.5 or -1"),
    ([helper.make_node("Gelu", ["x"], ["y"], approximate="erf")], {}, "approximate='erf'"),
])
def test_onnx_limits(nodes: list, init: dict, message: str | None) -> None:
    model = make_model(nodes, [2, 3, 5], init, 20)
    if message is None:
        check_against_reference(model)
        return
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        onnx_frontend.to_nnir(model)


class Head(nn.Module):
    """LayerNorm, GELU, a Linear and softmax: what a PyTorch export writes for them."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.fc(F.gelu(self.norm(x))), dim=-1) + torch.sigmoid(x).sum(
            -1, keepdim=True)


def test_pytorch_export_imports_and_compiles(tmp_path: Path) -> None:
    torch.manual_seed(9)
    model, x = Head().eval(), torch.randn(3, 8)
    nnir = onnx_frontend.to_nnir(export(model, x, tmp_path / "head.onnx", optimize=False))
    (got,) = Interpreter(nnir).run(x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5)
    vm = nnir.to_program(Config.ip_core(2, 8)).to_vm()
    with torch.no_grad():
        np.testing.assert_allclose(vm.run(x.numpy()), model(x).numpy(), rtol=0.05, atol=0.05)
