"""The matrix block of a core: B lanes sharing the weight address and the activation bus.

Per cycle the block multiplies one B-value activation block by one B×B weight tile: lane
``L`` (:class:`~rtl.lane.Lane`) holds row ``L`` of every tile and produces output lane ``L``.
In the ``"instance"`` flavour the block is converted to Verilog once (``tidal_matrix``) and
places B ``Instance``\\ s of the once-converted ``tidal_lane``; every lane input is a port of
the block, shared by all its lanes.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from rtl.lane import Lane, lane_signature
from rtl.memory import addr_bits, check_flavour, place

__all__ = ["matrix_signature", "Matrix"]


def matrix_signature(config: Config) -> wiring.Signature:
    """Return the signature of a :class:`Matrix` of ``config`` (see its Members)."""
    b = config.block_size
    return wiring.Signature({
        "waddr": In(addr_bits(config.weight_store_depth)),
        "act": In(16 * b),
        "valid": In(1),
        "dots": Out(32 * b),
    })


class Matrix(wiring.Component):
    """B dot-product lanes, each with its slice of the weight store.

    Timing as :class:`~rtl.lane.Lane`: tile address in cycle ``t``, activations in
    ``t + mem_read - 1`` (one register early: every lane registers its own copy) and
    ``valid`` in ``t + mem_read``, the tile product on ``dots`` in ``t + mac_accumulate``
    (:func:`isa.timing.latencies`).

    Parameters
    ----------
    config : Config
    flavour : str
        ``"native"`` or ``"instance"`` (see :mod:`rtl.memory`).
    weights : sequence of sequence of int, optional
        Native flavour: the weight-store slice of each lane (see :class:`~rtl.lane.Lane`).

    Members
    -------
    waddr : In(addr_bits(weight_store_depth))
        Weight-store address of the tile (cycle ``t``).
    act : In(16 * B)
        Activation block, the tensor RAM's ``rdata_pre`` (cycle ``t + mem_read - 1``; the
        read data in ``t + 1`` when ``mem_read`` is 1).
    valid : In(1)
        A tile product enters this cycle (cycle ``t + mem_read``).
    dots : Out(32 * B)
        The tile product, fp32, lane ``i`` at bits ``[32i, 32i + 32)``.
    """

    def __init__(self, config: Config, *, flavour: str = "native",
                 weights: Sequence[Sequence[int] | None] | None = None) -> None:
        self.config = config
        self.flavour = check_flavour(flavour)
        b = config.block_size
        if weights is not None and len(weights) != b:
            raise ValueError(f"weights must give the slice of each of the {b} lanes, not "
                             f"{len(weights)}")
        #: Native flavour: the lanes (each records its memories when elaborated).
        self.lanes: list[Lane] = []
        if flavour == "native":
            self.lanes = [Lane(config, flavour=flavour,
                               weights=weights[lane] if weights is not None else None)
                          for lane in range(b)]
        super().__init__(matrix_signature(config))

    def elaborate(self, platform: object) -> Module:
        m = Module()
        dots = []
        for lane in range(self.config.block_size):
            out = Signal(32, name=f"dot{lane}")
            place(m, f"lane{lane}", module="tidal_lane", signature=lane_signature(self.config),
                  connections={"waddr": self.waddr, "act": self.act, "valid": self.valid,
                               "out": out},
                  flavour=self.flavour, native=self.lanes[lane] if self.lanes else None)
            dots.append(out)
        m.d.comb += self.dots.eq(Cat(*dots))
        return m
