"""The sequencer of a core: fetch and issue one instruction per cycle, in program order.

Timing (``docs/architecture.md`` §2): the instruction issuing in a cycle is held in a
register (``instr``), so that decode and the memories' read addresses start from a register
rather than from the instruction memory's read data (which already fills most of a cycle,
``docs/timing.md``). The instruction memory's address is a register too (``imem_addr``):
whether an instruction issues depends on ``start`` and the ``WAIT`` count, and that logic
in front of the memory's address (which fans out to all of its block RAMs) was the longest
path of a core. So fetch runs ahead of issue on its own: programs have no branches, and
the fetched words queue in three registers (the head is ``instr``), fetching while the
queue and the word in flight leave room. A ``WAIT n`` makes the next instruction issue
``n`` cycles after the ``WAIT``; ``END`` ends the core's inference and returns to the entry
with the words at the entry and the one after it, copied when they were first fetched, so
that the next inference of the same model may start in the very next cycle.

While idle the queue holds the words from ``entry`` (the entry pc of the model selected on
the input port), so the model's first instruction issues in cycle 0 of an inference. When
``entry`` changes while idle the queue refills: the word at the entry is in ``instr`` three
cycles after ``entry`` changed, which is why the model index is held ``MODEL_SETUP`` cycles
before an inference (``isa/program.py``: the model table's read, then these three). An
inference that starts before the refill is complete raises ``error``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from isa.instructions import PC_BITS, WORD_BITS, Opcode, Wait, amaranth_layout
from rtl.memory import addr_bits

__all__ = ["QUEUE", "Sequencer"]

#: Fetched words the sequencer holds: with its fetch decided from registers (the queue's
#: count and the word in flight), three keep one issue per cycle.
QUEUE = 3


class Sequencer(wiring.Component):
    """Instruction fetch and issue of one core.

    Parameters
    ----------
    config : Config

    Members
    -------
    start : In(1)
        Cycle 0 of an inference: issue the instruction at the entry pc (which is in
        ``instr``).
    entry : In(addr_bits(instr_mem_depth))
        Entry pc of the selected model (the top's model table).
    word : In(64)
        The instruction memory's read data: the word at the address presented on
        ``imem_addr`` in the previous cycle.
    imem_addr : Out(addr_bits(instr_mem_depth))
        Instruction-memory read address, a register (ahead of ``instr`` by the queued words
        and the one in flight).
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
        An inference starts before the word at ``entry`` is fetched (after reset, or with a
        model index not held for ``MODEL_SETUP`` cycles), or the queue runs dry during one
        (which the fetch rule rules out).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        super().__init__({
            "start": In(1),
            "entry": In(addr_bits(config.instr_mem_depth)),
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
        fetch_pc = Signal(width)                 # the address being read (a register)
        queue = [Signal(WORD_BITS, name=f"queue{i}", reset_less=True) for i in range(QUEUE)]
        count = Signal(range(QUEUE + 1))         # queue words held (queue[0] is instr)
        arriving = Signal()                      # the memory's read data is the next word
        pc = Signal(width)                       # pc of queue[0]
        filled = Signal(width)                   # the entry the queue was filled from
        first = Signal(WORD_BITS, reset_less=True)   # the words at filled and filled + 1,
        second = Signal(WORD_BITS, reset_less=True)  # for the return after END
        copied = Signal(range(3))                # how many of those two are copied
        booted = Signal()
        run = Signal()
        wait = Signal(Wait.FIELDS[0].width)      # cycles still to wait before the next issue
        idle = ~run & ~self.start
        head = queue[0]
        opcode = data.View(amaranth_layout(Opcode.END), head).opcode
        cycles = data.View(amaranth_layout(Opcode.WAIT), head).cycles
        start_ok = booted & (count != 0) & (filled == self.entry)
        issue = Signal()
        is_end = issue & (opcode == Opcode.END)
        refill = ~booted | (idle & (self.entry != filled))
        # Fetch from registers only: room for the word read now, counting the one arriving.
        fetch = count + arriving < QUEUE

        m.d.comb += [
            issue.eq((run | (self.start & start_ok)) & (count != 0) & (wait == 0)),
            # A started inference never waits for a word: three registers keep up.
            self.error.eq((self.start & ~start_ok) | (run & (count == 0))),
            self.imem_addr.eq(fetch_pc),
        ]
        # The first two words after a refill are copied (a refill below restarts the count).
        with m.If(arriving & (copied == 0)):
            m.d.sync += [first.eq(self.word), copied.eq(1)]
        with m.If(arriving & (copied == 1)):
            m.d.sync += [second.eq(self.word), copied.eq(2)]
        with m.If(refill):
            m.d.sync += [fetch_pc.eq(self.entry), filled.eq(self.entry), pc.eq(self.entry),
                         count.eq(0), arriving.eq(0), copied.eq(0), booted.eq(1)]
        with m.Elif(is_end):
            # Back to the entry: its two words from the copies, the next one fetched now.
            # (The word after the entry may be arriving now, at the earliest END.)
            m.d.sync += [queue[0].eq(first), count.eq(2),
                         queue[1].eq(Mux(arriving & (copied == 1), self.word, second)),
                         fetch_pc.eq(filled + 2), arriving.eq(0), pc.eq(filled)]
        with m.Else():
            m.d.sync += [fetch_pc.eq(fetch_pc + fetch), arriving.eq(fetch)]
            with m.If(issue):
                m.d.sync += pc.eq(pc + 1)
            # Pop the issued word, then append the arriving one.
            kept = count - issue
            for i in range(QUEUE):
                shifted = queue[i + 1] if i + 1 < QUEUE else queue[i]
                with m.If(arriving & (kept == i)):
                    m.d.sync += queue[i].eq(self.word)
                with m.Elif(issue):
                    m.d.sync += queue[i].eq(shifted)
            m.d.sync += count.eq(kept + arriving)
        with m.If(issue & (opcode == Opcode.WAIT)):
            # WAIT n: the next issue is n cycles later, so n - 1 idle cycles.
            m.d.sync += wait.eq(cycles - 1)
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        run_next = (run | self.start) & ~is_end
        m.d.sync += run.eq(run_next)
        m.d.comb += [
            self.instr.eq(head),
            self.issue.eq(issue),
            self.pc.eq(pc),
            self.more.eq(run_next),
        ]
        return m
