"""The ONNX front end: ``compiler.frontend.onnx.to_nnir`` and ``tidal compile MODEL.onnx``.

Equivalence: a model exported with ``torch.onnx.export`` and imported gives the NNIR, and so
the program bytes, of the PyTorch front end. Op coverage: small ONNX graphs built here give the
results of the ``onnx`` package's reference implementation. Errors: one clear message.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from _models import Fn
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from torch import nn

import compiler.frontend as vollo_torch
from compiler.frontend import onnx as onnx_frontend
from compiler.frontend.nn import PaddedConv1d
from compiler.nnir import NNIR, Interpreter
from examples.models import seed_cnn
from isa import Config
from isa.numerics import NumberFormat
from tidal_cli.loader import load_factory
from tidal_cli.main import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = Config.ia_420f_c6b32()

# -- helpers ---------------------------------------------------------------------------------


def export(model: nn.Module, x: torch.Tensor, path: Path, dynamo: bool = True,
           optimize: bool = True) -> Path:
    """Export ``model`` (in eval mode) for input ``x`` with ``torch.onnx.export``.

    ``optimize`` is the dynamo exporter's: its rewrites (e.g. Relu into a following Clip)
    give graphs equivalent to, but not the same as, the model's.
    """
    model.eval()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        if dynamo:
            torch.onnx.export(model, (x,), path, dynamo=True, optimize=optimize)
        else:
            torch.onnx.export(model, (x,), path, dynamo=False)
    return path


def from_torch(model: nn.Module, x: torch.Tensor) -> NNIR:
    gm, _ = vollo_torch.fx.prepare_shape(model.eval(), x)
    return vollo_torch.fx.nnir.to_nnir(gm)


def assert_same_nnir(a: NNIR, b: NNIR, names: bool = True) -> None:
    """Node by node: op, operands, shape, precision, attributes (arrays bit for bit), name."""
    assert (a.inputs, a.outputs, a.streaming) == (b.inputs, b.outputs, b.streaming)
    assert len(a.nodes) == len(b.nodes), f"\n{a}\n!=\n{b}"
    for m, n in zip(a.nodes, b.nodes, strict=True):
        where = f"{m} != {n}"
        assert (m.id, m.op, m.inputs, m.shape, m.precision) == (
            n.id, n.op, n.inputs, n.shape, n.precision), where
        assert m.attrs.keys() == n.attrs.keys(), where
        for key, value in m.attrs.items():
            other = n.attrs[key]
            if isinstance(value, np.ndarray):
                assert isinstance(other, np.ndarray) and value.dtype == other.dtype, where
                assert np.array_equal(value, other), f"{where}: {key} differs"
            else:
                assert value == other and type(value) is type(other), f"{where}: {key}"
        if names:
            assert m.name == n.name, where


def program_bytes(nnir: NNIR, axis: int) -> bytes:
    streaming, _ = nnir.streaming_transform(axis)
    return streaming.to_program(CONFIG, name="m").save_bytes()


def ops(nnir: NNIR) -> list[str]:
    return [n.op for n in nnir.nodes]


# -- equivalence with the PyTorch front end --------------------------------------------------


def seed() -> tuple[nn.Module, torch.Tensor]:
    """The seed example's CNN and input (``examples/models.py``)."""
    return seed_cnn()


def test_seed_cnn_dynamo_export_gives_the_same_nnir_and_program(tmp_path: Path) -> None:
    model, x = seed()
    reference = from_torch(model, x)
    imported = onnx_frontend.to_nnir(export(model, x, tmp_path / "seed.onnx"))
    assert_same_nnir(imported, reference)
    assert "relu (models.py:" in imported.nodes[2].name  # names follow the model code
    assert program_bytes(imported, 2) == program_bytes(reference, 2)


