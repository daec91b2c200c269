"""The accumulate stage of ``MAC``: control pipeline, bypass and the B fp32 adders.

For a ``MAC`` issued in cycle ``t`` (``isa.timing``, with ``M = mem_read``,
``A = fp32_add``): the lanes see ``valid`` in ``t + M``; the tile product leaves them in the
accumulate stage ``s = t + mac_accumulate``, where it enters the ``A``-stage fp32 adder with
the accumulator's value (or with −0, which leaves every product unchanged, when
``accumulate = 0``); the sum is registered and written in ``s + A = t + mac_acc_write``.

The accumulator's value is read from the MAC copy of the accumulator store. The contract
(``isa.timing``: ``mac_acc_read``) presents that read in ``s − M``; this unit presents it
one cycle earlier, in ``s − M − 1``, and makes up for it with a bypass one cycle wider, so
that the adder's operand comes from registers alone: the accumulate stage then starts as a
stand-alone fp32 adder does, behind one operand mux (``make timing``, ``docs/timing.md``).
The operand is, by priority, −0 (a ``MAC`` that does not accumulate), the write register
(the adder's result written in ``s``: the ``MAC`` that entered the adder ``A`` cycles
earlier), the first capture of the store's write port (what it wrote in ``s − 1``), or a
register loaded in ``s − 1`` with the most recent of the ``M`` captures' writes in
``s − 2 .. s − M − 1`` or else the memory's read data (writes before ``s − M − 1``). Every
select is registered.
The accumulate stage therefore sees every write performed before ``s`` plus the previous
``MAC``'s — a superset of what the contract's read in ``s − M`` and its bypass promise, and
exactly that for every program the VM accepts — which is what lets ``MAC`` s into one
accumulator accumulate in issue order at any distance of at least ``A``
(``isa.timing.Latencies.mac_spacing``; closer ones are refused by the VM's schedule check).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from isa.timing import latencies
from rtl.arith import fp32_add
from rtl.dot import dot_latency
from rtl.memory import addr_bits

#: fp32 −0: adding it leaves every value unchanged (x + −0 = x, also for x = ±0, and a NaN
#: stays the canonical NaN it already is).
_MINUS_ZERO = 0x80000000

__all__ = ["Accumulator"]


class Accumulator(wiring.Component):
    """``MAC`` control pipeline and accumulate stage of one core.

    Parameters
    ----------
    config : Config

    Raises
    ------
    ValueError
        If the memory and dot-product latencies do not put the tile product in the
        accumulate stage that :func:`isa.timing.latencies` promises.

    Members
    -------
    issue : In(1)
        A ``MAC`` issues this cycle (cycle ``t``) with the fields below.
    acc_addr : In(addr_bits(accum_store_depth))
        Accumulator address.
    accumulate : In(1)
        Add to the accumulator (1) or overwrite it (0).
    lane_valid : Out(1)
        To the lanes: a tile product enters them (cycle ``t + mem_read``).
    dots : In(32 * B)
        The lanes' outputs, lane ``i`` at bits ``[32i, 32i + 32)`` (cycle ``s``).
    raddr : Out(addr_bits(accum_store_depth))
        Read address of the MAC copy of the accumulator store (cycle ``s − mem_read − 1``).
    rdata : In(32 * B)
        Its read data (cycle ``s − 1``).
    wb_we : Out(1)
        ``MAC`` write of the accumulator store (cycle ``s + fp32_add``).
    wb_addr : Out(addr_bits(accum_store_depth))
    wb_data : Out(32 * B)
    we : In(1)
        The accumulator store's write port this cycle (``MAC``, ``VEC`` or another core's
        ``ACCS``), captured for the bypass.
    waddr : In(addr_bits(accum_store_depth))
    wdata : In(32 * B)
    pending : Out(1)
        A ``MAC`` in flight still writes in a later cycle.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        lat = latencies(config)
        self.stage_s = lat.mac_accumulate
        arrival = config.depths.mem_read + dot_latency(config.block_size, config.depths)
        if arrival != self.stage_s or lat.mac_acc_write != self.stage_s + config.depths.fp32_add:
            raise ValueError(
                f"the memory and dot-product latencies put the tile product in cycle "
                f"t+{arrival}, but isa.timing has the accumulate stage in t+{self.stage_s}")
        b = config.block_size
        abits = addr_bits(config.accum_store_depth)
        super().__init__({
            "issue": In(1),
            "acc_addr": In(abits),
            "accumulate": In(1),
            "lane_valid": Out(1),
            "dots": In(32 * b),
            "raddr": Out(abits),
            "rdata": In(32 * b),
            "wb_we": Out(1),
            "wb_addr": Out(abits),
            "wb_data": Out(32 * b),
            "we": In(1),
            "waddr": In(abits),
            "wdata": In(32 * b),
            "pending": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self.config
        b, s = cfg.block_size, self.stage_s
        mem_read, add = cfg.depths.mem_read, cfg.depths.fp32_add

        def stage(value: Value, name: str, *, reset_less: bool = True) -> Signal:
            reg = Signal.like(value, name=name, reset_less=reset_less)
            m.d.sync += reg.eq(value)
            return reg

        # Control pipeline: index k holds the MAC issued k cycles ago, up to the write.
        valid, acc, accumulate = [self.issue], [self.acc_addr], [self.accumulate]
        for k in range(1, s + add + 1):
            valid.append(stage(valid[-1], f"valid{k}", reset_less=False))
            acc.append(stage(acc[-1], f"acc{k}"))
            if k <= s:
                accumulate.append(stage(accumulate[-1], f"accumulate{k}"))
        m.d.comb += [self.lane_valid.eq(valid[mem_read]),
                     self.raddr.eq(acc[s - mem_read - 1])]

        # The write register (written in cycle s for the MAC entering the adder in s - add)
        # and M registers capturing what the store's write port wrote, newest first.
        wb_we = valid[s + add]
        wb_addr = acc[s + add]
        wb_data = Signal(32 * b, reset_less=True)
        fwd = []
        we, waddr, wdata = self.we, self.waddr, self.wdata
        for k in range(1, mem_read + 1):
            we = stage(we, f"fwd{k}_we", reset_less=False)
            waddr = stage(waddr, f"fwd{k}_addr")
            wdata = stage(wdata, f"fwd{k}_data")
            fwd.append((we, waddr, wdata))

        # The operand of the MAC entering the adder in s (its address is acc[s - 1] in
        # s - 1) comes from registers alone. The selects of the adder's own result (the
        # write register's next MAC is acc[s + add - 2] in s - 2) and of the captures (what
        # the write port and the first M - 1 captures hold in s - 2, the captures hold in
        # s - 1) are decided in s - 2.
        early = acc[s - 2]
        take_sum = stage(accumulate[s - 2] & valid[s + add - 2] & (acc[s + add - 2] == early),
                         "bypass_sum_sel")
        hits = [self.we & (self.waddr == early),
                *(f_we & (f_addr == early) for f_we, f_addr, _ in fwd[:-1])]
        taken: Value = Const(0)
        picks = []
        for k, hit in enumerate(hits):
            picks.append(stage(hit & ~taken, f"bypass{k + 1}_sel"))
            taken = taken | hit
        use_mem = stage(~taken, "bypass_mem_sel")
        captured: Value = Const(0, 32 * b)
        for pick, (_, _, f_data) in zip([*picks, use_mem], [*fwd, (None, None, self.rdata)],
                                        strict=True):
            captured = captured | Mux(pick, f_data, 0)
        # "Set" adds −0, which keeps the tile product unchanged (a −0 stays −0).
        minus_zero = Cat(*(Const(_MINUS_ZERO, 32) for _ in range(b)))
        # The two latest sources are themselves registers when the adder starts: the
        # adder's own result is the write register, and what the write port writes in
        # s − 1 is the first capture. So only their selects are registered here, and the
        # operand mux sits in front of the adder, where the write port's merge and its
        # address compare, or the adder's last stage, would otherwise be followed by it.
        take_now = stage(accumulate[s - 1] & self.we & (self.waddr == acc[s - 1]),
                         "bypass_now_sel")
        older = stage(Mux(accumulate[s - 1], captured, minus_zero), "acc_older")
        old = Signal(32 * b, name="acc_old")
        take_sum = stage(take_sum, "bypass_sum_sel_r")
        m.d.comb += old.eq(Mux(take_sum, wb_data, Mux(take_now, fwd[0][2], older)))

        def reg(value: Value, name: str) -> Signal:
            return stage(value, name)

        sums = []
        for i in range(b):
            lane = slice(32 * i, 32 * i + 32)
            sums.append(fp32_add(m, old[lane], self.dots[lane], name=f"acc_add_{i}",
                                 stages=add, reg=reg))
        m.d.sync += wb_data.eq(Cat(*sums))
        m.d.comb += [
            self.wb_we.eq(wb_we),
            self.wb_addr.eq(wb_addr),
            self.wb_data.eq(wb_data),
            # Not valid[s + add]: a MAC writing in this cycle has nothing in a later one.
            self.pending.eq(Cat(*valid[:s + add]).any()),
        ]
        return m
