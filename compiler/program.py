"""The compiler's view of a compiled :class:`Program`, with the VM attached."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import isa

if TYPE_CHECKING:
    from sim.vm import VM

__all__ = ["Program", "AllocationError"]


class AllocationError(ValueError):
    """A model does not fit the machine.

    The message names the memory, the core, what was needed and what was available.
    """


class Program(isa.Program):
    """A compiled program (:class:`isa.Program`) that can also build its VM."""

    def to_vm(self, trace: bool = False, **kwargs: Any) -> VM:
        """Return a bit- and cycle-accurate VM loaded with this program.

        Parameters
        ----------
        trace : bool
            Record a per-instruction trace (see :class:`sim.vm.VM`).
        """
        from sim.vm import VM

        return VM(self, trace=trace, **kwargs)
