"""Functions, reductions and norms compiled and run on the VM, against PyTorch.

Every op of the front end's function/reduction/norm set is compiled on its own (after a
Linear, so its operand comes from an accumulator, and with a row length that leaves padding
lanes in the last block) and its output must lie within the error bound of
``docs/compiler.md`` §8 (``tests/_bounds.py``) of PyTorch's float32 result. The bound is
checked to be tight enough to matter: a wrong function, or a mean that forgot to divide,
falls outside it. Random models mix the new ops with the existing ones (Hypothesis), on
small configurations and the C6B32, streaming and not.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _bounds import cut_layers, error_bound
from _models import Fn
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import compiler.frontend as vollo_torch
from compiler import Config
from compiler.nnir import NNIR

pytestmark = pytest.mark.timeout(300)

CONFIGS = {
    "c1b4": Config.ip_core(1, 4),
    "c2b8": Config.ip_core(2, 8),
    "c6b32": Config.ia_420f_c6b32(),
}

#: Each op as applied to a [rows, 20] tensor y (20 channels: a partial last block on every
#: configuration); the modules a case needs are made by ``_MODULES``.
OPS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "tanh": lambda m, y: torch.tanh(y),
    "sigmoid": lambda m, y: m.sigmoid(y),
    "exp": lambda m, y: torch.exp(y),
    "silu": lambda m, y: F.silu(y),
    "gelu": lambda m, y: m.gelu(y),
    "gelu_tanh": lambda m, y: F.gelu(y, approximate="tanh"),
    "softplus": lambda m, y: m.softplus(y),
    "softplus_beta": lambda m, y: F.softplus(y, beta=2.0),
    "elu": lambda m, y: m.elu(y),
    "elu_alpha": lambda m, y: F.elu(y, alpha=0.5),
    "leaky_relu": lambda m, y: m.leaky(y),
    "leaky_relu_negative": lambda m, y: F.leaky_relu(y, -0.25),
    "hardswish": lambda m, y: m.hardswish(y),
    "hardsigmoid": lambda m, y: F.hardsigmoid(y),
    "abs": lambda m, y: y.abs(),
    "sqrt": lambda m, y: torch.sqrt(y.abs()),
    "rsqrt": lambda m, y: torch.rsqrt(y.abs() + 0.25),
    "log": lambda m, y: torch.log(y.abs() + 0.25),
    "divide": lambda m, y: y / (y.abs() + 0.5),
    "reciprocal": lambda m, y: 2 / (y.abs() + 0.5),
    "sum": lambda m, y: y.sum(-1, keepdim=True),
    "sum_broadcast": lambda m, y: y - y.sum(dim=-1, keepdim=True),
    "mean": lambda m, y: torch.mean(y, -1),
    "amax": lambda m, y: y.amax(-1, keepdim=True) * y,
    "softmax": lambda m, y: F.softmax(y, dim=-1),
    "softmax_module": lambda m, y: m.softmax(y),
    "log_softmax": lambda m, y: torch.log_softmax(y, -1),
    "layer_norm": lambda m, y: m.ln(y),
    "layer_norm_plain": lambda m, y: m.ln_plain(y),
    "rms_norm": lambda m, y: m.rms(y),
    "rms_norm_plain": lambda m, y: F.rms_norm(y, y.shape[-1:]),
    "batch_norm_folded": lambda m, y: m.bn(y),
}


def _modules() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(20)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    ln, rms = nn.LayerNorm(20), nn.RMSNorm(20)
    with torch.no_grad():
        for p in (ln.weight, ln.bias, rms.weight):
            p.normal_()
    return {
        "lin": nn.Linear(20, 20), "sigmoid": nn.Sigmoid(), "gelu": nn.GELU(),
        "softplus": nn.Softplus(), "elu": nn.ELU(), "leaky": nn.LeakyReLU(0.1),
        "hardswish": nn.Hardswish(), "softmax": nn.Softmax(-1), "ln": ln,
        "ln_plain": nn.LayerNorm(20, elementwise_affine=False), "rms": rms,
        "rms_plain": nn.RMSNorm(20, elementwise_affine=False), "bn": bn,
    }


def compile_and_check(model: nn.Module, x: torch.Tensor, config: Config,
                      axis: int | None = None, drawn: bool = False) -> np.ndarray:
    """Compile ``model`` (streamed along ``axis`` if given), run ``x`` on the VM and assert
    ``|VM − PyTorch| ≤ e + |R − PyTorch|`` (``tests/_bounds.py``); return the output.

    A ``drawn`` (Hypothesis) example whose bound is infinite — a norm whose spread rounding
    could wipe out, such as LayerNorm of four near-equal values — is rejected, not run.
    The bound of a layer whose sums the compiler cut in two charges their rounded partial
    sums at their worst case, ``u · Σ|w||x|``, which ahead of a norm can reach the pole of
    its rsqrt or reciprocal; such a model is checked as compiled without cuts
    (``partial_sums=False``), which :func:`test_cut_sums_stay_within_the_uncut_bound`
    compares.
    """
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    nnir = vollo_torch.fx.nnir.to_nnir(gm)
    stream, output_axis = nnir.streaming_transform(axis) if axis is not None else (nnir, None)
    for partial_sums in (True, False):
        program = stream.to_program(config, partial_sums=partial_sums)
        ((rounded, bound),) = error_bound(nnir, x.numpy(), cut=cut_layers(program))
        if np.isfinite(bound).all():
            break
    if drawn:
        assume(np.isfinite(bound).all())
    vm = program.to_vm()
    if axis is None:
        got = np.asarray(vm.run(x.numpy()))
    else:
        got = np.asarray(vm.run_timesteps(x.numpy(), axis, output_axis))
    assert vm.cycle_count() == program.cycle_count_per_inference()
    exp = expected.detach().numpy().astype(np.float64)
    assert got.shape == exp.shape and got.size > 0
    assert np.isfinite(bound).all()
    # 1e-6 relative: PyTorch's float32 arithmetic against the float64 of R.
    worst = (np.abs(got - exp) - bound - np.abs(rounded - exp) - 1e-6 * (1 + np.abs(exp)))
    assert worst.max() <= 0, (f"outside the bound by {worst.max():.3g} "
                              f"(at {np.unravel_index(worst.argmax(), worst.shape)})")
    return got


@pytest.mark.parametrize("config_name", ["c2b8", "c6b32"])
@pytest.mark.parametrize("op", list(OPS))
def test_op_against_pytorch(op: str, config_name: str) -> None:
    model = Fn(lambda m, x: OPS[op](m, m.lin(x)), **_modules()).eval()
    torch.manual_seed(1)
    x = torch.randn(3, 20)
    compile_and_check(model, x, CONFIGS[config_name])


def test_op_on_inputs_and_one_core() -> None:
    # Inputs straight from tensor RAM (no accumulator operand), on one core of 4 lanes.
    x = torch.randn(2, 7)
    for op in ("tanh", "softmax", "rms_norm_plain", "divide", "amax", "log_softmax"):
        model = Fn(lambda m, x, op=op: OPS[op](m, x)).eval()
        compile_and_check(model, x, CONFIGS["c1b4"])


@pytest.mark.parametrize(("wrong", "right"), [
    (torch.tanh, torch.sigmoid),
    (lambda y: y.sum(-1, keepdim=True), lambda y: y.mean(-1, keepdim=True)),
    (lambda y: F.layer_norm(y, (20,), eps=1.0), lambda y: F.layer_norm(y, (20,))),
    (F.gelu, F.silu),
])
def test_bound_catches_wrong_numerics(wrong: Callable[..., torch.Tensor],
                                      right: Callable[..., torch.Tensor]) -> None:
    # Compile `wrong`, compare with `right`'s PyTorch output: the check must fail.
    torch.manual_seed(2)
    lin = nn.Linear(20, 20)
    x = torch.randn(3, 20)
    gm, _ = vollo_torch.fx.prepare_shape(Fn(lambda m, x: wrong(m.lin(x)), lin=lin), x)
    program = vollo_torch.fx.nnir.to_nnir(gm).to_program(CONFIGS["c2b8"])
    got = np.asarray(program.to_vm().run(x.numpy()))
    right_model = Fn(lambda m, x: right(m.lin(x)), lin=lin)
    gm, expected = vollo_torch.fx.prepare_shape(right_model, x)
    ((rounded, bound),) = error_bound(vollo_torch.fx.nnir.to_nnir(gm), x.numpy(),
                                      cut=cut_layers(program))
    exp = expected.numpy()
    assert (np.abs(got - exp) > bound + np.abs(rounded - exp) + 1e-6 * (1 + abs(exp))).any()


class Block(nn.Module):
    """GELU, LayerNorm and softmax on a streaming CNN: [N, C, T] -> conv -> GELU -> time
    last to channels last -> LayerNorm, Linear, softmax -> back."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = vollo_torch.nn.PaddedConv1d(c, c, 3)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x)).transpose(1, 2)
        return F.softmax(self.head(self.norm(y)), dim=-1).transpose(1, 2)


