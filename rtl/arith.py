"""Floating-point arithmetic implementing ``isa.numerics`` bit for bit, in pipeline stages.

Every builder takes the :class:`~amaranth.hdl.Module` it adds logic to plus the operands as
bit-pattern Values, and returns the result's bit pattern as a Value. The numerics are those
of ``isa/numerics.py`` and ``docs/numerics.md``: IEEE binary32 round-to-nearest-even with
gradual underflow (subnormal inputs and outputs), ±inf, signed zeros by the IEEE rules, and
every NaN output canonical (fp32 ``0x7FC00000``, bf16 ``0x7FC0``). The thin
:class:`wiring.Component` wrappers exist to unit-test the builders in simulation.

Pipelining contract
-------------------
A builder with ``stages=s`` inserts exactly ``s − 1`` register levels on every path from any
operand to its result, each made by calling the caller's ``reg(value, name)`` (which must
return ``value`` registered once, one cycle later). The result is combinational from the
builder's last internal register (or from the operands when ``s = 1``); the caller registers
the result, so the total latency is ``s`` cycles. ``fp32_mul_bf16`` inserts
``mul_stages + round_stages − 1`` levels, one of which is the cut between the significand
multiply and the normalise-and-round; its latency is ``mul_stages + round_stages``.
``stages=1`` adds no register (purely combinational logic, no ``reg`` needed); more stages
need ``reg`` (``fp32_mul_bf16`` always does, for its cut), and a stage count below 1 or a
missing ``reg`` raises :class:`ValueError`.
Every value a later stage needs (special-case flags, signs, exponents, bounds) passes
through the same registers, so results stay bit-exact at every depth.

Each builder is a fixed sequence of steps with a natural cut point between consecutive
steps (listed in its docstring, with an estimated delay per step in ``_WEIGHTS``). For
``s`` stages it cuts at the ``s − 1`` points that minimise the largest estimated stage
delay. With more stages than steps, the registers beyond the natural cuts are placed at the
output: on an FPGA flow without retiming (the one of ``bench/timing.py``) no other place
would shorten a path, and with retiming the tool can move them where they help.

The multipliers and the adder are word-level (one multiplier, one leading-zero count, one
barrel shift, one rounding increment each) because the matrix array instantiates about
6,000 of them on a C6B32. ``bench/timing.py`` (``make timing``, ``docs/timing.md``)
measures every builder's stages after place and route.
"""

import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from isa.numerics import CANONICAL_NAN_BF16, CANONICAL_NAN_F32

__all__ = [
    "Reg", "bf16_mul", "fp32_add", "fp32_is_nan", "fp32_mul_bf16", "fp32_max", "fp32_min",
    "clamp_round", "ClampBounds", "clamp_bounds",
    "Bf16Mul", "Fp32Add", "Fp32MulBf16", "Fp32Max", "Fp32Min", "ClampRound",
]

Reg = Callable[[Value, str], Value]
"""Returns its argument registered once (one cycle later); supplied by the caller."""

_F32_INF = 0x7F800000

# Estimated delay of each builder's steps (ns on the ECP5 of bench/timing.py, from its
# measurements), in order; the cut points lie between consecutive steps. They only choose
# where the registers go; `make timing` measures the result.
_WEIGHTS: dict[str, tuple[float, ...]] = {
    # significand multiply and exponent add | leading-zero count and shift amount |
    # normalise shift and round bit | rounding add | overflow and special cases
    "bf16_mul": (8, 4, 5, 3, 3),
    # two 24 × 4-bit partial products | their sum
    "mul_bf16_mul": (7, 3),
    # as bf16_mul without its multiply
    "mul_bf16_round": (4, 5, 3, 3),
    # classify, order by magnitude, exponent difference | alignment shift and sticky |
    # 28-bit add | leading-zero count | normalise shift | rounding add | special cases
    "fp32_add": (8, 7, 4, 4.5, 7, 5, 4),
    # order keys and compare, NaN detection | select
    "compare": (4, 1),
    # the three compares and the candidates rounded to bf16 | select
    "clamp_round": (7, 2),
}


def _best_cuts(weights: Sequence[float], count: int) -> frozenset[int]:
    """Return the ``count`` cut points (cut ``i`` lies after step ``i``) that minimise the
    largest stage weight, then the next largest, and so on; every point if ``count`` is at
    least the number of points."""
    points = range(len(weights) - 1)
    if count >= len(points):
        return frozenset(points)

    def cost(cuts: tuple[int, ...]) -> list[float]:
        bounds = [0, *(c + 1 for c in cuts), len(weights)]
        return sorted((sum(weights[s:e]) for s, e in itertools.pairwise(bounds)), reverse=True)

    return frozenset(min(itertools.combinations(points, count), key=cost))


