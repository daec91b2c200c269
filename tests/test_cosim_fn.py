"""Directed co-simulation of the function unit (``FN``) on both simulators.

:func:`fn_program` runs every :class:`isa.functions.Function` on every input of a pool
that holds the special values and both edges of every function's windows
(:func:`sim.cosim.random_programs.function_edges`, all functions' together), to tensor RAM
and to the accumulator, on every core, and sends core 0's results out; every distance is
derived from :func:`isa.timing.latencies`, so the program is legal at realistic and ideal
depths. :func:`sim.cosim.compare` checks outputs, every memory write with its cycle, the
final state, the issue trace and the cycles against the VM, on Icarus and Verilator
(the whole pool on ``c1b4``, its first two inferences on ``c2b8-ideal``).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cosim_params, need

from isa.config import Config
from isa.functions import Function, apply, max_lanes
from isa.instructions import Dest, End, Fn, Instruction, Vec, VecOp, Wait, encode_program
from isa.program import CoreImage, Program, TensorLayout
from isa.timing import latencies
from sim.cosim import compare, vm_reference
from sim.cosim.random_programs import function_edges

#: Configurations, with the inferences co-simulated on each (None: the whole pool): under
#: make test c1b4 and c2b8-ideal run on Verilator and c1b4-ideal on Icarus
#: (tests/conftest.py). Icarus runs the two-core B = 8 model at a few cycles per second on a
#: loaded machine, so there only the first two inferences (64 inputs, both cores, a
#: three-level compare tree) under make cosim-both.
CONFIGS = {"c1b4": None, "c1b4-ideal": None, "c2b8-ideal": 2}
#: Input beats per inference.
BEATS = 4


def pool() -> np.ndarray:
    """Every function's edge inputs, all together, in a fixed shuffled order."""
    values = np.unique(np.concatenate([function_edges(f) for f in Function]))
    return np.random.default_rng(10).permutation(values).astype(np.uint16)


def fn_inputs(b: int) -> list[np.ndarray]:
    """The pool as input beats, :data:`BEATS` per inference (the last padded with +0)."""
    values = pool()
    n = -(-len(values) // (b * BEATS))
    padded = np.zeros(n * b * BEATS, np.uint16)
    padded[:len(values)] = values
    return list(padded.reshape(n, BEATS, b))


def fn_program(cfg: Config) -> Program:
    """Every function on every input beat, every core; core 0 outputs its results.

    The beats land in tensor RAM 0 .. BEATS-1 of every core. ``FN`` k (function k //
    BEATS on beat k % BEATS) issues one per cycle; even k write tensor RAM BEATS + k, odd k
    accumulator k // 2. Once the last has landed, core 0 sends every result out in order
    (``PASS_T`` / ``PASS_A``, unclamped: the identity on bf16 values).
    """
    lat = latencies(cfg)
    jobs = [(f, i) for f in Function for i in range(BEATS)]
    start = BEATS - 1 + lat.input_write + 1          # every beat has landed
    code: list[list[Instruction]] = []
    for c in range(cfg.num_cores):
        core: list[Instruction] = [Wait(start)]
        for k, (f, i) in enumerate(jobs):
            if k % 2 == 0:
                core.append(Fn(fn=f, tram=i, dest=Dest.TRAM, addr=BEATS + k))
            else:
                core.append(Fn(fn=f, tram=i, dest=Dest.ACC, addr=k // 2))
        if c == 0:
            # The last FN issued at start + len - 1 lands fn_write later.
            core.append(Wait(lat.fn_write))
            for k in range(len(jobs)):
                core.append(Vec(op=VecOp.PASS_T if k % 2 == 0 else VecOp.PASS_A, clamp=0,
                                acc=k // 2, tram=BEATS + k, dest=Dest.OUTPUT, addr=0,
                                cores=0))
        code.append([*core, End()])
    b = cfg.block_size
    images = [CoreImage(encode_program(instrs), np.zeros((0, b, b), np.uint16),
                        np.zeros((0, b), np.uint16),
                        np.array([[-np.inf, np.inf]], np.float32)) for instrs in code]
    program = Program(cfg, images, [TensorLayout((BEATS * b,), b)],
                      [TensorLayout((len(jobs) * b,), b)],
                      np.array([((1 << cfg.num_cores) - 1, i) for i in range(BEATS)],
                               np.uint32), {"name": f"fn {cfg.name}"})
    program.validate()
    return program


@pytest.mark.parametrize("config", CONFIGS)
def test_fn_program_is_legal_and_covers_every_edge(config: str) -> None:
    """The VM accepts the program and its outputs are isa.functions' on the whole pool."""
    cfg = Config.preset(config)
    program, inputs = fn_program(cfg), fn_inputs(cfg.block_size)
    assert set(np.concatenate(inputs).reshape(-1)) >= set(pool())
    ref = vm_reference(program, inputs)
    for x, out in zip(inputs, ref.outputs, strict=True):
        want = [max_lanes(x[i]) if f == Function.MAX_LANES else apply(f, x[i])
                for f in Function for i in range(BEATS)]
        np.testing.assert_array_equal(out, np.array(want))


@pytest.mark.cosim
@pytest.mark.timeout(900)
@pytest.mark.parametrize("config, simulator", cosim_params(list(CONFIGS)))
def test_fn_program_matches_vm(simulator: str, config: str) -> None:
    """Every function on every edge input: bit- and cycle-exact, every write included."""
    need(simulator)
    cfg = Config.preset(config)
    inputs = fn_inputs(cfg.block_size)[:CONFIGS[config]]
    report = compare(fn_program(cfg), inputs=inputs, simulator=simulator)
    assert report.ok, report.summary()
    assert report.write_records > 0 and report.output_values > 0
