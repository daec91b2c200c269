"""The sequencer of a core: fetch and issue one instruction per cycle, in program order.

Timing (``docs/architecture.md`` §2): the instruction issuing in a cycle is held in a
register (``instr``), so that decode, the next fetch address and the memories' read
addresses start from a register rather than from the instruction memory's read data (which
already fills most of a cycle, ``docs/timing.md``). The memory reads synchronously, so the
sequencer fetches two ahead: while it holds the instruction at pc ``p``, the memory's read
data is the one at ``p + 1``, which is loaded when ``p`` issues (and ``p + 2`` fetched).
Programs have no branches, so issue timing is the same as with no prefetch at all: while
idle the word at pc 0 is ready, so the first instruction issues in cycle 0 of an
inference; ``WAIT n`` makes the next instruction issue ``n`` cycles after the ``WAIT``;
``END`` ends the core's inference and returns the pc to 0, reloading the word at pc 0 from
a copy taken after reset (and fetching pc 1), so the next inference may start in the very
next cycle. After reset the first two cycles fill the prefetch (an inference starting
before that raises ``error``).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from isa.instructions import PC_BITS, WORD_BITS, Opcode, Wait, amaranth_layout
from rtl.memory import addr_bits

__all__ = ["Sequencer"]


class Sequencer(wiring.Component):
    """Instruction fetch and issue of one core.

    Parameters
    ----------
    config : Config

    Members
    -------
    start : In(1)
        Cycle 0 of an inference: issue the instruction at pc 0 (which is in ``instr``).
    word : In(64)
        The instruction memory's read data: the word at the address presented on
        ``imem_addr`` in the previous cycle.
    imem_addr : Out(addr_bits(instr_mem_depth))
        Instruction-memory read address (two ahead of the instruction in ``instr`` when that
        one issues, one ahead otherwise).
    instr : Out(64)
        The instruction at ``pc`` (a register): it issues when ``issue`` is high.
    issue : Out(1)
        ``instr`` issues this cycle.
    pc : Out(PC_BITS)
        pc of ``instr``.
    more : Out(1)
        The core issues again in a later cycle of this inference (not done with its
        program).
    error : Out(1)
        An inference starts while the prefetch is still filling after reset.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        super().__init__({
            "start": In(1),
            "word": In(WORD_BITS),
            "imem_addr": Out(addr_bits(config.instr_mem_depth)),
            "instr": Out(WORD_BITS),
            "issue": Out(1),
            "pc": Out(PC_BITS),
            "more": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        width = len(self.imem_addr)
        pc = Signal(width)
        instr = Signal(WORD_BITS, reset_less=True)
        first = Signal(WORD_BITS, reset_less=True)  # the word at pc 0, for after END
        # 0: pc 0 is fetched; 1: its word arrives (into instr and first); 2: ready.
        fill = Signal(range(3))
        ready = fill == 2
        run = Signal()
        wait = Signal(Wait.FIELDS[0].width)      # cycles still to wait before the next issue
        run_next = Signal()
        opcode = data.View(amaranth_layout(Opcode.END), instr).opcode
        cycles = data.View(amaranth_layout(Opcode.WAIT), instr).cycles

        m.d.comb += [
            self.issue.eq((run | self.start) & ready & (wait == 0)),
            self.error.eq(self.start & ~ready),
            run_next.eq(run | self.start),
            self.imem_addr.eq(pc + 1),
        ]
        with m.If(fill == 0):
            m.d.comb += self.imem_addr.eq(0)
            m.d.sync += fill.eq(1)
        with m.Elif(fill == 1):
            m.d.sync += [instr.eq(self.word), first.eq(self.word), fill.eq(2)]
        with m.If(self.issue):
            with m.If(opcode == Opcode.END):
                m.d.comb += [run_next.eq(0), self.imem_addr.eq(1)]
                m.d.sync += [pc.eq(0), instr.eq(first)]
            with m.Else():
                m.d.comb += self.imem_addr.eq(pc + 2)
                m.d.sync += [pc.eq(pc + 1), instr.eq(self.word)]
            with m.If(opcode == Opcode.WAIT):
                # WAIT n: the next issue is n cycles later, so n - 1 idle cycles.
                m.d.sync += wait.eq(cycles - 1)
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        m.d.sync += run.eq(run_next)
        m.d.comb += [
            self.instr.eq(instr),
            self.pc.eq(pc),
            self.more.eq(run_next),
        ]
        return m
