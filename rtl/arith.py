"""Combinational floating-point arithmetic implementing ``isa.numerics`` bit for bit.

Every builder takes the :class:`~amaranth.hdl.Module` it adds logic to plus the operands as
bit-pattern Values, and returns the result's bit pattern as a Value (built from comb
assignments; no state). The contract is the one of ``isa/numerics.py`` and
``docs/numerics.md``: IEEE binary32 round-to-nearest-even with gradual underflow (subnormal
inputs and outputs), ±inf, signed zeros by the IEEE rules, and every NaN output canonical
(fp32 ``0x7FC00000``, bf16 ``0x7FC0``). The thin
:class:`wiring.Component` wrappers exist to unit-test the builders in simulation.

The multipliers and the adder are word-level (one multiplier, one leading-zero count, one
barrel shift, one rounding increment each) because the matrix array instantiates about
6,000 of them on a C6B32.
"""

from collections.abc import Callable

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from isa.numerics import CANONICAL_NAN_BF16, CANONICAL_NAN_F32

__all__ = [
    "bf16_mul", "fp32_add", "fp32_mul_bf16", "round_bf16", "fp32_max", "fp32_min",
    "fp32_clamp", "Bf16Mul", "Fp32Add", "Fp32MulBf16", "RoundBf16", "Fp32Max", "Fp32Min",
    "Fp32Clamp",
]

_F32_INF = 0x7F800000

#: Registers its argument once (one cycle later); supplied by the caller of a builder.
Reg = Callable[[Value, str], Value]


def _pad(value: Value, stages: int, reg: Reg | None, name: str) -> Value:
    """Return ``value`` behind ``stages - 1`` registers."""
    if stages < 1:
        raise ValueError(f"{name}: stages must be at least 1, not {stages}")
    if stages > 1 and reg is None:
        raise ValueError(f"{name}: {stages} stages need a register function")
    for k in range(stages - 1):
        assert reg is not None
        value = reg(value, f"{name}_pad{k}")
    return value


def _wire(m: Module, value: Value, name: str) -> Signal:
    """Return a signal driven by ``value``: Amaranth emits an expression again at every use,
    so a sub-expression used more than once is given a name of its own."""
    wire = Signal(value.shape(), name=name)
    m.d.comb += wire.eq(value)
    return wire


def _leading_zeros(m: Module, x: Value, name: str) -> Value:
    """Return the number of leading zeros of a non-zero ``x`` (unspecified for zero: every
    caller handles a zero operand on its own path).

    A log-depth tree: each node takes the upper half's count unless the upper half is all
    zero, in which case it takes half the width plus the lower half's count. Node outputs
    are signals because each is used twice and Amaranth does not share sub-expressions.
    """
    size = 4
    while size < len(x):
        size *= 2
    # Ones below the LSB pad the tree to a power of two without changing the count.
    padded = Cat(Const((1 << (size - len(x))) - 1, size - len(x)), x)

    def node(v: Value, path: str) -> tuple[Value, Value]:
        count = Signal(range(len(v)), name=f"{name}_lzc{path}")
        zero = Signal(name=f"{name}_lzz{path}")
        if len(v) == 4:  # leaves are 4-bit priority encoders
            m.d.comb += [count.eq(Cat(~v[3] & (v[2] | ~v[1]), ~(v[3] | v[2]))),
                         zero.eq(~v.any())]
        else:
            half = len(v) // 2
            count_hi, zero_hi = node(v[half:], path + "h")
            count_lo, zero_lo = node(v[:half], path + "l")
            m.d.comb += [count.eq(Cat(Mux(zero_hi, count_lo, count_hi), zero_hi)),
                         zero.eq(zero_hi & zero_lo)]
        return count, zero

    return node(padded, "")[0]


