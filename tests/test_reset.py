"""The reset entry (``compiler/reset.py``) on the VM: ``vm.reset()`` starts a new sequence.

After some inferences and a reset, the machine's memories equal a freshly loaded VM's and
the next sequence's outputs equal a fresh run's, bit for bit, on every executor (compiled,
numpy, and the traced cycle model), for a streaming conv (window state), an LSTM with a
non-zero initial state and a multi-model program; the reset costs its static cycles; and
after a reset a two-layer LSTM with a Linear matches PyTorch from the first step of the
next sequence (the recurrent tolerance of ``docs/compiler.md`` §9a).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_recurrent import C6B32, K, LstmTiny, U
from torch import nn

import compiler.frontend as vollo_torch
from compiler import Config, Program, ProgramBuilder
from compiler.lower import lower
from compiler.reset import add_reset
from isa.instructions import Dest, End, Vec, VecOp, decode_program
from isa.program import MAX_MODELS, ProgramError, ProgramFormatError
from isa.timing import latencies

pytestmark = pytest.mark.timeout(300)

C2B8 = Config.ip_core(2, 8)
#: (executor, trace): the compiled and numpy executors, and the traced cycle model.
EXECUTORS = [("compiled", False), ("numpy", False), (None, True)]


class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = vollo_torch.nn.PaddedConv1d(6, 8, 3)
        self.conv2 = vollo_torch.nn.PaddedConv1d(8, 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


class Lstm(nn.Module):
    """Two LSTM layers from a constant non-zero state, then a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 10, num_layers=2)
        self.fc = nn.Linear(10, 4)
        self.register_buffer("h0", torch.randn(2, 10) * 0.5)
        self.register_buffer("c0", torch.randn(2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x, (self.h0, self.c0))[0])


def _streaming(name: str) -> tuple:
    """Return (streaming NNIR, sequence A, sequence B, stream axis) of model ``name``."""
    torch.manual_seed(0)
    if name == "conv":
        model, a, b, axis = Conv(), torch.randn(1, 6, 7), torch.randn(1, 6, 5), 2
    else:
        model, a, b, axis = Lstm(), torch.randn(7, 6), torch.randn(5, 6), 0
    gm, _ = vollo_torch.fx.prepare_shape(model, a)
    streaming, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(axis)
    return streaming, a.numpy(), b.numpy(), axis


def _assert_same_state(got: dict, want: dict) -> None:
    for memory in ("tram", "acc"):
        for core, (g, w) in enumerate(zip(got[memory], want[memory], strict=True)):
            np.testing.assert_array_equal(g, w, err_msg=f"core {core} {memory}")


@pytest.mark.parametrize(("executor", "trace"), EXECUTORS, ids=["compiled", "numpy", "cycle"])
@pytest.mark.parametrize("name", ["conv", "lstm"])
def test_reset_restores_the_load_state(name: str, executor: str | None, trace: bool) -> None:
    streaming, a, b, axis = _streaming(name)
    program = streaming.to_program(C2B8)
    vm = program.to_vm(trace=trace, executor=executor)
    fresh = vm.state()
    out_a = vm.run_timesteps(a, axis, axis)
    vm.reset()
    assert vm.inferences == 0 and vm.resets == 1
    _assert_same_state(vm.state(), fresh)
    out_b = vm.run_timesteps(b, axis, axis)
    np.testing.assert_array_equal(out_b, program.to_vm().run_timesteps(b, axis, axis))
    # Without the reset B would start from A's state, and give other outputs.
    other = program.to_vm()
    other.run_timesteps(a, axis, axis)
    assert not np.array_equal(other.run_timesteps(b, axis, axis), out_b)
    # Resets are repeatable, and the same sequence gives the same outputs again.
    vm.reset()
    np.testing.assert_array_equal(vm.run_timesteps(a, axis, axis), out_a)
    if trace:
        # The traced reset writes every word it restores once, from one (dummy) input beat.
        vm.reset()
        assert vm.write_trace and all(w.memory in ("tram", "acc") for w in vm.write_trace)
        assert len({(w.core, w.memory, w.addr) for w in vm.write_trace}) == len(vm.write_trace)


def test_reset_cost_is_static() -> None:
    """The reset is one ``VEC PASS_T`` per word restored on each core, then ``END``: it
    takes the longest core's count plus the vector unit's local-write latency."""
    streaming, *_ = _streaming("lstm")
    program = streaming.to_program(C2B8)
    restores = []
    for core in program.cores:
        code = decode_program(core.instructions[program.reset.entry:])
        n = next(i for i, instr in enumerate(code) if isinstance(instr, End))
        assert all(isinstance(i, Vec) and i.op == VecOp.PASS_T
                   and i.dest in (Dest.TRAM, Dest.ACC) for i in code[:n])
        restores.append(n)
    cycles = max(restores) + latencies(C2B8).vec_local_write
    assert program.reset_cycles() == cycles == program.to_vm().reset_cycle_count()
    assert program.metrics()["reset_cycles"] == cycles
    # The model's own code and timing are those of the program without the reset.
    bare = lower(streaming, C2B8)
    for spaced in (True, False):
        assert program.cycle_count_per_inference(spaced) == bare.cycle_count_per_inference(
            spaced)
    for core, bare_core in zip(program.cores, bare.cores, strict=True):
        n = len(bare_core.instructions)
        np.testing.assert_array_equal(core.instructions[:n], bare_core.instructions)