@pytest.mark.parametrize("config_name", ["c2b8", "c6b32"])
def test_gelu_layernorm_softmax_streams(config_name: str) -> None:
    torch.manual_seed(3)
    model = Block(40).eval()
    compile_and_check(model, torch.randn(1, 40, 5), CONFIGS[config_name], axis=2)


def test_function_of_a_function_read_on_another_core() -> None:
    # tanh read by a Linear (core 0) and by abs, whose FN the placement moves to the core
    # of its reader (the sum): that core needs its own copy of tanh's FN. (Once missed:
    # the moved abs read a tensor-RAM word nothing wrote.)
    torch.manual_seed(0)
    model = RandomNet(1, [(4, "tanh", "scale", False), (1, None, None, False)], False).eval()
    compile_and_check(model, torch.tensor([[-1.3328]]), CONFIGS["c2b8"])


def test_cut_sums_stay_within_the_uncut_bound() -> None:
    # The model of the test above, whose bound with its cut layers charged at their worst
    # case is infinite (compile_and_check then checks it uncut): compiled with the cuts, it
    # stays within the bound of the uncut program, whose error it does not exceed.
    torch.manual_seed(3)
    model = Block(40).eval()
    x = torch.randn(1, 40, 5)
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    nnir = vollo_torch.fx.nnir.to_nnir(gm)
    stream, output_axis = nnir.streaming_transform(2)
    exp = expected.numpy().astype(np.float64)
    errors = {}
    for partial_sums in (True, False):
        program = stream.to_program(CONFIGS["c2b8"], partial_sums=partial_sums)
        assert bool(cut_layers(program)) == partial_sums
        got = np.asarray(program.to_vm().run_timesteps(x.numpy(), 2, output_axis))
        errors[partial_sums] = np.abs(got - exp)
    ((rounded, bound),) = error_bound(nnir, x.numpy())
    assert np.isfinite(bound).all()
    assert (errors[True] - bound - np.abs(rounded - exp) - 1e-6 * (1 + np.abs(exp))).max() <= 0
    assert errors[True].max() <= errors[False].max()