def _mul_round(m: Module, sign: Value, p: Value, e_sum: Value, nan: Value, inf: Value,
               name: str) -> Value:
    """Normalise and round the product of two significands to an fp32 bit pattern.

    The product's value is ``p × 2^(e_sum − 254 − (len(p) − 2))``: ``p`` is the product of
    two significands with their hidden bits (1 for normal, 0 for subnormal operands, whose
    exponents enter ``e_sum`` as 1), each with one integer bit. ``nan`` and ``inf`` are the
    special-operand results; a zero ``p`` (a zero operand) gives a signed zero.

    Derivation: with ``lz`` leading zeros in ``p``, the normalised result has biased
    exponent ``e = e_sum − 126 − lz``. If ``e ≥ 1`` the significand is ``p << (lz + 24 −
    len(p))``; otherwise the result is subnormal and its field is ``p × 2^(e_sum − 103 −
    len(p))``. Both cases are one left shift of ``p`` into a fixed-point word with
    ``len(p) + 1`` fraction bits (for the round and sticky bits): by ``lz + 25`` or by
    ``e_sum − 102``, clamped at 0. A clamped shift leaves ``p < 2^len(p)`` entirely below the
    round bit, so the result rounds to zero, as the true value (smaller still) does.
    """
    wp = len(p)
    sign = _wire(m, sign, f"{name}_sign")
    e_sum = _wire(m, e_sum, f"{name}_esum")
    lz = Signal(range(wp + 1), name=f"{name}_lz")
    normal = Signal(name=f"{name}_normal")
    shift = Signal(range(wp + 26), name=f"{name}_shift")
    m.d.comb += [
        lz.eq(_leading_zeros(m, p, name)),
        normal.eq(e_sum >= 127 + lz),
        shift.eq(Mux(normal, lz + 25, Mux(e_sum >= 102, e_sum - 102, 0))),
    ]
    y = Signal(wp + 25, name=f"{name}_aligned")
    m.d.comb += y.eq(p << shift)
    sig = y[wp + 1:]                           # 24-bit significand (or subnormal field)
    round_up = y[wp] & (y[:wp].any() | sig[0])
    # Biased exponent minus one, so that the significand's hidden bit adds the last one; a
    # subnormal has no hidden bit and exponent field 0, and a rounding carry out of the
    # significand increments the exponent (up to inf), exactly as IEEE requires.
    e_minus_1 = Mux(normal, (e_sum - 127 - lz)[:len(e_sum)], 0)
    mag = Signal(len(e_sum) + 24, name=f"{name}_mag")
    m.d.comb += mag.eq((e_minus_1 << 23) + sig + round_up)
    out = Signal(32, name=f"{name}_out")
    with m.If(nan):
        m.d.comb += out.eq(CANONICAL_NAN_F32)
    with m.Elif(inf | (mag >= _F32_INF)):
        m.d.comb += out.eq(Cat(Const(_F32_INF, 31), sign))
    with m.Elif(p == 0):
        m.d.comb += out.eq(Cat(Const(0, 31), sign))
    with m.Else():
        m.d.comb += out.eq(Cat(mag[:31], sign))
    return out


def _classify(m: Module, x: Value, name: str) -> tuple[Value, Value]:
    """Return (is-NaN, is-inf) of an fp32 or bf16 pattern (both have 8 exponent bits)."""
    special = x[-9:-1].all()
    frac_nz = x[:-9].any()
    return (_wire(m, special & frac_nz, f"{name}_nan"),
            _wire(m, special & ~frac_nz, f"{name}_inf"))


def _significand(m: Module, x: Value, name: str) -> tuple[Value, Value]:
    """Return (significand with hidden bit, effective exponent) of an fp32 or bf16 pattern;
    a subnormal or zero has hidden bit 0 and effective exponent 1."""
    exp = x[-9:-1]
    hidden = Signal(name=f"{name}_hidden")
    eff_exp = Signal(8, name=f"{name}_exp")
    m.d.comb += [hidden.eq(exp.any()), eff_exp.eq(Mux(hidden, exp, 1))]
    return Cat(x[:-9], hidden), eff_exp


def bf16_mul(m: Module, a: Value, b: Value, name: str = "bf16_mul", *, stages: int = 1,
             reg: Reg | None = None) -> Value:
    """Multiply two bf16 patterns to an fp32 pattern (IEEE round-to-nearest-even).

    Exact unless the product is below the normal range (gradual underflow rounds);
    ``inf × 0`` and NaN operands give the canonical NaN.

    Parameters
    ----------
    m : Module
        Module the comb logic is added to.
    a, b : Value
        16-bit bf16 bit patterns.
    name : str
        Prefix of the internal signal names.

    Returns
    -------
    Value
        32-bit fp32 bit pattern, equal to ``f32_bits(canonical_nan(bf16_product(a, b)))``.
    """
    nan_a, inf_a = _classify(m, a, f"{name}_a")
    nan_b, inf_b = _classify(m, b, f"{name}_b")
    ma, ea = _significand(m, a, f"{name}_a")
    mb, eb = _significand(m, b, f"{name}_b")
    p = Signal(16, name=f"{name}_p")
    m.d.comb += p.eq(ma * mb)
    zero_a, zero_b = ~ma.any(), ~mb.any()
    nan = nan_a | nan_b | (inf_a & zero_b) | (inf_b & zero_a)
    return _pad(_mul_round(m, a[15] ^ b[15], p, ea + eb, nan, inf_a | inf_b, name), stages,
                reg, name)