def test_one_reset_restores_every_model() -> None:
    """A multi-model program has one reset entry, after its models, for all their state."""
    conv, conv_a, conv_b, conv_axis = _streaming("conv")
    lstm, lstm_a, _, _ = _streaming("lstm")
    builder = ProgramBuilder(C2B8)
    builder.add_nnir(conv, name="conv")
    builder.add_nnir(lstm, name="lstm", core_indices=[1])
    program = builder.to_program()
    assert program.num_models == 2 and program.reset_index == 2
    vm = program.to_vm()
    fresh = vm.state()
    vm.run_timesteps(conv_a, conv_axis, conv_axis, model_index=0)
    vm.run_timesteps(lstm_a, 0, 0, model_index=1)
    vm.reset()
    _assert_same_state(vm.state(), fresh)
    np.testing.assert_array_equal(vm.run_timesteps(conv_b, conv_axis, conv_axis),
                                  program.to_vm().run_timesteps(conv_b, conv_axis, conv_axis))
    # The reset entry is not a model: it cannot be run as one.
    with pytest.raises(ValueError, match="out of range"):
        vm.run(conv_b[..., 0], model_index=2)


def test_the_reset_entry_takes_a_model_table_entry() -> None:
    """With the reset entry after them, a program holds at most MAX_MODELS - 1 models."""
    streaming, *_ = _streaming("conv")
    program = streaming.to_program(C2B8)
    full = dataclasses.replace(program, extra_models=[program.model(0)] * (MAX_MODELS - 1))
    with pytest.raises(ProgramError, match=f"{MAX_MODELS} models and the reset entry: the "
                                           f"model table holds at most {MAX_MODELS}"):
        full.validate()
    dataclasses.replace(full, reset=None).validate()  # without a reset entry they fit
    builder = ProgramBuilder(C2B8)
    builder._models = [None] * (MAX_MODELS - 1)  # as if 15 models had been added
    with pytest.raises(ValueError, match=f"at most {MAX_MODELS - 1} models"):
        builder.add_nnir(streaming)


def test_reset_entry_in_the_file_format() -> None:
    streaming, *_ = _streaming("conv")
    program = streaming.to_program(C2B8)
    loaded = Program.load_bytes(program.save_bytes())
    assert loaded.reset.entry == program.reset.entry
    assert loaded.reset_cycles() == program.reset_cycles()
    # Another format version is refused by name (a version-3 file has no reset entry).
    data = bytearray(program.save_bytes())
    data[8:10] = (3).to_bytes(2, "little")
    with pytest.raises(ProgramFormatError, match="version 3; this tidal reads version 4"):
        Program.load_bytes(bytes(data))
    with pytest.raises(ValueError, match="already has a reset entry"):
        add_reset(program)
    bad = dataclasses.replace(program, reset=dataclasses.replace(program.reset,
                                                                 outputs=program.outputs))
    with pytest.raises(ProgramError, match="reset entry must have one input beat and no"):
        bad.validate()


def test_after_a_reset_the_next_sequence_matches_pytorch() -> None:
    """Issue #11's accuracy item: a two-layer LSTM + Linear on the C6B32 streams sequence
    A, is reset and streams B: B's outputs are a fresh run's bit for bit, and within the
    recurrent tolerance of PyTorch's B (from the zero state) from its first step."""
    torch.manual_seed(0)
    model = LstmTiny().eval()
    a, b = torch.randn(200, 16), torch.randn(100, 16)
    gm, _ = vollo_torch.fx.prepare_shape(model, a)
    streaming, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(0)
    program = streaming.to_program(C6B32)
    vm = program.to_vm()
    vm.run_timesteps(a.numpy(), 0, 0)
    vm.reset()
    got = vm.run_timesteps(b.numpy(), 0, 0)
    np.testing.assert_array_equal(got, program.to_vm().run_timesteps(b.numpy(), 0, 0))
    with torch.no_grad():
        expected = model(b).numpy()
    bound = K * U * np.abs(expected).max()
    err = np.abs(got - expected).max(axis=1)
    assert err.max() <= bound, (err.max(), bound)
    assert err[0] <= bound  # from its first step: no trace of sequence A