def test_seed_cnn_legacy_export_gives_the_same_nnir(tmp_path: Path) -> None:
    """The TorchScript exporter pads with a Pad node and names nodes its own way."""
    model, x = seed()
    path = export(model, x, tmp_path / "seed.onnx", dynamo=False)
    assert "Pad" in {n.op_type for n in onnx.load(path).graph.node}
    imported = onnx_frontend.to_nnir(path)
    assert_same_nnir(imported, from_torch(model, x), names=False)
    assert [n.name for n in imported.nodes[1:3]] == ["/conv1/Conv", "/Relu"]


def test_a_model_proto_is_accepted(tmp_path: Path) -> None:
    model, x = seed()
    proto = onnx.load(export(model, x, tmp_path / "seed.onnx"))
    assert_same_nnir(onnx_frontend.to_nnir(proto), from_torch(model, x))


@pytest.mark.parametrize("dynamo", [True, False])
def test_mlp_export_gives_the_same_nnir_and_program(tmp_path: Path, dynamo: bool) -> None:
    """Linear layers on 2-d inputs are exported as Gemm."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4, bias=False),
                          nn.Hardtanh())
    x = torch.randn(2, 8)
    path = export(model, x, tmp_path / "mlp.onnx", dynamo=dynamo)
    assert "Gemm" in {n.op_type for n in onnx.load(path).graph.node}
    reference, imported = from_torch(model, x), onnx_frontend.to_nnir(path)
    assert_same_nnir(imported, reference, names=dynamo)
    if dynamo:
        assert imported.to_program(CONFIG).save_bytes() == reference.to_program(
            CONFIG).save_bytes()


class ChannelLinear(nn.Module):
    """A Linear over channels of [N, C, T]: time moved away from the contracted axis."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.transpose(1, 2)).transpose(1, 2)


class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


# Scalars exact in float32 (ONNX stores them so) and in bf16.
_SCALARS = st.sampled_from([0.25, 0.5, 2.0, 3.0, -1.5, 0.125])


# Layers written as classes: torch.export records source lines of forward methods only, so
# the names (origin lines) agree with the PyTorch front end's.
class Scale(nn.Module):
    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.s


class ReverseSub(Scale):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s - x


class Halve(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.div(x, 2.0)  # not x / 2.0: fx would name it 'truediv', the exporter 'div'


class Clamp(Scale):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, min=-abs(self.s), max=abs(self.s) + 1)


class MaxNeg(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, -x)


class CatNeg(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x], dim=1)


