"""Co-simulation: run a compiled :class:`~isa.program.Program` on the RTL and compare with the VM.

:func:`run_rtl` runs inferences on the Verilog of ``rtl/`` under cocotb (Icarus or
Verilator) and returns an :class:`RtlResult`; :func:`compare` runs the same inputs on the
VM (:mod:`sim.vm`, the executable specification) and on the RTL and reports, in a
:class:`CompareReport`, whether outputs, memory writes, final state and cycle counts agree
bit for bit and cycle for cycle, and where they first diverge. ``docs/cosim.md`` is the
user's guide.

The package does one job per module, behind this API:

- :mod:`sim.cosim._build` — Verilog (by :func:`rtl.gen.generate`) and simulator models,
  cached in the build cache outside the clone (:mod:`sim.cosim.cache`);
- :mod:`sim.cosim._run` — one simulator launch: run directory, testbench
  (:mod:`sim.cosim._testbench`, runs inside the simulator), results;
- :mod:`sim.cosim._traces` — the RTL's issue-trace and write-trace files;
- :mod:`sim.cosim._compare` — the VM reference run, the comparison and its report;
- :mod:`sim.cosim._chunks` — chunked comparison: a long sequence cut into chunks, each
  started from the VM's state, run at once on :mod:`sim.cosim.engine` (Dask);
- :mod:`sim.cosim.toolchain` — finding the simulators and the lean Verilator runner;
- :mod:`sim.cosim.random_programs` — the constrained-random program generator.

Usage::

    from sim.cosim import compare, run_rtl
    report = compare(program, random=8, simulator="verilator")
    print(report.summary())
    assert report.ok
"""

from sim.cosim._build import BuildInfo, build_rtl, model_cached
from sim.cosim._compare import (
    ChunkInfo,
    CompareReport,
    Divergence,
    VmReference,
    compare,
    compare_runs,
    run_step,
    vm_reference,
)
from sim.cosim._errors import RtlError
from sim.cosim._run import (
    RtlResult,
    input_beats,
    insert_resets,
    random_inputs,
    run_rtl,
    split_resets,
    watchdog_cycles,
)
from sim.cosim._traces import parse_rtl_trace, parse_write_trace
from sim.cosim.toolchain import SIMULATORS, SimulatorMissing, require_simulator
from sim.vm import TraceRecord, WriteRecord

__all__ = [
    "RtlError", "RtlResult", "BuildInfo", "ChunkInfo", "CompareReport", "Divergence",
    "VmReference", "TraceRecord", "WriteRecord", "SIMULATORS", "SimulatorMissing",
    "build_rtl", "model_cached", "run_rtl", "compare", "compare_runs", "vm_reference",
    "input_beats", "random_inputs", "parse_rtl_trace", "parse_write_trace",
    "require_simulator", "watchdog_cycles", "insert_resets", "split_resets",
    "run_step",
]
