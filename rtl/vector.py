"""The vector unit of a core: the ``VEC`` pipeline from operand read to result delivery.

Stages, for a ``VEC`` issued in cycle ``t`` (``docs/architecture.md`` §3, ``isa/timing.py``):

======  ==================================================================================
cycle   what happens here
======  ==================================================================================
t       the core presents the accumulator, tensor-RAM and clamp-table read addresses
t+1     ``a`` (fp32), ``t`` (bf16) and the clamp entry arrive; the op: one fp32 add (ADD,
        SUB, RSUB), the significand multiply of MUL, or a compare (MAX, MIN)
t+2     MUL's normalise-and-round; other ops pass
t+3     clamp, then round to bf16 unless the destination is an accumulator (``ACC``,
        ``ACCS``)
t+4     result on the local write port (accumulator or own tensor RAM); the outbound link
        register loads (remote tensor RAMs or accumulators, output port)
t+5     the link register drives the other cores' write ports / the output port
======  ==================================================================================

All B elements are computed side by side with the builders of :mod:`rtl.arith`.

The link register holds one block of B 32-bit values in the layout of the result: fp32 for
``ACCS``, and for ``TRAM`` and ``OUTPUT`` the bf16 value in the upper half of each lane with
a zero lower half (which is the same number as an fp32). Loading it therefore needs no
multiplexer; a receiver of bf16 takes the upper halves
(:func:`rtl.interconnect.bf16_block`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from isa.instructions import Dest, Vec
from isa.numerics import VecOp
from isa.timing import VEC_LOCAL_WRITE, VEC_OUTPUT, VEC_REMOTE_WRITE
from rtl.arith import clamp_round, fp32_add, fp32_max, fp32_min, fp32_mul_bf16
from rtl.interconnect import bf16_block

__all__ = ["VectorUnit"]

_ADDR_BITS = Vec.FIELDS[5].width

# The stage structure above is what isa.timing promises the compiler and the VM.
assert (VEC_LOCAL_WRITE, VEC_REMOTE_WRITE, VEC_OUTPUT) == (4, 5, 5), "update VectorUnit"


class VectorUnit(wiring.Component):
    """``VEC`` datapath and control pipeline of one core.

    Parameters
    ----------
    config : Config
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
        Accumulator block read for the ``VEC`` of cycle ``t − 1`` (cycle ``t + 1`` of it).
    t : In(16 * B)
        Tensor-RAM block, likewise.
    bounds : In(64)
        Clamp-table entry, likewise: low bound at bits ``[0, 32)``, high at ``[32, 64)``.
    acc_we, tram_we : Out(1)
        Local write of the result of the ``VEC`` issued four cycles ago (cycle ``t + 4``):
        ``acc_we`` for ``ACC`` and for ``ACCS`` with the own bit set, ``tram_we`` for
        ``TRAM`` with the own bit set.
    waddr : Out(16)
        Its destination address.
    result : Out(32 * B)
        Its result: fp32 per element for the accumulator (``ACC``, ``ACCS``).
    result_bf16 : Out(16 * B)
        Its result rounded to bf16 (tensor RAM).
    link_dest : Out(num_cores + 1)
        Outbound link register (cycle ``t + 5``): its destinations. Bit ``c < num_cores``:
        write core ``c``'s tensor RAM or accumulator store, by ``link_acc`` (the own bit is
        always clear); bit ``num_cores``: the output port.
    link_acc : Out(1)
        The block is an ``ACCS`` result (fp32, to the accumulator stores), not a ``TRAM``
        block or an output beat (bf16). Meaningful while ``link_dest`` is not zero.
    link_addr : Out(16)
        Destination address (tensor RAM or accumulator).
    link_data : Out(32 * B)
        The block, lane ``i`` at bits ``[32i, 32i + 32)``: fp32 for ``ACCS``; otherwise
        bf16 in the upper half of each lane and zero in the lower (:mod:`rtl.interconnect`).
    pending : Out(1)
        A ``VEC`` in flight still has a write or an output beat in a later cycle.
    """

    def __init__(self, config: Config, *, broken_rounding: bool = False) -> None:
        self.config = config
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
            "link_dest": Out(n + 1),
            "link_acc": Out(1),
            "link_addr": Out(_ADDR_BITS),
            "link_data": Out(32 * b),
            "pending": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        b = self.config.block_size

        def stage(value: Value, name: str, *, reset_less: bool = True) -> Signal:
            # Datapath registers have no reset: they only matter under a valid bit.
            reg = Signal.like(value, name=name, reset_less=reset_less)
            m.d.sync += reg.eq(value)
            return reg

        # Control pipeline: index k holds the VEC issued k cycles ago.
        valid = [self.issue]
        op = [Value.cast(self.op)]
        dest = [self.dest]
        addr = [self.addr]
        cores = [self.cores]
        for k in range(1, VEC_LOCAL_WRITE + 1):
            valid.append(stage(valid[-1], f"valid{k}", reset_less=False))
            op.append(stage(op[-1], f"op{k}"))
            dest.append(stage(dest[-1], f"dest{k}"))
            addr.append(stage(addr[-1], f"addr{k}"))
            cores.append(stage(cores[-1], f"cores{k}"))

        # t+1: the op. SUB and RSUB are additions with one operand negated, which IEEE
        # defines to be the same operation (including the signs of zero results).
        op1 = op[1]
        mul = op1 == VecOp.MUL
        sums, products, others = [], [], []
        for i in range(b):
            a = self.a[32 * i:32 * i + 32]
            t16 = self.t[16 * i:16 * i + 16]
            t = Cat(Const(0, 16), t16)              # bf16 widened exactly
            x = a ^ Cat(Const(0, 31), op1 == VecOp.RSUB)
            y = t ^ Cat(Const(0, 31), op1 == VecOp.SUB)
            sums.append(fp32_add(m, x, y, name=f"add_{i}"))
            # The multiplier's significand product is registered here; its normalise and
            # round is the t+2 stage.
            products.append(fp32_mul_bf16(
                m, a, t16, name=f"mul_{i}", mul_stages=1, round_stages=1, reg=stage))
            # Built outside the Switch: a builder's comb assignments must not be conditional.
            vmax = fp32_max(m, a, t, name=f"max_{i}")
            vmin = fp32_min(m, a, t, name=f"min_{i}")
            r1 = Signal(32, name=f"r1_{i}")
            with m.Switch(op1):
                with m.Case(VecOp.PASS_A):
                    m.d.comb += r1.eq(a)
                with m.Case(VecOp.PASS_T):
                    m.d.comb += r1.eq(t)
                with m.Case(VecOp.MAX):
                    m.d.comb += r1.eq(vmax)
                with m.Case(VecOp.MIN):
                    m.d.comb += r1.eq(vmin)
                with m.Default():
                    m.d.comb += r1.eq(sums[i])
            others.append(stage(r1, f"r2_{i}"))
        mul2 = stage(mul, "mul2")
        clamp2 = stage(self.bounds, "clamp2")

        # t+2: MUL's normalise-and-round (inside the product value); others pass.
        r3 = [stage(Mux(mul2, products[i], others[i]), f"r3_{i}") for i in range(b)]
        clamp3 = stage(clamp2, "clamp3")

        # t+3: clamp (which also canonicalises any NaN) and the bf16 rounding, which ACCS
        # skips like ACC: a partial sum moved to another core must continue its fp32 chain.
        lo, hi = clamp3[:32], clamp3[32:]
        to_acc = (dest[3] == Dest.ACC) | (dest[3] == Dest.ACCS)
        r4 = []
        for i in range(b):
            c, rounded = clamp_round(m, r3[i], lo, hi, name=f"clamp_{i}",
                                     broken_rounding=self.broken_rounding)
            r4.append(stage(Mux(to_acc, c, Cat(Const(0, 16), rounded)), f"r4_{i}"))

        # t+4: local writes and the outbound link register.
        v4, d4 = valid[4], dest[4]
        remote = cores[4] & ~self.own
        local = (cores[4] & self.own).any()
        to_tram = v4 & (d4 == Dest.TRAM)
        to_accs = v4 & (d4 == Dest.ACCS)
        to_out = v4 & (d4 == Dest.OUTPUT)
        result = Cat(*r4)
        link_load = ((to_tram | to_accs) & remote.any()) | to_out
        m.d.comb += [
            self.acc_we.eq((v4 & (d4 == Dest.ACC)) | (to_accs & local)),
            self.tram_we.eq(to_tram & local),
            self.waddr.eq(addr[4]),
            self.result.eq(result),
            self.result_bf16.eq(bf16_block(result, b)),
        ]
        # Only the destinations need a reset; the rest is meaningful only under them.
        link_acc = Signal(reset_less=True)
        link_addr = Signal(_ADDR_BITS, reset_less=True)
        link_data = Signal(32 * b, reset_less=True)
        m.d.sync += self.link_dest.eq(Cat(Mux(to_tram | to_accs, remote, 0), to_out))
        with m.If(link_load):
            m.d.sync += [link_acc.eq(to_accs), link_addr.eq(addr[4]), link_data.eq(result)]
        m.d.comb += [self.link_acc.eq(link_acc), self.link_addr.eq(link_addr),
                     self.link_data.eq(link_data)]

        m.d.comb += self.pending.eq(valid[0] | valid[1] | valid[2] | valid[3] | link_load)
        return m