class Fold(nn.Module):
    """Flatten [1, C, T] to [C, T] and back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(0, 1).unsqueeze(0)


@st.composite
def layers(draw: Any, channels: int) -> tuple[nn.Module, int]:
    """One random layer for [N, channels, T] and its output channel count."""
    kind = draw(st.sampled_from(
        ["conv", "depthwise", "linear", "relu", "hardtanh", "relu6", "identity", "dropout",
         "residual", "scale", "rsub", "halve", "clamp", "maximum", "cat", "fold"]))
    c_out = draw(st.integers(1, 12))
    k = draw(st.integers(1, 4))
    if kind == "conv":
        return PaddedConv1d(channels, c_out, k, bias=draw(st.booleans())), c_out
    if kind == "depthwise":
        return PaddedConv1d(channels, channels, k, groups=channels), channels
    if kind == "linear":
        return ChannelLinear(channels, c_out), c_out
    if kind == "hardtanh":
        lo = draw(st.sampled_from([-2.0, -1.0, -0.5]))
        return nn.Hardtanh(lo, draw(st.sampled_from([0.5, 1.0, 4.0]))), channels
    if kind == "residual":
        return Residual(PaddedConv1d(channels, channels, k)), channels
    if kind == "cat":
        return CatNeg(), 2 * channels
    s = draw(_SCALARS)
    modules = {"relu": nn.ReLU(), "relu6": nn.ReLU6(), "identity": nn.Identity(),
               "dropout": nn.Dropout(0.25), "scale": Scale(s), "rsub": ReverseSub(s),
               "halve": Halve(), "clamp": Clamp(s), "maximum": MaxNeg(), "fold": Fold()}
    return modules[kind], channels


@st.composite
def models(draw: Any) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(draw(st.integers(0, 2**16)))
    channels = draw(st.integers(1, 8))
    stack = []
    c = channels
    for _ in range(draw(st.integers(1, 5))):
        layer, c = draw(layers(c))
        stack.append(layer)
    return nn.Sequential(*stack), torch.randn(1, channels, draw(st.integers(2, 6)))


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(models())
def test_random_models_dynamo_export_gives_the_same_nnir_and_program(
    tmp_path_factory: pytest.TempPathFactory, model_input: tuple[nn.Module, torch.Tensor]
) -> None:
    model, x = model_input
    reference = from_torch(model, x)
    path = export(model, x, tmp_path_factory.mktemp("m") / "m.onnx", optimize=False)
    imported = onnx_frontend.to_nnir(path)
    assert_same_nnir(imported, reference)
    assert program_bytes(imported, 2) == program_bytes(reference, 2)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(models())
def test_random_models_legacy_export_gives_the_same_nnir(
    tmp_path_factory: pytest.TempPathFactory, model_input: tuple[nn.Module, torch.Tensor]
) -> None:
    model, x = model_input
    path = export(model, x, tmp_path_factory.mktemp("m") / "m.onnx", dynamo=False)
    assert_same_nnir(onnx_frontend.to_nnir(path), from_torch(model, x), names=False)


@pytest.mark.parametrize("dynamo", [True, False])
def test_functional_ops_give_the_same_nnir(tmp_path: Path, dynamo: bool) -> None:
    """Matmul with a constant on either side, slicing, reshapes, division, neg, minimum.

    Names differ here (the exporters name ``x[:, 1:]`` 'slice', fx 'getitem').
    """
    torch.manual_seed(1)
    w, v = torch.randn(6, 5), torch.randn(4, 3)

    def forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = x @ m.w                                   # [2, 4, 5]
        z = m.v @ x[:, :3, :]                         # [2, 4, 6]: W @ x
        y = torch.minimum(y[:, 1:, :], -y[:, :3, :]) / 4.0
        y = y.reshape(2, 15).view(2, 3, 5).permute(0, 2, 1)
        return torch.cat([y.flatten(1), z.flatten(1) - 1.0], dim=1).clamp(min=0.0)

    model = Fn(forward)
    model.register_buffer("w", w)
    model.register_buffer("v", v)
    x = torch.randn(2, 4, 6)
    reference = from_torch(model, x)
    imported = onnx_frontend.to_nnir(export(model, x, tmp_path / "f.onnx", dynamo=dynamo))
    assert_same_nnir(imported, reference, names=False)
    assert {"linear", "slice", "minimum", "transpose", "reshape", "concat", "relu"} <= set(
        ops(imported))


# -- ONNX graphs built by hand: every mapped op against the ONNX reference implementation ----


def make_model(nodes: list[onnx.NodeProto], x_shape: list[Any], initializers: dict[str, Any],
               opset: int = 18) -> onnx.ModelProto:
    """A graph from input ``x`` to output ``y``; y's shape is what the reference computes."""
    def build(y_shape: list[Any]) -> onnx.ModelProto:
        graph = helper.make_graph(
            nodes, "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
            [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])

    try:
        x = np.zeros(x_shape, F32)
        (y,) = ReferenceEvaluator(build([None] * len(x_shape))).run(None, {"x": x})
        return build(list(y.shape))
    except Exception:  # a model the reference cannot run (an error test): y's shape unknown
        return build([None] * len(x_shape))


