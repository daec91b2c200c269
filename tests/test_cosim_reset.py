"""Co-simulation across a reset: the machine's reset entry on the RTL matches the VM.

A two-layer LSTM with a non-zero initial state, then a Linear, compiled for the one-core
block-4 machine, streams sequence A, is reset (the host selects the reset entry and sends
its dummy beat; the VM runs ``vm.reset()``), streams sequence B and is reset again.
:func:`sim.cosim.compare` checks every output beat, write (the reset's restores included),
issue record, done cycle and the final state — which, after the last reset, is the
load-time state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import need
from test_cosim import hand_program
from torch import nn

import compiler.frontend as vollo_torch
from compiler import Config
from sim.cosim import compare, insert_resets, random_inputs

pytestmark = pytest.mark.timeout(600)

STEPS = 3


class Lstm(nn.Module):
    """Two LSTM layers from a constant non-zero state, then a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 6, num_layers=2)
        self.fc = nn.Linear(6, 3)
        self.register_buffer("h0", torch.randn(2, 6) * 0.5)
        self.register_buffer("c0", torch.randn(2, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x, (self.h0, self.c0))[0])


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_lstm_across_resets_matches_vm(simulator: str) -> None:
    need(simulator)
    torch.manual_seed(0)
    x = torch.randn(2 * STEPS, 5)
    gm, _ = vollo_torch.fx.prepare_shape(Lstm(), x)
    streaming, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(0)
    program = streaming.to_program(Config.ip_core(1, 4))
    fresh = program.to_vm().state()
    report = compare(program, inputs=[x[t].numpy() for t in range(2 * STEPS)],
                     simulator=simulator, resets=[STEPS, 2 * STEPS])
    assert report.ok, report.summary()
    assert report.inferences == 2 * STEPS + 2 and report.resets == 2
    assert "(2 of them resets)" in report.summary()
    # The resets' restores were compared write by write, and their cost is the static one.
    assert report.vm_done[STEPS] == report.rtl_done[STEPS] == program.reset_cycles() - 1
    assert report.write_records > 0 and report.state_values > 0
    # After the last reset the RTL's memories are the load-time ones.
    for memory in ("tram", "acc"):
        for want, got in zip(fresh[memory], report.rtl.state[memory], strict=True):
            np.testing.assert_array_equal(got, want)
    if simulator == "verilator":
        # Chunked, in this process: the first chunk ends with the reset, the second starts
        # from the VM's state after it.
        chunked = compare(program, inputs=[x[t].numpy() for t in range(2 * STEPS)],
                          simulator=simulator, resets=[STEPS], chunks=2, workers=1)
        assert chunked.ok, chunked.summary()
        assert chunked.resets == 1 and chunked.inferences == 2 * STEPS + 1
    with pytest.raises(ValueError, match="must be increasing positions"):
        compare(program, inputs=[x[0].numpy()], simulator=simulator, resets=[1, 1])


def test_resets_need_a_reset_entry() -> None:
    """A hand-built program (no reset entry) runs as before without resets, and refuses
    them by name."""
    program = hand_program()
    runs, models = insert_resets(program, random_inputs(program, 2), None, [])
    assert models == [0, 0] and len(runs) == 2
    with pytest.raises(ValueError, match="no reset entry"):
        compare(program, random=2, simulator="icarus", resets=[1])