class _Stages:
    """Places one builder's registers: the builder calls :meth:`cut` at each natural cut
    point, in order, and :meth:`finish` on its result (see the module docstring)."""

    def __init__(self, name: str, stages: int, reg: Reg | None, weights: Sequence[float],
                 what: str = "stages") -> None:
        if stages < 1:
            raise ValueError(f"{name}: {what} must be at least 1, not {stages}")
        if stages > 1 and reg is None:
            raise ValueError(f"{name}: {what}={stages} needs a reg function")
        self._name, self._reg = name, reg
        self._cuts = _best_cuts(weights, stages - 1)
        self._extra = stages - 1 - len(self._cuts)
        self._points = len(weights) - 1
        self._next = 0

    def _register(self, values: dict[str, Value], tag: str) -> tuple[Value, ...]:
        assert self._reg is not None
        return tuple(self._reg(Value.cast(v), f"{self._name}_{tag}_{k}")
                     for k, v in values.items())

    def cut(self, **values: Value) -> tuple[Value, ...]:
        """Return ``values`` (in keyword order) registered if this cut point is cut, else
        as they are; every value used after this point must pass through here."""
        point = self._next
        self._next += 1
        assert point < self._points, f"{self._name}: more cut points than steps"
        if point in self._cuts:
            return self._register(values, f"s{point}")
        return tuple(values.values())

    def finish(self, **values: Value) -> tuple[Value, ...]:
        """Return the result ``values`` after the registers beyond the natural cuts."""
        assert self._next == self._points, f"{self._name}: cut points skipped"
        result = tuple(values.values())
        for i in range(self._extra):
            result = self._register(dict(zip(values, result, strict=True)), f"x{i}")
        return result


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


def _product_exponent(m: Module, e_sum: Value, wp: int, name: str) -> tuple[Value, Value]:
    """Return (``biased``, ``sentinel``) of a product's exponent for :func:`_mul_round`:
    ``biased = e_sum − 127`` (signed) and a ``wp``-bit word with one bit set at position
    ``wp − 1 − biased`` when ``0 ≤ biased < wp`` (else zero). Both depend only on the
    exponents, so the caller forms them beside the significand multiply."""
    biased = _wire(m, e_sum - 127, f"{name}_biased")
    sentinel = Signal(wp, name=f"{name}_sentinel")
    # Compared with the sum itself, beside the subtraction rather than after it.
    m.d.comb += sentinel.eq(Cat(e_sum == 127 + wp - 1 - j for j in range(wp)))
    return biased, sentinel


def _mul_round(m: Module, st: _Stages, sign: Value, p: Value, biased: Value,
               sentinel: Value, nan: Value, inf: Value, zero: Value, name: str) -> Value:
    """Normalise and round the product of two significands to an fp32 bit pattern, in four
    steps with three cut points of ``st``.

    The product's value is ``p × 2^(biased − 127 − (len(p) − 2))``: ``p`` is the product
    of two significands with their hidden bits (1 for normal, 0 for subnormal operands,
    whose exponents count as 1), each with one integer bit, and ``biased, sentinel`` come
    from :func:`_product_exponent`. ``nan``, ``inf`` and ``zero`` (a zero operand: a
    signed zero result) are the special-operand flags.

    Derivation: with ``lz`` leading zeros in ``p``, the normalised result has biased
    exponent ``e = biased + 1 − lz``. If ``e ≥ 1`` the significand is ``p << (lz + 24 −
    len(p))``; otherwise the result is subnormal and its field is ``p × 2^(biased + 24 −
    len(p))``. Both cases are one left shift of ``p`` into a fixed-point word with
    ``len(p) + 1`` fraction bits (for the round and sticky bits): by ``min(lz, biased) +
    25`` when ``biased ≥ 0``, else by ``biased + 25`` clamped at 0. A clamped shift leaves
    ``p < 2^len(p)`` entirely below the round bit, so the result rounds to zero, as the
    true value (smaller still) does. The sentinel bit makes one leading-zero count give
    ``min(lz, biased)`` directly; the field below the hidden bit's exponent is then
    ``biased − min(lz, biased)`` (0 for a subnormal).
    """
    wp = len(p)
    # Step: leading-zero count (saturated at biased) and shift amount. The shift by
    # lzs + 25 is taken as the fixed 25 (wiring, selected beside the count) and lzs, so
    # that no add follows the count.
    lzs = Signal(range(wp + 1), name=f"{name}_lzs")
    m.d.comb += lzs.eq(_leading_zeros(m, p | sentinel, name))
    underflow = biased < 0
    shift = Signal(range(wp + 1), name=f"{name}_shift")
    m.d.comb += shift.eq(Mux(underflow, Mux(biased >= -25, biased + 25, 0), lzs))
    sign, p, shift, biased, lzs, underflow, nan, inf, zero = st.cut(
        sign=sign, p=Mux(underflow, p, p << 25), shift=shift, biased=biased, lzs=lzs,
        underflow=underflow, nan=nan, inf=inf, zero=zero)

    # Step: normalise shift, round bit. The biased exponent minus one, so that the
    # significand's hidden bit adds the last one; a subnormal has no hidden bit and
    # exponent field 0, and a rounding carry out of the significand increments the
    # exponent (up to inf), exactly as IEEE requires.
    y = Signal(wp + 25, name=f"{name}_aligned")
    m.d.comb += y.eq(p << shift)
    sig = y[wp + 1:]                           # 24-bit significand (or subnormal field)
    round_up = y[wp] & (y[:wp].any() | sig[0])
    e_minus_1 = Mux(underflow, 0, (biased - lzs)[:9])
    sign, sig, round_up, e_minus_1, nan, inf, zero = st.cut(
        sign=sign, sig=sig, round_up=round_up, e_minus_1=e_minus_1, nan=nan, inf=inf,
        zero=zero)

    # Step: rounding add.
    mag = Signal(33, name=f"{name}_mag")
    m.d.comb += mag.eq((e_minus_1 << 23) + sig + round_up)
    sign, mag, nan, inf, zero = st.cut(sign=sign, mag=mag, nan=nan, inf=inf, zero=zero)

    # Step: overflow and special cases.
    out = Signal(32, name=f"{name}_out")
    with m.If(nan):
        m.d.comb += out.eq(CANONICAL_NAN_F32)
    with m.Elif(inf | _overflow(mag)):
        m.d.comb += out.eq(Cat(Const(_F32_INF, 31), sign))
    with m.Elif(zero):
        m.d.comb += out.eq(Cat(Const(0, 31), sign))
    with m.Else():
        m.d.comb += out.eq(Cat(mag[:31], sign))
    return out