# -- random models -----------------------------------------------------------------------------

#: Activations and norms the random models draw from (existing ops among them).
ACTS = ["relu", "tanh", "sigmoid", "silu", "gelu", "softplus", "elu", "hardswish",
        "leaky_relu", None]
NORMS = ["layer_norm", "rms_norm", "softmax", "log_softmax", "centre", "scale", None]


class RandomNet(nn.Module):
    """Linear (or, streaming, causal conv) layers, each followed by an activation, a norm
    over the channels and optionally a residual add. Streaming models take [N, C, T] and
    move channels last around each norm."""

    def __init__(self, channels: int, layers: list[tuple[int, str | None, str | None, bool]],
                 streaming: bool) -> None:
        super().__init__()
        self.specs = layers
        self.streaming = streaming
        self.mats = nn.ModuleList()
        self.norms = nn.ModuleList()
        c = channels
        for out, _, norm, _ in layers:
            self.mats.append(vollo_torch.nn.PaddedConv1d(c, out, 2) if streaming
                             else nn.Linear(c, out))
            if norm == "layer_norm":
                self.norms.append(nn.LayerNorm(out))
            elif norm == "rms_norm":
                self.norms.append(nn.RMSNorm(out))
            else:
                self.norms.append(nn.Identity())
            c = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for (_, act, norm, residual), mat, nm in zip(self.specs, self.mats, self.norms,
                                                     strict=True):
            y = mat(x)
            if act is not None:
                y = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                     "silu": F.silu, "gelu": F.gelu, "softplus": F.softplus, "elu": F.elu,
                     "hardswish": F.hardswish,
                     "leaky_relu": lambda v: F.leaky_relu(v, 0.2)}[act](y)
            if norm is not None:
                if self.streaming:
                    y = y.transpose(1, 2)
                if norm == "softmax":
                    y = F.softmax(y, dim=-1)
                elif norm == "log_softmax":
                    y = F.log_softmax(y, dim=-1)
                elif norm == "centre":
                    y = y - y.mean(-1, keepdim=True)
                elif norm == "scale":  # division by a tensor, abs, a sum broadcast
                    y = y / (y.abs().sum(-1, keepdim=True) + 1)
                else:
                    y = nm(y)
                if self.streaming:
                    y = y.transpose(1, 2)
            x = y + x if residual else y
        return x


