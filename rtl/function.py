"""The function unit of a core: the ``FN`` pipeline from operand to local write.

It computes exactly :mod:`isa.functions`: for every lane, a *selection* ``(direct, a, u,
b)`` from the bf16 input (its mode's rules, with one entry of the function table), then
``round_bf16(b)`` or ``round_bf16(a × u + b)`` with the vector unit's arithmetic; or, for
``MAX_LANES``, the largest lane in every lane. The selection logic is generated from the
data of :mod:`isa.functions` (modes, windows, table bases, rules), the table is a ROM
initialised with :func:`isa.functions.table`, and the arithmetic is :mod:`rtl.arith`'s.

Each lane's selection, multiply-add and rounding is a :class:`FunctionLane`; the unit keeps
what the lanes share (the control pipeline, the function's constants, the ROM and the
``MAX_LANES`` tree). The lanes are placed with :func:`rtl.memory.place`, so that the
``"instance"`` flavour converts the lane to Verilog once (``tidal_flane``) and instantiates
it B times per core (``docs/rtl.md``, "Verilog").

Stages, for an ``FN`` issued in cycle ``t`` (``M = mem_read``; ``isa/timing.py``):

=========================  =================================================================
cycle                      what happens here
=========================  =================================================================
t                          the core presents the tensor-RAM read address
t+M                        the bf16 block arrives; the index stage forms each lane's table
                           address (the function's constants were decoded and registered
                           a cycle earlier); ``MAX_LANES`` starts its tree of ``log2 B``
                           one-stage compares
t+M+1                      the table address is presented to the ROM (B read ports), whose
                           read takes M + 1 cycles (the block RAMs, with ``M ≥ 2`` a
                           register, then the bank select); beside it the rest of the
                           selection in two stages, then padding
t+2M+2                     the entries arrive and complete ``a`` and ``b``; the multiply
                           ``a × u`` (``vec_mul + norm_round`` stages), then the add
                           ``+ b`` (``fp32_add`` stages)
t+M+max(L, body)           ``direct`` or ``MAX_LANES`` results selected; rounding to bf16
                           (``clamp_round`` stages: the clamp of the vector unit with ±inf
                           bounds, so that its NaN and rounding rules are shared)
t+fn_write                 result on the local write port (tensor RAM or accumulator)
=========================  =================================================================

with ``body = 1 + (M + 1) + vec_mul + norm_round + fp32_add`` and ``L = log2 B``; the shorter of the
two paths is padded. The construction asserts that the write lands in
:attr:`isa.timing.Latencies.fn_write`.

The ROM is built of :class:`amaranth.lib.memory.Memory` banks of :data:`ROM_BANK` words
with ``init=`` in the ``"native"`` flavour (Amaranth's simulator, and the one synthesised)
and an ``Instance`` of ``rtl/verilog/tidal_rom.v`` in the
``"instance"`` flavour, which loads the table from a file at time 0
(:func:`rtl.gen.write_memory_images` writes it): 22,912 constants in an initial block made
the Verilator build of a one-core B = 4 model ten times slower.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import numpy as np
from amaranth.hdl import (
    Cat,
    ClockSignal,
    Const,
    Instance,
    Module,
    Mux,
    Signal,
    Value,
    signed,
    unsigned,
)
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from isa.functions import SPECS, Function, FunctionSpec, Mode, base, table, windows
from isa.instructions import Dest, Fn
from isa.numerics import CANONICAL_NAN_F32
from isa.timing import latencies
from rtl.arith import clamp_round, fp32_add, fp32_max, fp32_mul_bf16
from rtl.memory import addr_bits, check_flavour, place

__all__ = ["CONSTANTS", "FunctionUnit", "FunctionLane", "function_lane_signature"]

_ADDR_BITS = Fn.FIELDS[3].width
_INF32 = 0x7F800000
_SIGN32 = 0x80000000
_NEG_INF32 = 0xFF800000


def _f32(value: float) -> int:
    return int(np.array(value, dtype=np.float32).view(np.uint32))


class FunctionUnit(wiring.Component):
    """``FN`` datapath and control pipeline of one core.

    Parameters
    ----------
    config : Config
    flavour : str
        ``"native"`` or ``"instance"`` (:mod:`rtl.memory`): how the ROM is built and the
        lanes are placed.

    Members
    -------
    issue : In(1)
        An ``FN`` issues this cycle (cycle ``t``) with the fields below.
    fn : In(Function)
    dest : In(2)
        :class:`~isa.instructions.Dest`: ``TRAM`` or ``ACC``.
    addr : In(16)
        Destination address.
    t : In(16 * B)
        Tensor-RAM block read for the ``FN`` of cycle ``t − mem_read``.
    acc_we, tram_we : Out(1)
        Local write of the result of the ``FN`` issued ``fn_write`` cycles ago.
    waddr : Out(16)
        Its destination address.
    result : Out(32 * B)
        Its result as fp32 (the bf16 value in the upper half of each lane) for the
        accumulator.
    result_bf16 : Out(16 * B)
        Its result as bf16 (tensor RAM).
    pending : Out(1)
        An ``FN`` in flight still has its write in a later cycle.
    """

    def __init__(self, config: Config, *, flavour: str = "native") -> None:
        self.config = config
        self.flavour = check_flavour(flavour)
        b = config.block_size
        super().__init__({
            "issue": In(1),
            "fn": In(Function),
            "dest": In(2),
            "addr": In(_ADDR_BITS),
            "t": In(16 * b),
            "acc_we": Out(1),
            "tram_we": Out(1),
            "waddr": Out(_ADDR_BITS),
            "result": Out(32 * b),
            "result_bf16": Out(16 * b),
            "pending": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self.config
        b, d, lat = cfg.block_size, cfg.depths, latencies(cfg)
        levels = cfg.tree_levels
        mul = d.vec_mul + d.norm_round
        body = 1 + lat.fn_table_read + mul + d.fp32_add
        round_at = d.mem_read + max(levels, body)
        write = round_at + d.clamp_round
        assert write == lat.fn_write, (write, lat.fn_write)

        def stage(value: Value, name: str, *, reset_less: bool = True) -> Signal:
            reg = Signal.like(value, name=name, reset_less=reset_less)
            m.d.sync += reg.eq(value)
            return reg

        def delay(value: Value, cycles: int, name: str) -> Value:
            for k in range(cycles):
                value = stage(value, f"{name}_d{k}")
            return value

        # Control pipeline: index k holds the FN issued k cycles ago.
        valid = [self.issue]
        fn = [Value.cast(self.fn)]
        dest = [self.dest]
        addr = [self.addr]
        for k in range(1, write + 1):
            valid.append(stage(valid[-1], f"valid{k}", reset_less=False))
            fn.append(stage(fn[-1], f"fn{k}"))
            dest.append(stage(dest[-1], f"dest{k}"))
            addr.append(stage(addr[-1], f"addr{k}"))

        # MAX_LANES: a tree of one-stage compares over the block widened to fp32.
        lanes: list[Value] = [Cat(Const(0, 16), self.t[16 * i:16 * i + 16]) for i in range(b)]
        for level in range(levels):
            lanes = [stage(fp32_max(m, lanes[2 * j], lanes[2 * j + 1],
                                    name=f"max{level}_{j}"), f"max{level}_{j}_r")
                     for j in range(len(lanes) // 2)]
        largest = delay(lanes[0], max(levels, body) - levels, "largest")

        # The lanes, with the function's constants (from isa.functions) of the index stage
        # and one read port of the table each.
        # The constants are decoded a cycle before the index stage and registered (the
        # index stage has no room for the decode), and held a cycle longer for the
        # selection's second stage.
        consts = stage(_constants(m, fn[d.mem_read - 1]), "fn_consts_r")
        consts_next = stage(consts, "fn_consts_next")
        is_max = fn[round_at] == Function.MAX_LANES
        indices = [Signal(addr_bits(len(table())), name=f"index_{i}") for i in range(b)]
        entries = self._rom(m, indices, lat.fn_table_read, delay)
        rounded = []
        for i in range(b):
            out = Signal(16, name=f"result_{i}")
            place(m, f"flane{i}", module="tidal_flane", signature=function_lane_signature(),
                  connections={"consts": consts, "consts_next": consts_next,
                               "x": self.t[16 * i:16 * i + 16],
                               "index": indices[i], "entry": entries[i],
                               "is_max": is_max, "largest": largest, "result": out},
                  flavour=self.flavour,
                  native=FunctionLane(cfg) if self.flavour == "native" else None)
            rounded.append(out)

        vw, dw = valid[write], dest[write]
        result_bf16 = Cat(*rounded)
        m.d.comb += [
            self.acc_we.eq(vw & (dw == Dest.ACC)),
            self.tram_we.eq(vw & (dw == Dest.TRAM)),
            self.waddr.eq(addr[write]),
            self.result.eq(Cat(*(Cat(Const(0, 16), r) for r in rounded))),
            self.result_bf16.eq(result_bf16),
            self.pending.eq(Cat(*valid[:write]).any()),
        ]
        return m

    def _rom(self, m: Module, addresses: list[Value], latency: int,
             delay: Callable[[Value, int, str], Value]) -> list[Value]:
        """Return the table entries at ``addresses``, one read port each, ``latency`` (at
        least 2) cycles later, from a register (``delay(value, cycles, name)`` adds the
        registers).

        The table spans many block RAMs (``ROM_BANK`` words each); in the ``"native"``
        flavour (the one synthesised) it is built as banks of that size, and with a
        latency of 3 or more each bank's data is registered before the bank select, which
        has no room in the block RAM's own cycle (``docs/timing.md``).
        """
        tab = table()
        if self.flavour == "instance":
            rdata = Signal(32 * len(addresses), name="rom_data")
            m.submodules.rom = Instance(
                "tidal_rom", p_WIDTH=32, p_DEPTH=len(tab), p_PORTS=len(addresses),
                i_clk=ClockSignal(), i_raddr=Cat(*addresses), o_rdata=rdata)
            return [delay(rdata[32 * i:32 * i + 32], latency - 1, f"entry{i}")
                    for i in range(len(addresses))]
        low = addr_bits(ROM_BANK)
        banks = []
        for k in range(0, len(tab), ROM_BANK):
            rom = memory.Memory(shape=unsigned(32), depth=min(ROM_BANK, len(tab) - k),
                                init=[int(v) for v in tab[k:k + ROM_BANK]])
            m.submodules[f"rom{k // ROM_BANK}"] = rom
            banks.append(rom)
        split = latency >= 3
        out = []
        for i, addr in enumerate(addresses):
            data = []
            for k, rom in enumerate(banks):
                port = rom.read_port(domain="sync")
                m.d.comb += port.addr.eq(addr[:low])
                data.append(delay(port.data, int(split), f"rom{k}_{i}"))
            # The bank select as an AND-OR of one-hot selects (decoded beside the read
            # when there is a cycle for it), which synthesis balances into a shallow tree.
            bank = delay(addr[low:], 1, f"bank{i}")
            picked = [word & delay(bank == k, int(split), f"bank{i}_{k}").replicate(32)
                      for k, word in enumerate(data)]
            out.append(delay(functools.reduce(operator.or_, picked), latency - 1 - split,
                             f"entry{i}"))
        return out


#: Words of one bank of the function table's ROM in the ``"native"`` flavour: one ECP5
#: DP16KD block RAM at 36 bits wide (the 512 × 36 mode), an Agilex M20K likewise.
ROM_BANK = 512


def function_lane_signature() -> wiring.Signature:
    """Return the signature of a :class:`FunctionLane` (see its Members)."""
    return wiring.Signature({
        "consts": In(CONSTANTS),
        "consts_next": In(CONSTANTS),
        "x": In(16),
        "index": Out(addr_bits(len(table()))),
        "entry": In(32),
        "is_max": In(1),
        "largest": In(32),
        "result": Out(16),
    })


class FunctionLane(wiring.Component):
    """One lane of the function unit: selection, table read, multiply-add and rounding.

    Every port is in the cycle given below, for an ``FN`` issued in cycle ``t`` (``M =
    mem_read``; ``body`` and ``L`` as in the module docstring).

    Parameters
    ----------
    config : Config

    Members
    -------
    consts : In(CONSTANTS)
        The function's constants (cycle ``t + M``).
    consts_next : In(CONSTANTS)
        The same, a cycle later (cycle ``t + M + 1``).
    x : In(16)
        The lane's bf16 input (cycle ``t + M``).
    index : Out(addr_bits(len(table())))
        The lane's table address, to the unit's ROM (cycle ``t + M + 1``).
    entry : In(32)
        The table entry at ``index``, from the ROM (cycle ``t + 2M + 2``).
    is_max : In(1)
        The function is ``MAX_LANES`` (cycle ``t + M + max(L, body)``).
    largest : In(32)
        ``MAX_LANES``: the largest lane of the block, widened to fp32 (same cycle).
    result : Out(16)
        The lane's bf16 result (cycle ``t + fn_write``).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        super().__init__(function_lane_signature())

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self.config
        d, levels = cfg.depths, cfg.tree_levels
        mul = d.vec_mul + d.norm_round
        table_read = latencies(cfg).fn_table_read
        body = 1 + table_read + mul + d.fp32_add

        def stage(value: Value, name: str) -> Signal:
            # Datapath registers have no reset: they only matter under the unit's valid bit.
            reg = Signal.like(value, name=name, reset_less=True)
            m.d.sync += reg.eq(value)
            return reg

        def delay(value: Value, cycles: int, name: str) -> Value:
            for k in range(cycles):
                value = stage(value, f"{name}_d{k}")
            return value

        # Index stage: the table address and what the rest of the selection needs,
        # registered; the ROM read takes fn_table_read cycles, beside which the selection
        # completes in two stages and is padded to that length.
        first = {k: stage(v, k) for k, v in
                 _select_index(m, self.consts, self.x, addr_bits(len(table())),
                               "sel").items()}
        m.d.comb += self.index.eq(first.pop("index"))
        entry = self.entry
        sel = _select_rest(m, self.consts_next, first, "sel", reg=stage)
        sel = {k: delay(v, table_read - 1, k) for k, v in sel.items()}
        a, bb = Signal(32, name="a"), Signal(32, name="b")
        m.d.comb += [a.eq((entry & sel["t_to_a"].replicate(32)) | sel["a"]),
                     bb.eq((entry & sel["t_to_b"].replicate(32)) | sel["b"])]
        product = stage(fp32_mul_bf16(m, a, sel["u"], name="mul", mul_stages=d.vec_mul,
                                      round_stages=d.norm_round, reg=stage), "product")
        bb = delay(bb, mul, "b")
        total = stage(fp32_add(m, product, bb, name="add", stages=d.fp32_add, reg=stage),
                      "sum")
        bb = delay(bb, d.fp32_add, "b2")
        direct = delay(sel["direct"], mul + d.fp32_add, "direct")
        result = delay(Mux(direct, bb, total), max(levels, body) - body, "r")

        # Rounding: the vector unit's clamp with ±inf bounds (its NaN and rounding rules).
        r = Signal(32, name="pre_round")
        m.d.comb += r.eq(Mux(self.is_max, self.largest, result))
        _, r16 = clamp_round(m, r, Const(_NEG_INF32, 32), Const(_INF32, 32), name="round",
                             stages=d.clamp_round, reg=stage)
        m.d.comb += self.result.eq(stage(r16, "result"))
        return m


