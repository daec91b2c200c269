"""Reading the RTL's trace files: the issue trace and the write trace.

``tidal_trace.v`` writes the instruction-issue trace (``+TIDAL_TRACE=<file>``) and every
core's ``tidal_wtrace.v`` its memory-write trace (``+TIDAL_WTRACE=<dir>``, one file per
core); both formats are documented in those files. These functions turn them into the VM's
records (:class:`sim.vm.TraceRecord`, :class:`sim.vm.WriteRecord`), so that a comparison
is record against record.
"""

from __future__ import annotations

from pathlib import Path

from isa.program import Program
from sim.cosim._errors import RtlError
from sim.vm import TraceRecord, WriteRecord

__all__ = ["parse_rtl_trace", "parse_write_trace", "read_write_trace"]


def parse_rtl_trace(text: str, program: Program) -> list[list[TraceRecord]]:
    """Parse a ``tidal_trace.v`` file into per-inference lists of :class:`TraceRecord`.

    Lines are ``<cycle> <core> <pc>`` (decimal, ``cycle`` counted from the inference's
    cycle 0); a new inference starts whenever (cycle, core) does not increase (every
    inference starts with ``0 <c> 0`` for every core). Blank lines, ``#`` comments and
    ``done <cycle>`` lines are skipped. The word is the program's instruction at that pc.

    Raises
    ------
    RtlError
        If a line is malformed or names a core or pc outside the program.
    """
    inferences: list[list[TraceRecord]] = []
    last: tuple[int, int] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#") or fields[0] == "done":
            continue
        try:
            cycle, core, pc = (int(f) for f in fields)
            word = int(program.cores[core].instructions[pc])
        except (ValueError, IndexError):
            raise RtlError(f"trace line {n} is not '<cycle> <core> <pc>' of the program: "
                           f"{line!r}") from None
        if last is None or (cycle, core) <= last:
            inferences.append([])
        inferences[-1].append(TraceRecord(cycle, core, pc, word))
        last = (cycle, core)
    return inferences


def parse_write_trace(text: str, block: int, name: str = "write trace"
                      ) -> dict[int, list[WriteRecord]]:
    """Parse one ``tidal_wtrace.v`` file into write records by inference.

    Lines are ``<inference> <cycle> <core> <tram|acc> <addr> <hex word>``; the word is split
    into ``block`` lanes (16 bits each for ``tram``, 32 for ``acc``, lane 0 lowest). The RTL
    does not know which instruction wrote: ``src_core`` and ``src_pc`` are -1.

    Raises
    ------
    RtlError
        If a line is malformed (``name`` and the line number say which).
    """
    out: dict[int, list[WriteRecord]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            k, cycle, core, memory, addr, word = fields
            if memory not in ("tram", "acc"):
                raise ValueError(memory)
            bits = 16 if memory == "tram" else 32
            value = int(word, 16)
            lanes = tuple((value >> (bits * j)) & ((1 << bits) - 1) for j in range(block))
            rec = WriteRecord(int(cycle), int(core), memory, int(addr), lanes, -1, -1)
        except ValueError:
            raise RtlError(f"{name} line {n} is not '<inference> <cycle> <core> <tram|acc> "
                           f"<addr> <hex>': {line!r}") from None
        out.setdefault(int(k), []).append(rec)
    return out


def read_write_trace(directory: Path, block: int, inferences: int) -> list[list[WriteRecord]]:
    """Return the write records of every core's file in ``directory``, per inference.

    Records of an inference are sorted by (cycle, core, memory), as the VM's
    :attr:`~sim.vm.VM.write_trace`; inferences without a write get an empty list.
    """
    merged: list[list[WriteRecord]] = [[] for _ in range(inferences)]
    for path in sorted(directory.glob("*.txt")):
        for k, records in parse_write_trace(path.read_text(), block, path.name).items():
            while k >= len(merged):
                merged.append([])
            merged[k] += records
    for records in merged:
        records.sort(key=lambda w: (w.cycle, w.core, w.memory))
    return merged
