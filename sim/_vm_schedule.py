"""Load-time analysis of a program: every read, write and output beat with its cycle, and the
static-schedule rules of ``docs/architecture.md`` §5.

Everything here is static: the issue cycle of every instruction, hence the cycle of every
memory access, is a property of the program alone (:mod:`isa.timing`). :func:`analyse` lists
the accesses once, checks the rules once and returns a :class:`Schedule` from which the VM
builds its execution plans.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import defaultdict

from isa import timing
from isa.config import Config
from isa.instructions import (
    Dest,
    EncodingError,
    End,
    Fn,
    Instruction,
    Mac,
    Vec,
    decode_program,
)
from isa.program import Program, ProgramError
from isa.timing import ACC, OUT, TRAM, TimingError, issue_cycles, latencies

__all__ = [
    "ScheduleError", "Source", "Access", "Schedule", "analyse", "TRAM", "ACC",
    "OUT",
]

#: The memories whose accesses the rules constrain (weights and clamps are never written).
_CHECKED = (TRAM, ACC, OUT)


class ScheduleError(ValueError):
    """A program breaks a static-schedule rule (``docs/architecture.md`` §5).

    Attributes
    ----------
    core, pc, cycle : int
        The offending instruction: its core, program counter and issue cycle (``core`` is
        -1 and ``pc`` the beat index for an input beat).
    memory : str
        ``"tram"``, ``"acc"``, ``"out"``, ``"weight"``, ``"clamp"`` or ``"imem"``.
    addr : int
        The address involved (the output beat's cycle for ``"out"``).
    other : str
        The other instruction or input beat involved, or ``""``.
    """

    def __init__(self, message: str, *, core: int, pc: int, cycle: int, memory: str,
                 addr: int, other: str = "") -> None:
        super().__init__(message)
        self.core, self.pc, self.cycle = core, pc, cycle
        self.memory, self.addr, self.other = memory, addr, other


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """An instruction issue or an input beat: what performs an access.

    ``core`` is -1 and ``pc`` the beat index for input beat ``pc``, accepted in ``cycle``.
    Sources are totally ordered by :attr:`key`: cycle, then input beats before cores 0, 1,
    ... — the order in which the VM executes them.
    """

    core: int
    pc: int
    cycle: int
    instr: Instruction | None

    @property
    def key(self) -> tuple[int, int]:
        """The execution order: ``(cycle, core)``, input beats (core -1) first."""
        return (self.cycle, self.core)

    def describe(self) -> str:
        """Return ``"core 1 pc 7 (cycle 9: vec add ...)"`` or ``"input beat 2 (cycle 2)"``."""
        if self.core < 0:
            return f"input beat {self.pc} (cycle {self.cycle})"
        return f"core {self.core} pc {self.pc} (cycle {self.cycle}: {self.instr})"


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """One read or write of one memory word, in the cycle it happens.

    For a read, ``cycle`` is the cycle the address is presented; for a write, the cycle the
    write is performed (it is seen by reads presented later). ``mac`` marks a ``MAC``'s
    accumulator write and a ``MAC``'s accumulate-read (the bypass pair). For ``"out"``,
    ``core`` is the sending core and ``addr`` the output beat's index.
    """

    memory: str
    core: int
    addr: int
    cycle: int
    src: Source
    mac: bool = False


@dataclasses.dataclass
class Schedule:
    """The static facts of a checked program.

    Attributes
    ----------
    config : Config
    sources : list of Source
        Every instruction issue up to ``END`` and every input beat, in execution order.
    reads, writes : list of Access
        Every tensor-RAM and accumulator read and write and every output beat, in execution
        order of their sources.
    n_out : int
        Output beats per inference.
    latency : int
        Spaced latency: the last output beat's cycle + 1 (0 for the reset entry, which has
        no output).
    done_cycle : int
        The last cycle in which anything happens.
    """

    config: Config
    sources: list[Source]
    reads: list[Access]
    writes: list[Access]
    n_out: int
    latency: int
    done_cycle: int


def _fail(src: Source, message: str, memory: str, addr: int, other: Source | None = None
          ) -> ScheduleError:
    text = f"{src.describe()}: {message}"
    if other is not None:
        text += f"; the other access is by {other.describe()}"
    return ScheduleError(text, core=src.core, pc=src.pc, cycle=src.cycle, memory=memory,
                         addr=addr, other=other.describe() if other is not None else "")


def _decode(program: Program, entry: int) -> tuple[list[list[Instruction]], list[list[int]]]:
    """Return, per core, the instructions from pc ``entry`` and their issue cycles."""
    instrs, cycles = [], []
    for c, core in enumerate(program.cores):
        try:
            decoded = decode_program(core.instructions)[entry:]
        except EncodingError as exc:
            raise ProgramError(f"core {c} instructions: {exc}") from None
        try:
            issue = issue_cycles(decoded)
        except TimingError:
            # Name the last instruction, at the cycle it issues.
            issue = issue_cycles([*decoded, End()])
            last = max(len(decoded) - 1, 0)
            src = Source(c, entry + last, issue[last], decoded[-1] if decoded else None)
            raise _fail(src, f"core {c}'s program has no END (it must end within its "
                        f"{len(decoded)} instructions)", "imem", entry + last) from None
        instrs.append(decoded)
        cycles.append(issue)
    return instrs, cycles


def _check_addresses(cfg: Config, src: Source) -> None:
    instr = src.instr
    limits = {TRAM: cfg.tensor_ram_depth, ACC: cfg.accum_store_depth,
              "weight": cfg.weight_store_depth, "clamp": cfg.clamp_store_depth}
    fields: list[tuple[str, str, int]] = []
    if isinstance(instr, Mac):
        fields = [("acc", ACC, instr.acc), ("tram", TRAM, instr.tram),
                  ("weight", "weight", instr.weight)]
    elif isinstance(instr, Vec):
        # Unused operand fields are checked too: the hardware presents them to the memories.
        fields = [("acc", ACC, instr.acc), ("tram", TRAM, instr.tram),
                  ("clamp", "clamp", instr.clamp)]
        if instr.dest in (Dest.ACC, Dest.ACCS):
            fields.append(("addr", ACC, instr.addr))
        elif instr.dest == Dest.TRAM:
            fields.append(("addr", TRAM, instr.addr))
        if instr.dest in (Dest.TRAM, Dest.ACCS) and instr.cores >> cfg.num_cores:
            memory = TRAM if instr.dest == Dest.TRAM else ACC
            raise _fail(src, f"VEC.cores = {instr.cores:#x} names a core outside the "
                        f"{cfg.num_cores}-core machine", memory, instr.addr)
    elif isinstance(instr, Fn):
        fields = [("tram", TRAM, instr.tram),
                  ("addr", TRAM if instr.dest == Dest.TRAM else ACC, instr.addr)]
    for name, memory, value in fields:
        if value >= limits[memory]:
            raise _fail(src, f"{instr.OPCODE.name}.{name} = {value} is outside the {memory} "
                        f"depth {limits[memory]}", memory, value)


def _accesses(cfg: Config, src: Source, reads: list[Access], writes: list[Access],
              out_index: dict[Source, int]) -> None:
    if src.core < 0:
        return
    assert src.instr is not None
    for a in timing.accesses(cfg, src.instr, src.core, src.cycle):
        if a.memory not in _CHECKED:
            continue
        # ACCS and VEC -> ACC writes are plain accumulator writes (bypass False): the MAC
        # bypass does not forward them, so a MAC accumulating over one in flight breaks
        # rule 3.
        addr = out_index[src] if a.memory == OUT else a.addr
        (writes if a.write else reads).append(
            Access(a.memory, a.core, addr, a.cycle, src, mac=a.bypass))


def _check_ports(writes: list[Access]) -> None:
    # Rule 1 (one write per cycle into each core's tensor RAM and accumulator) and rule 2
    # (one output beat per cycle).
    seen: dict[tuple[str, int, int], Access] = {}
    for w in sorted(writes, key=lambda a: (a.cycle, a.src.key)):
        port = (w.memory, -1 if w.memory == OUT else w.core, w.cycle)
        first = seen.setdefault(port, w)
        if first is not w:
            if w.memory == OUT:
                what = f"a second output beat in cycle {w.cycle}"
            else:
                what = (f"a second write into the {w.memory} of core {w.core} in cycle "
                        f"{w.cycle} ({w.memory}[{w.addr}]; the other writes "
                        f"{first.memory}[{first.addr}])")
            raise _fail(w.src, what, w.memory, w.addr, first.src)


def _check_hazards(cfg: Config, reads: list[Access], writes: list[Access]) -> None:
    lat = latencies(cfg)
    bypass, spacing = lat.bypass, lat.mac_spacing
    by_loc: dict[tuple[str, int, int], list[Access]] = defaultdict(list)
    for w in writes:
        if w.memory != OUT:
            by_loc[(w.memory, w.core, w.addr)].append(w)
    issue: dict[tuple[str, int, int], list[int]] = {}
    for loc, ws in by_loc.items():
        ws.sort(key=lambda a: a.src.key)
        issue[loc] = [w.src.cycle for w in ws]
        # Rule 4: writes to one location land in execution order.
        for prev, nxt in zip(ws, ws[1:], strict=False):
            if nxt.cycle <= prev.cycle:
                raise _fail(nxt.src, f"its write of {nxt.memory}[{nxt.addr}] of core "
                            f"{nxt.core} lands in cycle {nxt.cycle}, not after the write of an "
                            f"earlier instruction landing in cycle {prev.cycle} (write after "
                            "write out of order)", nxt.memory, nxt.addr, prev.src)
    # Rule 3: no write to the location in flight at the read, i.e. issued (or accepted) at or
    # before the reader's issue and landing at or after the read, unless both are MACs and
    # the write lands within the bypass window (at most `bypass` cycles after the read). A
    # write issued after the reader is not in flight for it: it lands after a read at issue,
    # and the one later read (a MAC's accumulate-read, of the word the MAC itself writes) it
    # could reach first would break rule 4.
    span = max((w.cycle - w.src.cycle for w in writes), default=0)
    for r in reads:
        loc = (r.memory, r.core, r.addr)
        if loc not in by_loc:
            continue
        ws = by_loc[loc]
        lo = bisect.bisect_left(issue[loc], r.cycle - span)
        hi = bisect.bisect_right(issue[loc], r.src.cycle)
        for w in ws[lo:hi]:
            if w.src is r.src or w.cycle < r.cycle:
                continue
            if r.mac and w.mac:
                if w.cycle <= r.cycle + bypass:
                    continue
                raise _fail(r.src, f"it accumulates into acc[{r.addr}] {r.src.cycle - w.src.cycle}"
                            f" cycle(s) after a MAC into it; the accumulate loop needs at least "
                            f"{spacing} (fp32_add depth)", r.memory, r.addr, w.src)
            raise _fail(r.src, f"it reads {r.memory}[{r.addr}] in cycle {r.cycle} while a "
                        f"write to it is in flight (landing in cycle {w.cycle})", r.memory,
                        r.addr, w.src)


def analyse(program: Program, model_index: int = 0) -> Schedule:
    """Decode model table entry ``model_index`` of ``program`` (a model or the reset entry:
    its code from its entry pc on every core), list its accesses and check the
    static-schedule rules.

    Raises
    ------
    ScheduleError
        If a rule of ``docs/architecture.md`` §5 is broken or an address is outside its
        memory; the message names the core, pc, cycle, memory, address and the other
        instruction (or input beat) involved.
    ProgramError
        If the program is otherwise inconsistent with its configuration.
    """
    model = program.table_entry(model_index)
    instrs, cycles = _decode(program, model.entry)
    program.validate()
    cfg = program.config
    n_in = len(model.input_dests)
    sources = [Source(-1, i, i, None) for i in range(n_in)]
    for c, (code, issue) in enumerate(zip(instrs, cycles, strict=True)):
        for i, t in enumerate(issue):
            src = Source(c, model.entry + i, t, code[i])
            _check_addresses(cfg, src)
            sources.append(src)
    sources.sort(key=lambda s: s.key)
    lat = latencies(cfg)
    outs = sorted((s for s in sources if isinstance(s.instr, Vec)
                   and s.instr.dest == Dest.OUTPUT),
                  key=lambda s: (s.cycle + lat.vec_output, s.key))
    out_index = {s: i for i, s in enumerate(outs)}
    reads: list[Access] = []
    writes: list[Access] = []
    for src in sources:
        if src.core < 0:
            mask, addr = (int(v) for v in model.input_dests[src.pc])
            writes += [Access(a.memory, a.core, a.addr, a.cycle, src)
                       for a in timing.input_writes(cfg, src.pc, mask, addr)]
        _accesses(cfg, src, reads, writes, out_index)
    _check_ports(writes)
    n_out = sum(t.beats for t in model.outputs)
    if len(outs) != n_out:
        last = outs[-1] if outs else sources[-1]
        raise _fail(last, f"the program sends {len(outs)} output beats, but its outputs "
                    f"{[t.shape for t in model.outputs]} have {n_out}", OUT, len(outs))
    _check_hazards(cfg, reads, writes)
    # The last END issue is the latest issue; a beat with an empty mask still counts.
    done = max([a.cycle for a in writes] + [s.cycle for s in sources]
               + [n_in - 1 + lat.input_write])
    return Schedule(cfg, sources, reads, writes, n_out,
                    latency=max((a.cycle for a in writes if a.memory == OUT), default=-1) + 1,
                    done_cycle=done)

