"""The measured stage check (``bench/timing.py``, ``make timing``) in its quick mode.

Synthesises and places the reference stage and a few small builders at their chosen depths
with the pinned Yosys and nextpnr-ecp5 (a missing tool fails), checks that the netlists are
really mapped to ECP5 logic, that every row got a path and a ratio, that the generated table
lands between the page's markers, and that the check passes. Also the parts that need no
tools: the choice of depths and the harness that feeds a unit from one pin.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from bench import timing
from rtl.arith import Fp32Max

pytestmark = pytest.mark.timeout(600)


def test_quick_flow(tmp_path: Path) -> None:
    docs = tmp_path / "timing.md"
    docs.write_text(f"# Timing\n\nbefore\n{timing.BEGIN}\nold\n{timing.END}\nafter\n")
    results_file = tmp_path / "timing.json"
    status = timing.main(["--quick", "--docs", str(docs), "--json", str(results_file)])
    results = json.loads(results_file.read_text())
    quick = [u for u in timing.UNITS if u.quick]
    assert [(r["unit"], r["stages"]) for r in results["rows"]] == [
        (u.group, u.stages) for u in quick]
    for row in results["rows"]:
        assert row["cells"].get("LUT4", 0) > 0 and row["cells"].get("TRELLIS_FF", 0) > 0, row
        assert row["ns"] > 0 and row["start"] and row["end"], row
    reference = results["rows"][0]
    assert reference["unit"] == "reference" and reference["ratio"] == 1.0
    # The multiply must map to LUT logic with carry chains, not to DSP blocks (-nodsp).
    assert "MULT18X18D" not in reference["cells"] and reference["cells"]["CCU2C"] > 0
    page = docs.read_text()
    assert page.startswith("# Timing\n\nbefore\n") and page.endswith(f"{timing.END}\nafter\n")
    assert "old" not in page and "| fp32_max | 1 |" in page
    assert results["pass"] and status == 0


def test_depths_are_the_fewest_passing_stages() -> None:
    def row(unit: str, stages: str, ok: bool, whole: bool = False) -> dict:
        return {"unit": unit, "stages": stages, "pass": ok, "whole": whole}

    rows = [row("reference", "1", True), row("add", "1", False), row("add", "2", True),
            row("add", "3", True), row("cmp", "1", False), row("core", "-", False, True)]
    assert timing.depths(rows) == {"add": "2", "cmp": "none"}
    assert timing.config_depths({"fp32_mul_bf16": "2+3", "fp32_add": "none", "x": "1"}) == {
        "vec_mul": 2, "norm_round": 3, "fp32_add": None}


def test_harness_feeds_every_input_from_one_pin() -> None:
    """Shifting a pattern in through ``din`` sets the unit's operands."""
    harness = timing.Harness(Fp32Max(1), registered=True)
    a, b = 0x3F800000, 0xC0000000  # 1.0, -2.0: the maximum is a
    bits = [(b >> i) & 1 for i in range(32)][::-1] + [(a >> i) & 1 for i in range(32)][::-1]
    seen: list[int] = []

    async def bench(ctx) -> None:
        for bit in bits:
            ctx.set(harness.din, bit)
            await ctx.tick()
        await ctx.tick()
        seen.append(ctx.get(harness.dut.out))

    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [a]


def test_harness_shifts_out_every_output_bit() -> None:
    """The output pin is the last bit of a shift register loaded with a marker and every
    output bit whenever the input chain's last bit is set: two equal outputs (the function
    unit's fp32 and bf16 results share their upper halves) stay observable, where an XOR
    of all outputs let them cancel and the unit's logic vanish."""
    rng = np.random.default_rng(0)
    harness = timing.Harness(Fp32Max(1), registered=True)
    got: list[int] = []
    want: list[int] = []

    async def bench(ctx) -> None:
        shifter = [0] * 33
        for bit in rng.integers(0, 2, 300).tolist():
            ctx.set(harness.din, bit)
            got.append(ctx.get(harness.dout))
            want.append(shifter[0])
            out = ctx.get(harness.dut.out)
            shifter = ([1] + [out >> i & 1 for i in range(32)] if ctx.get(harness.load)
                       else shifter[1:] + [0])
            await ctx.tick()

    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == want and sum(got) > 10


def test_lane_copies_are_not_merged(tmp_path: Path) -> None:
    """The lanes' copies of the tensor RAM's output register and the memory's own one
    (identical flip-flops, kept apart by their ``keep``) survive synthesis as separate
    registers: merged, the copies would be one register with a fan-out to every lane again."""
    width, lanes = 8, 4
    timing.synthesise(timing.Harness(timing.LaneCopies(width, lanes), True), tmp_path)
    cells = json.loads((tmp_path / "top.json").read_text())["modules"]["top"]["cells"]
    names = [n.split("_TRELLIS_FF")[0] for n, c in cells.items() if c["type"] == "TRELLIS_FF"]
    copies = [f"act{lane}" for lane in range(lanes)] + list(timing.LaneCopies.UNIT_COPIES)
    for reg in [f"dut.{name}" for name in copies] + ["dut.tram_rdata"]:
        assert names.count(reg) == width, (reg, sorted(set(names)))
