"""Recurrent models: LSTM, GRU, RNN and Scan, from PyTorch to the VM.

The front end turns each layer into an NNIR ``scan`` whose reference semantics must equal
PyTorch's (float32, tight tolerance), the streaming transform must give the same sequence
one step per inference, and the compiled program must stay within the recurrent tolerance
of ``docs/compiler.md`` §9a of PyTorch, over 1,000 steps for the two-layer LSTM, without
drift; random recurrent stacks (Hypothesis) on small configurations likewise. Unsupported
variants get one clear error each.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import compiler.frontend as vollo_torch
from compiler import Config
from compiler._graph import Chain
from compiler.nnir import NNIR, Interpreter, Node
from isa.numerics import NumberFormat

pytestmark = pytest.mark.timeout(300)

#: One bf16 rounding (8 significant bits).
U = 2.0**-8
#: The recurrent tolerance (docs/compiler.md §9a): |VM − PyTorch| ≤ K·u·max|y|.
K = 4

SMALL = {"c1b4": Config.ip_core(1, 4), "c2b8": Config.ip_core(2, 8)}
C6B32 = Config.ia_420f_c6b32()


class Head(nn.Module):
    """A ``compiler.frontend.nn.LSTM`` (it returns the output sequence) then a Linear."""

    def __init__(self, rnn: nn.Module, hidden: int, out: int = 6) -> None:
        super().__init__()
        self.rnn = rnn
        self.fc = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x))


class WithState(nn.Module):
    """An LSTM with a constant, non-zero initial state (buffers)."""

    def __init__(self, layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 12, num_layers=layers)
        self.register_buffer("h0", torch.randn(layers, 12) * 0.5)
        self.register_buffer("c0", torch.randn(layers, 12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x, (self.h0, self.c0))[0]


class Elman(nn.Module):
    """A Scan step: a new state from the input and the old state, and a separate output."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(7, 10)
        self.rec = nn.Linear(10, 10, bias=False)
        self.out = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.inp(x) + self.rec(h))
        return torch.sigmoid(self.out(h)), h


class ScanModel(nn.Module):
    def __init__(self, output_axis: int = 0) -> None:
        super().__init__()
        self.scan = vollo_torch.nn.Scan(Elman())
        self.register_buffer("h0", torch.full((10,), 0.25))
        self.output_axis = output_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scan(x, self.h0, input_axis=0, output_axis=self.output_axis)


class TwoStates(nn.Module):
    """A Scan step over lists: two inputs, two states (a leaky sum and a gated one), two
    outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 5)
        self.b = nn.Linear(4, 5)

    def forward(self, xs: list[torch.Tensor], hs: list[torch.Tensor]
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        s = 0.5 * hs[0] + self.a(xs[0])
        g = torch.sigmoid(self.b(xs[1])) * hs[1] + s
        return [s - g, torch.relu(g)], [s, torch.tanh(g)]


class ListScan(nn.Module):
    """Lists of inputs, states and outputs; the two output sequences are combined."""

    def __init__(self) -> None:
        super().__init__()
        self.scan = vollo_torch.nn.Scan(TwoStates())
        self.register_buffer("h1", torch.full((5,), -0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, z = self.scan([x[:, :3], x[:, 3:]], [torch.zeros(5), self.h1])
        return y * z + z


#: name -> (model factory, input shape, streaming axis).
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    "lstm": (lambda: nn.LSTM(6, 9), (11, 6), 0),
    "lstm_2layer_batched": (lambda: nn.LSTM(6, 9, num_layers=2), (11, 2, 6), 0),
    "lstm_batch_first": (lambda: nn.LSTM(6, 9, batch_first=True), (2, 11, 6), 1),
    "lstm_no_bias": (lambda: nn.LSTM(6, 9, bias=False), (11, 6), 0),
    "lstm_eval_dropout": (lambda: nn.LSTM(6, 9, num_layers=2, dropout=0.3).eval(), (11, 6), 0),
    "lstm_initial_state": (WithState, (11, 5), 0),
    "vollo_lstm": (lambda: Head(vollo_torch.nn.LSTM(6, 9, num_layers=2), 9), (11, 6), 0),
    "gru": (lambda: nn.GRU(6, 9, num_layers=2), (11, 6), 0),
    "gru_batch_first": (lambda: nn.GRU(6, 9, batch_first=True, bias=False), (2, 11, 6), 1),
    "rnn_tanh": (lambda: nn.RNN(6, 9), (11, 6), 0),
    "rnn_relu": (lambda: nn.RNN(6, 9, nonlinearity="relu", num_layers=2), (11, 6), 0),
    "scan": (ScanModel, (11, 7), 0),
    "scan_output_axis": (lambda: ScanModel(output_axis=1), (11, 7), 0),
    "scan_lists": (ListScan, (11, 7), 0),
}


class Sequence(nn.Module):
    """A recurrent layer's output sequence (element 0 of its (output, state) result)."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def _traced(name: str, steps: int | None = None, seed: int = 0
            ) -> tuple[NNIR, np.ndarray, np.ndarray, int]:
    """Return the NNIR of model ``name``, its input, PyTorch's output and the stream axis."""
    make, shape, axis = MODELS[name]
    torch.manual_seed(seed)
    model = make()
    if isinstance(model, nn.RNNBase):
        model = Sequence(model)
    if steps is not None:
        shape = shape[:axis] + (steps,) + shape[axis + 1:]
    x = torch.randn(*shape)
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    return vollo_torch.fx.nnir.to_nnir(gm), x.numpy(), expected.numpy(), axis


