"""Trace records of the VM (and of the RTL's trace port) and their one-line text format.

Two kinds of record, each a line of text:

``TraceRecord`` — an instruction issue (every instruction, ``WAIT`` and ``END`` included)::

    <cycle:8> c<core> pc<pc:5> <word:016x>  <disassembly>

``WriteRecord`` — a memory write (``tram``, ``acc``) or an output beat (``out``)::

    <cycle:8> c<core> <memory:>4>[<addr:5>] <lane 0>,<lane 1>,... <- c<src_core> pc<src_pc>

where lanes are hexadecimal bit patterns (4 digits for bf16, 8 for fp32), ``core`` is the
core written (the sending core for ``out``), ``addr`` the address (the beat's index for
``out``) and an input beat's write ends in ``<- in<beat>``. The disassembly is for people;
:func:`parse_trace` ignores it. Blank lines and lines starting with ``#`` are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from isa.instructions import EncodingError, decode

__all__ = ["TraceRecord", "WriteRecord", "format_trace", "parse_trace"]


class TraceRecord(NamedTuple):
    """Core ``core`` issued the instruction ``word`` at ``pc`` in ``cycle``."""

    cycle: int
    core: int
    pc: int
    word: int


class WriteRecord(NamedTuple):
    """A write performed (or an output beat presented) in ``cycle``.

    ``memory`` is ``"tram"``, ``"acc"`` or ``"out"``; ``core`` the core written (the sending
    core for ``"out"``); ``addr`` the address (the output beat's index for ``"out"``);
    ``data`` the B lanes' bit patterns (uint16 for ``tram`` and ``out``, fp32 bits for
    ``acc``); ``src_core`` and ``src_pc`` the writing instruction, or -1 and the beat index
    for an input beat.
    """

    cycle: int
    core: int
    memory: str
    addr: int
    data: tuple[int, ...]
    src_core: int
    src_pc: int


_ISSUE = re.compile(r"^\s*(\d+) c(\d+) pc\s*(\d+) ([0-9a-f]{16})(?:\s.*)?$")
_WRITE = re.compile(r"^\s*(\d+) c(\d+)\s+(tram|acc|out)\[\s*(\d+)\] ([0-9a-f]+(?:,[0-9a-f]+)*)"
                    r" <- (?:c(\d+) pc(\d+)|in(\d+))$")


def _disassemble(word: int) -> str:
    try:
        return str(decode(word))
    except EncodingError:
        return "?"


def format_trace(records: Iterable[TraceRecord | WriteRecord]) -> str:
    """Return ``records`` as text, one line per record (format in the module docstring)."""
    lines = []
    for rec in records:
        if isinstance(rec, TraceRecord):
            lines.append(f"{rec.cycle:8d} c{rec.core} pc{rec.pc:5d} {rec.word:016x}  "
                         f"{_disassemble(rec.word)}")
        else:
            digits = 8 if rec.memory == "acc" else 4
            data = ",".join(f"{v:0{digits}x}" for v in rec.data)
            src = f"in{rec.src_pc}" if rec.src_core < 0 else f"c{rec.src_core} pc{rec.src_pc}"
            lines.append(f"{rec.cycle:8d} c{rec.core} {rec.memory:>4s}[{rec.addr:5d}] {data} "
                         f"<- {src}")
    return "".join(line + "\n" for line in lines)


def parse_trace(text: str) -> list[TraceRecord | WriteRecord]:
    """Return the records of a trace written by :func:`format_trace` (or the RTL testbench).

    Raises
    ------
    ValueError
        If a line is neither record; the message gives the line number and the line.
    """
    records: list[TraceRecord | WriteRecord] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if m := _ISSUE.match(line):
            cycle, core, pc, word = m.groups()
            records.append(TraceRecord(int(cycle), int(core), int(pc), int(word, 16)))
        elif m := _WRITE.match(line):
            cycle, core, memory, addr, data, src_core, src_pc, beat = m.groups()
            src = (-1, int(beat)) if beat is not None else (int(src_core), int(src_pc))
            records.append(WriteRecord(int(cycle), int(core), memory, int(addr),
                                       tuple(int(v, 16) for v in data.split(",")), *src))
        else:
            raise ValueError(f"trace line {number} is not a trace record: {line!r}")
    return records
