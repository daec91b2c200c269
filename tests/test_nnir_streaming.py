"""NNIR graphs, the float reference interpreter and the streaming transform."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import compiler.frontend as vollo_torch
from compiler.frontend.nn import PaddedConv1d
from compiler.nnir import NNIR, Interpreter, Node, StreamingError
from isa.numerics import NumberFormat

BF16 = NumberFormat.BF16


def translate(model: nn.Module, x: torch.Tensor) -> tuple[NNIR, torch.Tensor]:
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    return vollo_torch.fx.nnir.to_nnir(gm), expected


def stream(nnir: NNIR, x: np.ndarray, in_axis: int, out_axis: int) -> np.ndarray:
    """Feed ``x`` to a streaming graph one timestep at a time; stack the outputs."""
    vm = Interpreter(nnir)
    steps = [vm.run(np.take(x, t, axis=in_axis))[0] for t in range(x.shape[in_axis])]
    return np.stack(steps, axis=out_axis)


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


# -- random streamable models ------------------------------------------------------------------


@dataclass
class Layer:
    out_channels: int
    kernel_size: int
    bias: bool
    depthwise: bool
    act: str  # "relu", "clamp" or "none"
    residual: bool


class RandomCNN(nn.Module):
    """PaddedConv1d layers with activations and residual adds, then an optional Linear head."""

    def __init__(self, in_channels: int, layers: list[Layer], head: tuple[str, int, bool]):
        super().__init__()
        self.layers = layers
        self.convs = nn.ModuleList()
        self.residual: list[bool] = []  # decided here: fx cannot trace a branch on shapes
        c = in_channels
        for layer in layers:
            out = c if layer.depthwise else layer.out_channels
            self.convs.append(
                PaddedConv1d(
                    c, out, layer.kernel_size, groups=c if layer.depthwise else 1, bias=layer.bias
                )
            )
            self.residual.append(layer.residual and out == c)
            c = out
        self.head, head_size, head_bias = head
        self.linear = nn.Linear(c, head_size, bias=head_bias) if self.head != "none" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, conv, residual in zip(self.layers, self.convs, self.residual, strict=True):
            y = conv(x)
            if layer.act == "relu":
                y = F.relu(y)
            elif layer.act == "clamp":
                y = torch.clamp(y, -0.5, 1.0)
            x = x + y if residual else y
        if self.linear is not None:
            x = self.linear(x.transpose(1, 2))  # [N, T, C]
            if self.head == "linear_back":
                x = x.transpose(1, 2)
        return x


layers_strategy = st.lists(
    st.builds(
        Layer,
        out_channels=st.integers(1, 130),
        kernel_size=st.integers(1, 9),
        bias=st.booleans(),
        depthwise=st.booleans(),
        act=st.sampled_from(["relu", "clamp", "none"]),
        residual=st.booleans(),
    ),
    min_size=1,
    max_size=4,
)
head_strategy = st.tuples(
    st.sampled_from(["none", "linear", "linear_back"]), st.integers(1, 40), st.booleans()
)


@settings(deadline=None, max_examples=80)
@given(
    in_channels=st.integers(1, 130),
    layers=layers_strategy,
    head=head_strategy,
    batch=st.integers(1, 2),
    length=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_streamed_random_cnn_matches_pytorch(
    in_channels: int,
    layers: list[Layer],
    head: tuple[str, int, bool],
    batch: int,
    length: int,
    seed: int,
) -> None:
    torch.manual_seed(seed)
    model = RandomCNN(in_channels, layers, head)
    x = torch.randn(batch, in_channels, length)
    nnir, expected = translate(model, x)
    (whole,) = Interpreter(nnir).run(x.numpy())
    assert_close(whole, expected.numpy())

    streamed, out_axis = nnir.streaming_transform(2)
    assert out_axis == (1 if head[0] == "linear" else 2)
    # conv1d became stream_conv1d; the transposes around the head moved only time.
    assert {n.op for n in streamed.nodes}.isdisjoint({"conv1d", "transpose"})
    assert_close(stream(streamed, x.numpy(), 2, out_axis), expected.numpy())


OPS = [
    "conv",
    "relu",
    "neg",
    "clamp",
    "affine",
    "rsub",
    "bias",
    "slice",
    "cat",
    "maximum",
    "matmul",
]


class OpChain(nn.Module):
    """A chain of streamable ops on [N, C, T], channel counts decided at construction."""

    def __init__(self, channels: int, ops: list[str], sizes: list[int]) -> None:
        super().__init__()
        self.ops = ops
        self.params = nn.ParameterList()
        self.convs = nn.ModuleList()
        self.slices: list[tuple[int, int]] = []
        self.same_as_previous: list[bool] = []
        for op, size in zip(ops, sizes, strict=True):
            before = channels
            if op == "conv":
                self.convs.append(PaddedConv1d(channels, size, 1 + size % 4))
                channels = size
            elif op == "bias":
                self.params.append(nn.Parameter(torch.randn(channels, 1)))
            elif op == "matmul":
                self.params.append(nn.Parameter(torch.randn(channels, size)))
                channels = size
            elif op == "slice":
                lo = size % channels
                self.slices.append((lo, max(lo + 1, channels - size % 3)))
                channels = self.slices[-1][1] - lo
            elif op == "cat":
                channels *= 2
            self.same_as_previous.append(before == channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convs, params, slices = iter(self.convs), iter(self.params), iter(self.slices)
        for op, same in zip(self.ops, self.same_as_previous, strict=True):
            previous = x
            if op == "conv":
                x = next(convs)(x)
            elif op == "relu":
                x = x.relu()
            elif op == "neg":
                x = -x
            elif op == "clamp":
                x = torch.clamp(x, min=-0.25)
            elif op == "affine":
                x = 0.5 * x + 1
            elif op == "rsub":
                x = 2 - x
            elif op == "bias":
                x = x + next(params)
            elif op == "slice":
                lo, hi = next(slices)
                x = x[:, lo:hi]
            elif op == "cat":
                x = torch.cat([x, x * 0.5], dim=1)
            elif op == "maximum":
                x = torch.maximum(x, x.neg() - 0.1)
            elif op == "matmul":
                x = (x.transpose(1, 2) @ next(params)).transpose(1, 2)
            if same and op in ("conv", "matmul"):
                x = x - previous  # a residual connection
        return x


@settings(deadline=None, max_examples=60)
@given(
    channels=st.integers(1, 40),
    chain=st.lists(st.tuples(st.sampled_from(OPS), st.integers(1, 40)), min_size=1, max_size=8),
    length=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_streamed_random_op_chain_matches_pytorch(
    channels: int, chain: list[tuple[str, int]], length: int, seed: int
) -> None:
    torch.manual_seed(seed)
    model = OpChain(channels, [op for op, _ in chain], [size for _, size in chain])
    x = torch.randn(1, channels, length)
    nnir, expected = translate(model, x)
    (whole,) = Interpreter(nnir).run(x.numpy())
    assert_close(whole, expected.numpy())
    streamed, out_axis = nnir.streaming_transform(2)
    assert out_axis == 2
    assert_close(stream(streamed, x.numpy(), 2, out_axis), expected.numpy())


def test_stream_kernel_size_one_and_depthwise() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(PaddedConv1d(3, 3, 1), PaddedConv1d(3, 3, 4, groups=3, bias=False))
    x = torch.randn(1, 3, 7)
    nnir, expected = translate(model, x)
    streamed, out_axis = nnir.streaming_transform(-1)
    assert [n.attrs.get("state_shape") for n in streamed.nodes if n.op == "stream_conv1d"] == [
        (1, 3, 0),
        (1, 3, 3),
    ]
    assert_close(stream(streamed, x.numpy(), 2, out_axis), expected.numpy())


def test_stream_relabels_and_constants() -> None:
    """Time moves through transposes and reshapes; constants broadcast over time."""

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = PaddedConv1d(4, 6, 2)
            self.scale = nn.Parameter(torch.randn(6, 1))
            self.offset = nn.Parameter(torch.randn(1, 6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x) * self.scale  # [1, 6, T] * [6, 1]
            y = y.permute(2, 0, 1) + self.offset  # [T, 1, 6]
            y = y.reshape(y.shape[0], 2, 3)[:, 1:]  # [T, 1, 3]
            return torch.cat([y, 2 - y], dim=2).unsqueeze(1)  # [T, 1, 1, 6]

    torch.manual_seed(4)
    x = torch.randn(1, 4, 5)
    nnir, expected = translate(Model(), x)
    streamed, out_axis = nnir.streaming_transform(2)
    assert out_axis == 0
    assert streamed.node(streamed.outputs[0]).shape == (1, 1, 6)
    assert_close(stream(streamed, x.numpy(), 2, out_axis), expected.numpy())


def test_stream_time_on_another_axis() -> None:
    """Input [N, T, C]: Linear on channels, then a transposed conv over time."""
    torch.manual_seed(5)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(3, 5), nn.ReLU())
            self.conv = PaddedConv1d(5, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.mlp(x).transpose(1, 2))

    x = torch.randn(2, 6, 3)
    nnir, expected = translate(Model(), x)
    streamed, out_axis = nnir.streaming_transform(1)
    assert out_axis == 2
    assert_close(stream(streamed, x.numpy(), 1, out_axis), expected.numpy())


def test_interpreter_state_persists_and_resets() -> None:
    torch.manual_seed(6)
    nnir, expected = translate(PaddedConv1d(2, 2, 3), x := torch.randn(1, 2, 4))
    streamed, _ = nnir.streaming_transform(2)
    vm = Interpreter(streamed)
    first = [vm.run(x[..., t].numpy())[0] for t in range(4)]
    vm.reset()
    again = [vm.run(x[..., t].numpy())[0] for t in range(4)]
    np.testing.assert_array_equal(np.stack(first, 2), np.stack(again, 2))
    assert_close(np.stack(first, 2), expected.numpy())
    with pytest.raises(ValueError, match=r"input 0 has shape \[2\], expected \[1, 2\]"):
        vm.run(np.zeros(2))


# -- streaming errors ---------------------------------------------------------------------------


def streaming_error(
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    axis: int = 2,
    shape: tuple[int, ...] = (1, 4, 6),
    **modules: nn.Module,
) -> str:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, module in modules.items():
                self.add_module(name, module)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return fn(self, x)

    nnir, _ = translate(Model(), torch.randn(*shape))
    with pytest.raises(StreamingError) as info:
        nnir.streaming_transform(axis)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_linear_over_time_is_rejected() -> None:
    message = streaming_error(lambda m, x: m.lin(x), lin=nn.Linear(6, 2))
    assert message.startswith("cannot stream node %1 (linear, 'lin'): Linear contracts the time")
    assert "mixes timesteps" in message


def test_matmul_over_time_is_rejected() -> None:
    w = torch.randn(6, 6)
    assert "mixes timesteps" in streaming_error(lambda m, x: x @ w)


def test_slice_over_time_is_rejected() -> None:
    message = streaming_error(lambda m, x: x[:, :, 1:] * 2)
    assert "(slice, 'getitem (test_nnir_streaming.py:" in message
    assert "slices the time axis 2" in message


def test_concat_over_time_is_rejected() -> None:
    message = streaming_error(lambda m, x: torch.cat([x, -x], dim=2))
    assert "(concat, 'cat (" in message and "concatenates along the time axis 2" in message


def test_reshape_merging_time_is_rejected() -> None:
    message = streaming_error(lambda m, x: x.flatten(1))
    assert "reshape [1, 4, 6] -> [1, 24] merges or splits the time axis 2" in message


def test_conv_with_time_not_last_is_rejected() -> None:
    message = streaming_error(lambda m, x: m.conv(x), axis=1, conv=PaddedConv1d(4, 4, 2))
    assert "(conv1d, 'conv'): conv1d needs time as its last axis" in message


def test_constant_varying_over_time_is_rejected() -> None:
    ramp = torch.arange(6.0)
    message = streaming_error(lambda m, x: x + ramp)
    assert "constant operand" in message and "varies along the time axis 2" in message


def test_constant_uniform_over_time_is_accepted() -> None:
    x = torch.randn(1, 4, 6)
    rows = torch.arange(4.0)[:, None].expand(4, 6)  # varies over channels, not over time
    streamed, axis = translate(_Lambda(lambda x: x * rows), x)[0].streaming_transform(2)
    assert [n.shape for n in streamed.nodes if n.op == "constant"] == [(1, 4)]
    assert_close(stream(streamed, x.numpy(), 2, axis), (x * rows).numpy())

    uniform = 2 * torch.ones(4, 6)  # becomes the scalar form
    streamed, axis = translate(_Lambda(lambda x: x * uniform), x)[0].streaming_transform(2)
    assert ("mul", 2.0) in [(n.op, n.attrs.get("scalar")) for n in streamed.nodes]
    assert_close(stream(streamed, x.numpy(), 2, axis), 2 * x.numpy())

    identity, _ = translate(nn.Sequential(), x)
    assert identity.streaming_transform(2)[1] == 2


class _Lambda(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def test_streaming_transform_argument_errors() -> None:
    nnir, _ = translate(_Lambda(torch.relu), torch.randn(1, 2, 3))
    with pytest.raises(StreamingError, match="axis 3 is out of range"):
        nnir.streaming_transform(3)
    streamed, _ = nnir.streaming_transform(2)
    with pytest.raises(StreamingError, match="already streaming"):
        streamed.streaming_transform(1)

    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    gm, _ = vollo_torch.fx.prepare_shape(Two(), torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(StreamingError, match="one input, this one has 2"):
        vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(1)


# -- the NNIR data model ------------------------------------------------------------------------


def small_graph() -> NNIR:
    w = np.ones((2, 3), np.float32)
    return NNIR(
        [
            Node(0, "input", [], (1, 3), BF16, {"index": 0}, "x"),
            Node(1, "linear", [0], (1, 2), BF16, {"weight": w, "bias": None}, "fc"),
            Node(2, "relu", [1], (1, 2), BF16, {}, "act"),
            Node(3, "add", [1, 2], (1, 2), BF16, {}, "res"),
            Node(4, "output", [3], (1, 2), BF16, {"index": 0}, "out"),
        ],
        inputs=[0],
        outputs=[4],
    )


def test_nnir_accessors_and_printing() -> None:
    g = small_graph()
    assert g.node(2).name == "act"
    assert [n.id for n in g.consumers(1)] == [2, 3]
    assert str(g).splitlines()[1] == "%1 = linear(%0) weight=(2, 3) bias=None -> [1, 2] bf16  # fc"
    assert "%3 = add(%1, %2) -> [1, 2] bf16  # res" in str(g)
    (y,) = Interpreter(g).run(np.array([[1.0, -2.0, 0.5]]))
    np.testing.assert_array_equal(y, [[-0.5, -0.5]])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ns: ns[2].__setattr__("shape", (1, 3)), r"shape \[1, 3\] should be \[1, 2\]"),
        (lambda ns: ns[3].__setattr__("inputs", [1, 4]), r"operands \[4\] are not earlier"),
        (lambda ns: ns[3].__setattr__("id", 2), "duplicate id"),
        (lambda ns: ns[2].__setattr__("op", "gelu"), "unknown op"),
        (lambda ns: ns[2].__setattr__("inputs", []), "wrong number of operands"),
        (lambda ns: ns[1].attrs.__setitem__("bias", np.ones(3, np.float32)), "bias shape"),
    ],
)
def test_nnir_rejects_malformed_graphs(edit: Callable[[list[Node]], None], message: str) -> None:
    nodes = small_graph().nodes
    edit(nodes)
    with pytest.raises(ValueError, match=message):
        NNIR(nodes, [0], [4])


def test_nnir_rejects_broadcast_of_non_constants() -> None:
    # Operands broadcast only at the same rank (along axes of size 1).
    x = Node(0, "input", [], (2, 2), BF16, {"index": 0}, "x")
    first = Node(1, "reshape", [0], (4,), BF16, {"shape": (4,)}, "r")
    row = Node(2, "slice", [1], (2,), BF16, {"axis": 0, "start": 0, "stop": 2}, "s")
    const = Node(2, "constant", [], (2,), BF16, {"value": np.ones(2, np.float32)}, "c")
    for operand in (row, const):
        add = Node(3, "add", [0, 2], (2, 2), BF16, {}, "add")
        out = Node(4, "output", [3], (2, 2), BF16, {"index": 0}, "out")
        with pytest.raises(ValueError, match="only operands of the same rank may broadcast"):
            NNIR([x, first, operand, add, out], [0], [4])
    rows = Node(2, "slice", [0], (1, 2), BF16, {"axis": 0, "start": 0, "stop": 1}, "s")
    add = Node(3, "add", [0, 2], (2, 2), BF16, {}, "add")
    out = Node(4, "output", [3], (2, 2), BF16, {"index": 0}, "out")
    NNIR([x, first, rows, add, out], [0], [4])  # same rank: broadcast along axis 0


def test_to_program_delegates_to_the_back_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """``to_program`` is ``compiler.lower.lower`` (the back end's), called with the graph,
    with the reset entry of ``compiler.reset.add_reset`` appended."""
    calls = []
    fake = types.ModuleType("compiler.lower")
    fake.lower = lambda nnir, config, name=None: calls.append((nnir, config, name)) or "program"
    monkeypatch.setitem(sys.modules, "compiler.lower", fake)
    reset = types.ModuleType("compiler.reset")
    reset.add_reset = lambda program: ("with reset", program)
    monkeypatch.setitem(sys.modules, "compiler.reset", reset)
    g = small_graph()
    assert g.to_program("config", name="m") == ("with reset", "program")
    assert calls == [(g, "config", "m")]
