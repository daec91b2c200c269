"""The VM (:mod:`sim.vm`), the executable specification of the machine, and the RTL
co-simulation (:mod:`sim.cosim`)."""

from sim.vm import VM, ScheduleError, TraceRecord, WriteRecord, format_trace, parse_trace

__all__ = ["VM", "ScheduleError", "TraceRecord", "WriteRecord", "format_trace", "parse_trace"]
