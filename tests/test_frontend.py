"""The PyTorch front end: PaddedConv1d, prepare_shape, to_nnir (supported ops and errors)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _models import Fn
from torch import nn

import compiler.frontend as vollo_torch
from compiler.frontend.nn import PaddedConv1d
from compiler.nnir import NNIR, Interpreter
from isa.config import Config
from isa.numerics import NumberFormat


def translate(model: nn.Module, *inputs: torch.Tensor) -> tuple[NNIR, object]:
    gm, expected = vollo_torch.fx.prepare_shape(model, *inputs)
    return vollo_torch.fx.nnir.to_nnir(gm), expected


def ops(nnir: NNIR) -> list[str]:
    return [n.op for n in nnir.nodes]


# -- PaddedConv1d ----------------------------------------------------------------------------


@pytest.mark.parametrize("groups", ["one", "depthwise"])
@pytest.mark.parametrize("kernel_size", [1, 2, 5])
@pytest.mark.parametrize("bias", [True, False])
def test_padded_conv1d_is_left_padded_conv1d(groups: str, kernel_size: int, bias: bool) -> None:
    torch.manual_seed(kernel_size)
    c_in, c_out = (6, 6) if groups == "depthwise" else (3, 7)
    g = c_in if groups == "depthwise" else 1
    conv = PaddedConv1d(c_in, c_out, kernel_size, groups=g, bias=bias)
    x = torch.randn(2, c_in, 11)
    expected = F.conv1d(F.pad(x, (kernel_size - 1, 0)), conv.weight, conv.bias, groups=g)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)
    assert conv(x).shape == (2, c_out, 11)
    assert (conv.bias is None) == (not bias)


def test_padded_conv1d_loads_conv1d_parameters() -> None:
    conv = nn.Conv1d(4, 5, 3)
    padded = PaddedConv1d(4, 5, 3)
    padded.load_state_dict(conv.state_dict())
    x = torch.randn(1, 4, 9)
    # The last output of the padded conv equals the only output of the valid conv on 3 steps.
    torch.testing.assert_close(padded(x)[..., -1], conv(x[..., -3:])[..., 0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((4, 4, 3, 2), "groups=2"),
        ((4, 8, 3, 4), "groups=4"),
        ((4, 4, 0), "kernel_size"),
        ((0, 4, 3), "in_channels"),
    ],
)
def test_padded_conv1d_rejects_bad_arguments(args: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PaddedConv1d(*args)


# -- the seed flow ---------------------------------------------------------------------------


class CNN(nn.Module):
    def __init__(self, in_channels, out_channels, hidden_channels, kernel_size=3):
        super().__init__()
        self.conv1 = vollo_torch.nn.PaddedConv1d(in_channels, hidden_channels, kernel_size)
        self.conv2 = vollo_torch.nn.PaddedConv1d(hidden_channels, out_channels, kernel_size)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return x


def test_seed_cnn_flow() -> None:
    torch.manual_seed(0)
    in_channels, out_channels, hidden_channels = 32, 1, 128
    model = CNN(in_channels, out_channels, hidden_channels)
    batch_size, sequence_length = 1, 5
    input = torch.randn(batch_size, in_channels, sequence_length)
    (model, expected_output) = vollo_torch.fx.prepare_shape(model, input)
    nnir = vollo_torch.fx.nnir.to_nnir(model)
    assert ops(nnir) == ["input", "conv1d", "relu", "conv1d", "relu", "output"]
    text = str(nnir)
    assert (
        "%1 = conv1d(%0) weight=(128, 32, 3) bias=128 groups=1 -> [1, 128, 5] bf16  # conv1"
        in text.splitlines()
    )
    assert len(text.splitlines()) == len(nnir.nodes)

    (nnir, output_axis) = nnir.streaming_transform(2)
    assert output_axis == 2
    assert nnir.streaming
    assert ops(nnir) == ["input", "stream_conv1d", "relu", "stream_conv1d", "relu", "output"]
    assert nnir.node(nnir.inputs[0]).shape == (1, 32)
    assert nnir.node(nnir.outputs[0]).shape == (1, 1)
    assert nnir.node(1).attrs["state_shape"] == (1, 32, 2)
    assert "state_shape=(1, 32, 2) -> [1, 128] bf16" in str(nnir)

    vm = Interpreter(nnir)
    outputs = [vm.run(input[:, :, i].detach().numpy())[0] for i in range(sequence_length)]
    torch.testing.assert_close(
        expected_output,
        torch.stack([torch.from_numpy(o) for o in outputs], axis=output_axis),
        atol=1e-5,
        rtol=1e-5,
    )


def test_prepare_shape_annotates_and_returns_expected_output() -> None:
    model = CNN(3, 2, 4)
    x = torch.randn(1, 3, 6)
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    assert not expected.requires_grad
    torch.testing.assert_close(expected, model(x))
    conv = next(n for n in gm.graph.nodes if n.target == "conv1")
    assert conv.op == "call_module"  # PaddedConv1d is a leaf, not traced through
    assert tuple(conv.meta["tensor_meta"].shape) == (1, 4, 6)


# -- supported ops: translation matches PyTorch ------------------------------------------------


def _c(*shape: int) -> torch.Tensor:
    return torch.linspace(-1.5, 2.0, int(np.prod(shape))).reshape(shape)


SUPPORTED: list[tuple[str, Callable[..., torch.Tensor], dict, tuple[int, ...], set[str]]] = [
    ("add", lambda m, x: x + x.relu(), {}, (1, 4, 6), {"add", "relu"}),
    ("sub scalar", lambda m, x: x - 1, {}, (1, 4, 6), {"sub"}),
    ("rsub scalar", lambda m, x: 1 - x, {}, (1, 4, 6), {"sub"}),
    ("mul scalar", lambda m, x: 2 * x, {}, (1, 4, 6), {"mul"}),
    ("div scalar", lambda m, x: x / 4, {}, (1, 4, 6), {"mul"}),
    ("torch.add alpha", lambda m, x: torch.add(x, x, alpha=2), {}, (1, 4, 6), {"add", "mul"}),
    ("mul tensor", lambda m, x: torch.mul(x, x), {}, (1, 4, 6), {"mul"}),
    ("const bcast", lambda m, x: x * _c(4, 1) + _c(6), {}, (1, 4, 6), {"mul", "add"}),
    ("const 1-elem", lambda m, x: x - torch.tensor(0.5), {}, (1, 4, 6), {"sub"}),
    ("neg", lambda m, x: -x + torch.neg(x).neg(), {}, (1, 4, 6), {"neg", "add"}),
    ("relu module", lambda m, x: m.act(x), {"act": nn.ReLU()}, (1, 4, 6), {"relu"}),
    ("relu fns", lambda m, x: F.relu(torch.relu(x) - 1), {}, (1, 4, 6), {"relu", "sub"}),
    ("clamp", lambda m, x: torch.clamp(x, -0.5, 0.5).clip(max=0.3), {}, (1, 4, 6), {"clamp"}),
    ("clamp min 0", lambda m, x: x.clamp(min=0), {}, (1, 4, 6), {"relu"}),
    (
        "hardtanh",
        lambda m, x: F.hardtanh(x) + m.h(x),
        {"h": nn.Hardtanh(-2, 1)},
        (1, 4, 6),
        {"clamp", "add"},
    ),
    ("relu6", lambda m, x: F.relu6(x * 4), {}, (1, 4, 6), {"clamp", "mul"}),
    (
        "maximum",
        lambda m, x: torch.maximum(x, -x) + torch.min(x, _c(1, 4, 6)),
        {},
        (1, 4, 6),
        {"maximum", "minimum", "neg", "add"},
    ),
    ("linear", lambda m, x: m.lin(x), {"lin": nn.Linear(6, 3)}, (1, 4, 6), {"linear"}),
    ("F.linear", lambda m, x: F.linear(x, m.w), {}, (1, 4, 6), {"linear"}),
    ("x @ W", lambda m, x: x @ m.w.t(), {}, (1, 4, 6), {"linear"}),
    ("W @ x", lambda m, x: torch.matmul(m.w2, x), {}, (1, 6, 5), {"linear", "transpose"}),
    ("slice", lambda m, x: x[:, 1:3] + x[:, -2:], {}, (1, 4, 6), {"slice", "add"}),
    ("narrow", lambda m, x: torch.narrow(x, 1, 1, 2), {}, (1, 4, 6), {"slice"}),
    ("index", lambda m, x: x[:, 2], {}, (1, 4, 6), {"slice", "reshape"}),
    ("ellipsis", lambda m, x: x[..., None, 1:], {}, (1, 4, 6), {"slice", "reshape"}),
    ("cat", lambda m, x: torch.cat([x, 2 * x], dim=1), {}, (1, 4, 6), {"concat", "mul"}),
    ("cat const", lambda m, x: torch.cat([x, _c(1, 2, 6)], 1), {}, (1, 4, 6), {"concat"}),
    ("transpose", lambda m, x: x.transpose(1, 2).permute(0, 2, 1).mT, {}, (1, 4, 6), {"transpose"}),
    (
        "view",
        lambda m, x: x.view(x.size(0), -1).reshape(1, 4, 6).flatten(0, 1),
        {},
        (1, 4, 6),
        {"reshape"},
    ),
    ("squeeze", lambda m, x: x.unsqueeze(0).squeeze(0), {}, (1, 4, 6), set()),
    (
        "identity",
        lambda m, x: m.d(m.i(x)),
        {"i": nn.Identity(), "d": nn.Dropout(0.5)},
        (1, 4, 6),
        set(),
    ),
    ("F.dropout eval", lambda m, x: F.dropout(x, 0.2, m.training), {}, (1, 4, 6), set()),
    ("const fold", lambda m, x: x + (m.w * 2 - 1)[1] + m.w.t()[:, 0], {}, (1, 4, 6), {"add"}),
    (
        "padded conv",
        lambda m, x: m.c(x),
        {"c": PaddedConv1d(4, 4, 3, groups=4)},
        (1, 4, 6),
        {"conv1d"},
    ),
]


@pytest.mark.parametrize(
    ("fn", "modules", "shape", "expected_ops"),
    [pytest.param(*case[1:], id=case[0]) for case in SUPPORTED],
)
def test_supported_op_matches_pytorch(
    fn: Callable[..., torch.Tensor], modules: dict, shape: tuple[int, ...], expected_ops: set[str]
) -> None:
    torch.manual_seed(1)
    model = Fn(fn, **modules).eval()
    model.w = nn.Parameter(torch.randn(3, 6))
    model.w2 = nn.Parameter(torch.randn(3, 6))
    x = torch.randn(*shape)
    nnir, expected = translate(model, x)
    assert set(ops(nnir)) - {"input", "output", "constant"} == expected_ops, str(nnir)
    (got,) = Interpreter(nnir).run(x.numpy())
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_constant_folding_leaves_no_dead_nodes() -> None:
    model = Fn(lambda m, x: x + (m.b * 3 - 1).t())
    model.b = nn.Parameter(torch.randn(6, 4))
    nnir, _ = translate(model, torch.randn(1, 4, 6))
    assert ops(nnir) == ["input", "constant", "add", "output"]
    assert nnir.node(1).attrs["value"].shape == (1, 4, 6)
    assert not nnir.node(1).attrs["value"].flags.writeable


def test_multiple_inputs_outputs_and_precisions() -> None:
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return a + b, (a * b, a - b)

    a, b = torch.randn(2, 3), torch.randn(2, 3)
    gm, expected = vollo_torch.fx.prepare_shape(Two(), a, b)
    bf16 = NumberFormat.BF16
    nnir = vollo_torch.fx.nnir.to_nnir(gm, inputs_precisions=[bf16, bf16],
                                       outputs_precisions=[bf16] * 3)
    assert [nnir.node(i).precision for i in (*nnir.inputs, *nnir.outputs)] == [bf16] * 5
    outs = Interpreter(nnir).run(a.numpy(), b.numpy())
    for got, want in zip(outs, [expected[0], *expected[1]], strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="inputs_precisions must be a list of 2"):
        vollo_torch.fx.nnir.to_nnir(gm, inputs_precisions=[NumberFormat.BF16])


@pytest.mark.parametrize("option", ["inputs_precisions", "outputs_precisions"])
def test_fp32_model_inputs_and_outputs_are_refused(option: str) -> None:
    # The machine's ports carry bf16 beats: an fp32 port would be silently bf16.
    gm, _ = vollo_torch.fx.prepare_shape(nn.Linear(4, 2), torch.randn(4))
    with pytest.raises(ValueError, match=rf"{option}\[0\] is NumberFormat.FP32: .* bf16 only"):
        vollo_torch.fx.nnir.to_nnir(gm, **{option: [NumberFormat.FP32]})


# -- errors ----------------------------------------------------------------------------------


def to_nnir_error(model: nn.Module, *inputs: torch.Tensor) -> str:
    gm, _ = vollo_torch.fx.prepare_shape(model, *inputs)
    with pytest.raises(ValueError, match="Unsupported operations encountered") as info:
        vollo_torch.fx.nnir.to_nnir(gm)
    return str(info.value)


def test_all_unsupported_ops_are_listed_in_one_error() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Mish())
            self.conv = nn.Conv1d(8, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.layers(x.transpose(1, 2)).transpose(1, 2)
            y = torch.erf(y) + torch.cumsum(y, 2)  # both unsupported, not reported twice
            return self.conv(y) * x.cumprod(1)[..., 2:]

    message = to_nnir_error(Bad(), torch.randn(1, 8, 6))
    lines = message.splitlines()
    assert lines[0] == "Unsupported operations encountered translating to NNIR:"
    assert len(lines) == 6, message
    assert "  - unsupported module torch.nn.Mish at 'layers.2'" in lines
    assert any(
        line.startswith(
            "  - unsupported function torch.erf at node 'erf' (test_frontend.py:"
        )
        for line in lines
    ), message
    assert "unsupported function torch.cumsum at node 'cumsum'" in message
    assert "unsupported method Tensor.cumprod at node 'cumprod'" in message
    assert "unsupported module torch.nn.Conv1d at 'conv'" in message
    assert "use compiler.frontend.nn.PaddedConv1d" in message


def test_functions_in_submodules_are_named_with_the_module_path() -> None:
    class Block(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.erf(x) + 1

    model = nn.Sequential(Block(), nn.ReLU(), Block())
    message = to_nnir_error(model, torch.randn(1, 3))
    assert "unsupported function torch.erf at node 'erf' in '0' (test_frontend.py:" in message
    assert "unsupported function torch.erf at node 'erf_1' in '2' (test_frontend.py:" in message

    class Ok(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    nnir, _ = translate(nn.Sequential(nn.ReLU(), Ok()), torch.randn(1, 3))
    assert [n.name.split(" ")[0] for n in nnir.nodes] == ["input", "0", "1/add", "output"]


def test_unsupported_function_names_public_path() -> None:
    message = to_nnir_error(Fn(lambda m, x: torch.fft.fft(x).real), torch.randn(1, 4))
    assert "unsupported function torch.fft.fft at node 'fft_fft'" in message


@pytest.mark.parametrize("conv, reason", [
    (nn.Conv1d(2, 2, 3), "padding=0 with kernel_size=3 shortens the sequence by 2 step(s)"),
    (nn.Conv1d(2, 2, 3, padding=1), "padding=1 looks ahead 1 step(s)"),
    (nn.Conv1d(2, 2, 5, padding="same"), "padding='same' looks ahead 2 step(s)"),
    (nn.Conv1d(2, 2, 3, padding=2), "padding=2 with kernel_size=3 lengthens the sequence"),
    (nn.Conv1d(2, 2, 3, padding=1, stride=2), "stride=2 (only 1 is supported)"),
    (nn.Conv1d(2, 2, 3, padding=2, dilation=2), "dilation=2 (only 1 is supported)"),
    (nn.Conv1d(2, 2, 3, padding=1, padding_mode="circular"), "padding_mode='circular'"),
    (nn.Conv1d(2, 2, 1), "only PaddedConv1d is translated"),
])
def test_plain_conv1d_is_rejected_with_its_reason(conv: nn.Conv1d, reason: str) -> None:
    message = to_nnir_error(Fn(lambda m, x: m.c(x), c=conv), torch.randn(1, 2, 6))
    assert "unsupported module torch.nn.Conv1d at 'c': " in message and reason in message
    assert "use compiler.frontend.nn.PaddedConv1d" in message


def test_pooling_is_unsupported() -> None:
    model = Fn(lambda m, x: m.pool(x) + F.avg_pool1d(x, 2), pool=nn.MaxPool1d(2))
    message = to_nnir_error(model, torch.randn(1, 2, 6))
    assert "unsupported module torch.nn.MaxPool1d at 'pool'" in message
    assert "avg_pool1d at node 'avg_pool1d'" in message


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda m, x: x @ x.transpose(1, 2), "needs one operand to be a 2-d constant"),
        (lambda m, x: torch.div(x, x, rounding_mode="floor"), "rounding_mode='floor'"),
        (lambda m, x: x + x[0, 0], "only operands of the same rank may be broadcast"),
        (lambda m, x: x[:, ::2], "only step 1"),
        (lambda m, x: F.dropout(x, 0.5), "call model.eval()"),
        (lambda m, x: torch.clamp(x, x), "bounds must be numbers"),
        (lambda m, x: torch.max(x, 1).values, "only the pointwise form"),
        (lambda m, x: F.linear(x, x[0]), "not a constant"),
    ],
)
def test_unsupported_uses_of_supported_ops(fn: Callable[..., torch.Tensor], message: str) -> None:
    assert message in to_nnir_error(Fn(fn), torch.randn(1, 4, 4))


def test_dropout_module_in_training_mode() -> None:
    message = to_nnir_error(Fn(lambda m, x: m.d(x), d=nn.Dropout(0.1)).train(), torch.randn(2))
    assert "module torch.nn.Dropout at 'd': dropout in training mode" in message


@pytest.mark.parametrize("model, x, message", [
    (nn.Linear(8, 4), torch.randn(5), "the model fails on the example input: RuntimeError: "
                                      "mat1 and mat2 shapes cannot be multiplied"),
    (nn.Linear(8, 4), torch.arange(8), "example input 0 has dtype torch.int64"),
    (nn.Linear(8, 4), [1.0] * 8, "example input 0 must be a torch.Tensor, not list"),
    (lambda x: x, torch.randn(8), "the model must be a torch.nn.Module, not function"),
    (Fn(lambda m, x: x + 1 if x.sum() > 0 else x), torch.ones(4),
     "torch.fx cannot trace the model"),
])
def test_prepare_shape_refuses_bad_examples_in_one_line(
        model: nn.Module, x: torch.Tensor, message: str,
        capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError) as info:
        vollo_torch.fx.prepare_shape(model, x)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "Traceback" not in capfd.readouterr().err  # ShapeProp prints one by default


def test_division_by_zero_gives_infinities_as_in_pytorch() -> None:
    model = Fn(lambda m, x: torch.cat([x / 0.0, x / -0.0, x / m.z], 1))
    model.z = torch.zeros(1, 3)
    x = torch.tensor([[1.0, -2.0, 0.0]])
    nnir, expected = translate(model, x)
    with np.errstate(invalid="ignore"):  # 0 * inf is NaN, as 0 / 0 in PyTorch
        (got,) = Interpreter(nnir).run(x.numpy())
    np.testing.assert_array_equal(got, expected.numpy())
    assert np.isinf(got).sum() == 6 and np.isnan(got).sum() == 3
    # On the machine too (one op: a concat would spread the NaN, see docs/numerics.md).
    nnir, expected = translate(Fn(lambda m, x: x / 0.0), x)
    vm = nnir.to_program(Config.preset("c2b8")).to_vm()
    np.testing.assert_array_equal(vm.run(x.numpy()), expected.numpy())


def test_to_nnir_needs_prepare_shape() -> None:
    with pytest.raises(ValueError, match="prepare_shape"):
        vollo_torch.fx.nnir.to_nnir(CNN(1, 1, 1))
    gm = torch.fx.symbolic_trace(Fn(lambda m, x: x + 1))
    with pytest.raises(ValueError, match="prepare_shape"):
        vollo_torch.fx.nnir.to_nnir(gm)
