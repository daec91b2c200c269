# amaranth: UnusedElaboratable=no
"""The function unit (``rtl/function.py``) against ``isa.functions``, bit for bit and cycle
for cycle, in Amaranth's simulator.

One ``FN`` issues per cycle, every function in turn, on the special values and both edges
of every window of its function (:func:`sim.cosim.random_programs.function_edges`) and on
random bit patterns; every result must be ``isa.functions.apply`` (``max_lanes`` for
``MAX_LANES``) on the write port of its destination, with its address, exactly
``fn_write`` cycles after the issue. Realistic depths on B = 4, and unusual depths on
B = 2 (a one-level compare tree, a three-cycle memory read). The instance flavour's ROM
(``tidal_rom``) and the table file every RTL run loads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from isa.config import Config, Depths
from isa.functions import Function, apply, max_lanes, table
from isa.instructions import Dest, End, encode_program
from isa.program import CoreImage, Program, TensorLayout
from isa.timing import latencies
from rtl.function import FunctionUnit
from rtl.gen import FN_TABLE_FILE, write_memory_images
from sim.cosim.random_programs import function_edges

pytestmark = pytest.mark.timeout(900)

UNUSUAL = Depths(mem_read=3, bf16_mul=1, fp32_add=2, vec_mul=1, norm_round=2, clamp_round=2,
                 link=1, output=1)


def jobs(b: int, randoms: int, seed: int) -> list[tuple[Function, np.ndarray]]:
    """Every function's edge inputs and ``randoms`` random patterns, as B-lane blocks."""
    rng = np.random.default_rng(seed)
    out = []
    for f in Function:
        x = np.concatenate([function_edges(f),
                            rng.integers(0, 1 << 16, randoms, dtype=np.uint16)])
        x = rng.permutation(x)
        for beat in np.resize(x, (-(-len(x) // b), b)).astype(np.uint16):
            out.append((f, beat))
    return out


def run(cfg: Config, work: list[tuple[Function, np.ndarray]]) -> None:
    """Issue ``work`` one per cycle (destinations alternating) and check every write."""
    b, m = cfg.block_size, cfg.depths.mem_read
    write = latencies(cfg).fn_write
    dut = FunctionUnit(cfg)
    n = len(work)
    got: dict[int, tuple[int, int, int, int, int]] = {}
    pending: list[tuple[int, int]] = []

    def pack(beat: np.ndarray) -> int:
        return sum(int(v) << (16 * i) for i, v in enumerate(beat))

    def dest(k: int) -> Dest:
        return Dest.TRAM if k % 3 else Dest.ACC

    async def bench(ctx) -> None:  # noqa: ANN001
        for cycle in range(n + write + 2):
            ctx.set(dut.issue, cycle < n)
            if cycle < n:
                ctx.set(dut.fn, work[cycle][0])
                ctx.set(dut.dest, dest(cycle))
                ctx.set(dut.addr, (7 * cycle) % 65536)
            if 0 <= cycle - m < n:           # the operand of the FN issued M cycles ago
                ctx.set(dut.t, pack(work[cycle - m][1]))
            got[cycle] = (ctx.get(dut.acc_we), ctx.get(dut.tram_we), ctx.get(dut.waddr),
                          ctx.get(dut.result), ctx.get(dut.result_bf16))
            pending.append((cycle, ctx.get(dut.pending)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    bad = []
    for k, (f, beat) in enumerate(work):
        acc_we, tram_we, waddr, r32, r16 = got[k + write]
        assert (acc_we, tram_we) == ((0, 1) if dest(k) == Dest.TRAM else (1, 0)), k
        assert waddr == (7 * k) % 65536
        lanes = np.array([(r16 >> (16 * i)) & 0xFFFF for i in range(b)], np.uint16)
        wide = np.array([(r32 >> (32 * i)) & 0xFFFFFFFF for i in range(b)], np.uint32)
        np.testing.assert_array_equal(wide, lanes.astype(np.uint32) << 16)
        want = max_lanes(beat) if f == Function.MAX_LANES else apply(f, beat)
        if (lanes != want).any():
            bad.append(f"{f.name} x={[hex(v) for v in beat]} got {[hex(v) for v in lanes]} "
                       f"want {[hex(v) for v in want]}")
    assert not bad, f"{len(bad)} of {n} blocks differ: {bad[:5]}"
    # No write outside the FNs' write cycles; pending while a write is still to come.
    for cycle, (acc_we, tram_we, *_) in got.items():
        if not write <= cycle < n + write:
            assert acc_we == tram_we == 0, cycle
    for cycle, p in pending:
        assert p == (cycle - write + 1 < n and cycle >= 0), cycle


def test_function_unit_realistic_b4() -> None:
    run(Config.preset("c1b4"), jobs(4, 100, 1))


def test_function_unit_unusual_depths_b2() -> None:
    run(Config.ip_core(1, 2, depths=UNUSUAL, name="c1b2_unusual"), jobs(2, 0, 2))


def test_instance_flavour_reads_the_table_file(tmp_path: Path) -> None:
    # The Verilog ROM is tidal_rom with B read ports; every run's memory directory gets the
    # table it loads, word for word isa.functions.table().
    cfg = Config.preset("c1b4")
    text = verilog.convert(FunctionUnit(cfg, flavour="instance"), name="fu", emit_src=False)
    assert "tidal_rom #(" in text and ".PORTS(32'd4)" in text
    assert "reg [31:0] rom" not in text
    program = Program(cfg, [CoreImage(encode_program([End()]), np.zeros((0, 4, 4), np.uint16),
                                      np.zeros((0, 4), np.uint16), np.zeros((1, 2), np.float32))],
                      [TensorLayout((4,), 4)], [TensorLayout((0,), 4)],
                      np.zeros((1, 2), np.uint32))
    write_memory_images(program, tmp_path)
    words = [int(w, 16) for w in (tmp_path / FN_TABLE_FILE).read_text().split()]
    assert words == table().tolist()
