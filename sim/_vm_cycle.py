"""The VM's tracing path: an inference executed cycle by cycle, as the pipelines do it.

Unlike the fast plan (:mod:`sim._vm_plan`), which relies on the schedule rules to execute
each instruction completely in issue order, this model performs every read in the cycle its
address is presented (seeing exactly the writes performed in earlier cycles), every write in
the cycle it lands, and the ``MAC`` accumulator bypass as ``docs/architecture.md`` §3
describes it. It records every write, so it serves the write trace; and on a program that
obeys the rules it must agree with the fast plan bit for bit, which the tests check.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import numpy as np

from isa.config import Config
from isa.functions import Function
from isa.instructions import Dest, Fn, Mac, Vec, VecOp
from isa.numerics import accumulate, clamp, round_to_bf16, tile_matvec, vec_op
from isa.timing import ACC, OUT, TRAM, accesses, input_writes, latencies
from sim._vm_plan import Memories, apply_function
from sim._vm_schedule import Schedule, Source
from sim._vm_trace import WriteRecord

__all__ = ["CycleModel"]

#: Within a cycle, every read (phase 0) sees the memories before any write (phase 1).
_READ, _WRITE = 0, 1


def _bits(value: np.ndarray, memory: str) -> tuple[int, ...]:
    u = value.view(np.uint32)
    return tuple(int(v) for v in (u if memory == ACC else u >> np.uint32(16)))


class CycleModel:
    """Execute inferences cycle by cycle, recording every write.

    Parameters
    ----------
    config : Config
    schedule : Schedule
        The checked schedule.
    input_dests : numpy.ndarray
        The program's ``input_dests``.
    """

    def __init__(self, config: Config, schedule: Schedule, input_dests: np.ndarray) -> None:
        lat = latencies(config)
        self._acc_read = lat.mac_acc_read
        self._acc_write = lat.mac_acc_write
        self._config = config
        self._issues = [s for s in schedule.sources if s.core >= 0]
        self._dests = [(int(m), int(a)) for m, a in input_dests]

    def run(self, mem: Memories, beats: np.ndarray, records: list[WriteRecord]
            ) -> np.ndarray:
        """Execute one inference on ``mem``; return the output beats (float32 [n_out, B]).

        ``beats`` are the input beats as bf16-valued float32 [n_in, B]; every write and
        output beat is appended to ``records`` (in execution order).
        """
        events: list[tuple[int, int, int, int, Callable[[int], None]]] = []
        order = itertools.count()
        out: list[np.ndarray] = []
        # The latest MAC result per accumulator word and the cycle it lands: the bypass.
        pending: dict[tuple[int, int], tuple[int, np.ndarray]] = {}

        def at(cycle: int, phase: int, core: int, action: Callable[[int], None]) -> None:
            heapq.heappush(events, (cycle, phase, core, next(order), action))

        def write(memory: str, core: int, addr: int, value: np.ndarray, src: Source
                  ) -> Callable[[int], None]:
            def land(cycle: int) -> None:
                if memory == OUT:
                    addr_ = len(out)
                    out.append(value)
                elif memory == TRAM:
                    addr_ = addr
                    mem.tram[mem.tram_row(core, addr)] = value
                else:
                    addr_ = addr
                    mem.acc[mem.acc_row(core, addr)] = value
                records.append(WriteRecord(cycle, core, memory, addr_, _bits(value, memory),
                                           src.core, src.pc))
            return land

        def mac(src: Source, instr: Mac) -> Callable[[int], None]:
            def read(cycle: int) -> None:
                d = tile_matvec(mem.tile(src.core, instr.weight),
                                mem.tram[mem.tram_row(src.core, instr.tram)])
                at(src.cycle + self._acc_read, _READ, src.core, accumulate_stage(d))

            def accumulate_stage(d: np.ndarray) -> Callable[[int], None]:
                def step(cycle: int) -> None:
                    key = (src.core, instr.acc)
                    if instr.accumulate:
                        bypass = pending.get(key)
                        if bypass is not None and bypass[0] >= cycle:
                            base = bypass[1]
                        else:
                            base = mem.acc[mem.acc_row(*key)].copy()
                        result = accumulate(base, d)
                    else:
                        result = d
                    landing = src.cycle + self._acc_write
                    pending[key] = (landing, result)
                    at(landing, _WRITE, src.core, write(ACC, src.core, instr.acc, result, src))
                return step
            return read

        def vec(src: Source, instr: Vec) -> Callable[[int], None]:
            def read(cycle: int) -> None:
                c = src.core
                a = (np.float32(0) if instr.op == VecOp.PASS_T
                     else mem.acc[mem.acc_row(c, instr.acc)].copy())
                x = (np.float32(0) if instr.op == VecOp.PASS_A
                     else mem.tram[mem.tram_row(c, instr.tram)].copy())
                lo, hi = mem.clamps[c][instr.clamp]
                r = clamp(vec_op(instr.op, a, x), lo, hi)
                # TRAM and OUTPUT take the rounded block; ACC and ACCS the fp32 one.
                value = r if instr.dest in (Dest.ACC, Dest.ACCS) else round_to_bf16(r)
                for w in accesses(self._config, instr, c, src.cycle):
                    if w.write:
                        at(w.cycle, _WRITE, w.core,
                           write(w.memory, w.core, w.addr, value, src))
            return read

        def fn(src: Source, instr: Fn) -> Callable[[int], None]:
            def read(cycle: int) -> None:
                x = mem.tram[mem.tram_row(src.core, instr.tram)]
                value = apply_function(Function(instr.fn), x[np.newaxis])[0]
                for w in accesses(self._config, instr, src.core, src.cycle):
                    if w.write:
                        at(w.cycle, _WRITE, w.core,
                           write(w.memory, w.core, w.addr, value, src))
            return read

        with np.errstate(all="ignore"):
            for i, (mask, addr) in enumerate(self._dests):
                beat = Source(-1, i, i, None)
                for w in input_writes(self._config, i, mask, addr):
                    at(w.cycle, _WRITE, w.core, write(TRAM, w.core, addr, beats[i], beat))
            for src in self._issues:
                if isinstance(src.instr, Mac):
                    at(src.cycle, _READ, src.core, mac(src, src.instr))
                elif isinstance(src.instr, Vec):
                    at(src.cycle, _READ, src.core, vec(src, src.instr))
                elif isinstance(src.instr, Fn):
                    at(src.cycle, _READ, src.core, fn(src, src.instr))
            while events:
                cycle, _, _, _, action = heapq.heappop(events)
                action(cycle)
        return np.stack(out) if out else np.empty((0, mem.tram.shape[1]), np.float32)
