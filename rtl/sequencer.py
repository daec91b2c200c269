"""The sequencer of a core: fetch and issue one instruction per cycle, in program order.

Timing (``docs/architecture.md`` §2): the instruction memory reads synchronously, so the
sequencer always presents the address of the *next* instruction to issue; while idle that
is ``entry``, the entry pc of the model selected on the input port, so the model's first
instruction is ready in cycle 0 of an inference. ``WAIT n`` makes the next instruction issue
``n`` cycles after the ``WAIT``; ``END`` ends the core's inference and returns the pc to
``entry``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
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
        Cycle 0 of an inference: issue the instruction at the entry pc (which is on
        ``word``).
    entry : In(addr_bits(instr_mem_depth))
        Entry pc of the selected model (the top's model table), presented while idle.
    word : In(64)
        The instruction memory's read data: the word at the address presented on
        ``imem_addr`` in the previous cycle.
    imem_addr : Out(addr_bits(instr_mem_depth))
        Instruction-memory read address (the pc of the next instruction to issue).
    issue : Out(1)
        ``word`` issues this cycle.
    pc : Out(PC_BITS)
        pc of ``word``.
    more : Out(1)
        The core issues again in a later cycle of this inference (not done with its
        program).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        super().__init__({
            "start": In(1),
            "entry": In(addr_bits(config.instr_mem_depth)),
            "word": In(WORD_BITS),
            "imem_addr": Out(addr_bits(config.instr_mem_depth)),
            "issue": Out(1),
            "pc": Out(PC_BITS),
            "more": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        width = len(self.imem_addr)
        pc = Signal(width)
        run = Signal()
        wait = Signal(Wait.FIELDS[0].width)      # cycles still to wait before the next issue
        pc_next = Signal(width)
        run_next = Signal()
        opcode = data.View(amaranth_layout(Opcode.END), self.word).opcode
        cycles = data.View(amaranth_layout(Opcode.WAIT), self.word).cycles

        m.d.comb += [
            self.issue.eq((run | self.start) & (wait == 0)),
            pc_next.eq(Mux(run | self.start, pc, self.entry)),
            run_next.eq(run | self.start),
        ]
        with m.If(self.issue):
            with m.If(opcode == Opcode.END):
                m.d.comb += [pc_next.eq(self.entry), run_next.eq(0)]
            with m.Else():
                m.d.comb += pc_next.eq(pc + 1)
            with m.If(opcode == Opcode.WAIT):
                # WAIT n: the next issue is n cycles later, so n - 1 idle cycles.
                m.d.sync += wait.eq(cycles - 1)
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        m.d.sync += [pc.eq(pc_next), run.eq(run_next)]
        m.d.comb += [
            self.imem_addr.eq(pc_next),
            self.pc.eq(pc),
            self.more.eq(run_next),
        ]
        return m