def check_against_reference(model: onnx.ModelProto) -> NNIR:
    """Import ``model``; assert that NNIR's float32 semantics give ONNX's results."""
    nnir = onnx_frontend.to_nnir(model)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    (expected,) = ReferenceEvaluator(model).run(None, {"x": x})
    (got,) = Interpreter(nnir).run(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    return nnir


F32 = np.float32
I64 = np.int64
rng = np.random.default_rng(0)
W45 = rng.standard_normal((4, 5)).astype(F32)

OP_CASES: dict[str, tuple[list[onnx.NodeProto], list[int], dict[str, Any], list[str]]] = {
    "gemm": ([helper.make_node("Gemm", ["x", "w", "c"], ["y"], alpha=0.5, beta=2.0,
                               transB=1)],
             [3, 4], {"w": W45.T.copy(), "c": rng.standard_normal((1, 5)).astype(F32)},
             ["linear"]),
    "gemm transA, matrix C": (
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], transA=1)],
        [4, 3], {"w": W45, "c": rng.standard_normal((3, 5)).astype(F32)},
        ["transpose", "linear", "constant", "add"]),
    "matmul + add is a linear with bias": (
        [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["b", "t"], ["y"])],
        [2, 3, 4], {"w": W45, "b": rng.standard_normal(5).astype(F32)}, ["linear"]),
    "matmul with a constant on the left": (
        [helper.make_node("MatMul", ["w", "x"], ["y"])], [2, 5, 3], {"w": W45},
        ["transpose", "linear", "transpose"]),
    "causal conv, depthwise": (
        [helper.make_node("Conv", ["x", "w"], ["y"], group=3, pads=[1, 0], kernel_shape=[2])],
        [1, 3, 6], {"w": rng.standard_normal((3, 1, 2)).astype(F32)}, ["conv1d"]),
    "pad then conv": (
        [helper.make_node("Pad", ["x", "p"], ["t"]),
         helper.make_node("Conv", ["t", "w", "b"], ["y"], pads=[1, 0])],
        [1, 2, 5], {"p": np.array([0, 0, 2, 0, 0, 0], I64),
                    "w": rng.standard_normal((4, 2, 4)).astype(F32),
                    "b": rng.standard_normal(4).astype(F32)}, ["conv1d"]),
    "elementwise": (
        [helper.make_node("Sub", ["s", "x"], ["a"]),            # 1.5 - x: reverse scalar
         helper.make_node("Mul", ["a", "row"], ["b"]),          # broadcast constant
         helper.make_node("Div", ["b", "d"], ["c"]),            # by a constant tensor
         helper.make_node("Max", ["c", "x", "a"], ["e"]),       # variadic
         helper.make_node("Min", ["e", "s"], ["f"]),
         helper.make_node("Neg", ["f"], ["g"]),
         helper.make_node("Add", ["g", "x"], ["y"])],
        [2, 3], {"s": np.array(1.5, F32), "row": np.array([1.0, -2.0, 0.5], F32),
                 "d": np.array([[2.0, 4.0, 8.0]], F32)},
        ["sub", "constant", "mul", "constant", "mul", "maximum", "maximum", "minimum", "neg",
         "add"]),
    "clip": (
        [helper.make_node("Clip", ["x", "zero"], ["a"]),        # min 0 only: relu
         helper.make_node("Clip", ["a", "", "hi"], ["b"]),      # max only
         helper.make_node("Relu", ["b"], ["y"])],
        [3, 4], {"zero": np.array(0.0, F32), "hi": np.array(0.75, F32)},
        ["relu", "clamp", "relu"]),
    "relabels": (
        [helper.make_node("Unsqueeze", ["x", "ax0"], ["a"]),
         helper.make_node("Flatten", ["a"], ["b"], axis=2),
         helper.make_node("Reshape", ["b", "shape"], ["c"]),
         helper.make_node("Squeeze", ["c", "ax0"], ["d"]),
         helper.make_node("Transpose", ["d"], ["e"]),
         helper.make_node("Identity", ["e"], ["f"]),
         helper.make_node("Dropout", ["f"], ["y"])],
        [2, 3, 4], {"ax0": np.array([0], I64), "shape": np.array([1, 0, -1], I64)},
        ["reshape", "transpose"]),                              # relabels merged
    "concat and slices": (
        [helper.make_node("Concat", ["x", "k"], ["a"], axis=-1),
         helper.make_node("Slice", ["a", "st", "en", "ax"], ["y"])],
        [2, 3], {"k": np.ones((2, 2), F32), "st": np.array([-4, 1], I64),
                 "en": np.array([99, 2], I64), "ax": np.array([1, 0], I64)},
        ["constant", "concat", "slice", "slice"]),
    "shape arithmetic is folded": (
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Concat", ["s", "m1"], ["t"], axis=0),
         helper.make_node("Reshape", ["x", "t"], ["y"])],
        [2, 3], {"m1": np.array([1], I64)}, ["reshape"]),
}


