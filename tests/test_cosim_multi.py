"""Multi-model programs on the RTL: the model index on the input port selects the model.

A two-model program (``tests/test_multi_model.py``) runs interleaved inferences of both
models on the RTL under Icarus and Verilator and must match the VM bit for bit and cycle for
cycle (outputs, every write, issue trace, final state); the VM side is checked against each
model's own single-model program there. Host-side mistakes (a model index the program does
not have) are one clear error; on the machine, an index that is no model or is not held for
``MODEL_SETUP`` cycles raises ``error``.
"""

from __future__ import annotations

import numpy as np
import pytest
from _native_sim import run_native
from conftest import need, simulators_for
from test_multi_model import _mlp, two_model_program

from compiler import Config, ProgramBuilder
from isa.program import MODEL_SETUP
from rtl.top import Top
from sim.cosim import compare, run_rtl

#: Interleaved models: a run of one model and both switches.
ORDER = [0, 1, 1, 0, 1]
#: A small machine, at the ideal depths (short inferences: Icarus runs few cycles a second).
CONFIG = "c2b8-ideal"


@pytest.mark.cosim
@pytest.mark.timeout(900)
@pytest.mark.parametrize("simulator", simulators_for(CONFIG))
def test_interleaved_models_match_vm(simulator: str) -> None:
    """Model 0 on core 1 only, model 1 on both cores: entry pcs, renamed cores, offset
    weights and tensor RAM on the shared core, and the streaming CNN's state kept across
    the other model's inferences."""
    need(simulator)
    program = two_model_program(Config.preset(CONFIG), core_indices=([1], [0, 1]))
    report = compare(program, models=ORDER, simulator=simulator, seed=5)
    assert report.ok, report.summary()
    assert report.inferences == len(ORDER)
    assert report.write_records > 0 and report.output_values > 0


def test_bad_model_index_is_one_clear_error() -> None:
    program = two_model_program()
    with pytest.raises(ValueError, match=r"^model_index 2 is out of range: the program has 2 "
                                         r"model\(s\), 0\.\.1$"):
        run_rtl(program, [np.zeros((1, 8), np.float32)], models=[2])
    with pytest.raises(ValueError, match=r"^2 model indices for 3 inferences$"):
        compare(program, inputs=[np.zeros(12, np.float32)] * 3, models=[1, 1])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", ["no such model", "index not held"])
def test_machine_flags_a_bad_model_selection(case: str) -> None:
    """The RTL raises ``error`` in cycle 0 of an inference it cannot run as selected
    (Amaranth's simulator, on the smallest machine)."""
    builder = ProgramBuilder(Config.ip_core(1, 4))
    builder.add_nnir(_mlp(features=4))
    builder.add_nnir(_mlp(features=8))
    program = builder.to_program()
    seen: list[tuple[int, int]] = []

    async def bench(ctx, top: Top) -> None:
        ctx.set(top.out_ready, 1)
        ctx.set(top.in_model, 5 if case == "no such model" else 0)
        for _ in range(MODEL_SETUP + 1):
            await ctx.tick()
        if case == "index not held":
            ctx.set(top.in_model, 1)            # one cycle before the first beat: too late
            await ctx.tick()
        assert not ctx.get(top.error)
        ctx.set(top.in_valid, 1)
        seen.append((ctx.get(top.busy), ctx.get(top.error)))

    run_native(program, bench)
    assert seen == [(1, 1)]