def _streamed(nnir: NNIR, x: np.ndarray, axis: int, run: Callable[[np.ndarray], np.ndarray],
              out_axis: int) -> np.ndarray:
    return np.stack([run(np.take(x, t, axis=axis)) for t in range(x.shape[axis])], out_axis)


@pytest.mark.parametrize("name", MODELS)
def test_reference_semantics_match_pytorch(name: str) -> None:
    """The scan's interpreter and the streamed graph's both compute PyTorch's sequence."""
    nnir, x, expected, axis = _traced(name)
    assert any(n.op == "scan" for n in nnir.nodes)
    (whole,) = Interpreter(nnir).run(x)
    np.testing.assert_allclose(whole, expected, atol=2e-6, rtol=1e-5)
    streaming, out_axis = nnir.streaming_transform(axis)
    assert not any(n.op == "scan" for n in streaming.nodes)
    it = Interpreter(streaming)
    steps = _streamed(streaming, x, axis, lambda v: it.run(v)[0], out_axis)
    np.testing.assert_allclose(steps, expected, atol=2e-6, rtol=1e-5)
    it.reset()  # back to the initial state: the sequence again from its first step
    again = _streamed(streaming, x, axis, lambda v: it.run(v)[0], out_axis)
    np.testing.assert_array_equal(again, steps)


