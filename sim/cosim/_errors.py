"""The one exception of the co-simulation: the RTL could not run or misbehaved."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.cosim._run import RtlResult

__all__ = ["RtlError"]


class RtlError(RuntimeError):
    """A co-simulation could not run or the RTL misbehaved.

    The message says what happened (e.g. ``RTL did not finish inference 3 within 212
    cycles``) and, for a simulator failure, ends with the tail of its log.

    Attributes
    ----------
    result : RtlResult or None
        What the run collected before it stopped (complete inferences, the traces), or
        None if the simulator never ran the testbench.
    """

    def __init__(self, message: str, result: RtlResult | None = None) -> None:
        super().__init__(message)
        self.result = result
