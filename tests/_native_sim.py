"""One Amaranth simulation of the native :class:`rtl.top.Top` per configuration, reused.

Building Amaranth's Python simulator of a whole machine takes most of a test's time (about
a minute for the one-core, four-lane machine: it compiles every statement to Python), and
the machine's structure does not depend on the program, only its memories' contents do.
So each test process builds one simulator per configuration and, for every
run, resets it (every signal and memory back to its initial value, zero) and writes the
program's memory images through the testbench before the first clock edge: the words
:func:`rtl.gen.memory_images` gives the Verilog simulators, by the same paths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from amaranth.sim import Simulator

from isa.config import Config
from isa.program import Program
from rtl.gen import memory_images
from rtl.top import Top

__all__ = ["run_native"]

Bench = Callable[[object, Top], Awaitable[None]]

#: Per configuration: the top, its simulator and the slot of the current bench (empty until
#: the first run).
_MACHINES: dict[Config, tuple[Top, Simulator, list[Bench]]] = {}


def _machine(config: Config) -> tuple[Top, Simulator, list[Bench]]:
    if config not in _MACHINES:
        top = Top(config)
        sim = Simulator(top)
        sim.add_clock(1e-6)
        slot: list[Bench] = []

        # Simulator.reset restarts the testbenches it has: this one runs the current bench.
        async def dispatch(ctx) -> None:
            await slot[0](ctx)

        sim.add_testbench(dispatch)
        _MACHINES[config] = (top, sim, slot)
    return _MACHINES[config]


def _load(ctx, top: Top, program: Program) -> None:
    """Write ``program``'s memory images into the (zeroed) memories of ``top``."""
    memories = dict(top.memories)
    for c, core in enumerate(top.cores):
        memories.update({f"core{c}.{name}": mem for name, mem in core.memories.items()})
        for lane, unit in enumerate(core.matrix.lanes):
            memories[f"core{c}.matrix.lane{lane}.wmem"] = unit.memories["wmem"]
    for path, words in memory_images(program).items():
        mem = memories[path]
        assert len(words) <= mem.depth, f"{path}: {len(words)} words exceed {mem.depth}"
        for addr, word in enumerate(words):
            if word:
                ctx.set(mem.data[addr], word)


def run_native(program: Program, bench: Bench) -> Top:
    """Run ``bench(ctx, top)`` on the native machine of ``program``'s configuration, loaded with
    ``program``, from reset; return the top (whose memories hold the final state)."""
    top, sim, slot = _machine(program.config)

    async def loaded(ctx) -> None:
        _load(ctx, top, program)
        await bench(ctx, top)

    # A simulator that never ran is at its initial state, and resetting it would drop the
    # testbench coroutine it made without ever awaiting it.
    if slot:
        sim.reset()
    slot[:] = [loaded]
    sim.run()
    return top