def _vm_check(name: str, config: Config, steps: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    nnir, x, expected, axis = _traced(name, steps)
    streaming, out_axis = nnir.streaming_transform(axis)
    vm = streaming.to_program(config).to_vm()
    got = _streamed(streaming, x, axis, vm.run, out_axis)
    err = np.abs(got - expected)
    assert err.size and err.max() <= K * U * np.abs(expected).max(), (name, err.max())
    return got, err


@pytest.mark.parametrize("config", SMALL, ids=str)
@pytest.mark.parametrize("name", ["lstm_2layer_batched", "lstm_initial_state", "gru",
                                  "gru_batch_first", "rnn_relu", "scan_output_axis"])
def test_vm_small_configs(name: str, config: str) -> None:
    """Compiled for small machines, every kind of recurrence stays within the tolerance."""
    _vm_check(name, SMALL[config])


@pytest.mark.parametrize("name", ["vollo_lstm", "lstm_batch_first", "lstm_no_bias", "gru",
                                  "scan", "scan_lists"])
def test_vm_c6b32(name: str) -> None:
    _vm_check(name, C6B32)


@pytest.mark.parametrize("split", [False, True], ids=["fused", "split"])
def test_both_gate_forms(monkeypatch: pytest.MonkeyPatch, split: bool) -> None:
    """The gates as one chain over [x, h] and as separate input and recurrent chains
    (``compiler._graph.build(split_concat=True)``, which ``lower`` keeps when faster) both
    stay within the tolerance; the split form is what the LSTM 128 benchmark uses."""
    import compiler.lower

    real = compiler.lower.build
    monkeypatch.setattr(compiler.lower, "build",
                        lambda nnir, b, split_concat=False, partial_sums=None:
                        real(nnir, b, split))
    torch.manual_seed(0)
    model = Sequence(nn.LSTM(40, 40))
    x = torch.randn(12, 40)
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    streaming, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(0)
    graph = real(streaming, 32, split)
    assert graph.concat_linears == 4
    # Four gates of two output blocks: one chain each, or one per operand (x and h).
    assert sum(isinstance(v, Chain) for v in graph.live_values()) == (16 if split else 8)
    got = streaming.to_program(C6B32).to_vm().run_timesteps(x.numpy(), 0, 0)
    err = np.abs(got - expected.numpy())
    assert err.max() <= K * U * np.abs(expected.numpy()).max(), err.max()


def test_tolerance_catches_a_missing_bias() -> None:
    """The tolerance is tight enough to matter: a translation that left out the second
    layer's recurrent bias (one of the two biases PyTorch adds) falls outside it."""
    torch.manual_seed(0)
    model = Head(vollo_torch.nn.LSTM(6, 9, num_layers=2), 9)
    x = torch.randn(40, 6)
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    with torch.no_grad():
        model.rnn.lstm.bias_hh_l1.zero_()
    gm, _ = vollo_torch.fx.prepare_shape(model, x)
    streaming, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(0)
    got = streaming.to_program(C6B32).to_vm().run_timesteps(x.numpy(), 0, 0)
    assert np.abs(got - expected.numpy()).max() > K * U * np.abs(expected.numpy()).max()


@st.composite
def random_recurrences(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...], str]:
    """A random LSTM/GRU/RNN stack (sizes 1–20, 1–2 layers, bias or not, batched or not,
    batch first or not, zero or constant initial state) and a config name."""
    torch.manual_seed(draw(st.integers(0, 1 << 16)))  # weights, initial state and input
    kind = draw(st.sampled_from([nn.LSTM, nn.GRU, nn.RNN]))
    i, h, layers = draw(st.integers(1, 20)), draw(st.integers(1, 20)), draw(st.integers(1, 2))
    batch_first, bias = draw(st.booleans()), draw(st.booleans())
    batch = draw(st.sampled_from([None, 1, 2]))
    rnn = kind(i, h, num_layers=layers, bias=bias, batch_first=batch_first)
    steps = 5
    shape = ((steps, i) if batch is None else (batch, steps, i) if batch_first
             else (steps, batch, i))
    rows = () if batch is None else (batch,)
    n_states = 2 if kind is nn.LSTM else 1
    init = [torch.randn(layers, *rows, h) * 0.5 for _ in range(n_states)] \
        if draw(st.booleans()) else None
    return _Recurrence(rnn, init), shape, draw(st.sampled_from(sorted(SMALL)))


class _Recurrence(nn.Module):
    def __init__(self, rnn: nn.RNNBase, init: list[torch.Tensor] | None) -> None:
        super().__init__()
        self.rnn = rnn
        self.init = init
        for k, v in enumerate(init or []):
            self.register_buffer(f"s{k}", v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.init is None:
            return self.rnn(x)[0]
        states = [getattr(self, f"s{k}") for k in range(len(self.init))]
        return self.rnn(x, tuple(states) if len(states) == 2 else states[0])[0]


@settings(max_examples=10, deadline=None, database=None)
@given(random_recurrences())
def test_random_recurrences_on_small_configs(case: tuple[nn.Module, tuple[int, ...], str]
                                             ) -> None:
    """Any size (including one lane, and partial blocks), layout and initial state."""
    model, shape, config = case
    x = torch.randn(*shape)  # seeded by the strategy
    axis = 1 if model.rnn.batch_first and len(shape) == 3 else 0
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    streaming, out_axis = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(axis)
    vm = streaming.to_program(SMALL[config]).to_vm()
    got = vm.run_timesteps(x.numpy(), axis, out_axis)
    expected = expected.numpy()
    # The output is a layer's h: its error is roundings of gate values of up to 1, however
    # small h is (docs/compiler.md §9a), so the scale is at least 1.
    assert np.abs(got - expected).max() <= K * U * max(np.abs(expected).max(), 1.0)


class LstmTiny(nn.Module):
    """Two LSTM layers then a Linear: the accuracy model of docs/compiler.md §9a."""

    def __init__(self, kind: type[nn.Module] = nn.LSTM) -> None:
        super().__init__()
        self.rnn = kind(16, 64, num_layers=2)
        self.fc = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0])