def _shift_left_msb_first(x: Value, amount: Value) -> Value:
    """Return ``x << amount`` truncated to ``len(x)`` bits, as a barrel shifter whose first
    level uses the amount's most significant bit: a leading-zero count delivers its upper
    bits first, so the shift overlaps the count."""
    for k in reversed(range(len(amount))):
        x = Mux(amount[k], x << (1 << k), x)[:len(x)]
    return x


def _overflow(mag: Value) -> Value:
    """Whether a rounded magnitude (biased exponent from bit 23 up) is at least inf's,
    written as bit tests: a comparison with a constant would become a carry chain."""
    return mag[31:].any() | mag[23:31].all()


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
    # Exponent 0 becomes 1: only bit 0 depends on the zero test, the rest is wiring.
    m.d.comb += [hidden.eq(exp.any()), eff_exp.eq(Cat(exp[0] | ~hidden, exp[1:]))]
    return Cat(x[:-9], hidden), eff_exp


def _product_flags(m: Module, a: Value, b: Value, name: str
                   ) -> tuple[Value, Value, Value, Value, Value, Value, Value]:
    """Return (significand a, exponent a, significand b, exponent b, NaN, inf, zero) of a
    product ``a × b`` of two patterns (fp32 or bf16): ``inf × 0`` and NaN operands give
    NaN; a zero operand gives a zero significand product."""
    nan_a, inf_a = _classify(m, a, f"{name}_a")
    nan_b, inf_b = _classify(m, b, f"{name}_b")
    ma, ea = _significand(m, a, f"{name}_a")
    mb, eb = _significand(m, b, f"{name}_b")
    zero_a, zero_b = ~ma.any(), ~mb.any()
    nan = nan_a | nan_b | (inf_a & zero_b) | (inf_b & zero_a)
    return ma, ea, mb, eb, nan, inf_a | inf_b, zero_a | zero_b


def bf16_mul(m: Module, a: Value, b: Value, name: str = "bf16_mul", *, stages: int = 1,
             reg: Reg | None = None) -> Value:
    """Multiply two bf16 patterns to an fp32 pattern (IEEE round-to-nearest-even).

    Exact unless the product is below the normal range (gradual underflow rounds);
    ``inf × 0`` and NaN operands give the canonical NaN. Steps (cut points between them):
    the 8 × 8-bit significand multiply with the exponent add; the leading-zero count and
    shift amount; the normalise shift; the rounding add; overflow and special cases.

    Parameters
    ----------
    m : Module
        Module the logic is added to.
    a, b : Value
        16-bit bf16 bit patterns.
    name : str
        Prefix of the internal signal names.
    stages : int
        Pipeline stages (module docstring): ``stages − 1`` register levels inside.
    reg : Reg, optional
        Register maker, required when ``stages > 1``.

    Returns
    -------
    Value
        32-bit fp32 bit pattern, equal to ``f32_bits(canonical_nan(bf16_product(a, b)))``.
    """
    st = _Stages(name, stages, reg, _WEIGHTS["bf16_mul"])
    ma, ea, mb, eb, nan, inf, zero = _product_flags(m, a, b, name)
    p = Signal(16, name=f"{name}_p")
    m.d.comb += p.eq(ma * mb)
    biased, sentinel = _product_exponent(m, ea + eb, len(p), name)
    sign, p, biased, sentinel, nan, inf, zero = st.cut(
        sign=a[15] ^ b[15], p=p, biased=biased, sentinel=sentinel, nan=nan, inf=inf,
        zero=zero)
    out = _mul_round(m, st, sign, p, biased, sentinel, nan, inf, zero, name)
    return st.finish(out=out)[0]