@pytest.mark.parametrize("case", OP_CASES)
def test_onnx_op(case: str) -> None:
    nodes, shape, initializers, expected_ops = OP_CASES[case]
    nnir = check_against_reference(make_model(nodes, shape, initializers))
    assert ops(nnir)[1:-1] == expected_ops


def test_model_local_functions_are_inlined() -> None:
    function = helper.make_function(
        "local", "Act", ["a"], ["b"],
        [helper.make_node("Neg", ["a"], ["n"]), helper.make_node("Relu", ["n"], ["b"])],
        [helper.make_opsetid("", 18)])
    model = make_model([helper.make_node("Act", ["x"], ["y"], domain="local")], [2, 3], {})
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("local", 1))
    assert ops(check_against_reference(model)) == ["input", "neg", "relu", "output"]


def test_add_that_broadcasts_a_matmul_to_a_higher_rank_is_not_a_bias() -> None:
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])],
        [3, 4], {"w": W45, "b": np.ones((1, 1, 5), F32)})
    with pytest.raises(ValueError, match=r"op Add .*shapes \[3, 5\] and \[1, 1, 5\]"):
        onnx_frontend.to_nnir(model)


def test_shapes_the_file_declares_are_checked() -> None:
    """A declared shape the NNIR disagrees with is an internal error, not a silent graph."""
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [2, 3], {})
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 4
    with pytest.raises(RuntimeError, match=r"internal error .*NNIR shape \[2, 3\], ONNX shape "
                                           r"\[2, 4\]"):
        onnx_frontend.to_nnir(model)


def test_precisions_and_opset_range() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [2, 3], {}, opset=13)
    nnir = onnx_frontend.to_nnir(model, outputs_precisions=[NumberFormat.BF16])
    assert nnir.node(nnir.outputs[0]).precision == NumberFormat.BF16
    # The ports are bf16 only, as from the PyTorch front end.
    with pytest.raises(ValueError, match=r"outputs_precisions\[0\] is NumberFormat.FP32"):
        onnx_frontend.to_nnir(model, outputs_precisions=[NumberFormat.FP32])
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [2, 3], {},
                       opset=onnx_frontend.MAX_OPSET)
    assert ops(onnx_frontend.to_nnir(model)) == ["input", "relu", "output"]
    with pytest.raises(ValueError, match="inputs_precisions must be a list of 1"):
        onnx_frontend.to_nnir(model, inputs_precisions=[])


# -- errors ----------------------------------------------------------------------------------


def test_unsupported_ops_are_collected_into_one_error() -> None:
    model = make_model(
        [helper.make_node("Erf", ["x"], ["a"], name="erf"),
         helper.make_node("Relu", ["a"], ["b"], name="after_erf"),   # not reported again
         helper.make_node("Sin", ["x"], ["c"], name="sin"),
         helper.make_node("Add", ["b", "c"], ["y"], name="sum")],
        [2, 3], {})
    with pytest.raises(ValueError) as info:
        onnx_frontend.to_nnir(model)
    assert str(info.value).splitlines() == [
        "Unsupported operations encountered translating to NNIR:",
        "  - unsupported op Erf at node 'erf'",
        "  - unsupported op Sin at node 'sin'",
    ]


