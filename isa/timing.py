"""Timing of the statically scheduled machine: latencies, issue cycles and every access.

Cycle 0 of an inference is the cycle its first input beat is accepted; input beat ``i`` is
accepted in cycle ``i`` (beats arrive back to back). Every core issues its instruction at
pc 0 in cycle 0 and then one instruction per cycle in program order, except that ``WAIT n``
puts the next instruction ``n`` cycles after itself. Nothing ever stalls, so the cycle of
every read, write and output beat is a static property of the program. This module is the
one place that says which: :func:`accesses` lists, for an instruction issued in cycle ``t``
on core ``c``, every memory access it makes and its cycle, computed from the configuration's
pipeline depths (:class:`isa.config.Depths`). The compiler schedules with it, the VM checks
and executes with it, :class:`isa.program.Program` and the reports count with it, and the
RTL builds its pipelines to its :func:`latencies`.

A write "in cycle w" is performed by a memory's write port during cycle w; a read presented
in cycle r sees it if and only if ``w < r``.

With ``M = mem_read``, ``P = bf16_mul``, ``A = fp32_add``, ``L = log2 B``, a ``MAC`` issued
in cycle ``t`` reads its tensor-RAM block and weight tile in ``t``, has its B × B products
in ``t + M + P``, its adder tree's result in ``s = t + M + P + L·A`` (the accumulate stage),
and writes its accumulator in ``s + A``. Its accumulate-read is presented in ``s − M``. The
accumulate stage is an ``A``-cycle loop: a ``MAC`` into the same accumulator may enter it
``A`` cycles after the previous one at the earliest (the result is forwarded from the
adder's output), so such ``MAC`` s issue at least :attr:`Latencies.mac_spacing` = ``A``
cycles apart; writes landing in ``s − M .. s`` (after the memory read, up to the
forwarded result) are supplied by the bypass. A ``VEC`` reads in ``t``, computes its op in
``max(A, vec_mul + norm_round)`` stages and its clamp and bf16 rounding in ``clamp_round``,
writes locally after that, reaches other cores ``link`` cycles later and the output port
``output`` cycles later.

An ``FN`` (the function unit, :mod:`isa.functions`) reads its tensor-RAM block in ``t``,
forms each element's table address in one stage, reads the function table (``M + 1``: the
table spans dozens of block RAMs, and selecting among their outputs takes a stage), then
multiplies (``vec_mul + norm_round``), adds (``fp32_add``) and rounds (``clamp_round``),
and writes its own core's tensor RAM or accumulator in ``t + fn_write``. ``MAX_LANES``
reduces the block by a tree of ``log2 B`` one-stage compares in the same span (or in a
longer one if the tree is the longer), so every ``FN`` has the same latency.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from isa.config import Config, Depths
from isa.instructions import Dest, End, Fn, Instruction, Mac, Vec, Wait
from isa.numerics import VecOp

__all__ = [
    "Latencies", "latencies", "Access", "accesses", "input_writes", "last_effect",
    "issue_cycles", "TimingError", "TRAM", "ACC", "OUT", "WEIGHT", "CLAMP",
]

#: Memory names of :class:`Access` (``OUT`` is the output port).
TRAM, ACC, OUT, WEIGHT, CLAMP = "tram", "acc", "out", "weight", "clamp"


@dataclass(frozen=True)
class Latencies:
    """Offsets, in cycles after an instruction's issue (or an input beat's acceptance),
    derived from the pipeline depths; see the module docstring for the stage structure.

    Attributes
    ----------
    input_write : int
        Input beat accepted in ``i`` is written to tensor RAM in ``i + input_write``.
    mac_products : int
        A ``MAC``'s B × B products enter the adder tree.
    mac_acc_read : int
        A ``MAC``'s accumulate-read address is presented.
    mac_accumulate : int
        A ``MAC``'s tile product enters the accumulate stage.
    mac_acc_write : int
        A ``MAC`` writes its accumulator.
    mac_spacing : int
        Least distance between two ``MAC`` s into one accumulator (the accumulate loop).
    bypass : int
        A ``MAC``'s accumulate-read is supplied every earlier ``MAC``'s write landing up to
        this many cycles after the read (the memory read latency).
    vec_op : int
        Stages of the vector unit's op (the longest of its add and multiply).
    vec_local_write : int
        A ``VEC`` writes its own accumulator or tensor RAM.
    vec_remote_write : int
        A ``VEC`` writes another core's tensor RAM or accumulator.
    vec_output : int
        A ``VEC`` presents its output beat.
    fn_table_read : int
        An ``FN``'s read of the function table, from the cycle its address is presented to
        the cycle the entry can be used.
    fn_write : int
        An ``FN`` writes its own tensor RAM or accumulator.
    """

    input_write: int
    mac_products: int
    mac_acc_read: int
    mac_accumulate: int
    mac_acc_write: int
    mac_spacing: int
    bypass: int
    vec_op: int
    vec_local_write: int
    vec_remote_write: int
    vec_output: int
    fn_table_read: int
    fn_write: int


@functools.cache
def _latencies(d: Depths, tree_levels: int) -> Latencies:
    products = d.mem_read + d.bf16_mul
    accumulate = products + tree_levels * d.fp32_add
    vec_op = max(d.fp32_add, d.vec_mul + d.norm_round)
    local = d.mem_read + vec_op + d.clamp_round
    table_read = d.mem_read + 1
    fn_body = 1 + table_read + d.vec_mul + d.norm_round + d.fp32_add
    return Latencies(
        input_write=d.link,
        mac_products=products,
        mac_acc_read=accumulate - d.mem_read,
        mac_accumulate=accumulate,
        mac_acc_write=accumulate + d.fp32_add,
        mac_spacing=d.fp32_add,
        bypass=d.mem_read,
        vec_op=vec_op,
        vec_local_write=local,
        vec_remote_write=local + d.link,
        vec_output=local + d.output,
        fn_table_read=table_read,
        fn_write=d.mem_read + max(tree_levels, fn_body) + d.clamp_round,
    )


def latencies(config: Config) -> Latencies:
    """Return the latencies of ``config`` (its depths and adder-tree height)."""
    return _latencies(config.depths, config.tree_levels)


class Access(NamedTuple):
    """One access to one memory word (or the output port), in the cycle it happens.

    For a read, ``cycle`` is the cycle the address is presented; for a write, the cycle the
    write is performed. ``memory`` is :data:`TRAM`, :data:`ACC`, :data:`WEIGHT`,
    :data:`CLAMP` or :data:`OUT`; for :data:`OUT` ``core`` is the sending core and ``addr``
    is 0 (a beat's index is its rank by cycle among all beats). ``bypass`` marks a ``MAC``'s
    accumulate-read and a ``MAC``'s accumulator write: the pair the bypass forwards between.
    """

    memory: str
    core: int
    addr: int
    cycle: int
    write: bool
    bypass: bool = False


def accesses(config: Config, instr: Instruction, core: int, t: int) -> list[Access]:
    """Return every access of ``instr`` issued in cycle ``t`` on ``core``.

    ``END`` and ``WAIT`` access nothing. A ``VEC`` reads only the operands its op uses
    (``PASS_A`` no tensor RAM, ``PASS_T`` no accumulator); a ``MAC`` reads its accumulator
    only when it accumulates.
    """
    lat = latencies(config)
    out: list[Access] = []
    if isinstance(instr, Mac):
        out.append(Access(TRAM, core, instr.tram, t, False))
        out.append(Access(WEIGHT, core, instr.weight, t, False))
        if instr.accumulate:
            out.append(Access(ACC, core, instr.acc, t + lat.mac_acc_read, False, True))
        out.append(Access(ACC, core, instr.acc, t + lat.mac_acc_write, True, True))
    elif isinstance(instr, Vec):
        if instr.op != VecOp.PASS_T:
            out.append(Access(ACC, core, instr.acc, t, False))
        if instr.op != VecOp.PASS_A:
            out.append(Access(TRAM, core, instr.tram, t, False))
        out.append(Access(CLAMP, core, instr.clamp, t, False))
        if instr.dest == Dest.ACC:
            out.append(Access(ACC, core, instr.addr, t + lat.vec_local_write, True))
        elif instr.dest in (Dest.TRAM, Dest.ACCS):
            memory = TRAM if instr.dest == Dest.TRAM else ACC
            for d in range(config.num_cores):
                if instr.cores >> d & 1:
                    delay = lat.vec_local_write if d == core else lat.vec_remote_write
                    out.append(Access(memory, d, instr.addr, t + delay, True))
        else:
            out.append(Access(OUT, core, 0, t + lat.vec_output, True))
    elif isinstance(instr, Fn):
        out.append(Access(TRAM, core, instr.tram, t, False))
        memory = TRAM if instr.dest == Dest.TRAM else ACC
        out.append(Access(memory, core, instr.addr, t + lat.fn_write, True))
    return out


def input_writes(config: Config, beat: int, mask: int, addr: int) -> list[Access]:
    """Return the tensor-RAM writes of input beat ``beat`` (accepted in cycle ``beat``)."""
    cycle = beat + latencies(config).input_write
    return [Access(TRAM, d, addr, cycle, True) for d in range(config.num_cores)
            if mask >> d & 1]


def last_effect(config: Config, instr: Instruction, core: int, t: int) -> int:
    """Return the last cycle in which ``instr`` issued in ``t`` does anything (its issue, a
    write or an output beat)."""
    return max([t] + [a.cycle for a in accesses(config, instr, core, t) if a.write])


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