def fp32_mul_bf16(m: Module, a: Value, t: Value, *, name: str = "fp32_mul_bf16",
                  mul_stages: int = 1, round_stages: int = 1, reg: Reg | None = None) -> Value:
    """Multiply an fp32 pattern by a bf16 pattern to fp32 (IEEE round-to-nearest-even).

    This is the contract's ``MUL`` (``a × t`` with ``t`` a bf16 widened exactly); taking
    ``t`` as bf16 makes the significand multiplier 24 × 8 bits instead of 24 × 24. The
    multiply (steps: two 24 × 4-bit partial products; their sum) and the normalise-and-
    round (steps as in :func:`bf16_mul`) are always separated by a register.

    Parameters
    ----------
    m : Module
        Module the logic is added to.
    a : Value
        32-bit fp32 bit pattern.
    t : Value
        16-bit bf16 bit pattern.
    name : str
        Prefix of the internal signal names.
    mul_stages, round_stages : int
        Pipeline stages of the multiply and of the normalise-and-round (each at least 1):
        ``mul_stages + round_stages − 1`` register levels inside, one of them the cut
        between the two, so the latency is ``mul_stages + round_stages``.
    reg : Reg
        Register maker (always required: there is at least the one cut).

    Returns
    -------
    Value
        32-bit fp32 bit pattern, equal to ``vec_op(VecOp.MUL, a, widen(t))``.
    """
    mul = _Stages(name, mul_stages, reg, _WEIGHTS["mul_bf16_mul"], "mul_stages")
    rnd = _Stages(name, round_stages, reg, _WEIGHTS["mul_bf16_round"], "round_stages")
    if reg is None:
        raise ValueError(f"{name}: the cut between multiply and round needs a reg function")
    ma, ea, mt, et, nan, inf, zero = _product_flags(m, a, t, name)
    lo, hi, e_sum, sign, nan, inf, zero = mul.cut(
        lo=ma * mt[:4], hi=ma * mt[4:], e_sum=ea + et, sign=a[31] ^ t[15], nan=nan, inf=inf,
        zero=zero)
    p = Signal(32, name=f"{name}_p")
    m.d.comb += p.eq(lo + (hi << 4))
    biased, sentinel = _product_exponent(m, e_sum, len(p), name)
    values = mul.finish(sign=sign, p=p, biased=biased, sentinel=sentinel, nan=nan, inf=inf,
                        zero=zero)
    names = ("sign", "p", "biased", "sentinel", "nan", "inf", "zero")
    sign, p, biased, sentinel, nan, inf, zero = (
        reg(v, f"{name}_mid_{k}") for k, v in zip(names, values, strict=True))
    out = _mul_round(m, rnd, sign, p, biased, sentinel, nan, inf, zero, name)
    return rnd.finish(out=out)[0]


