"""Chunked co-simulation: a long sequence cut into chunks that run at once on Dask workers.

Between two inferences the machine is idle and its whole state is its memories (tensor
RAM and accumulators of every core), which the VM knows at every step. So
:func:`compare_chunked` runs the sequence once on the fast VM to take its state at the first
step of every chunk, and each chunk (:func:`run_chunk`, on a worker of
:mod:`sim.cosim.engine`) starts both a tracing VM and the RTL from that state, runs its
steps and compares them (outputs, cycles, issue and write traces, the state at its end).
:func:`merge` makes one :class:`~sim.cosim.CompareReport` of the chunks' reports, every
inference numbered by its global step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from isa.program import Program
from sim.cosim._compare import (
    ChunkInfo,
    CompareReport,
    Divergence,
    compare_runs,
    run_step,
    vm_reference,
)
from sim.cosim._errors import RtlError
from sim.cosim._run import RtlResult, run_rtl, split_resets
from sim.cosim.engine import JobOutcome, default_workers, open_engine
from sim.cosim.toolchain import require_simulator
from sim.vm import VM

__all__ = ["compare_chunked", "run_chunk", "merge", "chunk_bounds"]


def chunk_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    """Return (first step, steps) of ``chunks`` chunks of ``n`` steps, as equal as possible.

    Raises
    ------
    ValueError
        If ``chunks`` is below 1 or above ``n``.
    """
    if not 1 <= chunks <= max(n, 1):
        raise ValueError(f"chunks must be between 1 and the number of inferences ({n}), "
                         f"not {chunks}")
    sizes = [n // chunks + (i < n % chunks) for i in range(chunks)]
    starts = np.cumsum([0, *sizes[:-1]])
    return [(int(s), z) for s, z in zip(starts, sizes, strict=True)]


def run_chunk(program: Program, first: int, beats: Sequence[np.ndarray],
              state: dict[str, list[np.ndarray]], simulator: str,
              build_dir: str | Path | None, rtl_variant: str | None,
              models: Sequence[int]) -> CompareReport:
    """Compare one chunk (runs on a worker): both sides start from ``state``.

    ``beats`` and ``models`` are the chunk's part of the run list
    (:func:`sim.cosim.insert_resets`: resets included). ``first`` is the chunk's first
    global step (for the RTL's messages); the report's inferences are numbered from 0
    within the chunk (:func:`merge` shifts them).
    """
    beats, models, resets = split_resets(program, beats, models)
    vm = vm_reference(program, beats, models, state, resets)
    rtl: RtlResult | None = None
    error: str | None = None
    try:
        rtl = run_rtl(program, beats, simulator=simulator, build_dir=build_dir, trace=True,
                      timeout_cycles=[d + 1 for d in vm.done], rtl_variant=rtl_variant,
                      models=models, state=state, first_inference=first, resets=resets)
    except RtlError as exc:
        rtl, error = exc.result, str(exc)
    return compare_runs(program, vm, rtl, error, simulator)


def compare_chunked(program: Program, beats: Sequence[np.ndarray], simulator: str, *,
                    chunks: int, workers: int | None, scheduler: str | None,
                    build_dir: str | Path | None, rtl_variant: str | None,
                    models: Sequence[int]) -> CompareReport:
    """Compare ``beats`` in ``chunks`` chunks run on :func:`~sim.cosim.engine.open_engine`.

    ``beats`` and ``models`` are the run list (:func:`sim.cosim.insert_resets`): each
    run's beats and model table index, a reset's the reset entry's.

    Raises
    ------
    ValueError
        If ``chunks`` does not fit the number of inferences, or ``workers`` is below 1.
    ScheduleError
        If the VM refuses the program.
    SimulatorMissing
        If the simulator is missing here (local workers share this machine's).
    """
    start = time.perf_counter()
    bounds = chunk_bounds(len(beats), chunks)
    if scheduler is None:
        require_simulator(simulator)
    if workers is None and scheduler is None:
        workers = min(chunks, default_workers())
    # The fast VM takes the state at every chunk's first step while the cluster starts.
    with ThreadPoolExecutor(1) as pool:
        states = pool.submit(_chunk_states, program, beats, models, bounds)
        with open_engine(workers, scheduler) as engine:
            jobs = [(program, first, list(beats[first:first + count]), state, simulator,
                     build_dir, rtl_variant, list(models[first:first + count]))
                    for (first, count), state in zip(bounds, states.result(), strict=True)]
            outcomes = sorted(engine.run(run_chunk, jobs), key=lambda o: o.index)
            description = engine.description
    return merge(program, simulator, bounds, outcomes, description,
                 time.perf_counter() - start)


def _chunk_states(program: Program, beats: Sequence[np.ndarray], models: Sequence[int],
                  bounds: Sequence[tuple[int, int]]) -> list[dict[str, list[np.ndarray]]]:
    """Return the VM's state at the first step of every chunk of ``bounds`` (fast VM).

    Raises
    ------
    ScheduleError
        If the VM refuses the program.
    """
    vm = VM(program)
    states = []
    for first, count in bounds:
        states.append(vm.state())
        for k in range(first, first + count):
            run_step(vm, beats[k], models[k])
    return states


def _shift(d: Divergence, first: int) -> Divergence:
    return dataclasses.replace(d, inference=d.inference + first) if d.inference >= 0 else d


def merge(program: Program, simulator: str, bounds: Sequence[tuple[int, int]],
          outcomes: Sequence[JobOutcome], engine: str, wall: float) -> CompareReport:
    """Return one report for the whole sequence from the chunks' outcomes (in order).

    A chunk that raised or whose worker died counts as an RTL that stopped at its first
    step. RTL per-inference lists (``rtl_cycles``, ``rtl_done``, ``rtl``) are concatenated
    up to the first chunk whose RTL run stopped.
    """
    infos: list[ChunkInfo] = []
    divergences: list[Divergence] = []
    first_div: Divergence | None = None
    error: str | None = None
    vm_cycles: list[int] = []
    vm_done: list[int] = []
    rtl_cycles: list[int] = []
    rtl_done: list[int] = []
    rtl_parts: list[RtlResult] = []
    contiguous = True
    sums = dict.fromkeys(("values_compared", "output_values", "state_values",
                          "output_mismatches", "state_mismatches", "trace_records",
                          "write_records"), 0)
    flags = {"trace_equal": True, "cycles_equal": True, "writes_equal": True}
    spaced = program.cycle_count_per_inference()
    done = program.cycle_count_per_inference(spaced=False) - 1
    for (first, count), out in zip(bounds, outcomes, strict=True):
        report: CompareReport | None = out.result
        if report is None:
            what = "its worker died" if out.died else f"it failed: {out.error}"
            msg = f"chunk {out.index} (inferences {first}..{first + count - 1}): {what}"
            error = error or msg
            d = Divergence("error", first, -1, -1, -1, "RTL run", "finished", msg)
            first_div = first_div or d
            divergences.append(d)
            vm_cycles += [spaced] * count
            vm_done += [done] * count
            flags = dict.fromkeys(flags, False)
            contiguous = False
            infos.append(ChunkInfo(out.index, first, count, False, out.worker,
                                   out.finished_after, 0, 0.0, None, msg))
            continue
        for key in sums:
            sums[key] += getattr(report, key)
        for key in flags:
            flags[key] = flags[key] and getattr(report, key)
        vm_cycles += report.vm_cycles
        vm_done += report.vm_done
        if contiguous:
            rtl_cycles += report.rtl_cycles
            rtl_done += report.rtl_done
            if report.rtl is not None:
                rtl_parts.append(report.rtl)
            contiguous = report.rtl is not None and report.error is None
        if report.first_divergence is not None and first_div is None:
            first_div = _shift(report.first_divergence, first)
        divergences += [_shift(d, first) for d in report.divergences]
        error = error or report.error
        r = report.rtl
        infos.append(ChunkInfo(out.index, first, count, report.ok, out.worker,
                               out.finished_after, r.simulated_cycles if r else 0,
                               r.run_seconds if r else 0.0, r.run_dir if r else None,
                               report.error))
    complete = contiguous and len(rtl_parts) == len(bounds)
    ok = (all(c.ok for c in infos) and sums["values_compared"] > 0 and first_div is None
          and error is None)
    resets = sum(o.result.resets for o in outcomes if o.result is not None)
    return CompareReport(
        ok=ok, inferences=sum(c for _, c in bounds), resets=resets, **sums, **flags,
        vm_cycles=vm_cycles, rtl_cycles=rtl_cycles, vm_done=vm_done, rtl_done=rtl_done,
        first_divergence=first_div, error=error,
        rtl=_concatenate(rtl_parts) if complete else None, divergences=divergences,
        program_name=str(program.meta.get("name", "")), config_name=program.config.name,
        simulator=simulator, chunks=infos, engine=engine, wall_seconds=wall)


def _concatenate(parts: Sequence[RtlResult]) -> RtlResult:
    """Return the chunks' RTL runs as one (state from the last; times and cycles summed)."""
    head = parts[0]
    return RtlResult(
        outputs=[o for p in parts for o in p.outputs],
        output_cycles=[c for p in parts for c in p.output_cycles],
        cycles=[c for p in parts for c in p.cycles],
        done_cycles=[c for p in parts for c in p.done_cycles],
        trace=[t for p in parts for t in p.trace],
        writes=[w for p in parts for w in p.writes],
        state=parts[-1].state, simulator=head.simulator,
        wall_seconds=sum(p.wall_seconds for p in parts),
        run_seconds=sum(p.run_seconds for p in parts),
        readback_seconds=sum(p.readback_seconds for p in parts),
        simulated_cycles=sum(p.simulated_cycles for p in parts),
        build=head.build, run_dir=head.run_dir)