def fp32_mul_bf16(m: Module, a: Value, t: Value, *, name: str = "fp32_mul_bf16",
                  mul_stages: int = 1, round_stages: int = 1, reg: Reg | None = None) -> Value:
    """Multiply an fp32 pattern by a bf16 pattern to fp32 (IEEE round-to-nearest-even).

    This is the contract's ``MUL`` (``a × t`` with ``t`` a bf16 widened exactly); taking
    ``t`` as bf16 makes the significand multiplier 24 × 8 bits instead of 24 × 24.

    Parameters
    ----------
    m : Module
        Module the comb logic is added to.
    a : Value
        32-bit fp32 bit pattern.
    t : Value
        16-bit bf16 bit pattern.
    name : str
        Prefix of the internal signal names.
    mul_stages, round_stages : int
        Pipeline stages of the significand multiply and of the normalise-and-round.
    reg : callable, optional
        Registers its argument; needed unless both are 1 and there is no register at all.

    Returns
    -------
    Value
        32-bit fp32 bit pattern, equal to ``vec_op(VecOp.MUL, a, widen(t))``.
    """
    nan_a, inf_a = _classify(m, a, f"{name}_a")
    nan_t, inf_t = _classify(m, t, f"{name}_t")
    ma, ea = _significand(m, a, f"{name}_a")
    mt, et = _significand(m, t, f"{name}_t")
    zero_a, zero_t = ~ma.any(), ~mt.any()
    nan = nan_a | nan_t | (inf_a & zero_t) | (inf_t & zero_a)
    stage = _pad(Cat(ma * mt, ea + et, a[31] ^ t[15], nan, inf_a | inf_t), mul_stages + 1,
                 reg, f"{name}_mul")
    mid = Signal(44, name=f"{name}_mid")
    m.d.comb += mid.eq(stage)
    return _pad(_mul_round(m, mid[41], mid[:32], mid[32:41], mid[42], mid[43], name),
                round_stages, reg, f"{name}_round")