def fp32_add(m: Module, a: Value, b: Value, name: str = "fp32_add", *, stages: int = 1,
             reg: Reg | None = None) -> Value:
    """Add two fp32 patterns (IEEE binary32 round-to-nearest-even, gradual underflow).

    ``x + (−x) = +0``, ``−0 + −0 = −0``; ``inf − inf`` and NaN operands give the canonical
    NaN; overflow gives ±inf. Steps (cut points between them): classify, order by
    magnitude and exponent difference; alignment shift and sticky bit; 28-bit add;
    leading-zero count; normalise shift; rounding add; overflow and special cases.

    Parameters
    ----------
    m : Module
        Module the logic is added to.
    a, b : Value
        32-bit fp32 bit patterns.
    name : str
        Prefix of the internal signal names.
    stages : int
        Pipeline stages (module docstring): ``stages − 1`` register levels inside.
    reg : Reg, optional
        Register maker, required when ``stages > 1``.

    Returns
    -------
    Value
        32-bit fp32 bit pattern, equal to ``f32_bits(accumulate(a, b))``.
    """
    st = _Stages(name, stages, reg, _WEIGHTS["fp32_add"])
    # Step: classify; order the operands by magnitude so that the aligned one is the
    # smaller and an effective subtraction never goes negative. Both exponent differences
    # are formed beside the comparison, which then only selects.
    nan_a, inf_a = _classify(m, a, f"{name}_a")
    nan_b, inf_b = _classify(m, b, f"{name}_b")
    nan = nan_a | nan_b | (inf_a & inf_b & (a[31] ^ b[31]))
    inf = inf_a | inf_b
    inf_sign = Mux(inf_a, a[31], b[31])
    ma, ea = _significand(m, a, f"{name}_a")
    mb, eb = _significand(m, b, f"{name}_b")
    swap = _wire(m, b[:31] > a[:31], f"{name}_swap")
    # Three extra bits below the significand (guard, round, sticky) are enough for a correct
    # round-to-nearest-even: bits are only lost when the exponents differ by 2 or more, and
    # then the sum needs at most a 1-bit normalising left shift. The alignment distance is
    # the difference of the effective exponents, never negative once selected; distances
    # from 26 up shift everything out (next step).
    #
    # The differences are formed from the raw exponent fields, so that their carry chains
    # start at the registers rather than behind the zero-exponent test: with |big| ≥ |small|
    # a zero big exponent implies a zero small one (both count as 1, difference 0 = the raw
    # one), so only a zero small exponent under a non-zero big one changes the difference,
    # by −1; both candidates are formed and that test selects.
    ra, rb = a[23:31], b[23:31]
    za, zb = _wire(m, ~ra.any(), f"{name}_za"), _wire(m, ~rb.any(), f"{name}_zb")

    def distance(big: Value, small: Value, z_big: Value, z_small: Value, tag: str) -> Value:
        same = _wire(m, (big - small)[:8], f"{name}_diff{tag}")
        less = _wire(m, (big + ~small)[:8], f"{name}_diffm{tag}")  # big − small − 1
        return Mux(z_small & ~z_big, less, same)

    dist = Signal(8, name=f"{name}_dist")
    m.d.comb += dist.eq(Mux(swap, distance(rb, ra, zb, za, "ba"),
                            distance(ra, rb, za, zb, "ab")))
    ex = _wire(m, Mux(swap, eb, ea), f"{name}_ex")
    # The effective exponent minus one is the raw one minus one, or 0 for a zero field.
    em1 = Mux(swap, Mux(zb, 0, rb - 1), Mux(za, 0, ra - 1))[:8]
    # Beside the comparison, each significand's trailing zeros plus 3 (255 for a zero
    # significand, above every finite distance): the sticky bit of the next step is then
    # one compare with dist.
    def trailing(mant: Value, x: Value, tag: str) -> Value:
        word = Cat(Const(0, 3), mant, Const(0, 4), Const(1, 1))
        count = _leading_zeros(m, word[::-1], f"{name}_tz{tag}")
        return Cat(count, (~x[:31].any()).replicate(3))

    tz_a, tz_b = trailing(ma, a, "a"), trailing(mb, b, "b")
    sx, sy, mx, my, tzy, ex, em1, dist, nan, inf, inf_sign = st.cut(
        sx=Mux(swap, b[31], a[31]), sy=Mux(swap, a[31], b[31]), mx=Mux(swap, mb, ma),
        my=Mux(swap, ma, mb), tzy=Mux(swap, tz_a, tz_b), ex=ex, em1=em1, dist=dist,
        nan=nan, inf=inf, inf_sign=inf_sign)

    # Step: alignment shift and sticky bit. The shifted significand has two guard bits
    # below it; the sticky bit is the OR of the bits of my shifted out below them, those
    # below bit dist − 2: there is one exactly when my's trailing zeros + 3 ≤ dist. A
    # distance of 32 or more (bits 5 and up) clears the shifted word as 26 to 31 do.
    shifted = Signal(26, name=f"{name}_shifted")
    m.d.comb += shifted.eq(Mux(dist[5:].any(), 0, Cat(Const(0, 2), my) >> dist[:5]))
    sticky = tzy <= dist
    y_al = Cat(sticky, shifted)
    sx, sy, mx, y_al, ex, em1, nan, inf, inf_sign = st.cut(
        sx=sx, sy=sy, mx=mx, y_al=y_al, ex=ex, em1=em1, nan=nan, inf=inf, inf_sign=inf_sign)

    # Step: one adder for both: x − y = x + ~y + 1 in 28 bits (no borrow out since x ≥ y).
    # Beside it, a sentinel bit at position 26 − (ex − 1) (see the next step).
    sub = _wire(m, sx ^ sy, f"{name}_sub")
    total = Signal(28, name=f"{name}_sum")
    m.d.comb += total.eq(Cat(Const(0, 3), mx) + (Cat(y_al, 0) ^ sub.replicate(28)) + sub)
    sentinel = Cat(em1 == 26 - j for j in range(27))
    sx, sy, total, sentinel, ex, em1, nan, inf, inf_sign = st.cut(
        sx=sx, sy=sy, total=total, sentinel=sentinel, ex=ex, em1=em1, nan=nan, inf=inf,
        inf_sign=inf_sign)

    # Step: the normalising left shift is the leading-zero count, but never below exponent
    # 1 (a subnormal result, exact): min(lz, ex − 1), which the sentinel bit makes one
    # leading-zero count.
    left = Signal(range(28), name=f"{name}_left")
    m.d.comb += left.eq(_leading_zeros(m, total[:27] | sentinel, name))
    zero = total == 0
    sx, sy, total, left, ex, em1, zero, nan, inf, inf_sign = st.cut(
        sx=sx, sy=sy, total=total, left=left, ex=ex, em1=em1, zero=zero, nan=nan, inf=inf,
        inf_sign=inf_sign)

    # Step: normalise; a carry shifts right by one instead (keeping the sticky bit). The
    # result's biased exponent minus one (see _mul_round) is ex after a carry, else
    # ex − 1 − left.
    norm = Signal(27, name=f"{name}_norm")
    exp_m1 = Signal(9, name=f"{name}_expm1")
    with m.If(total[27]):
        m.d.comb += [norm.eq(Cat(total[0] | total[1], total[2:])), exp_m1.eq(ex)]
    with m.Else():
        m.d.comb += [norm.eq(_shift_left_msb_first(total[:27], left)),
                     exp_m1.eq(em1 - left)]
    sx, sy, norm, exp_m1, zero, nan, inf, inf_sign = st.cut(
        sx=sx, sy=sy, norm=norm, exp_m1=exp_m1, zero=zero, nan=nan, inf=inf,
        inf_sign=inf_sign)

    # Step: rounding add. The rounded significand adds 0, 1 or 2 to exp_m1 (its hidden
    # bit, and a carry out of an all-ones fraction), so the sum's bits from 23 up are the
    # result's biased exponent, inf when they reach 255 (read from the sum's bits in the
    # next step: faster than predicting it beside the add from a 23-input AND).
    sig = norm[3:]
    round_up = norm[2] & (norm[1] | norm[0] | sig[0])
    mag = Signal(33, name=f"{name}_mag")
    m.d.comb += mag.eq((exp_m1 << 23) + sig + round_up)
    sx, sy, mag, zero, nan, inf, inf_sign = st.cut(
        sx=sx, sy=sy, mag=mag, zero=zero, nan=nan, inf=inf, inf_sign=inf_sign)

    # Step: overflow and special cases.
    out = Signal(32, name=f"{name}_out")
    with m.If(nan):
        m.d.comb += out.eq(CANONICAL_NAN_F32)
    with m.Elif(inf):
        m.d.comb += out.eq(Cat(Const(_F32_INF, 31), inf_sign))
    with m.Elif(_overflow(mag)):
        m.d.comb += out.eq(Cat(Const(_F32_INF, 31), sx))
    with m.Elif(zero):
        # Exact zero: −0 only if both operands are −0 (round-to-nearest-even rule).
        m.d.comb += out.eq(Cat(Const(0, 31), sx & sy))
    with m.Else():
        m.d.comb += out.eq(Cat(mag[:31], sx))
    return st.finish(out=out)[0]