@st.composite
def random_nets(draw: st.DrawFn, max_c: int) -> tuple[RandomNet, torch.Tensor]:
    streaming = draw(st.booleans())
    channels = draw(st.integers(1, max_c))
    layers = []
    c = channels
    for _ in range(draw(st.integers(1, 3))):
        out = draw(st.integers(1, max_c))
        # A norm over very few channels divides by a spread that rounding may dominate, and
        # the first-order bound doubles its operand's relative error (it cannot see that
        # the errors of x − mean and of the spread cancel): one norm per model.
        norm = draw(st.sampled_from(NORMS)) if out >= 4 and not any(
            layer[2] for layer in layers) else None
        layers.append((out, draw(st.sampled_from(ACTS)), norm,
                       out == c and draw(st.booleans())))
        c = out
    torch.manual_seed(draw(st.integers(0, 2**16)))
    model = RandomNet(channels, layers, streaming).eval()
    rows = draw(st.integers(1, 2))
    return model, (torch.randn(rows, channels, 3) if streaming else torch.randn(rows, channels))


@pytest.mark.parametrize(("config_name", "max_c", "examples"),
                         [("c1b4", 6, 8), ("c2b8", 20, 10), ("c6b32", 70, 8)])
def test_random_models(config_name: str, max_c: int, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None)
    @given(random_nets(max_c))
    def check(case: tuple[RandomNet, torch.Tensor]) -> None:
        model, x = case
        compile_and_check(model, x, CONFIGS[config_name], 2 if model.streaming else None,
                          drawn=True)

    check()


def test_streaming_equivalence_of_new_ops() -> None:
    # The streaming graph's Interpreter, step by step, equals the whole-sequence graph.
    @settings(max_examples=15, deadline=None, database=None)
    @given(random_nets(12))
    def check(case: tuple[RandomNet, torch.Tensor]) -> None:
        model, x = case
        if not model.streaming:
            return
        from compiler.nnir import Interpreter

        nnir: NNIR = vollo_torch.fx.nnir.to_nnir(vollo_torch.fx.prepare_shape(model, x)[0])
        (whole,) = Interpreter(nnir).run(x.numpy())
        stream, output_axis = nnir.streaming_transform(2)
        run = Interpreter(stream)
        steps = [run.run(x[:, :, t].numpy())[0] for t in range(x.shape[2])]
        np.testing.assert_allclose(np.stack(steps, axis=output_axis), whole, rtol=1e-5,
                                   atol=1e-5)

    check()
