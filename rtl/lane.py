"""One lane of a core's matrix block: a dot-product unit and its slice of the weight store.

Lane ``L`` of a core holds row ``L`` of every weight tile and computes output lane ``L`` of
each tile product. Everything a lane owns is inside it and every input is shared by all the
lanes of a core (weight address, activation block, valid), so that the ``"instance"``
flavour converts the lane to Verilog once and instantiates it B times per core, which is what
keeps a full C6B32 cheap to build and fast to simulate (``docs/rtl.md``, "Verilog").
Each lane also holds its own copy of the tensor RAM's last output register
(:func:`rtl.memory.own_copy`), so the activation block reaches B lanes as a register's
fan-out rather than through one shared register into every lane's multiplier.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from rtl.dot import DotUnit
from rtl.memory import add_memory, addr_bits, check_flavour, own_copy

__all__ = ["lane_signature", "Lane"]


def lane_signature(config: Config) -> wiring.Signature:
    """Return the signature of a :class:`Lane` of ``config`` (see its Members)."""
    b = config.block_size
    return wiring.Signature({
        "waddr": In(addr_bits(config.weight_store_depth)),
        "act": In(16 * b),
        "valid": In(1),
        "out": Out(32),
    })


class Lane(wiring.Component):
    """Dot-product unit of width B fed by its own slice of the weight store.

    A ``MAC`` issued in cycle ``t`` presents the tile address on ``waddr`` in cycle ``t``
    (the slice reads with ``Depths.mem_read`` cycles of latency, like the tensor RAM), the
    tensor RAM's data on ``act`` one register early (its ``rdata_pre``, cycle
    ``t + mem_read - 1``; with ``mem_read`` 1 the read data itself in ``t + 1``) and
    ``valid`` in cycle ``t + mem_read``, and finds its lane of the tile product on ``out``
    in cycle ``t + mem_read + dot_latency`` (:func:`isa.timing.latencies`
    ``.mac_accumulate``).

    Parameters
    ----------
    config : Config
    flavour : str
        ``"native"`` or ``"instance"`` (see :mod:`rtl.memory`).
    weights : sequence of int, optional
        Native flavour: word ``w`` is row ``L`` of tile ``w`` (column ``j`` at bits
        ``[16j, 16j + 16)``). The instance flavour loads ``<%m>.hex`` at time 0 instead.

    Members
    -------
    waddr : In(addr_bits(weight_store_depth))
        Weight-store address of the tile (cycle ``t``).
    act : In(16 * B)
        Activation block, bf16 lanes, before the tensor RAM's last output register (cycle
        ``t + mem_read - 1``; ``t + 1`` when ``mem_read`` is 1): the lane registers it.
    valid : In(1)
        A tile product enters this cycle (cycle ``t + mem_read``).
    out : Out(32)
        fp32 dot product of the tile row and the activation block.
    """

    def __init__(self, config: Config, *, flavour: str = "native",
                 weights: Sequence[int] | None = None) -> None:
        self.config = config
        self.flavour = check_flavour(flavour)
        self.weights = weights
        #: Native flavour, once elaborated: the lane's weight memory (for testbenches).
        self.memories: dict[str, memory.Memory] = {}
        super().__init__(lane_signature(config))

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self.config
        wmem = add_memory(m, "wmem", width=16 * cfg.block_size, depth=cfg.weight_store_depth,
                          flavour=self.flavour, init=self.weights, writable=False,
                          registry=self.memories, latency=cfg.depths.mem_read)
        m.submodules.dot = dot = DotUnit(cfg.block_size, cfg.depths)
        m.d.comb += [
            wmem.raddr.eq(self.waddr),
            dot.a.eq(own_copy(m, self.act, cfg.depths.mem_read, "act")),
            dot.w.eq(wmem.rdata),
            dot.valid.eq(self.valid),
            self.out.eq(dot.out),
        ]
        return m