def _order_key(x: Value) -> Value:
    """Map an fp32 pattern to an unsigned key whose order is the IEEE total order (−0 < +0)
    for non-NaN values: flip all bits of negatives, flip the sign bit of positives."""
    return x ^ Cat(x[31].replicate(31), 1)


def fp32_is_nan(x: Value) -> Value:
    """Return whether the fp32 pattern ``x`` is a NaN (1 bit)."""
    return x[23:31].all() & x[:23].any()


def _compare(m: Module, a: Value, b: Value, name: str, stages: int, reg: Reg | None,
             take_a: Callable[[Value, Value], Value]) -> Value:
    st = _Stages(name, stages, reg, _WEIGHTS["compare"])
    a, b, take, nan = st.cut(a=a, b=b, take=take_a(_order_key(a), _order_key(b)),
                             nan=fp32_is_nan(a) | fp32_is_nan(b))
    out = Signal(32, name=f"{name}_out")
    m.d.comb += out.eq(Mux(nan, CANONICAL_NAN_F32, Mux(take, a, b)))
    return st.finish(out=out)[0]


def fp32_max(m: Module, a: Value, b: Value, name: str = "fp32_max", *, stages: int = 1,
             reg: Reg | None = None) -> Value:
    """Return the larger fp32 pattern: canonical NaN if either is NaN; of two zeros, +0
    unless both are −0 (``vec_max``). Steps: compare; select. ``stages`` and ``reg`` as in
    :func:`fp32_add`."""
    return _compare(m, a, b, name, stages, reg, lambda ka, kb: ka >= kb)


def fp32_min(m: Module, a: Value, b: Value, name: str = "fp32_min", *, stages: int = 1,
             reg: Reg | None = None) -> Value:
    """Return the smaller fp32 pattern: canonical NaN if either is NaN; of two zeros, −0
    unless both are +0 (``vec_min``). Steps: compare; select. ``stages`` and ``reg`` as in
    :func:`fp32_add`."""
    return _compare(m, a, b, name, stages, reg, lambda ka, kb: ka <= kb)