def fp32_add(m: Module, a: Value, b: Value, name: str = "fp32_add", *, stages: int = 1,
             reg: Reg | None = None) -> Value:
    """Add two fp32 patterns (IEEE binary32 round-to-nearest-even, gradual underflow).

    ``x + (−x) = +0``, ``−0 + −0 = −0``; ``inf − inf`` and NaN operands give the canonical
    NaN; overflow gives ±inf.

    Parameters
    ----------
    m : Module
        Module the comb logic is added to.
    a, b : Value
        32-bit fp32 bit patterns.
    name : str
        Prefix of the internal signal names.

    Returns
    -------
    Value
        32-bit fp32 bit pattern, equal to ``f32_bits(accumulate(a, b))``.
    """
    nan_a, inf_a = _classify(m, a, f"{name}_a")
    nan_b, inf_b = _classify(m, b, f"{name}_b")
    nan = nan_a | nan_b | (inf_a & inf_b & (a[31] ^ b[31]))
    inf_sign = Mux(inf_a, a[31], b[31])

    # Order the operands by magnitude so that the aligned one is the smaller and an
    # effective subtraction never goes negative.
    swap = Signal(name=f"{name}_swap")
    x = Signal(32, name=f"{name}_x")
    y = Signal(32, name=f"{name}_y")
    m.d.comb += [swap.eq(b[:31] > a[:31]), x.eq(Mux(swap, b, a)), y.eq(Mux(swap, a, b))]
    sx, sy = x[31], y[31]
    mx, ex = _significand(m, x, f"{name}_x")
    my, ey = _significand(m, y, f"{name}_y")

    # Three extra bits below the significand (guard, round, sticky) are enough for a correct
    # round-to-nearest-even: bits are only lost when the exponents differ by 2 or more, and
    # then the sum needs at most a 1-bit normalising left shift.
    diff = (ex - ey)[:8]
    dist = Signal(range(28), name=f"{name}_dist")
    m.d.comb += dist.eq(Mux(diff > 27, 27, diff))
    shifted = Signal(54, name=f"{name}_shifted")
    m.d.comb += shifted.eq(Cat(Const(0, 30), my) >> dist)
    y_al = Cat(shifted[27] | shifted[:27].any(), shifted[28:])
    x_al = Cat(Const(0, 3), mx)
    # One adder for both: x − y = x + ~y + 1 in 28 bits (no borrow out since x ≥ y).
    sub = _wire(m, sx ^ sy, f"{name}_sub")
    total = Signal(28, name=f"{name}_sum")
    m.d.comb += total.eq(x_al + (Cat(y_al, 0) ^ sub.replicate(28)) + sub)

    # Normalise: a carry shifts right by one (keeping the sticky bit); otherwise shift left
    # by the leading-zero count, but never below exponent 1 (a subnormal result, exact).
    lz = Signal(range(28), name=f"{name}_lz")
    left = Signal(range(28), name=f"{name}_left")
    m.d.comb += [
        lz.eq(_leading_zeros(m, total[:27], name)),
        left.eq(Mux(lz < ex, lz, ex - 1)),
    ]
    norm = Signal(27, name=f"{name}_norm")
    exp = Signal(9, name=f"{name}_exp")
    with m.If(total[27]):
        m.d.comb += [norm.eq(Cat(total[0] | total[1], total[2:])), exp.eq(ex + 1)]
    with m.Else():
        m.d.comb += [norm.eq(total[:27] << left), exp.eq(ex - left)]
    round_up = norm[2] & (norm[1] | norm[0] | norm[3])
    # Exponent minus one plus the hidden bit: see _mul_round.
    mag = Signal(33, name=f"{name}_mag")
    m.d.comb += mag.eq(((exp - 1)[:9] << 23) + norm[3:] + round_up)

    out = Signal(32, name=f"{name}_out")
    with m.If(nan):
        m.d.comb += out.eq(CANONICAL_NAN_F32)
    with m.Elif(inf_a | inf_b):
        m.d.comb += out.eq(Cat(Const(_F32_INF, 31), inf_sign))
    with m.Elif(mag >= _F32_INF):
        m.d.comb += out.eq(Cat(Const(_F32_INF, 31), sx))
    with m.Elif(total == 0):
        # Exact zero: −0 only if both operands are −0 (round-to-nearest-even rule).
        m.d.comb += out.eq(Cat(Const(0, 31), sx & sy))
    with m.Else():
        m.d.comb += out.eq(Cat(mag[:31], sx))
    return _pad(out, stages, reg, name)


def round_bf16(m: Module, x: Value, name: str = "round_bf16") -> Value:
    """Round an fp32 pattern to a bf16 pattern (nearest, ties to even; NaN → ``0x7FC0``).

    Subnormals are kept and overflow gives ±inf. Equal to ``f32_to_bf16_bits(x)``.
    """
    out = Signal(16, name=f"{name}_out")
    # Rounding the magnitude: a carry out of the fraction correctly bumps the exponent (to
    # inf at most, as NaNs are handled apart), never the sign.
    mag = (x[:31] + 0x7FFF + x[16])[16:31]
    m.d.comb += out.eq(Mux(x[:31] > _F32_INF, CANONICAL_NAN_BF16, Cat(mag, x[31])))
    return out


def _order_key(x: Value) -> Value:
    """Map an fp32 pattern to an unsigned key whose order is the IEEE total order (−0 < +0)
    for non-NaN values: flip all bits of negatives, flip the sign bit of positives."""
    return x ^ Cat(x[31].replicate(31), 1)


def _select(m: Module, a: Value, b: Value, take_a: Value, name: str) -> Value:
    out = Signal(32, name=f"{name}_out")
    nan = ((a[23:31].all() & a[:23].any()) | (b[23:31].all() & b[:23].any()))
    m.d.comb += out.eq(Mux(nan, CANONICAL_NAN_F32, Mux(take_a, a, b)))
    return out


def fp32_max(m: Module, a: Value, b: Value, name: str = "fp32_max", *, stages: int = 1,
             reg: Reg | None = None) -> Value:
    """Return the larger fp32 pattern: canonical NaN if either is NaN; of two zeros, +0
    unless both are −0 (``vec_max``)."""
    return _pad(_select(m, a, b, _order_key(a) >= _order_key(b), name), stages, reg, name)


