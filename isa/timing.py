"""Timing of the statically scheduled machine: pipeline latencies and issue cycles.

Cycle 0 of an inference is the cycle its first input beat is accepted; input beat ``i`` is
accepted in cycle ``i`` (beats arrive back to back). Every core issues its instruction at
pc 0 in cycle 0 and then one instruction per cycle in program order, except that ``WAIT n``
puts the next instruction ``n`` cycles after itself. Nothing ever stalls, so the cycle of
every read, write and output beat is a static property of the program, written down here
once for the compiler (which schedules with it), the VM (which checks and counts with it)
and the RTL (whose pipelines must have exactly these depths).

A write "at cycle w" is performed by a memory's write port during cycle w; a read issued at
cycle r sees it if and only if ``w < r``.
"""

from __future__ import annotations

from collections.abc import Sequence

from isa.config import Config
from isa.instructions import End, Instruction, Wait

__all__ = [
    "INPUT_WRITE", "VEC_LOCAL_WRITE", "VEC_REMOTE_WRITE", "VEC_OUTPUT", "mac_acc_read",
    "mac_acc_write",
    "issue_cycles", "TimingError",
]

#: Input beat i (accepted in cycle i) is written to tensor RAM in cycle i + INPUT_WRITE.
INPUT_WRITE = 1
#: A VEC issued at t writes its local destination (accumulator or own tensor RAM) at t + 4:
#: read (t), op (t+1), normalise-and-round of the op (t+2), clamp and bf16 rounding (t+3).
VEC_LOCAL_WRITE = 4
#: ... and another core's tensor RAM at t + 5, after one hop on the interconnect.
VEC_REMOTE_WRITE = 5
#: ... and presents an output beat in cycle t + 5, after one hop to the output port.
VEC_OUTPUT = 5


def mac_acc_write(config: Config) -> int:
    """Return the offset from a MAC's issue to its accumulator write.

    Read tensor RAM and weight store (t), multiply (t+1), log2(B) adder-tree levels
    (t+2 .. t+1+log2 B), accumulate (t+2+log2 B), write (t+3+log2 B).
    """
    return 3 + config.tree_levels


def mac_acc_read(config: Config) -> int:
    """Return the offset from a MAC's issue to its accumulator read (accumulate = 1).

    The address is presented one cycle before the accumulate stage (t+1+log2 B); a MAC at
    distance 1 or 2 before it, into the same accumulator, is forwarded by the bypass instead.
    """
    return mac_acc_write(config) - 2


class TimingError(ValueError):
    """A core's program does not end within its instruction memory."""


def issue_cycles(instrs: Sequence[Instruction]) -> list[int]:
    """Return the issue cycle of each instruction up to and including the first ``END``.

    Raises
    ------
    TimingError
        If the program has no ``END``.
    """
    cycles = []
    cycle = 0
    for instr in instrs:
        cycles.append(cycle)
        if isinstance(instr, End):
            return cycles
        cycle += instr.cycles if isinstance(instr, Wait) else 1
    raise TimingError("program has no END instruction")