def test_unsupported_op_of_a_pytorch_export_names_the_source_line(tmp_path: Path) -> None:
    class Gate(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.erf(x) + 1

    path = export(Gate(), torch.randn(2, 3), tmp_path / "s.onnx")
    with pytest.raises(ValueError, match=r"unsupported op Erf at node '\w+' "
                                         r"\(test_onnx\.py:\d+\)"):
        onnx_frontend.to_nnir(path)


def test_opsets_it_does_not_know_are_refused_by_name() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [2], {}, opset=11)
    with pytest.raises(ValueError, match="opset ai.onnx version 11.*versions 13 to"):
        onnx_frontend.to_nnir(model)
    newer = onnx_frontend.MAX_OPSET + 1
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [2], {}, opset=newer)
    with pytest.raises(ValueError, match=f"opset ai.onnx version {newer}, which this importer "
                                         f"does not read"):
        onnx_frontend.to_nnir(model)
    model = make_model([helper.make_node("FusedGemm", ["x"], ["y"], name="fg",
                                         domain="com.microsoft")], [2], {})
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(ValueError,
                       match=r"com.microsoft.FusedGemm at node 'fg': opset 'com.microsoft'"):
        onnx_frontend.to_nnir(model)


LIMIT_CASES: dict[str, tuple[list[onnx.NodeProto], list[int], dict[str, Any], str]] = {
    "non-causal conv": (
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1])], [1, 2, 5],
        {"w": np.ones((2, 2, 3), F32)}, "only causal convolutions"),
    "strided conv": (
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2], pads=[2, 0])], [1, 2, 5],
        {"w": np.ones((2, 2, 3), F32)}, "stride 1"),
    "2-d conv": (
        [helper.make_node("Conv", ["x", "w"], ["y"])], [1, 2, 5, 5],
        {"w": np.ones((2, 2, 1, 1), F32)}, "only 1-d convolutions"),
    "grouped conv": (
        [helper.make_node("Conv", ["x", "w"], ["y"], group=2)], [1, 4, 5],
        {"w": np.ones((2, 2, 1), F32)}, "group=2 is neither 1 nor depthwise"),
    "pad not before a conv": (
        [helper.make_node("Pad", ["x", "p"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
        [1, 2, 5], {"p": np.array([0, 0, 1, 0, 0, 0], I64)}, "supported only before a Conv"),
    "right padding": (
        [helper.make_node("Pad", ["x", "p"], ["y"])], [1, 2, 5],
        {"p": np.array([0, 0, 0, 0, 0, 1], I64)}, "only zeros before the last axis"),
    "dynamic matmul": (
        [helper.make_node("MatMul", ["x", "x"], ["y"])], [2, 2], {}, "needs one operand to be"),
    "slice step": (
        [helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])], [4],
        {"s": np.array([0], I64), "e": np.array([4], I64), "a": np.array([0], I64),
         "st": np.array([2], I64)}, "only step 1"),
    "broadcast tensor": (
        [helper.make_node("Unsqueeze", ["x", "a"], ["u"]), helper.make_node("Add", ["x", "u"],
                                                                            ["y"])],
        [3], {"a": np.array([1], I64)}, "only operands of the same rank may be broadcast"),
    "dropout in training mode": (
        [helper.make_node("Dropout", ["x", "r", "t"], ["y"])], [3],
        {"r": np.array(0.5, F32), "t": np.array(True)}, "training mode"),
    "dropout mask used": (
        [helper.make_node("Dropout", ["x"], ["d", "mask"]),
         helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["d", "m"], ["y"])], [3], {}, "its mask output is used"),
    "cast to an integer": (
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64)], [3], {},
        "cast to INT64: only casts between float types"),
    "clip by a tensor": (
        [helper.make_node("Clip", ["x", "x"], ["y"])], [3], {}, "min bound must be a constant"),
}