#: Each function's constants of :mod:`isa.functions`, as the function unit selects them by
#: the ``fn`` of the index stage and gives them to every lane: the mode; for ``WINDOW``, per
#: sign (0 positive, 1 negative), the window ``[lo, hi)``, the table offset ``base −
#: lo·128`` (added to the 15 low bits of ``x``) and the rules' ``a`` and ``b``; for ``POWER``
#: and ``LOG`` the table base; for ``POWER`` the reciprocal (``k = 1``, else a root: ``k =
#: 2``) and whether ``p`` is negative. Zero for the functions a field does not apply to.
CONSTANTS = data.StructLayout({
    "window": 1, "power": 1, "log": 1,
    "lo": data.ArrayLayout(8, 2),
    "hi": data.ArrayLayout(9, 2),
    "off": data.ArrayLayout(signed(17), 2),
    "small_a": data.ArrayLayout(32, 2), "small_b": data.ArrayLayout(32, 2),
    "large_a": data.ArrayLayout(32, 2), "large_b": data.ArrayLayout(32, 2),
    "base": 16, "recip": 1, "negative_p": 1,
})


def _constants(m: Module, fn: Value) -> data.View:
    """Return the :data:`CONSTANTS` of the function ``fn``."""
    c = Signal(CONSTANTS, name="fn_consts")
    # One Mux chain per field (not a Switch process: see _select).
    values: dict[tuple[str, int | None], dict[Function, int]] = {}
    for spec in SPECS:
        for key, value in _case(spec):
            values.setdefault(key, {})[spec.function] = int(value)
    for (field, index), by_function in values.items():
        target = c[field] if index is None else c[field][index]
        chain: Value = Const(0, target.shape())
        for function, value in by_function.items():
            chain = Mux(fn == function, value, chain)
        m.d.comb += target.eq(chain)
    return c


