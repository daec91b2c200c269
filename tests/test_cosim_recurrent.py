"""Co-simulation of a compiled recurrent model: the RTL matches the VM exactly.

One small model chains an LSTM, a GRU and a ``Scan`` step (recurrent states in tensor RAM,
a non-zero initial state in the load-time image, ``FN`` gates, the cell update by ``VEC``
s) and is compiled for the one-core block-4 machine; :func:`sim.cosim.compare` checks
every output beat, memory write, issue-trace record, cycle and the final state (the
recurrent states included) over several timesteps against the VM.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import need
from torch import nn

import compiler.frontend as vollo_torch
from compiler import Config
from sim.cosim import compare

pytestmark = pytest.mark.timeout(600)

STEPS = 4


class Step(nn.Module):
    """An Elman step with a separate output."""

    def __init__(self) -> None:
        super().__init__()
        self.rec = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.rec(h) + x)
        return self.out(h), h


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = vollo_torch.nn.LSTM(5, 6)
        self.gru = nn.GRU(6, 6)
        self.scan = vollo_torch.nn.Scan(Step())
        self.register_buffer("h0", torch.full((6,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scan(self.gru(self.lstm(x))[0], self.h0)


@pytest.mark.parametrize("simulator", ["verilator"])
def test_recurrent_model_matches_vm(simulator: str) -> None:
    need(simulator)
    torch.manual_seed(0)
    x = torch.randn(STEPS, 5)
    gm, _ = vollo_torch.fx.prepare_shape(Recurrent(), x)
    streaming, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(0)
    program = streaming.to_program(Config.ip_core(1, 4))
    assert any(np.any(core.tram_init) for core in program.cores)  # the initial state
    report = compare(program, inputs=[x[t].numpy() for t in range(STEPS)],
                     simulator=simulator)
    assert report.ok, report
    assert report.inferences == STEPS and report.state_values > 0