def fp32_min(m: Module, a: Value, b: Value, name: str = "fp32_min", *, stages: int = 1,
             reg: Reg | None = None) -> Value:
    """Return the smaller fp32 pattern: canonical NaN if either is NaN; of two zeros, −0
    unless both are +0 (``vec_min``)."""
    return _pad(_select(m, a, b, _order_key(a) <= _order_key(b), name), stages, reg, name)


def fp32_clamp(m: Module, x: Value, lo: Value, hi: Value, name: str = "fp32_clamp") -> Value:
    """Return ``fp32_min(fp32_max(x, lo), hi)`` (``clamp``; ±inf bounds mean no bound)."""
    return fp32_min(m, fp32_max(m, x, lo, f"{name}_lo"), hi, f"{name}_hi")


def clamp_round(m: Module, x: Value, lo: Value, hi: Value, *, name: str = "clamp_round",
                stages: int = 1, reg: Reg | None = None,
                broken_rounding: bool = False) -> tuple[Value, Value]:
    """Return (``fp32_clamp(x, lo, hi)``, that value rounded to bf16), both after
    ``stages - 1`` registers; ``broken_rounding`` (test-only) truncates instead."""
    c = fp32_clamp(m, x, lo, hi, name=f"{name}_clamp")
    rounded = c[16:32] if broken_rounding else round_bf16(m, c, name=f"{name}_round")
    both = _pad(Cat(c, rounded), stages, reg, name)
    return both[:32], both[32:48]


class _Unit(wiring.Component):
    """A component computing ``out`` from its inputs with one builder (unit tests)."""

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.d.comb += self.out.eq(self._build(m))
        return m


class Bf16Mul(_Unit):
    """:func:`bf16_mul` as a component.

    Members
    -------
    a, b : In(16)
        bf16 operands.
    out : Out(32)
        fp32 product.
    """

    a: In(16)
    b: In(16)
    out: Out(32)

    def _build(self, m: Module) -> Value:
        return bf16_mul(m, self.a, self.b)


class Fp32MulBf16(_Unit):
    """:func:`fp32_mul_bf16` as a component (no pipeline register).

    Members
    -------
    a : In(32)
        fp32 operand.
    t : In(16)
        bf16 operand.
    out : Out(32)
        fp32 product.
    """

    a: In(32)
    t: In(16)
    out: Out(32)

    def _build(self, m: Module) -> Value:
        return fp32_mul_bf16(m, self.a, self.t)


class Fp32Add(_Unit):
    """:func:`fp32_add` as a component.

    Members
    -------
    a, b : In(32)
        fp32 operands.
    out : Out(32)
        fp32 sum.
    """

    a: In(32)
    b: In(32)
    out: Out(32)

    def _build(self, m: Module) -> Value:
        return fp32_add(m, self.a, self.b)


class RoundBf16(_Unit):
    """:func:`round_bf16` as a component.

    Members
    -------
    a : In(32)
        fp32 operand.
    out : Out(16)
        bf16 result.
    """

    a: In(32)
    out: Out(16)

    def _build(self, m: Module) -> Value:
        return round_bf16(m, self.a)


class Fp32Max(_Unit):
    """:func:`fp32_max` as a component.

    Members
    -------
    a, b : In(32)
        fp32 operands.
    out : Out(32)
        The larger operand.
    """

    a: In(32)
    b: In(32)
    out: Out(32)

    def _build(self, m: Module) -> Value:
        return fp32_max(m, self.a, self.b)


class Fp32Min(_Unit):
    """:func:`fp32_min` as a component.

    Members
    -------
    a, b : In(32)
        fp32 operands.
    out : Out(32)
        The smaller operand.
    """

    a: In(32)
    b: In(32)
    out: Out(32)

    def _build(self, m: Module) -> Value:
        return fp32_min(m, self.a, self.b)


class Fp32Clamp(_Unit):
    """:func:`fp32_clamp` as a component.

    Members
    -------
    a : In(32)
        fp32 value.
    lo, hi : In(32)
        fp32 bounds.
    out : Out(32)
        The clamped value.
    """

    a: In(32)
    lo: In(32)
    hi: In(32)
    out: Out(32)

    def _build(self, m: Module) -> Value:
        return fp32_clamp(m, self.a, self.lo, self.hi)