def _case(spec: FunctionSpec) -> list[tuple[tuple[str, int | None], int]]:
    """Return the :data:`CONSTANTS` fields of ``spec`` that are not zero, as ``((field,
    index), value)``."""
    f = spec.function
    if spec.mode == Mode.WINDOW:
        assert spec.small is not None and spec.large is not None
        out = [(("window", None), 1)]
        for s, w in enumerate(windows(f)):
            out += [(("lo", s), w.lo), (("hi", s), w.hi), (("off", s), w.base - w.lo * 128),
                    (("small_a", s), _f32(spec.small[s].a)),
                    (("small_b", s), _f32(spec.small[s].b)),
                    (("large_a", s), _f32(spec.large[s].a)),
                    (("large_b", s), _f32(spec.large[s].b))]
        return out
    if spec.mode == Mode.POWER:
        return [(("power", None), 1), (("base", None), base(f)),
                (("recip", None), spec.power == -1.0), (("negative_p", None), spec.power < 0)]
    if spec.mode == Mode.LOG:
        return [(("log", None), 1), (("base", None), base(f))]
    return []  # MAX_LANES: no selection


def _select_index(m: Module, c: data.View, x: Value, rom_bits: int,
                  name: str) -> dict[str, Value]:
    """Return the first stage of one lane's selection (:func:`isa.functions.select`):
    ``index`` (the table address) and what :func:`_select_rest` needs of ``x``: ``x``,
    its exponent ``E`` (a subnormal's normalised), ``LOG``'s ``E_log`` and the ``nan``,
    ``zero`` and ``inf`` flags."""
    def wire(value: Value, tag: str, shape: object = None) -> Signal:
        s = Signal(shape if shape is not None else value.shape(), name=f"{name}_{tag}")
        m.d.comb += s.eq(value)
        return s

    s, e, f = x[15], x[7:15], x[:7]
    # POWER and LOG: x = 2**E · 1.mant (a subnormal normalised by its leading zeros).
    lz: Value = Const(7, 3)
    for k in range(7):          # the highest set bit decides
        lz = Mux(f[k], 6 - k, lz)
    lz = wire(lz, "lz", 3)
    sub = e == 0
    big_e = wire(Mux(sub, -127 - lz, Cat(e, 0).as_signed() - 127), "E", signed(10))
    mant = wire(Mux(sub, (f << (lz + 1))[:7], f), "mant", 7)
    # POWER: r = E mod k; the entry's index is base + r·128 + mant. WINDOW: the table
    # offset of x's sign plus x's 15 low bits.
    r = big_e[0] & ~c.recip
    off = Mux(s, c.off[1], c.off[0])
    index = Signal(rom_bits, name=f"{name}_index")
    # Chains of Mux, not If/Elif processes: Icarus does not run the process Yosys writes for
    # those at time 0, so an FN whose inputs never change from their initial values (the
    # first FN of a run, a TANH) would see X (docs/rtl.md).
    m.d.comb += index.eq(Mux(c.window, (off + x[:15])[:rom_bits],
                             Mux(c.power, c.base + Cat(mant, r), c.base + mant)))
    # LOG: E' = E + (mant ≥ 64), formed here beside the index: its conversion to bf16
    # needs the next stages whole.
    e_log = wire(big_e + mant[6], "E_log", signed(10))
    return {"index": index, "x": x, "E": big_e, "E_log": e_log,
            "nan": (e == 255) & f.any(), "zero": (e == 0) & ~f.any(),
            "inf": (e == 255) & ~f.any()}