def _to_bf16(v: Value, broken_rounding: bool) -> Value:
    """Round an fp32 pattern to bf16, to nearest even (a NaN is replaced by the caller)."""
    if broken_rounding:
        return v[16:32]
    # Rounding the magnitude: a carry out of the fraction correctly bumps the exponent (to
    # inf at most), never the sign.
    return Cat((v[:31] + 0x7FFF + v[16])[16:31], v[31])


class ClampBounds(NamedTuple):
    """What :func:`clamp_round` computes from its bounds alone (:func:`clamp_bounds`)."""

    rlo: Value
    rhi: Value
    lo_le_hi: Value
    nan: Value


def clamp_bounds(lo: Value, hi: Value, *, broken_rounding: bool = False) -> ClampBounds:
    """Return the parts of :func:`clamp_round` that depend on the bounds only: both rounded
    to bf16, whether ``lo ≤ hi`` and whether either is a NaN. A caller whose bounds
    arrive early registers them and passes them to :func:`clamp_round` (``bounds=``)."""
    return ClampBounds(rlo=_to_bf16(lo, broken_rounding), rhi=_to_bf16(hi, broken_rounding),
                       lo_le_hi=_order_key(lo) <= _order_key(hi),
                       nan=fp32_is_nan(lo) | fp32_is_nan(hi))


def clamp_round(m: Module, x: Value, lo: Value, hi: Value, *, name: str = "clamp_round",
                stages: int = 1, reg: Reg | None = None, broken_rounding: bool = False,
                bounds: ClampBounds | None = None) -> tuple[Value, Value]:
    """Clamp an fp32 pattern to ``[lo, hi]`` and round the result to bf16.

    The clamp is ``fp32_min(fp32_max(x, lo), hi)`` (``clamp``: ±inf bounds mean no bound,
    ``lo > hi`` gives ``hi``, NaN anywhere gives the canonical NaN), computed as three
    compares side by side and one selection. The rounding is to nearest, ties to even
    (``f32_to_bf16_bits``): subnormals kept, overflow to ±inf, the canonical NaN to
    ``0x7FC0``; the three candidates are rounded beside the compares, and the same
    selection picks the rounded value. Steps: compare and round; select.

    Parameters
    ----------
    m : Module
        Module the logic is added to.
    x, lo, hi : Value
        32-bit fp32 bit patterns: the value and its bounds.
    name : str
        Prefix of the internal signal names.
    stages : int
        Pipeline stages (module docstring): ``stages − 1`` register levels inside.
    reg : Reg, optional
        Register maker, required when ``stages > 1``.
    broken_rounding : bool
        Test-only fault: truncate instead of rounding, so that co-simulation can prove a
        wrong RTL is caught.
    bounds : ClampBounds, optional
        :func:`clamp_bounds` of ``lo, hi``, when the caller has it from an earlier register
        (bounds usually arrive before the value): the logic on the bounds alone then
        leaves the clamp's stage. Computed here without.

    Returns
    -------
    tuple of Value
        The clamped fp32 pattern (32 bits) and it rounded to a bf16 pattern (16 bits),
        both at the same latency.
    """
    st = _Stages(name, stages, reg, _WEIGHTS["clamp_round"])
    if bounds is None:
        bounds = clamp_bounds(lo, hi, broken_rounding=broken_rounding)

    # Step: the compares of x with the bounds, and x rounded beside them.
    kx, klo, khi = _order_key(x), _order_key(lo), _order_key(hi)
    x, lo, hi, rx, rlo, rhi, x_ge_lo, x_le_hi, lo_le_hi, nan = st.cut(
        x=x, lo=lo, hi=hi, rx=_to_bf16(x, broken_rounding), rlo=bounds.rlo, rhi=bounds.rhi,
        x_ge_lo=kx >= klo, x_le_hi=kx <= khi, lo_le_hi=bounds.lo_le_hi,
        nan=fp32_is_nan(x) | bounds.nan)

    # Step: select. max(x, lo) is x if x ≥ lo, else lo; the minimum of that and hi follows
    # from the matching compare.
    take_x = x_ge_lo & x_le_hi
    take_lo = ~x_ge_lo & lo_le_hi
    clamped = Signal(32, name=f"{name}_clamped")
    rounded = Signal(16, name=f"{name}_rounded")
    m.d.comb += [
        clamped.eq(Mux(nan, CANONICAL_NAN_F32, Mux(take_x, x, Mux(take_lo, lo, hi)))),
        rounded.eq(Mux(nan, CANONICAL_NAN_BF16, Mux(take_x, rx, Mux(take_lo, rlo, rhi)))),
    ]
    return st.finish(clamped=clamped, rounded=rounded)