@pytest.mark.parametrize("case", LIMIT_CASES)
def test_unsupported_use_of_a_supported_op_says_why(case: str) -> None:
    nodes, shape, initializers, message = LIMIT_CASES[case]
    with pytest.raises(ValueError, match=message) as info:
        onnx_frontend.to_nnir(make_model(nodes, shape, initializers))
    assert len(str(info.value).splitlines()) == 2


def test_symbolic_input_shape_is_refused() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], ["batch", 3], {})
    with pytest.raises(ValueError, match=r"input 'x' has no static shape.*\['batch'\]"):
        onnx_frontend.to_nnir(model)


def test_bad_files_give_one_clear_error(tmp_path: Path) -> None:
    valid = make_model([helper.make_node("Relu", ["x"], ["y"])], [2, 3], {}).SerializeToString()
    files = {"garbage.onnx": b"\x07not an onnx model at all\xff" * 3,
             "truncated.onnx": valid[: len(valid) // 2],
             "empty.onnx": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(onnx_frontend.ModelFileError,
                           match=f"ONNX file '.*{name}' is not (an|a valid) ONNX model") as info:
            onnx_frontend.to_nnir(tmp_path / name)
        assert "\n" not in str(info.value)
    with pytest.raises(onnx_frontend.ModelFileError, match="does not exist"):
        onnx_frontend.to_nnir(tmp_path / "absent.onnx")
    model, x = seed()
    weights = export(model, x, tmp_path / "seed.onnx").with_suffix(".onnx.data")
    weights.unlink()  # the exporter stores the weights next to the graph
    with pytest.raises(onnx_frontend.ModelFileError, match=r"seed.onnx' cannot be loaded .*"
                                                           r"seed.onnx.data"):
        onnx_frontend.to_nnir(tmp_path / "seed.onnx")
    with pytest.raises(ValueError, match="takes an ONNX file path or an onnx.ModelProto"):
        onnx_frontend.to_nnir(nn.ReLU())  # type: ignore[arg-type]


# -- the command line ------------------------------------------------------------------------


def test_tidal_compile_onnx_gives_the_pytorch_program(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model, x = load_factory(str(REPO / "examples" / "models.py:seed_cnn"))
    onnx_file = export(model, x, tmp_path / "seed.onnx")
    from_onnx, from_python = tmp_path / "onnx.bin", tmp_path / "python.bin"
    assert main(["compile", str(onnx_file), "--streaming-axis", "2", "-o", str(from_onnx)]) == 0
    assert "compiled seed for ia_420f_c6b32" in capsys.readouterr().out  # named after the file
    assert main(["compile", f"{REPO / 'examples' / 'models.py'}:seed_cnn", "--streaming-axis",
                 "2", "-o", str(from_python)]) == 0
    # The same name as the factory's, and the program is the same, byte for byte.
    assert main(["compile", str(onnx_file), "--streaming-axis", "2", "--name", "seed_cnn", "-o",
                 str(from_onnx)]) == 0
    assert from_onnx.read_bytes() == from_python.read_bytes()


@pytest.mark.parametrize("content, words", [
    (b"garbage", ["is not an ONNX model"]),
    (make_model([helper.make_node("Erf", ["x"], ["y"], name="erf")], [2, 3], {})
     .SerializeToString(), ["unsupported model", "unsupported op Erf at node 'erf'"]),
])
def test_tidal_compile_onnx_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   content: bytes, words: list[str]) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    assert main(["compile", str(path), "-o", str(tmp_path / "m.bin")]) == 1
    err = capsys.readouterr().err
    assert err.count("tidal: error:") == 1 and err.strip().splitlines()[-1].startswith("tidal")
    assert all(w in err for w in words), err
    assert not (tmp_path / "m.bin").exists()
