"""The function unit's contract: every elementwise function, bit for bit, and its table.

The ``FN`` instruction (:class:`isa.instructions.Fn`) applies one :class:`Function` to a
bf16 block read from tensor RAM. This module is the one definition of what each function
returns for each of the 65,536 bf16 inputs: the VM evaluates it (through :func:`lut`), the
RTL (``rtl/function.py``) implements the same steps, and ``docs/numerics.md`` quotes the
accuracy that :func:`max_ulp_error` measures.

How a result is formed
    Every function maps a bf16 input ``x`` (sign ``s``, biased exponent field ``e``,
    fraction ``f``) to a *selection* ``(direct, a, u, b)``: ``a`` and ``b`` fp32 values,
    ``u`` a bf16 value. The result is ``round_bf16(b)`` when ``direct``, otherwise
    ``round_bf16((a × u) + b)`` with the machine's fp32 multiply (fp32 × bf16) and fp32 add,
    each rounding to nearest even (:mod:`isa.numerics`). A NaN input gives the canonical
    NaN. So the hardware after the selection is the vector unit's multiply, add and
    rounding; only the selection differs between functions. It is one of three modes:

``WINDOW`` (tanh, sigmoid, exp, SiLU, GELU, GELU-tanh, softplus, ELU, abs)
    For each sign, a window of exponent fields ``[lo, hi)``: inside it the result is read
    from the table, ``direct`` with ``b = T[base + (e − lo)·128 + f]``, the correctly
    rounded bf16 of the float64 function. Below it (small ``|x|``, zeros and subnormals)
    and from ``hi`` up (large ``|x|`` and ±inf) an affine rule ``a·x + b`` with ``u = x``,
    or ``direct`` with ``b`` when the rule's ``a`` is 0 (so ``0 × inf`` never happens).
    The windows are derived, not chosen: ``lo`` is the first exponent at which the small
    rule stops giving the correctly rounded result, ``hi`` one past the last exponent at
    which the large rule does not. Every ``WINDOW`` function is therefore correctly
    rounded for every input.
``POWER`` (reciprocal, rsqrt, sqrt: ``x**p`` with ``p = −1, −½, ½``)
    ``x = 2**E · y`` with ``y = 2**r · 1.f`` (subnormal inputs normalised first; ``r = E``
    mod ``k``, ``k = 1`` for the reciprocal and 2 for the roots): ``a = ±T[base + r·128 +
    f]`` holds ``2**q · y**p`` rounded to bf16, ``u = 2**(p·(E − r) − q)`` (a bf16 power of
    two: subnormal, or inf when out of range) and ``b = −0``; ``q`` is 1 for the
    reciprocal, 0 for the roots. Zeros, infinities and negative
    inputs of the roots are ``direct`` with the IEEE result.
``LOG`` (natural logarithm)
    ``x = 2**E' · y`` with ``y`` in ``[0.75, 1.5)``: ``a = ln 2`` (fp32), ``u = E'`` (an
    integer, exact in bf16) and ``b = T[base + f]`` = ``log(y)`` in fp32. Zero gives −inf,
    negative inputs NaN, +inf +inf.
``MAX_LANES``
    Not elementwise: every lane of the result is the largest of the block's B lanes by
    :func:`isa.numerics.vec_max` (NaN if any lane is NaN; of zeros, +0 unless all are −0),
    so that a softmax can subtract its maximum. Order does not matter: the result is a
    function of the set of lanes.

The table ``T`` (:func:`table`) holds every function's entries as fp32 bit patterns, one
ROM per core in the RTL; :data:`TABLE` gives each function's base and window.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from amaranth.lib import enum as hdl_enum
from numpy.typing import ArrayLike, NDArray

from isa.numerics import (
    CANONICAL_NAN_BF16,
    bf16_bits_to_f32,
    f32_to_bf16_bits,
    vec_max,
)

__all__ = [
    "Function", "Mode", "Rule", "Window", "FunctionSpec", "SPECS", "Selection", "select",
    "apply", "lut", "table", "TABLE_ENTRIES", "reference", "max_ulp_error", "accuracy",
    "max_lanes",
]

def _quiet() -> np.errstate:
    return np.errstate(all="ignore")


class Function(hdl_enum.IntEnum, shape=4):
    """The functions of the ``FN`` instruction; the values are the encoding."""

    TANH = 0
    SIGMOID = 1
    EXP = 2
    SILU = 3
    #: ``x·Φ(x)`` (``nn.GELU(approximate='none')``).
    GELU = 4
    #: ``½x(1 + tanh(√(2/π)(x + 0.044715x³)))`` (``nn.GELU(approximate='tanh')``).
    GELU_TANH = 5
    #: ``log(1 + eˣ)`` (``nn.Softplus()`` with beta 1).
    SOFTPLUS = 6
    #: ``x`` for ``x > 0``, ``eˣ − 1`` otherwise (``nn.ELU(alpha=1)``).
    ELU = 7
    ABS = 8
    RECIP = 9
    RSQRT = 10
    SQRT = 11
    #: natural logarithm
    LOG = 12
    #: largest lane of the block, in every lane
    MAX_LANES = 13


class Mode(enum.Enum):
    """How a function's selection is formed (see the module docstring)."""

    WINDOW = "window"
    POWER = "power"
    LOG = "log"
    MAX_LANES = "max_lanes"