@pytest.mark.parametrize(("kind", "steps"), [(nn.LSTM, 1000), (nn.GRU, 300)],
                         ids=["lstm", "gru"])
def test_long_sequence_has_no_drift(kind: type[nn.Module], steps: int) -> None:
    """Streamed for many steps on the C6B32, the error stays within the tolerance and does
    not grow: the last tenth of the sequence is no worse than twice the first tenth. After
    ``vm.reset()`` the same sequence gives the same outputs from its first step."""
    torch.manual_seed(0)
    model = LstmTiny(kind).eval()
    x = torch.randn(steps, 16)
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    expected = expected.numpy()
    streaming, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(0)
    vm = streaming.to_program(C6B32).to_vm()
    got = vm.run_timesteps(x.numpy(), 0, 0)
    err = np.abs(got - expected).max(axis=1)
    assert err.max() <= K * U * np.abs(expected).max(), err.max()
    tenth = steps // 10
    assert err[-tenth:].max() <= 2 * err[:tenth].max()
    vm.reset()
    np.testing.assert_array_equal(vm.run_timesteps(x[:20].numpy(), 0, 0), got[:20])


def test_initial_state_is_loaded_with_the_program() -> None:
    """A non-zero initial state is in the program's tensor-RAM image: the first step
    already depends on it."""
    nnir, x, expected, axis = _traced("lstm_initial_state")
    streaming, _ = nnir.streaming_transform(axis)
    program = streaming.to_program(SMALL["c2b8"])
    assert any(np.any(core.tram_init) for core in program.cores)
    first = program.to_vm().run(x[0])
    assert np.abs(first - expected[0]).max() <= K * U * np.abs(expected).max()


class _Delay(nn.Module):
    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h, x  # y_t = x_{t-1}: the state is the input itself


class _Keep(nn.Module):
    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + h, h  # the state never changes