class _Unit(wiring.Component):
    """A component computing ``out`` from its inputs with one builder, in ``stages``
    pipeline stages: ``out`` is registered, so a result appears ``stages`` cycles after its
    operands (unit tests and ``bench/timing.py``)."""

    def __init__(self, **stages: int) -> None:
        self.stages = stages
        super().__init__()

    def elaborate(self, platform: object) -> Module:
        m = Module()

        def reg(value: Value, name: str) -> Value:
            r = Signal.like(value, name=name, reset_less=True)
            m.d.sync += r.eq(value)
            return r

        outs = self._build(m, reg)
        ports = [self.out] if len(outs) == 1 else [self.out, self.out_bf16]
        for port, value in zip(ports, outs, strict=True):
            m.d.sync += port.eq(value)
        return m


class Bf16Mul(_Unit):
    """:func:`bf16_mul` as a component.

    Parameters
    ----------
    stages : int

    Members
    -------
    a, b : In(16)
        bf16 operands.
    out : Out(32)
        fp32 product, ``stages`` cycles later.
    """

    a: In(16)
    b: In(16)
    out: Out(32)

    def __init__(self, stages: int = 1) -> None:
        super().__init__(stages=stages)

    def _build(self, m: Module, reg: Reg) -> tuple[Value, ...]:
        return (bf16_mul(m, self.a, self.b, reg=reg, **self.stages),)


class Fp32MulBf16(_Unit):
    """:func:`fp32_mul_bf16` as a component.

    Parameters
    ----------
    mul_stages, round_stages : int

    Members
    -------
    a : In(32)
        fp32 operand.
    t : In(16)
        bf16 operand.
    out : Out(32)
        fp32 product, ``mul_stages + round_stages`` cycles later.
    """

    a: In(32)
    t: In(16)
    out: Out(32)

    def __init__(self, mul_stages: int = 1, round_stages: int = 1) -> None:
        super().__init__(mul_stages=mul_stages, round_stages=round_stages)

    def _build(self, m: Module, reg: Reg) -> tuple[Value, ...]:
        return (fp32_mul_bf16(m, self.a, self.t, reg=reg, **self.stages),)


class Fp32Add(_Unit):
    """:func:`fp32_add` as a component.

    Parameters
    ----------
    stages : int

    Members
    -------
    a, b : In(32)
        fp32 operands.
    out : Out(32)
        fp32 sum, ``stages`` cycles later.
    """

    a: In(32)
    b: In(32)
    out: Out(32)

    def __init__(self, stages: int = 1) -> None:
        super().__init__(stages=stages)

    def _build(self, m: Module, reg: Reg) -> tuple[Value, ...]:
        return (fp32_add(m, self.a, self.b, reg=reg, **self.stages),)


class Fp32Max(_Unit):
    """:func:`fp32_max` as a component.

    Parameters
    ----------
    stages : int

    Members
    -------
    a, b : In(32)
        fp32 operands.
    out : Out(32)
        The larger operand, ``stages`` cycles later.
    """

    a: In(32)
    b: In(32)
    out: Out(32)

    def __init__(self, stages: int = 1) -> None:
        super().__init__(stages=stages)

    def _build(self, m: Module, reg: Reg) -> tuple[Value, ...]:
        return (fp32_max(m, self.a, self.b, reg=reg, **self.stages),)


class Fp32Min(_Unit):
    """:func:`fp32_min` as a component.

    Parameters
    ----------
    stages : int

    Members
    -------
    a, b : In(32)
        fp32 operands.
    out : Out(32)
        The smaller operand, ``stages`` cycles later.
    """

    a: In(32)
    b: In(32)
    out: Out(32)

    def __init__(self, stages: int = 1) -> None:
        super().__init__(stages=stages)

    def _build(self, m: Module, reg: Reg) -> tuple[Value, ...]:
        return (fp32_min(m, self.a, self.b, reg=reg, **self.stages),)


class ClampRound(_Unit):
    """:func:`clamp_round` as a component.

    Parameters
    ----------
    stages : int
    broken_rounding : bool

    Members
    -------
    a : In(32)
        fp32 value.
    lo, hi : In(32)
        fp32 bounds.
    out : Out(32)
        The clamped value, ``stages`` cycles later.
    out_bf16 : Out(16)
        It rounded to bf16, at the same time.
    """

    a: In(32)
    lo: In(32)
    hi: In(32)
    out: Out(32)
    out_bf16: Out(16)

    def __init__(self, stages: int = 1, broken_rounding: bool = False) -> None:
        self.broken_rounding = broken_rounding
        super().__init__(stages=stages)

    def _build(self, m: Module, reg: Reg) -> tuple[Value, ...]:
        return clamp_round(m, self.a, self.lo, self.hi, reg=reg,
                           broken_rounding=self.broken_rounding, **self.stages)
