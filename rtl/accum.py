"""The accumulate stage of ``MAC``: control pipeline, bypass and the B fp32 adders.

For a ``MAC`` issued in cycle ``t`` with ``L = log2 B`` (``docs/architecture.md`` §3):
the lanes see ``valid`` in ``t + 1``; the tile product leaves the lanes in the accumulate
stage ``s = t + 2 + L``, where it is added to the accumulator's value (or taken as is when
``accumulate = 0``); the sum is registered and written in ``s + 1 = t + 3 + L``
(:func:`isa.timing.mac_acc_write`).

The accumulator's value is read from the MAC copy of the accumulator store, presented in
``s − 1``, so that memory read misses two writes: the one performed in ``s − 1`` (a read sees
only earlier writes) and the one in ``s`` (the previous ``MAC``'s result, still in its write
register). The bypass supplies them: the write register itself when its address matches
(a ``MAC`` one cycle earlier), else a register capturing whatever the store's write port
wrote in ``s − 1`` (a ``MAC`` two cycles earlier, or any other write). The accumulate stage
therefore sees every write performed before ``s`` plus the previous ``MAC``'s, which is what
lets back-to-back ``MAC``s into one accumulator accumulate in issue order at any distance.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from isa.timing import mac_acc_write
from rtl.arith import fp32_add
from rtl.dot import dot_latency
from rtl.memory import addr_bits

__all__ = ["Accumulator"]


class Accumulator(wiring.Component):
    """``MAC`` control pipeline and accumulate stage of one core.

    Parameters
    ----------
    config : Config

    Raises
    ------
    ValueError
        If the dot-product unit's latency does not put its result in the accumulate stage
        that :func:`isa.timing.mac_acc_write` promises.

    Members
    -------
    issue : In(1)
        A ``MAC`` issues this cycle (cycle ``t``) with the fields below.
    acc_addr : In(addr_bits(accum_store_depth))
        Accumulator address.
    accumulate : In(1)
        Add to the accumulator (1) or overwrite it (0).
    lane_valid : Out(1)
        To the lanes: a tile product enters them (cycle ``t + 1``).
    dots : In(32 * B)
        The lanes' outputs, lane ``i`` at bits ``[32i, 32i + 32)`` (cycle ``s``).
    raddr : Out(addr_bits(accum_store_depth))
        Read address of the MAC copy of the accumulator store (cycle ``s − 1``).
    rdata : In(32 * B)
        Its read data (cycle ``s``).
    wb_we : Out(1)
        ``MAC`` write of the accumulator store (cycle ``s + 1``).
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
        self.stage_s = mac_acc_write(config) - 1
        if 1 + dot_latency(config.block_size) != self.stage_s:
            raise ValueError(
                f"dot-product latency {dot_latency(config.block_size)} puts the tile product "
                f"in cycle t+{1 + dot_latency(config.block_size)}, but isa.timing has the "
                f"accumulate stage in t+{self.stage_s}")
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
        b = self.config.block_size
        s = self.stage_s

        def stage(value: Value, name: str, *, reset_less: bool = True) -> Signal:
            reg = Signal.like(value, name=name, reset_less=reset_less)
            m.d.sync += reg.eq(value)
            return reg

        # Control pipeline: index k holds the MAC issued k cycles ago.
        valid, acc, accumulate = [self.issue], [self.acc_addr], [self.accumulate]
        for k in range(1, s + 1):
            valid.append(stage(valid[-1], f"valid{k}", reset_less=False))
            acc.append(stage(acc[-1], f"acc{k}"))
            accumulate.append(stage(accumulate[-1], f"accumulate{k}"))
        m.d.comb += [self.lane_valid.eq(valid[1]), self.raddr.eq(acc[s - 1])]

        # The write register (this stage's result, written in s + 1) and the register that
        # captures the store's write of the previous cycle: the bypass sources.
        wb_we = Signal()
        wb_addr = Signal.like(self.wb_addr, reset_less=True)
        wb_data = Signal(32 * b, reset_less=True)
        fwd_we = stage(self.we, "fwd_we", reset_less=False)
        fwd_addr = stage(self.waddr, "fwd_addr")
        fwd_data = stage(self.wdata, "fwd_data")
        addr = acc[s]
        old = Signal(32 * b)
        with m.If(wb_we & (wb_addr == addr)):
            m.d.comb += old.eq(wb_data)
        with m.Elif(fwd_we & (fwd_addr == addr)):
            m.d.comb += old.eq(fwd_data)
        with m.Else():
            m.d.comb += old.eq(self.rdata)

        sums = []
        for i in range(b):
            lane = slice(32 * i, 32 * i + 32)
            total = fp32_add(m, old[lane], self.dots[lane], name=f"acc_add_{i}")
            # "Set" keeps the tile product unchanged (a -0 stays -0).
            sums.append(Mux(accumulate[s], total, self.dots[lane]))
        m.d.sync += [wb_we.eq(valid[s]), wb_addr.eq(addr), wb_data.eq(Cat(*sums))]
        m.d.comb += [
            self.wb_we.eq(wb_we),
            self.wb_addr.eq(wb_addr),
            self.wb_data.eq(wb_data),
            self.pending.eq(Cat(*valid).any()),
        ]
        return m