@dataclass(frozen=True)
class Rule:
    """``a·x + b`` outside a window (``direct`` with ``b`` when ``a`` is 0); fp32 values."""

    a: float
    b: float


@dataclass(frozen=True)
class Window:
    """One sign's table window: exponent fields ``[lo, hi)`` at table offset ``base``."""

    lo: int
    hi: int
    base: int

    @property
    def entries(self) -> int:
        """Table entries of the window (128 per exponent)."""
        return max(0, self.hi - self.lo) * 128


@dataclass(frozen=True)
class FunctionSpec:
    """One function: its float64 reference, mode and (for ``WINDOW``) rules.

    ``small`` and ``large`` hold one :class:`Rule` per sign (index 0 positive, 1
    negative); ``power`` is ``p`` of the ``POWER`` mode.
    """

    function: Function
    mode: Mode
    reference: Callable[[NDArray[np.float64]], NDArray[np.float64]]
    small: tuple[Rule, Rule] | None = None
    large: tuple[Rule, Rule] | None = None
    power: float = 0.0


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _erfc(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(np.frompyfunc(math.erfc, 1, 1)(x), dtype=np.float64)


def _at_neg_inf(f: Callable[[NDArray[np.float64]], NDArray[np.float64]]
                ) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """``x·g(x)`` with ``g(−inf) = 0`` is −0 at −inf (the limit), not ``−inf × 0``."""
    return lambda x: np.where(np.isneginf(x), -0.0, f(x))


def _gelu(x: NDArray[np.float64]) -> NDArray[np.float64]:
    # erfc keeps the precision of x·Φ(x) for large negative x, where 1 + erf cancels.
    return 0.5 * x * _erfc(-x / math.sqrt(2.0))


def _gelu_tanh(x: NDArray[np.float64]) -> NDArray[np.float64]:
    # ½(1 + tanh z) = sigmoid(2z), which does not cancel for negative z.
    z = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
    return x * _sigmoid(2.0 * z)


def _softplus(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _elu(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.where(x > 0, x, np.expm1(x))


_INF = math.inf
_LN2 = float(np.float32(math.log(2.0)))
#: Odd functions add −0 rather than +0, so that −0 maps to −0 (IEEE: x + (−0) = x).
_ID = Rule(1.0, -0.0)
_ZERO = Rule(0.0, 0.0)

#: Every function, in :class:`Function` order.
SPECS: tuple[FunctionSpec, ...] = (
    FunctionSpec(Function.TANH, Mode.WINDOW, np.tanh,
                 (_ID, _ID), (Rule(0.0, 1.0), Rule(0.0, -1.0))),
    FunctionSpec(Function.SIGMOID, Mode.WINDOW, _sigmoid,
                 (Rule(0.25, 0.5), Rule(0.25, 0.5)), (Rule(0.0, 1.0), _ZERO)),
    FunctionSpec(Function.EXP, Mode.WINDOW, np.exp,
                 (Rule(1.0, 1.0), Rule(1.0, 1.0)), (Rule(0.0, _INF), _ZERO)),
    FunctionSpec(Function.SILU, Mode.WINDOW, _at_neg_inf(lambda x: x * _sigmoid(x)),
                 (Rule(0.5, -0.0), Rule(0.5, -0.0)), (_ID, Rule(0.0, -0.0))),
    FunctionSpec(Function.GELU, Mode.WINDOW, _at_neg_inf(_gelu),
                 (Rule(0.5, -0.0), Rule(0.5, -0.0)), (_ID, Rule(0.0, -0.0))),
    FunctionSpec(Function.GELU_TANH, Mode.WINDOW, _at_neg_inf(_gelu_tanh),
                 (Rule(0.5, -0.0), Rule(0.5, -0.0)), (_ID, Rule(0.0, -0.0))),
    FunctionSpec(Function.SOFTPLUS, Mode.WINDOW, _softplus,
                 (Rule(0.5, _LN2), Rule(0.5, _LN2)), (_ID, _ZERO)),
    FunctionSpec(Function.ELU, Mode.WINDOW, _elu, (_ID, _ID), (_ID, Rule(0.0, -1.0))),
    FunctionSpec(Function.ABS, Mode.WINDOW, np.abs,
                 (_ID, Rule(-1.0, -0.0)), (_ID, Rule(-1.0, -0.0))),
    FunctionSpec(Function.RECIP, Mode.POWER, lambda x: 1.0 / x, power=-1.0),
    FunctionSpec(Function.RSQRT, Mode.POWER, lambda x: 1.0 / np.sqrt(x), power=-0.5),
    FunctionSpec(Function.SQRT, Mode.POWER, np.sqrt, power=0.5),
    FunctionSpec(Function.LOG, Mode.LOG, np.log),
    FunctionSpec(Function.MAX_LANES, Mode.MAX_LANES, lambda x: x),
)
assert [s.function for s in SPECS] == list(Function)


def reference(function: Function | int, x: ArrayLike) -> NDArray[np.float64]:
    """Evaluate ``function`` in float64 on ``x`` (the accuracy reference; elementwise
    functions only)."""
    spec = SPECS[Function(function)]
    with _quiet():
        return spec.reference(np.asarray(x, dtype=np.float64))


# -- the selection ------------------------------------------------------------------------

#: All 65,536 bf16 bit patterns, in order.
_ALL = np.arange(1 << 16, dtype=np.uint32)


@dataclass(frozen=True)
class Selection:
    """Per-input selection ``(direct, a, u, b)`` (see the module docstring); bit patterns:
    ``a`` and ``b`` uint32 (fp32), ``u`` uint16 (bf16), ``direct`` bool, ``index`` the
    table entry read (−1 when none)."""

    direct: NDArray[np.bool_]
    a: NDArray[np.uint32]
    u: NDArray[np.uint16]
    b: NDArray[np.uint32]
    index: NDArray[np.int64]


def _f32(value: float) -> int:
    return int(np.array(value, dtype=np.float32).view(np.uint32))


def _fields(x: NDArray[np.uint32]) -> tuple[NDArray, NDArray, NDArray]:
    return (x >> 15) & 1, (x >> 7) & 0xFF, x & 0x7F


def _normalise(e: NDArray, f: NDArray) -> tuple[NDArray, NDArray]:
    """Return ``(E, m)`` with ``x = 2**E · 1.m`` for non-zero finite inputs (``m`` 7 bits).

    A subnormal (field 0, fraction ``f`` ≠ 0) is ``f · 2**−133``: its leading one at bit
    ``6 − lz`` becomes the implicit one.
    """
    f = f.astype(np.int64)
    lz = np.zeros_like(f)
    for k in range(7):  # leading zeros of the 7-bit fraction (7 when f == 0)
        lz += (f < (1 << (6 - k))).astype(np.int64)
    sub = e == 0
    big_e = np.where(sub, -127 - lz, e.astype(np.int64) - 127)
    m = np.where(sub, (f << (lz + 1)) & 0x7F, f)
    return big_e, m


def _bf16_pow2(n: NDArray) -> NDArray[np.uint16]:
    """bf16 bits of ``2**n``: normal, subnormal (n < −126), 0 (n < −133) or inf (n > 127)."""
    n = n.astype(np.int64)
    normal = (n + 127) << 7
    sub = np.left_shift(1, np.clip(n + 133, 0, 6))
    bits = np.where(n > 127, 0x7F80, np.where(n >= -126, normal, np.where(n >= -133, sub, 0)))
    return bits.astype(np.uint16)


def _rule_select(x: NDArray[np.uint32], rules: tuple[Rule, Rule], s: NDArray
                 ) -> tuple[NDArray, NDArray, NDArray]:
    a = np.where(s == 1, _f32(rules[1].a), _f32(rules[0].a)).astype(np.uint32)
    b = np.where(s == 1, _f32(rules[1].b), _f32(rules[0].b)).astype(np.uint32)
    return a == 0, a, b


def _select_window(spec: FunctionSpec, windows: tuple[Window, Window],
                   x: NDArray[np.uint32], tab: NDArray[np.uint32] | None) -> Selection:
    s, e, f = _fields(x)
    lo = np.where(s == 1, windows[1].lo, windows[0].lo)
    hi = np.where(s == 1, windows[1].hi, windows[0].hi)
    base = np.where(s == 1, windows[1].base, windows[0].base)
    inside = (e >= lo) & (e < hi)
    small = e < lo
    assert spec.small is not None and spec.large is not None
    ds, a_s, b_s = _rule_select(x, spec.small, s)
    dl, a_l, b_l = _rule_select(x, spec.large, s)
    index = np.where(inside, base + (e.astype(np.int64) - lo) * 128 + f, -1)
    b_tab = tab[np.maximum(index, 0)] if tab is not None else np.zeros_like(x)
    direct = np.where(inside, True, np.where(small, ds, dl))
    a = np.where(inside, 0, np.where(small, a_s, a_l)).astype(np.uint32)
    b = np.where(inside, b_tab, np.where(small, b_s, b_l)).astype(np.uint32)
    return Selection(direct, a, x.astype(np.uint16), b, index)


_NAN32 = 0x7FC00000
_INF32 = 0x7F800000
_SIGN32 = 0x80000000


def _select_power(spec: FunctionSpec, base: int, x: NDArray[np.uint32],
                  tab: NDArray[np.uint32] | None) -> Selection:
    s, e, f = _fields(x)
    k = 1 if spec.power == -1.0 else 2
    big_e, m = _normalise(e, f)
    r = big_e % k
    # p·(E − r) with |p| = 1/k, less the reciprocal's table scale (see table())
    n = (big_e - r) // k * (1 if spec.power > 0 else -1) - (k == 1)
    index = base + r * 128 + m
    t = tab[index] if tab is not None else np.zeros_like(x)
    zero = (e == 0) & (f == 0)
    inf = (e == 255) & (f == 0)
    sign = s.astype(np.uint32) << 31
    if spec.power == -1.0:       # 1/±0 = ±inf, 1/±inf = ±0, sign kept throughout
        special = zero | inf
        value = np.where(zero, _INF32, 0) | sign
        a = t | sign
    else:                        # roots: negative → NaN; rsqrt(±0) = ±inf; sqrt(±0) = ±0
        negative = (s == 1) & ~zero
        special = zero | inf | negative
        at_zero = (_INF32 if spec.power < 0 else 0) | sign
        at_inf = 0 if spec.power < 0 else _INF32
        value = np.where(negative, _NAN32, np.where(zero, at_zero, at_inf))
        a = t
    return Selection(special, np.where(special, 0, a).astype(np.uint32),
                     np.where(special, 0, _bf16_pow2(n)).astype(np.uint16),
                     np.where(special, value, _SIGN32).astype(np.uint32),
                     np.where(special, -1, index))


def _select_log(base: int, x: NDArray[np.uint32], tab: NDArray[np.uint32] | None
                ) -> Selection:
    s, e, f = _fields(x)
    big_e, m = _normalise(e, f)
    upper = m >= 64                      # 1.m ≥ 1.5: y = 1.m / 2 in [0.75, 1)
    big_e = big_e + upper
    index = base + m
    t = tab[index] if tab is not None else np.zeros_like(x)
    zero = (e == 0) & (f == 0)
    inf = (e == 255) & (f == 0)
    negative = (s == 1) & ~zero
    special = zero | inf | negative
    value = np.where(negative, _NAN32, np.where(zero, _INF32 | _SIGN32, _INF32))
    u = f32_to_bf16_bits(big_e.astype(np.float32))  # |E'| ≤ 134: exact in bf16
    return Selection(special, np.where(special, 0, _f32(_LN2)).astype(np.uint32),
                     np.where(special, 0, u).astype(np.uint16),
                     np.where(special, value, t).astype(np.uint32),
                     np.where(special, -1, index))


# -- windows and the table ----------------------------------------------------------------

def _correct(spec: FunctionSpec) -> NDArray[np.uint16]:
    """The correctly rounded bf16 result of every input (float64 reference, then RNE)."""
    with _quiet():
        x = bf16_bits_to_f32(_ALL.astype(np.uint16)).astype(np.float64)
    return _round_f64_to_bf16(reference(spec.function, x))


def _round_f64_to_bf16(y: NDArray[np.float64]) -> NDArray[np.uint16]:
    """Round float64 to bf16 once (via fp32 only when that is exact enough: it is not, in
    general, so round on the float64 bit pattern)."""
    u = np.asarray(y, dtype=np.float64).view(np.uint64)
    sign = (u >> np.uint64(63)).astype(np.uint16) << 15
    mag = np.abs(y)
    with _quiet():
        # Scale so that the bf16 quantum at |y| is 1, round half to even, scale back.
        exp = np.floor(np.log2(np.where(mag > 0, mag, 1.0)))
        exp = np.maximum(exp, -126.0)               # subnormal quantum 2**-133
        quantum = np.exp2(exp - 7.0)
        q = np.round(mag / quantum) * quantum       # numpy rounds half to even
        out = f32_to_bf16_bits(q.astype(np.float32))  # exact: q has at most 8 bits
    out = np.where(np.isinf(y), 0x7F80, out) | sign
    out = np.where(np.isnan(y), CANONICAL_NAN_BF16, out)
    return out.astype(np.uint16)


def _rule_exact(spec: FunctionSpec, rules: tuple[Rule, Rule], correct: NDArray[np.uint16]
                ) -> NDArray[np.bool_]:
    """Whether the rule gives the correctly rounded result, per input."""
    x = _ALL
    s = (x >> 15) & 1
    direct, a, b = _rule_select(x, rules, s)
    got = _finish(direct, a, x.astype(np.uint16), b)
    nan = np.isnan(bf16_bits_to_f32(x.astype(np.uint16)))
    return (got == correct) | nan


@functools.cache
def _windows() -> dict[Function, tuple[Window, Window]]:
    """Derive each ``WINDOW`` function's windows and lay out the table, in function order."""
    out: dict[Function, tuple[Window, Window]] = {}
    base = 0
    for spec in SPECS:
        if spec.mode != Mode.WINDOW:
            continue
        assert spec.small is not None and spec.large is not None
        correct = _correct(spec)
        ok_small = _rule_exact(spec, spec.small, correct).reshape(2, 256, 128).all(axis=2)
        ok_large = _rule_exact(spec, spec.large, correct).reshape(2, 256, 128).all(axis=2)
        pair = []
        for sign in (0, 1):
            # lo: the first exponent field the small rule gets wrong (fields 0.. below it
            # are all right); hi: one past the last field the large rule gets wrong.
            bad_small = np.flatnonzero(~ok_small[sign][:255])
            lo = int(bad_small[0]) if bad_small.size else 255
            bad_large = np.flatnonzero(~ok_large[sign][:256])
            hi = int(bad_large[-1]) + 1 if bad_large.size else 1
            lo = max(lo, 1)
            if hi <= lo:                     # the rules cover everything: empty window
                hi = lo
            assert hi <= 255, f"{spec.function.name}: the large rule is wrong at inf"
            pair.append(Window(lo, hi, base))
            base += pair[-1].entries
        out[spec.function] = (pair[0], pair[1])
    return out


@functools.cache
def _bases() -> dict[Function, int]:
    windows = _windows()
    last = max(w.base + w.entries for pair in windows.values() for w in pair)
    bases: dict[Function, int] = {}
    for spec in SPECS:
        if spec.mode == Mode.POWER:
            bases[spec.function] = last
            last += 128 if spec.power == -1.0 else 256
        elif spec.mode == Mode.LOG:
            bases[spec.function] = last
            last += 128
    bases[Function.MAX_LANES] = last
    return bases


@functools.cache
def table() -> NDArray[np.uint32]:
    """Return the function table: every entry as an fp32 bit pattern (read-only).

    ``WINDOW`` entries are bf16 values (correctly rounded), ``POWER`` entries bf16 values
    of ``y**p``, ``LOG`` entries fp32 ``log(y)``.
    """
    windows, bases = _windows(), _bases()
    out = np.zeros(bases[Function.MAX_LANES], dtype=np.uint32)
    for spec in SPECS:
        if spec.mode == Mode.WINDOW:
            correct = _correct(spec).astype(np.uint32) << 16
            for sign, w in enumerate(windows[spec.function]):
                for e in range(w.lo, w.hi):
                    start = (sign << 15) | (e << 7)
                    off = w.base + (e - w.lo) * 128
                    out[off:off + 128] = correct[start:start + 128]
        elif spec.mode == Mode.POWER:
            k = 1 if spec.power == -1.0 else 2
            for r in range(k):
                y = (2.0 ** r) * (1.0 + np.arange(128) / 128.0)
                # 1/y is in (½, 1]: stored doubled, so that u = 2**(−E − 1) stays finite for
                # every input whose reciprocal is finite.
                scale = 2.0 if k == 1 else 1.0
                v = _round_f64_to_bf16(scale * y ** spec.power).astype(np.uint32) << 16
                off = bases[spec.function] + r * 128
                out[off:off + 128] = v
        elif spec.mode == Mode.LOG:
            m = np.arange(128)
            y = (1.0 + m / 128.0) / np.where(m >= 64, 2.0, 1.0)
            out[bases[spec.function]:bases[spec.function] + 128] = (
                np.log(y).astype(np.float32).view(np.uint32))
    out.setflags(write=False)
    return out


def TABLE_ENTRIES() -> int:  # noqa: N802 - reads like the constant it is
    """Number of entries of the function table (the ROM depth per core)."""
    return int(table().size)


def windows(function: Function | int) -> tuple[Window, Window]:
    """Return a ``WINDOW`` function's windows (positive, negative)."""
    return _windows()[Function(function)]


def base(function: Function | int) -> int:
    """Return the table offset of a ``POWER`` or ``LOG`` function."""
    return _bases()[Function(function)]


def select(function: Function | int, x: ArrayLike) -> Selection:
    """Return the selection of elementwise ``function`` for bf16 bit patterns ``x``."""
    function = Function(function)
    spec = SPECS[function]
    x = np.asarray(x, dtype=np.uint32) & 0xFFFF
    tab = table()
    if spec.mode == Mode.WINDOW:
        return _select_window(spec, _windows()[function], x, tab)
    if spec.mode == Mode.POWER:
        return _select_power(spec, _bases()[function], x, tab)
    if spec.mode == Mode.LOG:
        return _select_log(_bases()[function], x, tab)
    raise ValueError(f"{function.name} is not elementwise")


def _finish(direct: NDArray, a: NDArray, u: NDArray, b: NDArray) -> NDArray[np.uint16]:
    """``round_bf16(b)`` if ``direct`` else ``round_bf16(a × u + b)`` (fp32 steps)."""
    af = a.astype(np.uint32).view(np.float32)
    bf = b.astype(np.uint32).view(np.float32)
    uf = bf16_bits_to_f32(u)
    with _quiet():
        r = np.where(direct, bf, np.multiply(af, uf, dtype=np.float32) + bf)
    return f32_to_bf16_bits(r)


def apply(function: Function | int, x: ArrayLike) -> NDArray[np.uint16]:
    """Return ``function`` of bf16 bit patterns ``x`` as bf16 bit patterns (the contract).

    Elementwise functions only (``MAX_LANES``: :func:`max_lanes`). A NaN input gives the
    canonical NaN.
    """
    x = np.asarray(x, dtype=np.uint32) & 0xFFFF
    sel = select(function, x)
    out = _finish(sel.direct, sel.a, sel.u, sel.b)
    nan = ((x >> 7) & 0xFF == 0xFF) & (x & 0x7F != 0)
    return np.where(nan, CANONICAL_NAN_BF16, out).astype(np.uint16)


@functools.cache
def _lut(function: Function) -> NDArray[np.uint16]:
    out = apply(function, _ALL)
    out.setflags(write=False)
    return out


def lut(function: Function | int) -> NDArray[np.uint16]:
    """Return ``apply(function, x)`` for all 65,536 ``x`` (read-only; cached): the VM's
    fast way to evaluate an elementwise function, identical to :func:`apply` by
    construction."""
    return _lut(Function(function))


def max_lanes(block: ArrayLike) -> NDArray[np.uint16]:
    """``MAX_LANES`` of bf16 bit patterns ``block[..., B]``: the largest lane, in every
    lane (bf16 bit patterns, canonical NaN)."""
    v = bf16_bits_to_f32(np.asarray(block, dtype=np.uint16))
    m = v[..., 0]
    for i in range(1, v.shape[-1]):
        m = vec_max(m, v[..., i])
    out = f32_to_bf16_bits(m)
    return np.broadcast_to(out[..., np.newaxis], v.shape).copy()


# -- accuracy -----------------------------------------------------------------------------

def max_ulp_error(function: Function | int) -> tuple[float, int]:
    """Measure ``function`` over all 65,536 bf16 inputs against its float64 reference.

    Returns ``(error, x)``: the largest ``|result − exact| / ulp(exact)``, where ``ulp`` is
    the bf16 spacing at the exact value (2**−133 for subnormals), and a bf16 input that
    attains it. NaN inputs are skipped; an exact result beyond the bf16 range counts as
    infinite (correct when the result is the infinity of its sign); NaN must meet NaN.
    """
    function = Function(function)
    x = _ALL.astype(np.uint16)
    with _quiet():
        xf = bf16_bits_to_f32(x).astype(np.float64)
    keep = ~np.isnan(xf)
    got = bf16_bits_to_f32(apply(function, x)).astype(np.float64)
    exact = reference(function, xf)
    with _quiet():
        mag = np.abs(exact)
        exp = np.maximum(np.floor(np.log2(np.where(mag > 0, mag, 1.0))), -126.0)
        ulp = np.exp2(exp - 7.0)
        overflow = mag >= 2.0 ** 128 * (1 - 2.0 ** -9)   # rounds to inf in bf16
        exact_r = np.where(overflow & np.isfinite(exact), np.copysign(np.inf, exact), exact)
        err = np.where(np.isnan(exact_r) & np.isnan(got), 0.0,
                       np.where(exact_r == got, 0.0, np.abs(got - exact_r) / ulp))
    err = np.where(np.isnan(err), np.inf, err)
    err = np.where(keep, err, 0.0)
    worst = int(np.argmax(err))
    return float(err[worst]), worst


def accuracy() -> list[tuple[Function, float, int]]:
    """Return ``(function, max ulp error, worst input)`` for every elementwise function."""
    return [(f, *max_ulp_error(f)) for f in Function if f != Function.MAX_LANES]
