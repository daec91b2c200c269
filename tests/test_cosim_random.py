"""Constrained-random programs (``sim.cosim.random_programs``) on the RTL against the VM.

A fixed, small number of seeds per configuration (``c1b4``, ``c2b8``, each at realistic
and ideal depths) and simulator runs in ``make test``; ``make cosim-random`` runs many more.
Every program's seed is in its name (and so in every report), and a failure prints the
command that reruns it alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cosim_params, need

from isa.config import Config
from isa.functions import Function
from isa.instructions import Dest, Fn, Mac, Vec, VecOp, decode_program
from sim.cosim import compare, vm_reference
from sim.cosim.random_programs import SPECIAL_BF16, hard_bf16, random_case, random_program

CONFIGS = ("c1b4", "c2b8", "c1b4-ideal", "c2b8-ideal")
#: Seeds per configuration and simulator in ``make test`` (first seed 100: ``make
#: cosim-random`` starts at 0).
SEEDS = range(100, 103)


def test_generator_is_deterministic() -> None:
    cfg = Config.preset("c2b8")
    a, b = random_case(cfg, 5), random_case(cfg, 5)
    assert a.program.save_bytes() == b.program.save_bytes()
    assert all((x == y).all() for x, y in zip(a.inputs, b.inputs, strict=True))
    assert a.program.save_bytes() != random_case(cfg, 6).program.save_bytes()


@pytest.mark.parametrize("config", CONFIGS)
def test_generator_covers_what_it_should(config: str) -> None:
    """Over 30 seeds: every op and destination, every function (``FN`` to both
    destinations), clamp entry, accumulate chains, remote writes, the top half and last
    word of tensor RAM and accumulators, the last weight tile, input masks of every kind,
    beats after the last output, special values."""
    cfg = Config.preset(config)
    seen: set[object] = set()
    for seed in range(30):
        case = random_case(cfg, seed)
        program = case.program
        for c, core in enumerate(program.cores):
            for instr in decode_program(core.instructions):
                if isinstance(instr, Mac):
                    seen.add("accumulate" if instr.accumulate else "set")
                    seen.add(("weight", instr.weight == cfg.weight_store_depth - 1))
                    seen.add(("acc-top", instr.acc >= cfg.accum_store_depth // 2))
                elif isinstance(instr, Fn):
                    seen.update([Function(instr.fn), ("fn", Dest(instr.dest))])
                elif isinstance(instr, Vec):
                    seen.update([VecOp(instr.op), Dest(instr.dest), ("clamp", instr.clamp)])
                    if instr.dest == Dest.TRAM and instr.addr == cfg.tensor_ram_depth - 1:
                        seen.add("tram-last")
                    if instr.dest in (Dest.TRAM, Dest.ACCS) and instr.cores & ~(1 << c):
                        seen.add(("remote", Dest(instr.dest)))
        masks = {int(m) for m, _ in program.input_dests}
        seen.update(("mask", m) for m in masks)
        if max(program.output_cycles()) < len(program.input_dests) - 1:
            seen.add("beats-after-output")
        beats = np.concatenate(case.inputs).reshape(-1)
        seen.update(("special", int(v)) for v in np.intersect1d(beats, SPECIAL_BF16))
    want: set[object] = {*VecOp, *Dest, "accumulate", "set", ("weight", True),
                         ("acc-top", True), "tram-last", "beats-after-output"}
    want |= {("clamp", k) for k in range(cfg.clamp_store_depth)}
    want |= {*Function, ("fn", Dest.TRAM), ("fn", Dest.ACC)}
    want |= {("mask", m) for m in range(1 << cfg.num_cores)}
    want |= {("special", int(v)) for v in SPECIAL_BF16}
    if cfg.num_cores > 1:
        want |= {("remote", Dest.TRAM), ("remote", Dest.ACCS)}
    assert want <= seen, f"never generated: {want - seen}"


def test_hard_values_are_hard() -> None:
    """The value mix has ties-prone sparse mantissas, a wide exponent range and specials."""
    v = hard_bf16(np.random.default_rng(0), (20000,))
    exp = (v >> 7) & 0xFF
    assert exp.min() == 0 and exp.max() == 0xFF
    assert ((v & 0x1F) == 0).mean() > 0.3                     # few mantissa bits
    assert np.isin(v, SPECIAL_BF16).mean() > 0.1


def test_random_program_is_legal() -> None:
    for config in CONFIGS:
        for seed in range(10):
            vm_reference(random_program(Config.preset(config), seed), [])


@pytest.mark.cosim
@pytest.mark.timeout(900)
@pytest.mark.parametrize("config, simulator", cosim_params(list(CONFIGS)))
def test_random_programs_match_vm(simulator: str, config: str) -> None:
    """Random legal programs with hard inputs: bit- and cycle-exact, every write included."""
    need(simulator)
    cfg = Config.preset(config)
    for seed in SEEDS:
        print(f"seed {seed}")
        case = random_case(cfg, seed)
        report = compare(case.program, inputs=case.inputs, simulator=simulator)
        assert report.ok, (report.summary() + "\nrerun: python -m sim.cosim.random_programs "
                           f"--config {config} --simulator {simulator} --seed {seed} "
                           "--count 1")
        assert report.write_records > 0 and report.output_values > 0