def _select_rest(m: Module, c: data.View, first: dict[str, Value], name: str,
                 reg: Callable[[Value, str], Value]) -> dict[str, Value]:
    """Return the rest of one lane's selection from :func:`_select_index`'s values a
    cycle later (``c`` the constants of that cycle; NaN inputs ``direct`` with the canonical
    NaN as :func:`isa.functions.apply` makes them): ``t_to_a`` / ``t_to_b`` (the entry is
    ``a``, ORed with ``a``'s sign, or is ``b``), ``a``, ``b`` (constants, zero where the
    entry goes), ``u`` and ``direct``; in two stages (``reg`` returns its argument
    registered once): ``u``'s last steps (the powers of two and the conversion of ``E``)
    are in the second, so every value is combinational from a register of ``reg``."""
    def wire(value: Value, tag: str, shape: object = None) -> Signal:
        s = Signal(shape if shape is not None else value.shape(), name=f"{name}_{tag}")
        m.d.comb += s.eq(value)
        return s

    def later(value: Value, tag: str) -> Value:
        return reg(value, f"{name}_{tag}_cut")

    x, big_e, e_log = first["x"], first["E"], first["E_log"]
    nan, zero, inf = first["nan"], first["zero"], first["inf"]
    s, e = x[15], x[7:15]

    # WINDOW: inside the window, the entry; below it the small rule, from hi up the large.
    lo, hi = Mux(s, c.lo[1], c.lo[0]), Mux(s, c.hi[1], c.hi[0])
    inside = wire((e >= lo) & (e < hi), "inside")
    small = e < lo
    rule_a = Mux(s, Mux(small, c.small_a[1], c.large_a[1]),
                 Mux(small, c.small_a[0], c.large_a[0]))
    rule_b = Mux(s, Mux(small, c.small_b[1], c.large_b[1]),
                 Mux(small, c.small_b[0], c.large_b[0]))
    rule_a, rule_b = wire(rule_a, "rule_a"), wire(rule_b, "rule_b")

    # POWER: n = p·(E − r) − q.
    r = big_e[0] & ~c.recip
    # E − r is even, so −(E − r)/2 = (r − E) >> 1 exactly, and −E − 1 = ~E: no negation
    # follows a subtraction.
    half = wire((big_e - r) >> 1, "half", signed(10))
    minus_half = wire((r - big_e) >> 1, "minus_half", signed(10))
    n = wire(Mux(c.recip, ~big_e, Mux(c.negative_p, minus_half, half)), "n", signed(10))
    negative = s & ~zero
    # Specials: 1/±0 = ±inf, 1/±inf = ±0; roots of negatives NaN; rsqrt(±0) = ±inf,
    # sqrt(±0) = ±0; rsqrt(inf) = 0, sqrt(inf) = inf.
    at_zero = Cat(Const(0, 23), c.negative_p.replicate(8), s)
    at_inf = Cat(Const(0, 23), (~c.negative_p).replicate(8), s & c.recip)
    p_special = zero | inf | (negative & ~c.recip)
    p_value = Mux(negative & ~c.recip, CANONICAL_NAN_F32, Mux(zero, at_zero, at_inf))
    # LOG: y in [0.75, 1.5): E' (exact in bf16, converted below); log 0 = −inf, log of a
    # negative NaN, log inf = inf.
    l_special = zero | inf | negative
    l_value = Mux(negative, CANONICAL_NAN_F32, Mux(zero, _NEG_INF32, _INF32))

    t_to_a, t_to_b, direct = (Signal(name=f"{name}_{k}")
                              for k in ("t_to_a", "t_to_b", "direct"))
    a, bb = Signal(32, name=f"{name}_a"), Signal(32, name=f"{name}_b")
    power = wire(c.power & ~p_special, "power_table")
    log = wire(c.log & ~l_special, "log_table")
    window_in = wire(c.window & inside, "window_table")
    m.d.comb += [
        t_to_a.eq(~nan & power),
        t_to_b.eq(~nan & (window_in | log)),
        direct.eq(nan | (c.window & (inside | (rule_a == 0))) | (c.power & p_special)
                  | (c.log & l_special)),
        a.eq(Mux(nan | window_in, 0,
                 Mux(c.window, rule_a,
                     Mux(power, Cat(Const(0, 31), s & c.recip),
                         Mux(log, _f32(np.log(2.0)), 0))))),
        bb.eq(Mux(nan, CANONICAL_NAN_F32,
                  Mux(c.window, Mux(inside, 0, rule_b),
                      Mux(c.power, Mux(p_special, p_value, _SIGN32),
                          Mux(c.log & l_special, l_value, 0))))),
    ]
    # u: x itself (WINDOW), 2**n (POWER) or E' (LOG) as bf16, after the cut.
    e_sign, e_mag, e_top = (later(v, tag) for v, tag in
                            zip(_int_magnitude(m, e_log, f"{name}_elog"),
                                ("elog_sign", "elog_mag", "elog_top"), strict=True))
    n = later(n, "n")
    window, power, log = later(c.window, "window"), later(power, "power"), later(log, "log")
    pow2 = Mux(n > 127, 0x7F80,
               Mux(n >= -126, ((n + 127) << 7)[:16],
                   Mux(n >= -133, (Const(1, 7) << (n + 133)[:3])[:7], 0)))
    u = Signal(16, name=f"{name}_u")
    m.d.comb += u.eq(Mux(window, later(x, "x"),
                         Mux(power, pow2, Mux(log, _int_to_bf16(e_sign, e_mag, e_top), 0))))
    return {"t_to_a": later(t_to_a, "t_to_a"), "t_to_b": later(t_to_b, "t_to_b"),
            "a": later(a, "a"), "b": later(bb, "b"), "u": u,
            "direct": later(direct, "direct")}


def _int_magnitude(m: Module, v: Value, name: str) -> tuple[Value, Value, Value]:
    """Return the sign, the magnitude (8 bits) and the position of the highest set bit of
    the magnitude (3 bits) of a signed integer ``v`` with ``|v| < 256``: the first half of
    its conversion to bf16 (:func:`_int_to_bf16`)."""
    sign = v < 0
    mag = Signal(8, name=f"{name}_mag")
    m.d.comb += mag.eq(Mux(sign, -v, v)[:8])
    top: Value = Const(0, 3)
    for k in range(8):          # the position of the highest set bit
        top = Mux(mag[k], k, top)
    top_s = Signal(3, name=f"{name}_top")
    m.d.comb += top_s.eq(top)
    return sign, mag, top_s


def _int_to_bf16(sign: Value, mag: Value, top: Value) -> Value:
    """Return the bf16 pattern (exact) of the integer :func:`_int_magnitude` describes."""
    frac = (mag << (Const(7, signed(5)) - top)[:3])[:7]
    return Mux(mag == 0, 0, Cat(frac, (top + 127)[:8], sign))
