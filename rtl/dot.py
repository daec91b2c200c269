"""Pipelined bf16 dot-product unit of width B (one lane of the matrix array).

The unit computes ``isa.numerics.dot_tree(bf16_product(a, w))`` bit for bit: B bf16 × bf16
products to fp32, then a fixed binary tree of fp32 round-to-nearest-even additions, lane
``2i`` with lane ``2i + 1``, level by level. The products take ``Depths.bf16_mul`` stages
and each adder-tree level ``Depths.fp32_add`` (:mod:`rtl.arith` splits them), so a result
leaves :func:`dot_latency` cycles after its operands enter.
"""

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from isa.config import Depths
from isa.numerics import MAX_DOT_WIDTH
from rtl.arith import bf16_mul, fp32_add

__all__ = ["dot_latency", "DotUnit"]


def _check_width(width: int) -> None:
    if (not isinstance(width, int) or width < 1 or width > MAX_DOT_WIDTH
            or width & (width - 1)):
        raise ValueError(f"dot width must be a power of two from 1 to {MAX_DOT_WIDTH}, "
                         f"not {width!r}")


def dot_latency(width: int, depths: Depths) -> int:
    """Return the latency in cycles of a :class:`DotUnit` of ``width`` lanes.

    ``depths.bf16_mul`` stages of products, then ``depths.fp32_add`` stages for each of the
    ``log2(width)`` adder-tree levels: operands presented in cycle ``t`` give ``out`` in
    cycle ``t + dot_latency``.

    Raises
    ------
    ValueError
        If ``width`` is not a power of two from 1 to 64.
    """
    _check_width(width)
    return depths.bf16_mul + (width.bit_length() - 1) * depths.fp32_add


class DotUnit(wiring.Component):
    """bf16 dot product of width B, fully pipelined (one result per cycle).

    Parameters
    ----------
    width : int
        B, the number of lanes: a power of two from 1 to 64.
    depths : Depths
        Pipeline depths (``bf16_mul`` and ``fp32_add`` are used).

    Members
    -------
    a : In(16 * width)
        Activations, bf16 lanes little-endian (lane ``i`` at bits ``[16i, 16i + 16)``).
    w : In(16 * width)
        Weights (one tile row), same lane order.
    valid : In(1)
        ``a`` and ``w`` hold operands this cycle.
    out : Out(32)
        fp32 dot product of the operands presented :func:`dot_latency` cycles earlier, with
        canonical NaN; meaningful only while ``out_valid``.
    out_valid : Out(1)
        ``valid`` delayed by :func:`dot_latency` cycles (reset to 0).

    Raises
    ------
    ValueError
        If ``width`` is not a power of two from 1 to 64.
    """

    def __init__(self, width: int, depths: Depths) -> None:
        _check_width(width)
        self.width = width
        self.depths = depths
        super().__init__({
            "a": In(16 * width),
            "w": In(16 * width),
            "valid": In(1),
            "out": Out(32),
            "out_valid": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        # Data registers have no reset: their contents only matter under out_valid, and
        # leaving the reset out keeps each of the thousands of instances lean.
        d = self.depths

        def reg(value: Value, name: str) -> Signal:
            r = Signal.like(value, name=name, reset_less=True)
            m.d.sync += r.eq(value)
            return r

        level = []
        for i in range(self.width):
            lane = slice(16 * i, 16 * i + 16)
            p = Signal(32, name=f"p_{i}", reset_less=True)
            m.d.sync += p.eq(bf16_mul(m, self.a[lane], self.w[lane], name=f"mul_{i}",
                                      stages=d.bf16_mul, reg=reg))
            level.append(p)
        depth = 0
        while len(level) > 1:
            sums = []
            for j in range(len(level) // 2):
                s = Signal(32, name=f"s{depth}_{j}", reset_less=True)
                m.d.sync += s.eq(fp32_add(m, level[2 * j], level[2 * j + 1],
                                          name=f"add{depth}_{j}", stages=d.fp32_add, reg=reg))
                sums.append(s)
            level = sums
            depth += 1
        m.d.comb += self.out.eq(level[0])

        valid = Signal(dot_latency(self.width, d))
        m.d.sync += valid.eq(Cat(self.valid, valid[:-1]))
        m.d.comb += self.out_valid.eq(valid[-1])
        return m
