"""The vector unit of a core: the ``VEC`` pipeline from operand read to result delivery.

Stages, for a ``VEC`` issued in cycle ``t`` (``docs/architecture.md`` §3, ``isa/timing.py``;
``M = mem_read``, the other names are :class:`isa.config.Depths` fields and
:class:`isa.timing.Latencies`):

=========================  =================================================================
cycle                      what happens here
=========================  =================================================================
t                          the core presents the accumulator, tensor-RAM and clamp-table
                           read addresses
t+M                        ``a`` (fp32), ``t`` (bf16) and the clamp entry arrive (each lane
                           registers its own copies of ``a`` and ``t``); the op
                           starts: an add (ADD, SUB, RSUB) in all ``vec_op`` stages, a
                           ``vec_mul`` + ``norm_round``-stage multiply (MUL), or a one-stage
                           compare or pass, each padded to ``vec_op`` stages
t+M+vec_op                 ``clamp_round`` stages: the op's result selected, the clamp,
                           then the rounding to bf16 unless the destination is an
                           accumulator (``ACC``, ``ACCS``)
t+vec_local_write          result on the local write port (accumulator or own tensor RAM);
                           the outbound link and output pipelines load
t+vec_remote_write         the link pipeline (``link`` registers) drives the other cores'
                           write ports
t+vec_output               the output pipeline (``output`` registers) drives the output port
=========================  =================================================================

Each of the B elements is computed by a :class:`VectorLane` (the op, the clamp and the
rounding, with the builders of :mod:`rtl.arith`); the unit keeps what the lanes share (the
control pipeline, the decoded result selects, the clamp's logic on the bounds alone). The
lanes are placed with :func:`rtl.memory.place`, so that the ``"instance"`` flavour converts
the lane to Verilog once (``tidal_vlane``) and instantiates it B times per core
(``docs/rtl.md``, "Verilog").

The link pipeline holds one block of B 32-bit values in the layout of the result: fp32 for
``ACCS``, and for ``TRAM`` the bf16 value in the upper half of each lane with a zero lower
half (which is the same number as an fp32). Loading it therefore needs no multiplexer; a
receiver of bf16 takes the upper halves (:func:`rtl.interconnect.bf16_block`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from isa.instructions import Dest, Vec
from isa.numerics import VecOp
from isa.timing import latencies
from rtl.arith import (
    ClampBounds,
    clamp_bounds,
    clamp_round,
    fp32_add,
    fp32_max,
    fp32_min,
    fp32_mul_bf16,
)
from rtl.interconnect import bf16_block
from rtl.memory import check_flavour, own_copy, place

__all__ = ["VectorUnit", "VectorLane", "vector_lane_signature"]

_ADDR_BITS = Vec.FIELDS[5].width


class VectorUnit(wiring.Component):
    """``VEC`` datapath and control pipeline of one core.

    Parameters
    ----------
    config : Config
    flavour : str
        ``"native"`` or ``"instance"`` (:mod:`rtl.memory`): how the lanes are placed.
    broken_rounding : bool
        Test-only: truncate instead of rounding to nearest-even when converting results to
        bf16, so that co-simulation can prove a wrong RTL is caught.

    Members
    -------
    issue : In(1)
        A ``VEC`` issues this cycle (cycle ``t``) with the fields below.
    op : In(VecOp)
    dest : In(2)
        :class:`~isa.instructions.Dest`.
    addr : In(16)
        Destination address (accumulator or tensor RAM).
    cores : In(num_cores)
        Destination core mask (``Dest.TRAM``, ``Dest.ACCS``).
    own : In(num_cores)
        One-hot mask of this core.
    a : In(32 * B)
        The accumulator block read for the ``VEC`` of cycle ``t``, one register early: the
        accumulator store's ``rdata_pre`` (cycle ``t + mem_read − 1``; at ``mem_read = 1``
        its read data, in cycle ``t + 1``). Each lane registers its own copies
        (:func:`rtl.memory.own_copy`), so that no one register drives all of the lanes'
        first stages.
    t : In(16 * B)
        The tensor-RAM block, likewise.
    bounds : In(64)
        Clamp-table entry, in cycle ``t + mem_read``: low bound at bits ``[0, 32)``, high
        at ``[32, 64)``.
    acc_we, tram_we : Out(1)
        Local write of the result of the ``VEC`` issued ``vec_local_write`` cycles ago:
        ``acc_we`` for ``ACC`` and for ``ACCS`` with the own bit set, ``tram_we`` for
        ``TRAM`` with the own bit set.
    waddr : Out(16)
        Its destination address.
    result : Out(32 * B)
        Its result: fp32 per element for the accumulator (``ACC``, ``ACCS``).
    result_bf16 : Out(16 * B)
        Its result rounded to bf16 (tensor RAM).
    link_dest : Out(num_cores)
        Outbound link (cycle ``t + vec_remote_write``): bit ``c`` writes core ``c``'s tensor
        RAM or accumulator store, by ``link_acc`` (the own bit is always clear).
    link_acc : Out(1)
        The block is an ``ACCS`` result (fp32, to the accumulator stores), not a ``TRAM``
        block (bf16). Meaningful while ``link_dest`` is not zero.
    link_addr : Out(16)
        Destination address (tensor RAM or accumulator).
    link_data : Out(32 * B)
        The block, lane ``i`` at bits ``[32i, 32i + 32)``: fp32 for ``ACCS``; otherwise
        bf16 in the upper half of each lane and zero in the lower (:mod:`rtl.interconnect`).
    out_valid : Out(1)
        An output beat of this core (cycle ``t + vec_output``).
    out_data : Out(16 * B)
        Its bf16 lanes.
    pending : Out(1)
        A ``VEC`` in flight still has a write or an output beat in a later cycle.
    """

    def __init__(self, config: Config, *, flavour: str = "native",
                 broken_rounding: bool = False) -> None:
        self.config = config
        self.flavour = check_flavour(flavour)
        self.broken_rounding = bool(broken_rounding)
        b, n = config.block_size, config.num_cores
        super().__init__({
            "issue": In(1),
            "op": In(VecOp),
            "dest": In(2),
            "addr": In(_ADDR_BITS),
            "cores": In(n),
            "own": In(n),
            "a": In(32 * b),
            "t": In(16 * b),
            "bounds": In(64),
            "acc_we": Out(1),
            "tram_we": Out(1),
            "waddr": Out(_ADDR_BITS),
            "result": Out(32 * b),
            "result_bf16": Out(16 * b),
            "link_dest": Out(n),
            "link_acc": Out(1),
            "link_addr": Out(_ADDR_BITS),
            "link_data": Out(32 * b),
            "out_valid": Out(1),
            "out_data": Out(16 * b),
            "pending": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self.config
        b, d, lat = cfg.block_size, cfg.depths, latencies(cfg)
        op_at = d.mem_read                       # the operands arrive: the op starts
        round_at = op_at + lat.vec_op            # the op's result: clamp and round start
        local = lat.vec_local_write
        assert round_at + d.clamp_round == local

        def stage(value: Value, name: str, *, reset_less: bool = True) -> Signal:
            # Datapath registers have no reset: they only matter under a valid bit.
            reg = Signal.like(value, name=name, reset_less=reset_less)
            m.d.sync += reg.eq(value)
            return reg

        def delay(value: Value, cycles: int, name: str) -> Value:
            for k in range(cycles):
                value = stage(value, f"{name}_d{k}")
            return value

        # Control pipeline: index k holds the VEC issued k cycles ago.
        valid = [self.issue]
        op = [Value.cast(self.op)]
        dest = [self.dest]
        addr = [self.addr]
        cores = [self.cores]
        for k in range(1, local + 1):
            valid.append(stage(valid[-1], f"valid{k}", reset_less=False))
            op.append(stage(op[-1], f"op{k}"))
            dest.append(stage(dest[-1], f"dest{k}"))
            addr.append(stage(addr[-1], f"addr{k}"))
            cores.append(stage(cores[-1], f"cores{k}"))

        # The op runs in the lanes; the selects of its result are decoded here, a cycle
        # early, so that the clamp's first stage gains no more than two 2:1 muxes.
        sel = op[round_at - 1]
        take_mul = stage(sel == VecOp.MUL, "take_mul")
        take_add = stage((sel == VecOp.ADD) | (sel == VecOp.SUB) | (sel == VecOp.RSUB),
                         "take_add")
        # The bounds arrive with the operands, so the clamp's logic on them alone (shared by
        # the lanes) is done a cycle before the clamp and registered.
        bounds = delay(self.bounds, lat.vec_op - 1, "bounds")
        early = clamp_bounds(bounds[:32], bounds[32:], broken_rounding=self.broken_rounding)
        pre = ClampBounds(*(stage(v, f"bounds_{k}") for k, v in zip(early._fields, early,
                                                                     strict=True)))
        bounds = stage(bounds, "bounds_r")
        # ACCS skips the bf16 rounding like ACC: a partial sum moved to another core must
        # continue its fp32 chain.
        dest_w = dest[local - 1]
        to_acc = (dest_w == Dest.ACC) | (dest_w == Dest.ACCS)
        rounded = []
        for i in range(b):
            out = Signal(32, name=f"result_{i}")
            place(m, f"vlane{i}", module="tidal_vlane", signature=vector_lane_signature(),
                  connections={"op": op[op_at], "a": self.a[32 * i:32 * i + 32],
                               "t": self.t[16 * i:16 * i + 16], "take_mul": take_mul,
                               "take_add": take_add, "lo": bounds[:32], "hi": bounds[32:],
                               **pre._asdict(), "to_acc": to_acc, "result": out},
                  flavour=self.flavour,
                  native=(VectorLane(cfg, broken_rounding=self.broken_rounding)
                          if self.flavour == "native" else None))
            rounded.append(out)

        # Local writes, and the outbound link and output pipelines.
        vw, dw = valid[local], dest[local]
        remote = cores[local] & ~self.own
        own_bit = (cores[local] & self.own).any()
        to_tram = vw & (dw == Dest.TRAM)
        to_accs = vw & (dw == Dest.ACCS)
        to_out = vw & (dw == Dest.OUTPUT)
        result = Cat(*rounded)
        m.d.comb += [
            self.acc_we.eq((vw & (dw == Dest.ACC)) | (to_accs & own_bit)),
            self.tram_we.eq(to_tram & own_bit),
            self.waddr.eq(addr[local]),
            self.result.eq(result),
            self.result_bf16.eq(bf16_block(result, b)),
        ]
        link_dest: Value = Mux(to_tram | to_accs, remote, 0)
        # A block leaves on the link or to the output port after this cycle.
        load_now = link_dest.any() | to_out
        link_acc: Value = to_accs
        link_addr: Value = addr[local]
        link_data: Value = result
        busy = []  # a pipeline register that drives after this cycle
        for k in range(d.link):
            # Only the destinations need a reset; the rest matters only under them.
            link_dest = stage(link_dest, f"link{k}_dest", reset_less=False)
            link_acc = stage(link_acc, f"link{k}_acc")
            link_addr = stage(link_addr, f"link{k}_addr")
            link_data = stage(link_data, f"link{k}_data")
            if k < d.link - 1:
                busy.append(link_dest.any())
        out_valid: Value = to_out
        out_data: Value = bf16_block(result, b)
        for k in range(d.output):
            out_valid = stage(out_valid, f"out{k}_valid", reset_less=False)
            out_data = stage(out_data, f"out{k}_data")
            if k < d.output - 1:
                busy.append(out_valid)
        m.d.comb += [self.link_dest.eq(link_dest), self.link_acc.eq(link_acc),
                     self.link_addr.eq(link_addr), self.link_data.eq(link_data),
                     self.out_valid.eq(out_valid), self.out_data.eq(out_data)]

        # Something of a VEC happens after this cycle: a VEC before its local write, a block
        # entering the link or output pipeline, or one inside it short of its last register.
        m.d.comb += self.pending.eq(Cat(*valid[:local], load_now, *busy).any())
        return m


def vector_lane_signature() -> wiring.Signature:
    """Return the signature of a :class:`VectorLane` (see its Members)."""
    return wiring.Signature({
        "op": In(VecOp),
        "a": In(32),
        "t": In(16),
        "take_mul": In(1),
        "take_add": In(1),
        "lo": In(32),
        "hi": In(32),
        "rlo": In(16),
        "rhi": In(16),
        "lo_le_hi": In(1),
        "nan": In(1),
        "to_acc": In(1),
        "result": Out(32),
    })


class VectorLane(wiring.Component):
    """One element of the vector unit: the op, then the clamp and the bf16 rounding.

    Every input is driven by the :class:`VectorUnit` in the cycle given below, for a ``VEC``
    issued in cycle ``t`` (``M = mem_read``, ``V = vec_op``; module docstring).

    Parameters
    ----------
    config : Config
    broken_rounding : bool
        Test-only (:class:`VectorUnit`).

    Members
    -------
    op : In(VecOp)
        The op (cycle ``t + M``).
    a : In(32)
        fp32 accumulator element, one register early (:class:`VectorUnit`): the lane
        registers it itself, once for the multiply and once for the other ops, so that it
        is in cycle ``t + M`` in registers placed beside their logic.
    t : In(16)
        bf16 tensor-RAM element, likewise.
    take_mul, take_add : In(1)
        The op is ``MUL``, or an addition (``ADD``, ``SUB``, ``RSUB``) (cycle
        ``t + M + V``, the clamp's first stage).
    lo, hi : In(32)
        The clamp bounds, fp32 (cycle ``t + M + V``).
    rlo, rhi, lo_le_hi, nan : In(16), In(16), In(1), In(1)
        :func:`rtl.arith.clamp_bounds` of ``lo, hi`` (cycle ``t + M + V``).
    to_acc : In(1)
        The destination is an accumulator (``ACC``, ``ACCS``): keep the clamped fp32 value,
        do not round (cycle ``t + vec_local_write − 1``).
    result : Out(32)
        The element's result (cycle ``t + vec_local_write``): fp32, or the bf16 value in
        the upper half with a zero lower half.
    """

    def __init__(self, config: Config, *, broken_rounding: bool = False) -> None:
        self.config = config
        self.broken_rounding = bool(broken_rounding)
        super().__init__(vector_lane_signature())

    def elaborate(self, platform: object) -> Module:
        m = Module()
        d, lat = self.config.depths, latencies(self.config)

        def stage(value: Value, name: str) -> Signal:
            # Datapath registers have no reset: they only matter under the unit's valid bit.
            reg = Signal.like(value, name=name, reset_less=True)
            m.d.sync += reg.eq(value)
            return reg

        def delay(value: Value, cycles: int, name: str) -> Value:
            for k in range(cycles):
                value = stage(value, f"{name}_d{k}")
            return value

        # The op. SUB and RSUB are additions with one operand negated, which IEEE defines to
        # be the same operation (including the signs of zero results). Every path ends in a
        # register after vec_op stages; the result is selected by the op in the clamp's
        # first stage, which has room for it (a path's last stage would not: docs/timing.md).
        ml = d.mem_read
        op = Value.cast(self.op)
        a, t16 = own_copy(m, self.a, ml, "a"), own_copy(m, self.t, ml, "t")
        a_mul, t_mul = own_copy(m, self.a, ml, "a_mul"), own_copy(m, self.t, ml, "t_mul")
        t = Cat(Const(0, 16), t16)              # bf16 widened exactly
        x = a ^ Cat(Const(0, 31), op == VecOp.RSUB)
        y = t ^ Cat(Const(0, 31), op == VecOp.SUB)
        # The add takes every stage of the op (vec_op ≥ fp32_add): where the multiply is
        # deeper, its padding registers go inside the add, shortening its stages.
        total = stage(fp32_add(m, x, y, name="add", stages=lat.vec_op, reg=stage), "total")
        product = fp32_mul_bf16(m, a_mul, t_mul, name="mul", mul_stages=d.vec_mul,
                                round_stages=d.norm_round, reg=stage)
        # Built outside the Switch: a builder's comb assignments must not be conditional.
        vmax = fp32_max(m, a, t, name="max")
        vmin = fp32_min(m, a, t, name="min")
        simple = Signal(32, name="simple")
        with m.Switch(op):
            with m.Case(VecOp.PASS_A):
                m.d.comb += simple.eq(a)
            with m.Case(VecOp.PASS_T):
                m.d.comb += simple.eq(t)
            with m.Case(VecOp.MAX):
                m.d.comb += simple.eq(vmax)
            with m.Default():
                m.d.comb += simple.eq(vmin)
        product = delay(product, lat.vec_op - d.vec_mul - d.norm_round + 1, "product")
        simple = delay(simple, lat.vec_op, "simple")
        result = Mux(self.take_mul, product, Mux(self.take_add, total, simple))

        # Clamp (which also canonicalises any NaN) and the bf16 rounding.
        pre = ClampBounds(rlo=self.rlo, rhi=self.rhi, lo_le_hi=self.lo_le_hi, nan=self.nan)
        c, r16 = clamp_round(m, result, self.lo, self.hi, name="clamp", stages=d.clamp_round,
                             reg=stage, broken_rounding=self.broken_rounding, bounds=pre)
        m.d.comb += self.result.eq(stage(Mux(self.to_acc, c, Cat(Const(0, 16), r16)),
                                         "result"))
        return m