class _Swap(nn.Module):
    def forward(self, x: torch.Tensor, hs: list[torch.Tensor]
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return hs[0] * x, [hs[1], hs[0] + x]  # one state takes the other's old value


@pytest.mark.parametrize(("step", "h0"), [
    (_Delay(), torch.full((5,), 0.5)),
    (_Keep(), torch.arange(5.0)),
    (_Swap(), [torch.ones(5), torch.full((5,), 2.0)]),
], ids=["delay", "keep", "swap"])
@pytest.mark.parametrize("config", SMALL)
def test_scan_states_that_are_not_computed(step: nn.Module, h0: object, config: str) -> None:
    """States whose new value is an input, their own old value or another state's old
    value (copies instead of a producing VEC) are updated correctly."""
    model = _Model(lambda m, x: m.scan(x, h0), scan=vollo_torch.nn.Scan(step))
    torch.manual_seed(0)
    x = torch.randn(7, 5)
    gm, expected = vollo_torch.fx.prepare_shape(model, x)
    streaming, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(0)
    got = streaming.to_program(SMALL[config]).to_vm().run_timesteps(x.numpy(), 0, 0)
    err = np.abs(got - expected.numpy())
    assert err.max() <= K * U * np.abs(expected.numpy()).max(), err.max()


def test_scan_outputs_share_one_recurrence() -> None:
    """A step with two outputs is two scan nodes sharing one body, inlined once when
    streamed: two states, not four."""
    nnir, _, _, axis = _traced("scan_lists")
    scans = [n for n in nnir.nodes if n.op == "scan"]
    assert [n.attrs["output"] for n in scans] == [0, 1]
    assert scans[0].attrs["body"] is scans[1].attrs["body"]
    streaming, _ = nnir.streaming_transform(axis)
    assert sum(n.op == "state" for n in streaming.nodes) == 2


def test_state_is_on_chip_not_an_input() -> None:
    """Streaming runs every layer's cell once per inference: the program's input is one
    step, and the states are ``state`` nodes, not inputs."""
    nnir, _, _, axis = _traced("lstm_2layer_batched")
    streaming, _ = nnir.streaming_transform(axis)
    assert [streaming.node(i).shape for i in streaming.inputs] == [(2, 6)]
    states = [n for n in streaming.nodes if n.op == "state"]
    assert len(states) == 4 and {n.shape for n in states} == {(2, 9)}
    assert sum(n.op == "state_write" for n in streaming.nodes) == 4


class _Model(nn.Module):
    def __init__(self, forward: Callable[..., torch.Tensor], **modules: nn.Module) -> None:
        super().__init__()
        self.fn = forward
        for k, m in modules.items():
            self.add_module(k, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


class _Step(nn.Module):
    def __init__(self, step: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.step = step

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.step(x, h)


@pytest.mark.parametrize(("model", "shape", "message"), [
    (nn.LSTM(4, 5, bidirectional=True), (6, 4), "bidirectional=True"),
    (nn.LSTM(4, 5, proj_size=3), (6, 4), "proj_size=3"),
    (nn.LSTM(4, 5, num_layers=2, dropout=0.5), (6, 4), "dropout=0.5 between layers"),
    (nn.GRU(4, 5, bidirectional=True), (6, 4), "bidirectional=True"),
    (_Model(lambda m, x: m.lstm(x)[1][0], lstm=nn.LSTM(4, 5)), (6, 4),
     "final state (h_n, c_n)"),
    (_Model(lambda m, x: m.gru(x)[1] + 1, gru=nn.GRU(4, 5)), (6, 4), "final state h_n"),
    (_Model(lambda m, x: m.lstm(x, (x[:1], x[:1]))[0], lstm=nn.LSTM(5, 5)), (6, 5),
     "only a constant initial state"),
    (_Model(lambda m, x: m.scan(x, x[0], 0, 0), scan=vollo_torch.nn.Scan(
        _Step(lambda x, h: (x, x + h)))), (6, 4), "only a constant initial state"),
], ids=["bidirectional", "proj_size", "dropout_training", "gru_bidirectional",
        "lstm_final_state", "gru_final_state", "input_initial_state", "scan_input_state"])
@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_unsupported_variants_get_one_clear_error(model: nn.Module, shape: tuple[int, ...],
                                                  message: str) -> None:
    gm, _ = vollo_torch.fx.prepare_shape(model, torch.randn(*shape))
    with pytest.raises(ValueError, match="Unsupported operations") as info:
        vollo_torch.fx.nnir.to_nnir(gm)
    assert message in str(info.value)
    assert len(str(info.value).splitlines()) == 2  # the header and one line


def test_scan_step_errors_name_the_step() -> None:
    model = _Model(lambda m, x: m.scan(x, torch.zeros(4), 0, 0), scan=vollo_torch.nn.Scan(
        _Step(lambda x, h: (torch.fft.fft(x).real, h))))
    gm, _ = vollo_torch.fx.prepare_shape(model, torch.randn(6, 4))
    with pytest.raises(ValueError, match="in its step module.*torch.fft.fft"):
        vollo_torch.fx.nnir.to_nnir(gm)


def test_whole_sequence_recurrence_is_not_lowered() -> None:
    nnir, _, _, _ = _traced("gru")
    with pytest.raises(ValueError, match="apply NNIR.streaming_transform"):
        nnir.to_program(SMALL["c2b8"])


def test_streaming_along_another_axis_is_refused() -> None:
    nnir, _, _, _ = _traced("lstm_2layer_batched")
    with pytest.raises(ValueError, match="it scans axis 0, but the streamed time axis is 1"):
        nnir.streaming_transform(1)


def test_nnir_checks_state_keys() -> None:
    bf16 = NumberFormat.BF16
    init = np.zeros(3, np.float32)
    nodes = [Node(0, "input", [], (3,), bf16, {"index": 0}),
             Node(1, "state", [], (3,), bf16, {"key": 7, "init": init}),
             Node(2, "add", [0, 1], (3,), bf16),
             Node(3, "state_write", [2], (3,), bf16, {"key": 8}),
             Node(4, "output", [2], (3,), bf16, {"index": 0})]
    with pytest.raises(ValueError, match=r"state keys \[7\] are not the state_write keys"):
        NNIR(nodes, [0], [4], streaming=True)
    nodes[3] = Node(3, "state_write", [2], (3,), bf16, {"key": 7})
    with pytest.raises(ValueError, match="not allowed in a graph with streaming=False"):
        NNIR(nodes, [0], [4])
    it = Interpreter(NNIR(nodes, [0], [4], streaming=True))
    ones = np.ones(3, np.float32)
    assert [float(it.run(ones)[0][0]) for _ in range(3)] == [1.0, 2.0, 3.0]  # a running sum
