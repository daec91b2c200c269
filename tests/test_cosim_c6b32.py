"""Co-simulation on the full C6B32 under Verilator: ``make test-c6b32``, not ``make test``.

A fresh C6B32 Verilator model takes 15–25 minutes to build on a 2-core machine (Verilator's
conversion alone is about 700 CPU seconds, ``docs/rtl.md``), which would take most of CI's
budget, so these tests carry the ``c6b32`` marker that ``scripts/test.sh`` deselects; every
structure they exercise also runs on the small configurations of the co-simulation tier.
``make demo`` builds the same model and compares the seed CNN on it, and
``make test-c6b32`` runs this file (minutes once the model is in the build cache):

- the seed CNN (``examples/models.py``), 16 timesteps;
- an LSTM of the reference's benchmark shape (hidden 128) then a Linear, streaming a
  sequence, reset by the machine's reset entry, then another (``docs/architecture.md`` §2);
- an MLP with GELU, LayerNorm and a softmax (the function unit, reductions and broadcasts).

Each is bit- and cycle-exact against the VM: outputs, every write, the issue trace, done
cycles and the final state.
"""

from __future__ import annotations

import pytest
import torch
from conftest import need
from test_cosim import seed_cnn_program
from torch import nn

import compiler.frontend as vollo_torch
from compiler import Config
from sim.cosim import compare

# A fresh clone builds the model in the first test: the timeout guards against a hang.
pytestmark = [pytest.mark.cosim, pytest.mark.c6b32, pytest.mark.timeout(2700)]


def test_seed_cnn() -> None:
    """The seed CNN, 16 timesteps."""
    need("verilator")
    report = compare(seed_cnn_program(), random=16, simulator="verilator")
    assert report.ok, report.summary()
    assert report.inferences == 16 and report.output_values == 16 * 32


class _Lstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(32, 128)
        self.fc = nn.Linear(128, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x)[0])


def test_lstm_across_a_reset() -> None:
    """LSTM-128 + Linear: 4 steps, the reset entry, 4 more steps, and a final reset."""
    need("verilator")
    torch.manual_seed(0)
    steps = 4
    x = torch.randn(2 * steps, 32)
    gm, _ = vollo_torch.fx.prepare_shape(_Lstm(), x)
    streaming, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(0)
    program = streaming.to_program(Config.ia_420f_c6b32())
    report = compare(program, inputs=[x[t].numpy() for t in range(2 * steps)],
                     simulator="verilator", resets=[steps, 2 * steps])
    assert report.ok, report.summary()
    assert report.inferences == 2 * steps + 2 and report.resets == 2
    assert report.vm_done[steps] == report.rtl_done[steps] == program.reset_cycles() - 1


def test_gelu_layernorm_softmax() -> None:
    """The function unit (GELU, the reciprocal square root and exponential of the norms and
    the softmax), sums and maxima over the data axis and their broadcasts, streamed over a
    sequence of 6 timesteps."""
    need("verilator")
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.LayerNorm(96), nn.Linear(96, 32),
                          nn.Softmax(dim=-1))
    x = torch.randn(6, 64)
    gm, _ = vollo_torch.fx.prepare_shape(model, x)
    streaming, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(0)
    program = streaming.to_program(Config.ia_420f_c6b32())
    report = compare(program, inputs=[x[t].numpy() for t in range(6)], simulator="verilator")
    assert report.ok, report.summary()
    assert report.output_values == 6 * 32
