"""The sequencer of a core: fetch and issue one instruction per cycle, in program order.

Timing (``docs/architecture.md`` §2): the instruction issuing in a cycle is held in a
register (``instr``), so that decode and the memories' read addresses start from a register
rather than from the instruction memory's read data (which already fills most of a cycle,
``docs/timing.md``). The instruction memory's address is a register too (``imem_addr``):
whether an instruction issues depends on ``start`` and the ``WAIT`` count, and that logic
in front of the memory's address (which fans out to all of its block RAMs) was the longest
path of a core; its data arrives ``INSTR_READ`` cycles after the address
(``isa/program.py``). So fetch runs ahead of issue on its own: programs have no branches,
and the fetched words queue in :data:`QUEUE` registers (the head is ``instr``), fetching
while the queue and the words in flight leave room. A ``WAIT n`` makes the next
instruction issue ``n`` cycles after the ``WAIT``; ``END`` ends the core's inference and
returns to the entry with the first :data:`COPIES` words from the entry, copied when they
were first fetched, so that the next inference of the same model may start in the very
next cycle.

While idle the queue holds the words from ``entry`` (the entry pc of the model selected on
the input port), so the model's first instruction issues in cycle 0 of an inference. When
``entry`` changes while idle the queue refills: the word at the entry is in ``instr``
``INSTR_READ + 2`` cycles after ``entry`` changed, which is why the model index is held
``MODEL_SETUP`` cycles before an inference (``isa/program.py``: the model table's read,
then the refill). An inference that starts before the refill is complete raises ``error``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from isa.instructions import PC_BITS, WORD_BITS, Opcode, Wait, amaranth_layout
from isa.program import INSTR_READ
from rtl.memory import addr_bits

__all__ = ["COPIES", "QUEUE", "Sequencer"]

#: Fetched words the sequencer holds: with its fetch decided from registers (the queue's
#: count and the words in flight), this many keep one issue per cycle.
QUEUE = INSTR_READ + 2
#: Words from the entry kept for the return after END: enough to issue one per cycle until
#: the first word fetched after the END arrives.
COPIES = INSTR_READ + 1


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
        ``imem_addr`` ``INSTR_READ`` cycles earlier (``isa/program.py``).
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
        flight = Signal(INSTR_READ)              # fetches in flight, oldest last
        arriving = flight[-1]                    # the memory's read data is the next word
        pc = Signal(width)                       # pc of queue[0]
        filled = Signal(width)                   # the entry the queue was filled from
        # The words at filled, filled + 1, ..., for the return to the entry after END.
        copies = [Signal(WORD_BITS, name=f"copy{i}", reset_less=True) for i in range(COPIES)]
        copied = Signal(range(COPIES + 1))       # how many of them are copied
        booted = Signal()
        run = Signal()
        wait = Signal(Wait.FIELDS[0].width)      # cycles still to wait before the next issue
        idle = ~run & ~self.start
        head = queue[0]
        opcode = data.View(amaranth_layout(Opcode.END), head).opcode
        cycles = data.View(amaranth_layout(Opcode.WAIT), head).cycles
        # Flags of the next cycle, registered so that issue (and the queue's enables behind
        # it) follows `start` through two gates only: the queue is not empty, the WAIT count
        # is 0, and the entry read last cycle is the one filled (an index changed later
        # than MODEL_SETUP allows is the top's error).
        count_next = Signal.like(count)
        wait_next = Signal.like(wait)
        nonempty = Signal()
        wait_zero = Signal(init=1)
        match = Signal()
        start_ok = booted & match & nonempty
        issue = Signal()
        is_end = issue & (opcode == Opcode.END)
        refill = ~booted | (idle & (self.entry != filled))
        # Fetch from registers only: room for the word read now, counting those in flight.
        in_flight = sum(flight[i] for i in range(INSTR_READ))
        fetch = count + in_flight < QUEUE
        kept = count - issue

        m.d.comb += [
            issue.eq((run | (self.start & start_ok)) & nonempty & wait_zero),
            # A started inference never waits for a word: the queue's depth keeps up.
            self.error.eq((self.start & ~start_ok) | (run & ~nonempty)),
            self.imem_addr.eq(fetch_pc),
            count_next.eq(count),
            wait_next.eq(wait),
        ]
        m.d.sync += [count.eq(count_next), nonempty.eq(count_next != 0), wait.eq(wait_next),
                     wait_zero.eq(wait_next == 0), match.eq(filled == self.entry)]
        # The first COPIES words after a refill are copied (a refill restarts the count).
        for i in range(COPIES):
            with m.If(arriving & (copied == i)):
                m.d.sync += [copies[i].eq(self.word), copied.eq(i + 1)]
        with m.If(refill):
            m.d.sync += [fetch_pc.eq(self.entry), filled.eq(self.entry), pc.eq(self.entry),
                         flight.eq(0), copied.eq(0), booted.eq(1)]
            m.d.comb += count_next.eq(0)
        with m.Elif(is_end & (copied == COPIES)):
            # Back to the entry: its first words from the copies, the next fetched now.
            m.d.sync += [*(queue[i].eq(copies[i]) for i in range(COPIES)),
                         fetch_pc.eq(filled + COPIES), flight.eq(0), pc.eq(filled)]
            m.d.comb += count_next.eq(COPIES)
        with m.Else():
            m.d.sync += [fetch_pc.eq(fetch_pc + fetch), flight.eq(Cat(fetch, flight[:-1]))]
            with m.If(is_end):
                # An END before the copies are complete: the refill's fetches are still
                # arriving in order, so the queue is the copies so far and what arrives.
                for i in range(COPIES):
                    with m.If(i < copied):
                        m.d.sync += queue[i].eq(copies[i])
                    with m.Elif(arriving & (copied == i)):
                        m.d.sync += queue[i].eq(self.word)
                m.d.sync += pc.eq(filled)
                m.d.comb += count_next.eq(copied + arriving)
            with m.Else():
                with m.If(issue):
                    m.d.sync += pc.eq(pc + 1)
                # Pop the issued word, then append the arriving one.
                for i in range(QUEUE):
                    shifted = queue[i + 1] if i + 1 < QUEUE else queue[i]
                    with m.If(arriving & (kept == i)):
                        m.d.sync += queue[i].eq(self.word)
                    with m.Elif(issue):
                        m.d.sync += queue[i].eq(shifted)
                m.d.comb += count_next.eq(kept + arriving)
        with m.If(issue & (opcode == Opcode.WAIT)):
            # WAIT n: the next issue is n cycles later, so n - 1 idle cycles.
            m.d.comb += wait_next.eq(cycles - 1)
        with m.Elif(wait != 0):
            m.d.comb += wait_next.eq(wait - 1)
        run_next = (run | self.start) & ~is_end
        m.d.sync += run.eq(run_next)
        m.d.comb += [
            self.instr.eq(head),
            self.issue.eq(issue),
            self.pc.eq(pc),
            self.more.eq(run_next),
        ]
        return m
