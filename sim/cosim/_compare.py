"""Comparing the RTL with the VM: what is compared, where they first diverge, the report.

:func:`compare` runs the same inferences on the VM (:mod:`sim.vm`, the executable
specification) with tracing and on the RTL (:func:`sim.cosim.run_rtl`), and
:func:`compare_runs` compares the two runs into a :class:`CompareReport`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isa.instructions import EncodingError, decode
from isa.program import Program
from sim.cosim._errors import RtlError
from sim.cosim._run import RtlResult, insert_resets, random_inputs, run_rtl, split_resets
from sim.vm import VM, TraceRecord, WriteRecord

__all__ = ["Divergence", "ChunkInfo", "CompareReport", "VmReference", "vm_reference",
           "run_step", "compare_runs", "compare"]


@dataclasses.dataclass(frozen=True)
class Divergence:
    """The first place where the VM and the RTL disagree.

    Attributes
    ----------
    kind : str
        ``"trace"`` (an instruction issued at another cycle or pc), ``"write"`` (a tensor-RAM
        or accumulator write that differs in value, or that only one side performed, in
        the write traces), ``"output"`` (an output beat's value), ``"output-count"``,
        ``"output-cycle"``, ``"state"`` (final tensor RAM or accumulator contents),
        ``"done-cycle"`` or ``"error"`` (the RTL run stopped).
    inference : int
        The inference (0-based) in which it happens; -1 if unknown.
    cycle, core, pc : int
        Where: the cycle (of that inference), core and pc of the instruction involved (the
        VM's record of it: the issue for ``trace``, the instruction that wrote the location
        for ``write``/``output``/``state``; the core written, with pc -1, for a write only
        the RTL performed); -1 where not applicable (an input beat's write has core -1
        and pc = beat index).
    where : str
        The location, e.g. ``"output beat 2 lane 5"`` or ``"core 3 tram[17] lane 0"``.
    vm, rtl : str
        What each side has there.
    instruction : str
        Disassembly of the instruction at (core, pc), or ``""``.
    """

    kind: str
    inference: int
    cycle: int
    core: int
    pc: int
    where: str
    vm: str
    rtl: str
    instruction: str = ""

    def describe(self) -> str:
        """Return a one-line description."""
        at = [f"inference {self.inference}"] if self.inference >= 0 else []
        if self.cycle >= 0:
            at.append(f"cycle {self.cycle}")
        if self.core >= 0:
            at.append(f"core {self.core}")
            if self.pc >= 0:
                at.append(f"pc {self.pc}")
        elif self.pc >= 0 and self.kind in ("write", "output", "state"):
            at.append(f"input beat {self.pc}")
        instr = f" ({self.instruction})" if self.instruction else ""
        return (f"{self.kind} at {', '.join(at) or 'unknown place'}{instr}: {self.where}: "
                f"VM {self.vm}, RTL {self.rtl}")


@dataclasses.dataclass(frozen=True)
class ChunkInfo:
    """One chunk of a chunked comparison (``compare(..., chunks=N)``).

    Attributes
    ----------
    index : int
    first, count : int
        Its first global step and its number of steps.
    ok : bool
        Everything in the chunk matched.
    worker : str
        Where it ran (``"in-process"`` or a Dask worker's address).
    finished_after : float
        Seconds from the start of the comparison until its result came back.
    simulated_cycles : int
    run_seconds : float
        The RTL's simulated cycles and the wall time of its inferences.
    run_dir : Path or None
        The RTL run directory (on the worker's machine).
    error : str or None
        Why the chunk's RTL run stopped, the job failed, or its worker died.
    """

    index: int
    first: int
    count: int
    ok: bool
    worker: str
    finished_after: float
    simulated_cycles: int
    run_seconds: float
    run_dir: Path | None
    error: str | None


@dataclasses.dataclass
class CompareReport:
    """The result of :func:`compare`.

    Attributes
    ----------
    ok : bool
        True iff the RTL ran every inference, at least one value was compared, and
        outputs, output cycles, done cycles, spaced latencies, issue traces, write traces
        and the final state are all identical.
    inferences : int
        Inferences run on the VM (the RTL ran as many, unless it stopped: see ``error``),
        resets included: a reset is an inference of the reset entry, numbered in run order
        like the others (no output beats, spaced latency 0).
    resets : int
        How many of the inferences are resets (``compare(..., resets=...)``).
    values_compared : int
        Output lanes plus state words' lanes compared (0 makes ``ok`` False).
    output_values, state_values : int
        The two parts of ``values_compared``.
    output_mismatches, state_mismatches : int
        Lanes that differ.
    trace_records : int
        Issue records compared (both sides' counts must match too).
    write_records : int
        Tensor-RAM and accumulator writes compared (the VM's ``write_trace`` against the
        RTL's write trace; both sides' writes must match one for one).
    trace_equal, writes_equal, cycles_equal : bool
    vm_cycles, rtl_cycles : list of int
        Spaced latency per inference.
    vm_done, rtl_done : list of int
        Done cycle per inference.
    first_divergence : Divergence or None
    divergences : list of Divergence
        The first divergence of each kind found (trace; writes; output values, count and
        cycles;
        done cycle; each core's tensor RAM and accumulators), earliest first. Final-state
        differences carry the VM's last write of the location, so an early wrong
        activation may show up only here.
    error : str or None
        Why the RTL run stopped, if it did (e.g. the watchdog's message).
    rtl : RtlResult or None
        The RTL run (speed, build and run directories). Chunked: the chunks' runs
        concatenated (state from the last chunk, times and cycles summed, build and run
        directory of the first chunk), or None if a chunk's run stopped.
    program_name, config_name, simulator : str
    chunks : list of ChunkInfo
        Chunked (``compare(..., chunks=N)``): every chunk, in order; empty otherwise. The
        inferences of ``divergences`` and ``first_divergence`` are global steps;
        ``state_values`` counts the state compared at the end of every chunk; ``rtl_cycles``
        and ``rtl_done`` run up to the first chunk whose RTL run stopped.
    engine : str
        Where the chunks ran (``"in-process"``, ``"LocalCluster, 2 workers"``, a scheduler's
        address); ``""`` unchunked.
    wall_seconds : float
        Wall time of the whole comparison (VM, RTL, and for chunks the cluster's start).
    """

    ok: bool
    inferences: int
    values_compared: int
    output_values: int
    state_values: int
    output_mismatches: int
    state_mismatches: int
    trace_records: int
    trace_equal: bool
    cycles_equal: bool
    write_records: int
    writes_equal: bool
    vm_cycles: list[int]
    rtl_cycles: list[int]
    vm_done: list[int]
    rtl_done: list[int]
    first_divergence: Divergence | None
    error: str | None
    rtl: RtlResult | None
    divergences: list[Divergence] = dataclasses.field(default_factory=list)
    resets: int = 0
    program_name: str = ""
    config_name: str = ""
    simulator: str = ""
    chunks: list[ChunkInfo] = dataclasses.field(default_factory=list)
    engine: str = ""
    wall_seconds: float = 0.0

    def summary(self) -> str:
        """Return a human-readable multi-line report."""
        verdict = "OK" if self.ok else "MISMATCH"
        resets = f" ({self.resets} of them resets)" if self.resets else ""
        lines = [f"compare {self.program_name or 'program'} on {self.config_name} "
                 f"[{self.simulator}], {self.inferences} inference(s){resets}: {verdict}"]
        if self.values_compared == 0:
            lines.append("  nothing was compared: a comparison must compare something")
        lines.append(f"  outputs: {self.output_values:,} values, "
                     + ("equal" if not self.output_mismatches
                        else f"{self.output_mismatches:,} differ"))
        when = "at the end of every chunk" if self.chunks else "after the last inference"
        lines.append(f"  state:   {self.state_values:,} values (tensor RAM and accumulators "
                     f"of every core {when}), "
                     + ("equal" if not self.state_mismatches
                        else f"{self.state_mismatches:,} differ"))
        lines.append(f"  cycles:  latency VM {_span(self.vm_cycles)} / RTL "
                     f"{_span(self.rtl_cycles)}, done cycle VM {_span(self.vm_done)} / RTL "
                     f"{_span(self.rtl_done)}: " + ("equal" if self.cycles_equal else "DIFFER"))
        lines.append(f"  trace:   {self.trace_records:,} issue records, "
                     + ("equal" if self.trace_equal else "DIFFER"))
        lines.append(f"  writes:  {self.write_records:,} tensor RAM and accumulator writes, "
                     + ("equal" if self.writes_equal else "DIFFER"))
        if self.rtl is not None:
            r = self.rtl
            built = r.build.describe()
            lines.append(f"  RTL:     {r.simulated_cycles:,} cycles in {r.run_seconds:.2f} s "
                         f"({r.cycles_per_second:,.0f} cycles/s), state read back in "
                         f"{r.readback_seconds:.1f} s, launch {r.wall_seconds:.1f} s; model "
                         f"{built}")
            lines.append(f"  files:   {r.run_dir}")
        if self.chunks:
            lines += self._chunk_lines()
        if self.error:
            lines.append(f"  RTL run stopped: {self.error}")
        if self.first_divergence is not None:
            lines.append(f"  first divergence: {self.first_divergence.describe()}")
        others = [d for d in self.divergences if d != self.first_divergence]
        for d in others[:4]:
            lines.append(f"  also: {d.describe()}")
        if len(others) > 4:
            lines.append(f"  ... and {len(others) - 4} more places")
        return "\n".join(lines)


    def _chunk_lines(self) -> list[str]:
        sizes = _span([c.count for c in self.chunks])
        good = sum(c.ok for c in self.chunks)
        first = min(c.finished_after for c in self.chunks)
        lines = [f"  chunks:  {len(self.chunks)} of {sizes} inferences on {self.engine}: "
                 f"{good} OK; first done after {first:.1f} s, all after "
                 f"{self.wall_seconds:.1f} s"]
        for c in self.chunks:
            if not c.ok:
                lines.append(f"  chunk {c.index} (inferences {c.first}..{c.first + c.count - 1}"
                             f", {c.worker}): "
                             + (c.error or "MISMATCH") + (f"; {c.run_dir}" if c.run_dir else ""))
        return lines


def _span(values: Sequence[int]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}..{hi}"


@dataclasses.dataclass
class VmReference:
    """What the VM produced for each inference (the reference side of a comparison).

    Attributes
    ----------
    outputs : list of numpy.ndarray
        Per inference, the output beats (``uint16`` [m, B]).
    traces : list of list of TraceRecord
        Per inference, every instruction issue.
    writes : list of list of WriteRecord
        Per inference, every write and output beat (:attr:`sim.vm.VM.write_trace`).
    cycles, done : list of int
        Per inference, the spaced latency and the done cycle.
    state : dict
        After the last inference, as :attr:`RtlResult.state`.
    resets : int
        How many of the inferences were resets.
    """

    outputs: list[np.ndarray]
    traces: list[list[TraceRecord]]
    writes: list[list[WriteRecord]]
    cycles: list[int]
    done: list[int]
    state: dict[str, list[np.ndarray]]
    resets: int = 0


def run_step(vm: VM, beats: np.ndarray, model_index: int) -> np.ndarray:
    """Run one run of a run list (:func:`sim.cosim.insert_resets`) on ``vm`` at the beat
    level and return its output beats: an inference of model ``model_index``, or a reset
    (:meth:`sim.vm.VM.reset`, no output beats) if that is the reset entry's index."""
    if model_index == vm.program.reset_index:
        vm.reset()
        return np.zeros((0, vm.program.config.block_size), np.uint16)
    return vm.run_beats(beats, model_index=model_index)


def vm_reference(program: Program, beats: Sequence[np.ndarray],
                 models: Sequence[int] | None = None,
                 state: dict[str, list[np.ndarray]] | None = None,
                 resets: Sequence[int] | None = None) -> VmReference:
    """Run ``beats`` (one ``uint16`` [n_in, B] array per inference) on a tracing VM.

    ``models`` gives each inference's model index (default: all model 0). ``state`` (as
    :meth:`sim.vm.VM.state` gives it), if given, is the memories the first inference
    starts from instead of the program's images. ``resets``: run :meth:`sim.vm.VM.reset`
    before these inferences (:func:`sim.cosim.insert_resets`); the result's lists hold the
    resets too, in run order.

    Raises
    ------
    ScheduleError
        If the VM refuses the program.
    ValueError
        If ``models`` or ``resets`` do not fit ``beats``.
    """
    vm = VM(program, trace=True)
    if state is not None:
        vm.load_state(state)
    run = VmReference([], [], [], [], [], {})
    runs, indices = insert_resets(program, beats, models, resets)
    for beat, k in zip(runs, indices, strict=True):
        run.outputs.append(run_step(vm, beat, k))
        run.traces.append(list(vm.trace))
        run.writes.append(list(vm.write_trace))
        if k == program.reset_index:
            run.resets += 1
            run.cycles.append(0)
            run.done.append(vm.reset_cycle_count() - 1)
        else:
            run.cycles.append(vm.cycle_count(spaced=True))
            run.done.append(vm.cycle_count(spaced=False) - 1)
    run.state = vm.state()
    return run


def _disasm(program: Program, core: int, pc: int) -> str:
    try:
        return str(decode(int(program.cores[core].instructions[pc])))
    except (IndexError, EncodingError):
        return ""


def _trace_divergence(program: Program, vm: VmReference, rtl: RtlResult | None
                      ) -> tuple[int, Divergence | None]:
    """Return (records compared, the first differing issue record or None)."""
    compared = 0
    rtl_traces = rtl.trace if rtl is not None else []
    for k, vm_trace in enumerate(vm.traces):
        if k >= len(rtl_traces):
            if rtl is not None and k < len(rtl.outputs):
                rec = vm_trace[0] if vm_trace else None
                return compared, Divergence(
                    "trace", k, rec.cycle if rec else -1, rec.core if rec else -1,
                    rec.pc if rec else -1, "issue record 0", _rec(rec), "no trace", "")
            break
        rtl_trace = rtl_traces[k]
        for i in range(max(len(vm_trace), len(rtl_trace))):
            a = vm_trace[i] if i < len(vm_trace) else None
            b = rtl_trace[i] if i < len(rtl_trace) else None
            if a is not None and b is not None and a == b:
                compared += 1
                continue
            first = min((r for r in (a, b) if r is not None), key=lambda r: (r.cycle, r.core))
            return compared, Divergence("trace", k, first.cycle, first.core, first.pc,
                                        f"issue record {i}", _rec(a), _rec(b),
                                        _disasm(program, first.core, first.pc))
    return compared, None


def _write_divergence(program: Program, vm: VmReference, rtl: RtlResult | None
                      ) -> tuple[int, Divergence | None]:
    """Return (writes compared, the first write that differs or None).

    Writes are matched by (cycle, core written, memory, address); the first is the
    earliest (inference, cycle, core, memory, address) that one side lacks or whose value
    differs.
    """
    compared = 0
    rtl_writes = rtl.writes if rtl is not None else []
    for k, vm_writes in enumerate(vm.writes):
        if k >= len(rtl_writes):
            break
        want = {(w.cycle, w.core, w.memory, w.addr): w for w in vm_writes if w.memory != "out"}
        got = {(w.cycle, w.core, w.memory, w.addr): w for w in rtl_writes[k]}
        bad = [key for key in sorted(want.keys() | got.keys())
               if key not in want or key not in got or want[key].data != got[key].data]
        if not bad:
            compared += len(want)
            continue
        cycle, core, memory, addr = key = bad[0]
        compared += sum(1 for kk in want if kk < key and kk in got)
        a, b = want.get(key), got.get(key)
        digits = 8 if memory == "acc" else 4
        where = f"core {core} {memory}[{addr}]"
        if a is not None and b is not None:
            j = next(i for i, (x, y) in enumerate(zip(a.data, b.data, strict=True)) if x != y)
            where += f" lane {j}"
            vm_side, rtl_side = _hexlane(a.data[j], digits), _hexlane(b.data[j], digits)
        else:
            vm_side = "a write" if a is not None else "no write"
            rtl_side = "a write" if b is not None else "no write"
        if a is not None:
            src, pc = a.src_core, a.src_pc
            dis = (_disasm(program, src, pc) if src >= 0 else f"input beat {pc}")
        else:
            src, pc, dis = core, -1, ""
        return compared, Divergence("write", k, cycle, src, pc, where, vm_side, rtl_side, dis)
    return compared, None


def _rec(rec: TraceRecord | None) -> str:
    if rec is None:
        return "nothing (trace ended)"
    return f"cycle {rec.cycle} core {rec.core} pc {rec.pc}"


def _writer(program: Program, vm: VmReference, k: int, memory: str, core: int, addr: int,
            last: bool) -> tuple[int, int, int, int, str]:
    """Return (inference, cycle, core, pc, disassembly) of the VM write of a location.

    For ``"out"``, the write of beat ``addr`` in inference ``k``; otherwise the last write
    to (``core``, ``memory``, ``addr``) up to inference ``k`` if ``last``. (-1, ...) if the
    location was never written (it holds its initial image).
    """
    for kk in range(k, -1, -1):
        for w in reversed(vm.writes[kk]):
            if w.memory == memory and w.addr == addr and (memory == "out" or w.core == core):
                return (kk, w.cycle, w.src_core, w.src_pc,
                        _disasm(program, w.src_core, w.src_pc) if w.src_core >= 0 else
                        f"input beat {w.src_pc}")
        if not last:
            break
    return -1, -1, -1, -1, "never written: initial image"


def _hexlane(value: int, digits: int) -> str:
    return f"{int(value):#0{digits + 2}x}"


def compare_runs(program: Program, vm: VmReference, rtl: RtlResult | None,
                     error: str | None, simulator: str) -> CompareReport:
    """Compare a VM run with an RTL run into a :class:`CompareReport` (see :func:`compare`).

    ``rtl`` None means the RTL produced nothing; ``error`` is why the RTL run stopped, if
    it did; ``simulator`` names the simulator in the report.
    """
    candidates: list[Divergence] = []
    out_values = out_bad = 0
    rtl_outputs = rtl.outputs if rtl is not None else []
    rtl_out_cycles = rtl.output_cycles if rtl is not None else []
    vm_out_cycles = [[w.cycle for w in sorted((w for w in ws if w.memory == "out"),
                                              key=lambda w: w.addr)] for ws in vm.writes]
    cycles_equal = rtl is not None and len(rtl_outputs) == len(vm.outputs)
    for k, (want, got) in enumerate(zip(vm.outputs, rtl_outputs, strict=False)):
        m = min(len(want), len(got))
        diff = np.argwhere(want[:m] != got[:m])
        out_values += int(want[:m].size)
        out_bad += len(diff)
        if len(diff):
            i, j = (int(v) for v in diff[0])
            kk, cyc, core, pc, dis = _writer(program, vm, k, "out", -1, i, last=False)
            candidates.append(Divergence("output", k, cyc, core, pc, f"output beat {i} lane {j}",
                                         _hexlane(want[i, j], 4), _hexlane(got[i, j], 4), dis))
        if len(want) != len(got):
            i = m
            candidates.append(Divergence(
                "output-count", k, vm_out_cycles[k][i] if i < len(vm_out_cycles[k]) else -1,
                -1, -1, f"output beat {i}", f"{len(want)} beats", f"{len(got)} beats"))
        bad_cycle = next((i for i, (a, b) in enumerate(zip(vm_out_cycles[k], rtl_out_cycles[k],
                                                             strict=False)) if a != b), None)
        if bad_cycle is not None:
            i = bad_cycle
            _, cyc, core, pc, dis = _writer(program, vm, k, "out", -1, i, last=False)
            candidates.append(Divergence("output-cycle", k, min(cyc, rtl_out_cycles[k][i]),
                                         core, pc, f"output beat {i}", f"cycle {cyc}",
                                         f"cycle {rtl_out_cycles[k][i]}", dis))
        if (bad_cycle is not None or len(want) != len(got)
                or vm.cycles[k] != rtl.cycles[k]):  # type: ignore[union-attr]
            cycles_equal = False
    rtl_done = list(rtl.done_cycles) if rtl is not None else []
    for k, (a, b) in enumerate(zip(vm.done, rtl_done, strict=False)):
        if a != b:
            cycles_equal = False
            candidates.append(Divergence("done-cycle", k, min(a, b), -1, -1, "done",
                                         f"cycle {a}", f"cycle {b}"))
            break
    # Final state: only meaningful when the RTL ran every inference.
    st_values = st_bad = 0
    full = rtl is not None and error is None and len(rtl.done_cycles) == len(vm.outputs)
    if full and vm.outputs:
        assert rtl is not None
        last = len(vm.outputs) - 1
        for memory, digits in (("tram", 4), ("acc", 8)):
            for core, (want, got) in enumerate(zip(vm.state[memory], rtl.state[memory],
                                                   strict=False)):
                if want.shape != got.shape:
                    raise RtlError(f"RTL {memory} of core {core} read back as {got.shape}, "
                                   f"the VM's is {want.shape}")
                diff = np.argwhere(want != got)
                st_values += int(want.size)
                st_bad += len(diff)
                if len(diff):
                    addr, j = (int(v) for v in diff[0])
                    kk, cyc, src, pc, dis = _writer(program, vm, last, memory, core, addr,
                                                    last=True)
                    candidates.append(Divergence(
                        "state", kk, cyc, src, pc, f"core {core} {memory}[{addr}] lane {j}",
                        _hexlane(want[addr, j], digits), _hexlane(got[addr, j], digits), dis))
            missing = len(vm.state[memory]) - len(rtl.state[memory])
            if missing:
                raise RtlError(f"the RTL read back {memory} of {len(rtl.state[memory])} "
                               f"cores, the configuration has {len(vm.state[memory])}")
    n_trace, trace_div = _trace_divergence(program, vm, rtl)
    trace_equal = trace_div is None and rtl is not None and len(rtl.trace) == len(vm.traces)
    n_writes, write_div = _write_divergence(program, vm, rtl)
    writes_equal = (write_div is None and rtl is not None
                    and len(rtl.writes) == len(vm.writes))
    if write_div is not None:
        # Ahead of the value differences of its cycle: the wrong write explains them.
        candidates.insert(0, write_div)
    # The earliest in (inference, cycle); unknown places (-1) sort last.
    candidates.sort(key=lambda d: (d.inference if d.inference >= 0 else 1 << 30,
                                   d.cycle if d.cycle >= 0 else 1 << 30))
    # A trace difference comes first: it explains every value difference after it.
    first = trace_div if trace_div is not None else (candidates[0] if candidates else None)
    if trace_div is not None:
        candidates.insert(0, trace_div)
    if first is None and error is not None:
        k = len(rtl.done_cycles) if rtl is not None else -1
        first = Divergence("error", k, -1, -1, -1, "RTL run", "finished", error)
    values = out_values + st_values
    ok = (error is None and values > 0 and not out_bad and not st_bad and cycles_equal
          and trace_equal and writes_equal and first is None and full)
    return CompareReport(
        ok=ok, inferences=len(vm.outputs), values_compared=values, output_values=out_values,
        state_values=st_values, output_mismatches=out_bad, state_mismatches=st_bad,
        trace_records=n_trace, trace_equal=trace_equal, cycles_equal=cycles_equal,
        write_records=n_writes, writes_equal=writes_equal,
        vm_cycles=list(vm.cycles), rtl_cycles=list(rtl.cycles) if rtl is not None else [],
        vm_done=list(vm.done), rtl_done=rtl_done, first_divergence=first, error=error,
        rtl=rtl, divergences=candidates, resets=vm.resets,
        program_name=str(program.meta.get("name", "")),
        config_name=program.config.name, simulator=simulator)


def compare(program: Program, inputs: Sequence[Any] | None = None, random: int = 4,
            simulator: str = "verilator", *, seed: int = 0, waves: bool | None = None,
            build_dir: str | Path | None = None, rtl_variant: str | None = None,
            models: Sequence[int] | None = None, chunks: int = 1, workers: int | None = None,
            scheduler: str | None = None, resets: Sequence[int] | None = None
            ) -> CompareReport:
    """Run the same inferences on the VM and on the RTL and compare everything.

    Compared: every output beat bit for bit and the cycle it is presented in, the spaced
    latency and the done cycle of every inference, the instruction-issue trace record by
    record, and after the last inference every core's tensor RAM and accumulator store.

    With ``chunks`` above 1 (or ``workers`` or ``scheduler`` given) the inferences are cut
    into that many chunks of consecutive steps, each compared in its own simulator run
    started from the VM's memories at its first step (and compared at its end), on Dask
    workers (:mod:`sim.cosim.engine`); the report is one for the whole sequence, with
    global step numbers (``docs/cosim.md``).

    Parameters
    ----------
    program : Program
    inputs : sequence, optional
        One item per inference, as for :func:`run_rtl`. Default: ``random`` inferences of
        :func:`random_inputs` with ``seed``.
    random : int
        Number of random inferences when ``inputs`` is None.
    simulator : {"verilator", "icarus"}
    seed : int
    waves, build_dir, rtl_variant
        As for :func:`run_rtl` (``waves`` only unchunked).
    models : sequence of int, optional
        Each inference's model index in a multi-model program (default: all model 0); with
        ``inputs`` None, one random inference per entry.
    resets : sequence of int, optional
        Reset the machine before these inferences of ``inputs`` (``len(inputs)``: after the
        last): a sequence of sequences ``s0, s1, ...`` is ``inputs = s0 + s1 + ...``,
        ``resets = [len(s0), len(s0) + len(s1), ...]`` (:func:`sim.cosim.insert_resets`).
        The RTL's host selects the reset entry and sends its dummy beat, the VM runs
        :meth:`sim.vm.VM.reset`; the resets' writes, done cycles and the state after them
        are compared like an inference's, and the report counts them (``resets``).
    chunks : int
        Number of chunks (1 to the number of inferences).
    workers : int, optional
        Local Dask workers (default: one per core, at most ``chunks``); 1 runs the chunks
        one after the other in this process. With ``scheduler``: wait for that many.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://HOST:PORT``) to run the chunks on.

    Returns
    -------
    CompareReport
        ``ok`` is False on any difference, if the RTL stopped (watchdog, ``error``), or if
        nothing was compared (e.g. no inputs); ``first_divergence`` says where.

    Raises
    ------
    ScheduleError
        If the VM refuses the program (it breaks a static-schedule rule).
    SimulatorMissing
        If the simulator is not installed.
    ValueError
        If ``chunks`` does not fit the inferences, ``workers`` is below 1, ``waves`` is
        asked of a chunked comparison, or ``resets`` does not fit (see
        :func:`sim.cosim.insert_resets`).
    RuntimeError
        If the Dask scheduler cannot be reached.
    """
    if inputs is None:
        inputs = random_inputs(program, len(models) if models is not None else random, seed,
                               models)
    runs, indices = insert_resets(program, inputs, models, resets)
    if chunks != 1 or workers is not None or scheduler is not None:
        if waves:
            raise ValueError("waves need one simulator run: compare with chunks=1")
        from sim.cosim._chunks import compare_chunked

        return compare_chunked(program, runs, simulator, chunks=chunks, workers=workers,
                               scheduler=scheduler, build_dir=build_dir,
                               rtl_variant=rtl_variant, models=indices)
    started = time.perf_counter()
    beats, models, resets = split_resets(program, runs, indices)
    vm = vm_reference(program, beats, models, resets=resets)
    rtl: RtlResult | None = None
    error: str | None = None
    if runs:
        try:
            rtl = run_rtl(program, beats, simulator=simulator, waves=waves,
                          build_dir=build_dir, trace=True,
                          timeout_cycles=[d + 1 for d in vm.done], rtl_variant=rtl_variant,
                          models=models, resets=resets)
        except RtlError as exc:
            rtl, error = exc.result, str(exc)
    report = compare_runs(program, vm, rtl, error, simulator)
    report.wall_seconds = time.perf_counter() - started
    return report
