"""The cocotb testbench of the co-simulation (runs inside the simulator; see :mod:`sim.cosim`).

:func:`sim.cosim.run_rtl` launches the simulator with this module as the cocotb test
module and the environment variable ``TIDAL_COSIM_SPEC`` naming the JSON run specification
it wrote. The one test, :func:`run_program`:

1. starts the clock, holds ``rst`` for a few cycles, drives the first inference's model
   index on ``in_model`` and holds ``out_ready`` high (low if the specification says
   ``stall_output``);
2. for each inference: a **driver** presents its input beats back to back from the cycle
   after the previous inference's ``done`` (the first beat accepted is cycle 0) — or, if
   its model differs from the previous one, drives the new index on ``in_model`` in that
   cycle and presents the first beat ``model_setup`` cycles later — and a
   **monitor** records every output beat (data, cycle), the ``done`` cycle and ``error``.
   Cycles are counted by the testbench from simulation time, independently of the RTL's
   ``cycle`` port, which is checked against the count;
3. reads the tensor RAM and accumulator store of every core back through VPI;
4. checks the reset (:func:`_check_reset`): presents the last inference's beats once more and
   raises ``rst`` in the cycle before its first output beat, while that beat is inside the
   output pipeline; from the reset on, nothing may come out and nothing may be busy;
5. writes ``result.json`` (scalars) and ``result.npz`` (arrays) into the run directory.

Python does not wake on every clock: between input beats and output bursts the monitor
waits for the first of ``RisingEdge(out_valid)``, ``RisingEdge(done)`` and a watchdog
``Timer`` at the inference's cycle limit (a timer, not a per-cycle wake-up). A missed
limit, an ``error``, a ``cycle`` port that disagrees, or a machine not ready for input ends
the run with a message naming the inference and the cycle; whatever was collected up to
then is still written, so the caller can report the first divergence of a partial run.

This module is not named ``test_*``: pytest must not collect it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import convert, get_sim_time
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge, Timer

#: Cycles ``rst`` is held high at the start, and idle cycles after it.
RESET_CYCLES = 3


class TbFailure(Exception):
    """The RTL misbehaved; the message names the inference and the cycle."""


def _beat_int(row: np.ndarray) -> int:
    """Return one beat (uint16 [B], lane i at bits [16i, 16i+16)) as an int."""
    return int.from_bytes(np.ascontiguousarray(row, dtype="<u2").tobytes(), "little")


def _int_beat(value: int, block: int) -> np.ndarray:
    return np.frombuffer(value.to_bytes(2 * block, "little"), dtype="<u2").astype(np.uint16)


def _resolve(dut: Any, path: str) -> Any:
    handle = dut
    for part in path.split("."):
        handle = getattr(handle, part)
    return handle


def _read_memory(dut: Any, path: str, width: int, depth: int) -> bytes:
    """Return the ``mem`` array of the ``tidal_mem`` at ``path`` as little-endian words.

    Raises
    ------
    TbFailure
        If the array is not visible or holds X/Z bits.
    """
    try:
        mem = _resolve(dut, path).mem
    except AttributeError:
        raise TbFailure(f"cannot read back {path}.mem through VPI: under Verilator it must be "
                        "public (tidal.vlt: public_flat_rw -module \"tidal_mem\" -var \"mem\")"
                        ) from None
    nbytes = -(-width // 8)
    out = bytearray()
    for i in range(depth):
        value = mem[i].value
        try:
            word = value.to_unsigned()
        except ValueError:
            raise TbFailure(f"{path}.mem[{i}] holds X/Z bits: {value}") from None
        out += word.to_bytes(nbytes, "little")
    return bytes(out)


class _Monitor:
    """Samples the output port, ``done``, ``error`` and ``cycle`` of one inference."""

    def __init__(self, dut: Any, k: int, block: int, period: int) -> None:
        self.dut, self.k, self.block, self.period = dut, k, block, period
        self.t0 = get_sim_time("step")
        self.beats: list[np.ndarray] = []
        self.cycles: list[int] = []
        self.done: int | None = None
        self.out_valid = False

    def cycle_now(self) -> int:
        """Return the current cycle of this inference (0 = first input beat accepted)."""
        delta = get_sim_time("step") - self.t0
        return delta // self.period

    def sample(self) -> None:
        """Record the current cycle's output beat and done (call in ReadOnly after an edge).

        Raises
        ------
        TbFailure
            On ``error``, or a ``cycle`` port that disagrees with the testbench's count.
        """
        dut, c = self.dut, self.cycle_now()
        if int(dut.error.value):
            raise TbFailure(f"RTL raised error in cycle {c} of inference {self.k} (input "
                            "underrun, output stall or a port collision)")
        self.out_valid = bool(int(dut.out_valid.value))
        done = bool(int(dut.done.value))
        if self.out_valid or done:
            port = int(dut.cycle.value)
            if port != c:
                raise TbFailure(f"RTL cycle port reads {port} in cycle {c} of inference "
                                f"{self.k} (counted from its first input beat)")
        if self.out_valid:
            self.beats.append(_int_beat(int(dut.out_data.value), self.block))
            self.cycles.append(c)
        if done:
            self.done = c


async def _inference(dut: Any, mon: _Monitor, beats: list[int], limit: int) -> None:
    """Run inference ``mon.k``: drive ``beats``, collect outputs into ``mon`` until ``done``.

    Must be entered just after a rising clock edge, in a cycle in which the machine is idle
    (``mon`` created then: that is cycle 0); returns in the ReadOnly phase of the done cycle.
    """
    edge = RisingEdge(dut.clk)
    k, period = mon.k, mon.period
    deadline = mon.t0 + limit * period
    # Driver: beat i is presented in cycle i; writes land before this time step's ReadOnly.
    for i, beat in enumerate(beats):
        if i:
            await edge
        dut.in_valid.value = 1
        dut.in_data.value = beat
        await ReadOnly()
        if not int(dut.in_ready.value):
            raise TbFailure(f"RTL not ready (in_ready low) for input beat {i} of inference "
                            f"{k} in cycle {mon.cycle_now()}")
        mon.sample()
    await edge
    dut.in_valid.value = 0
    await ReadOnly()
    mon.sample()
    # Monitor: wake per cycle only while output beats stream, else on the next event.
    while mon.done is None:
        if mon.out_valid:
            await edge
            await ReadOnly()
        else:
            remaining = deadline - get_sim_time("step")
            fired = None
            if remaining > 0:
                fired = await First(RisingEdge(dut.out_valid), RisingEdge(dut.done),
                                    Timer(remaining, unit="step"))
            if fired is None or isinstance(fired, Timer):
                raise TbFailure(f"RTL did not finish inference {k} within {limit} cycles "
                                f"(no done by cycle {mon.cycle_now()}; {len(mon.beats)} "
                                "output beats so far)")
            # An edge (or a glitch of one, under Icarus): look at the settled values.
            await ReadOnly()
        mon.sample()
        # "Within N cycles" means done in cycle N - 1 at the latest (interval = done + 1).
        if (mon.done if mon.done is not None else mon.cycle_now()) >= limit:
            raise TbFailure(f"RTL did not finish inference {k} within {limit} cycles "
                            f"(done in cycle {mon.done})" if mon.done is not None else
                            f"RTL did not finish inference {k} within {limit} cycles")


async def _check_reset(dut: Any, beats: list[int], cycle: int, until: int) -> None:
    """Start an inference on ``beats`` and abort it by a reset in ``cycle``; check it is gone.

    Must be entered in a cycle in which the machine is idle (just after a rising edge: that
    is cycle 0). ``rst`` goes high in ``cycle`` and stays high: after the reset edge, until
    cycle ``until``, ``out_valid``, ``done``, ``error`` and ``busy`` must all stay low, so a
    pipeline register that keeps its contents through a reset (and would present a stale
    output beat after it) is caught. The reset stays high so that the trace writers, which
    are silent under reset, record nothing of the aborted run after it.

    Raises
    ------
    TbFailure
        If anything of the aborted inference shows after the reset.
    """
    edge = RisingEdge(dut.clk)
    for i in range(cycle + 1):
        if i:
            await edge
        dut.in_valid.value = int(i < len(beats))
        dut.in_data.value = beats[i] if i < len(beats) else 0
    dut.rst.value = 1
    await edge
    dut.in_valid.value = 0
    for k in range(cycle + 1, until + 1):
        await ReadOnly()
        seen = [name for name in ("out_valid", "done", "error", "busy")
                if int(getattr(dut, name).value)]
        if seen:
            raise TbFailure(f"a reset in cycle {cycle} of a repeat of the last inference did not "
                            f"stop it: {' and '.join(seen)} high in cycle {k} (a pipeline "
                            "register kept its contents through the reset)")
        await edge


@cocotb.test()
async def run_program(dut: Any) -> None:
    """Run the inferences of the run specification and record everything (module doc)."""
    spec = json.loads(Path(os.environ["TIDAL_COSIM_SPEC"]).read_text())
    beats_all = np.load(spec["inputs"])                  # uint16 [Σ n_in, B]
    ends = np.cumsum(spec["n_in"], dtype=int)
    inputs = [beats_all[end - n:end] for n, end in zip(spec["n_in"], ends, strict=True)]
    models = spec["models"]
    block, period_ns = int(spec["block"]), int(spec["period_ns"])
    result: dict[str, Any] = {"error": None, "out_cycles": [], "done_cycles": [],
                              "inferences": 0}
    arrays: dict[str, np.ndarray] = {}
    outputs: list[np.ndarray] = []
    mon: _Monitor | None = None
    wall0 = time.perf_counter()
    sim0 = sim_end = 0
    try:
        Clock(dut.clk, period_ns, unit="ns").start()
        period = convert(period_ns, "ns", to="step")
        dut.rst.value = 1
        dut.in_valid.value = 0
        dut.in_data.value = 0
        # A stalling host (test-only): the machine cannot stall and must raise error.
        dut.out_ready.value = 0 if spec.get("stall_output") else 1
        model = models[0] if models else 0
        dut.in_model.value = model          # held through reset: set up for inference 0
        await ClockCycles(dut.clk, RESET_CYCLES)
        dut.rst.value = 0
        await ClockCycles(dut.clk, max(RESET_CYCLES, int(spec["model_setup"])))
        sim0 = get_sim_time("step")
        wall0 = time.perf_counter()
        for k, beats in enumerate(inputs):
            if models[k] != model:
                # The new index, held for the model table's and instruction memories' reads.
                model = models[k]
                dut.in_model.value = model
                await ClockCycles(dut.clk, int(spec["model_setup"]))
            # Messages number inferences from the spec's first (a chunk's global steps).
            mon = _Monitor(dut, k + int(spec.get("first_inference", 0)), block, period)
            await _inference(dut, mon, [_beat_int(b) for b in beats], int(spec["limits"][k]))
            outputs.append(np.array(mon.beats, dtype=np.uint16).reshape(-1, block))
            result["out_cycles"].append(mon.cycles)
            result["done_cycles"].append(mon.done)
            result["inferences"] = k + 1
            await RisingEdge(dut.clk)                     # the next inference's cycle 0
        result["run_s"] = time.perf_counter() - wall0
        sim_end = get_sim_time("step")
        await ReadOnly()
        for entry in spec["readback"]:
            raw = _read_memory(dut, entry["path"], entry["width"], entry["depth"])
            dtype = "<u2" if entry["kind"] == "tram" else "<u4"
            arrays[f"{entry['kind']}{entry['core']}"] = (
                np.frombuffer(raw, dtype=dtype).reshape(entry["depth"], block))
        result["wall_s"] = time.perf_counter() - wall0
        if len(inputs):
            # The last inference again: its model is the one still selected on in_model.
            first = result["out_cycles"][-1]
            done_last = result["done_cycles"][-1]
            cycle = max(0, (first[0] if first else done_last) - 1)
            await RisingEdge(dut.clk)
            await _check_reset(dut, [_beat_int(b) for b in inputs[-1]], cycle,
                               max(done_last + 1, cycle + 2))
    except Exception as exc:
        # TbFailure: the RTL misbehaved; anything else is a testbench or port-name problem,
        # whose traceback cocotb writes to sim.log.
        result["error"] = (str(exc) if isinstance(exc, TbFailure) else
                           f"testbench failed: {type(exc).__name__}: {exc} (see sim.log)")
        if mon is not None and result["inferences"] < len(inputs):
            # Keep what the failing inference produced, for the divergence report.
            result["partial"] = {"out_cycles": mon.cycles}
            arrays["partial_outputs"] = np.array(mon.beats, dtype=np.uint16).reshape(-1, block)
    finally:
        result.setdefault("wall_s", time.perf_counter() - wall0)
        result.setdefault("run_s", result["wall_s"])
        steps = convert(period_ns, "ns", to="step")
        end = sim_end or get_sim_time("step")
        result["sim_cycles"] = (end - sim0) // steps if sim0 else 0
        for k, out in enumerate(outputs):
            arrays[f"out{k}"] = out
        np.savez(spec["arrays"], **arrays)
        Path(spec["result"]).write_text(json.dumps(result))
    assert result["error"] is None, result["error"]

