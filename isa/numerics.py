"""Numerics contract of the machine (one definition, used by compiler, VM, RTL and tests).

The VM computes with these functions, the compiler folds constants with them, and the RTL
tests use them as the expected value; the RTL (``rtl/arith.py``, ``rtl/dot.py``) implements
the same contract bit for bit. ``docs/numerics.md`` is the prose version of this docstring.

Formats
    bf16 is 1 sign, 8 exponent and 7 fraction bits; fp32 is IEEE 754 binary32. Values are
    stored as bit patterns (``uint16`` / ``uint32``) and computed on as ``np.float32``.
    numpy's float32 arithmetic is IEEE round-to-nearest-even with gradual underflow, and that
    *is* the contract; reductions never use ``np.dot``, ``np.matmul`` or ``np.sum``, whose
    summation order is not ours.
Conversions
    fp32 → bf16 rounds to nearest, ties to even, on the bit pattern: bf16 subnormals are kept,
    overflow gives ±inf, any NaN gives the canonical ``0x7FC0``. bf16 → fp32 is exact
    (``bits << 16``).
Subnormals and signed zero
    Full IEEE gradual underflow everywhere (no flush-to-zero). Signed zero follows IEEE under
    round-to-nearest-even: ``x + (-x) = +0``, ``-0 + -0 = -0``, a product's sign is the
    exclusive or of its operands' signs.
NaN
    Every NaN the machine stores (accumulator, tensor RAM, output) is canonical: fp32
    ``0x7FC00000``, bf16 ``0x7FC0``. Payloads of intermediate NaNs never matter; only
    NaN-ness propagates. Every function here that returns a stored value returns canonical
    NaNs.
Product
    bf16 × bf16 → fp32, IEEE round-to-nearest-even. It is exact unless the result is below the
    normal range, where gradual underflow rounds; ``inf × 0`` is NaN.
Dot product of width B
    B is a power of two, 1 to 64. The products ``p[0..B-1]`` are summed by a fixed binary
    tree, level by level, lane ``2i`` with lane ``2i + 1`` (``p[..., 0::2] + p[..., 1::2]``
    repeated), each addition IEEE fp32 round-to-nearest-even.
Tile matrix-vector product
    ``out[i] = dot(W[i, :], x)`` for a B × B bf16 tile ``W`` and a B-vector ``x``.
Accumulation over tiles
    ``acc = acc + dot`` (fp32 addition, round-to-nearest-even) in instruction issue order; a
    "set" accumulation writes ``dot`` unchanged (a ``-0`` stays ``-0``).
Vector operations
    On ``a`` (fp32, from the accumulator) and ``t`` (a bf16 tensor-RAM value widened
    exactly): ``PASS_A`` a, ``PASS_T`` t, ``ADD`` a + t, ``SUB`` a − t, ``RSUB`` t − a,
    ``MUL`` a × t (all IEEE fp32 round-to-nearest-even), ``MAX``, ``MIN``. ``MAX`` and
    ``MIN`` give NaN if either operand is NaN, otherwise the larger or smaller operand; of
    two zeros, ``MAX`` gives ``+0`` unless both are ``-0`` and ``MIN`` gives ``-0`` unless
    both are ``+0``. ``clamp(x, lo, hi) = MIN(MAX(x, lo), hi)`` with fp32 bounds (±inf means
    no bound). The result is then stored as fp32 (accumulator) or rounded to bf16.
I/O beats
    A beat of B bf16 lanes is an integer with lane ``i`` at bits ``[16i, 16i + 16)``.

All array functions are vectorised over leading axes and silence numpy's floating-point
warnings (overflow to inf and NaN are defined results here, not errors).
"""

from __future__ import annotations

import enum

import numpy as np
from amaranth.lib import enum as hdl_enum
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "NumberFormat", "VecOp", "CANONICAL_NAN_F32", "CANONICAL_NAN_BF16", "MAX_DOT_WIDTH",
    "f32_bits", "bits_f32", "f32_to_bf16_bits", "bf16_bits_to_f32", "round_to_bf16",
    "canonical_nan", "bf16_product", "dot_tree", "tile_matvec", "accumulate", "vec_max",
    "vec_min", "clamp", "vec_op", "pack_beats", "unpack_beats",
]

#: The one fp32 NaN the machine stores (quiet, positive, zero payload).
CANONICAL_NAN_F32 = 0x7FC00000
#: The one bf16 NaN the machine stores (the top half of :data:`CANONICAL_NAN_F32`).
CANONICAL_NAN_BF16 = 0x7FC0
#: Largest dot-product width (block size B) the contract defines.
MAX_DOT_WIDTH = 64

_F32_NAN = np.array(CANONICAL_NAN_F32, dtype=np.uint32).view(np.float32)[()]
_SIGN = np.uint32(0x80000000)
_MAGNITUDE = np.uint32(0x7FFFFFFF)
_INF_BITS = np.uint32(0x7F800000)
_quiet = np.errstate(all="ignore")


class NumberFormat(enum.Enum):
    """Number format of a value in the model (the reference's ``NumberFormat``)."""

    BF16 = "bf16"
    FP32 = "fp32"


class VecOp(hdl_enum.IntEnum, shape=3):
    """Vector-unit operation on ``a`` (fp32 accumulator value) and ``t`` (widened bf16).

    A standard :class:`enum.IntEnum` (Amaranth's subclass, so that the RTL can also use it as
    a 3-bit signal shape). The values are the instruction encoding.
    """

    #: ``a``
    PASS_A = 0
    #: ``t``
    PASS_T = 1
    #: ``a + t``
    ADD = 2
    #: ``a - t``
    SUB = 3
    #: ``t - a``
    RSUB = 4
    #: ``a × t``
    MUL = 5
    #: the larger of ``a`` and ``t`` (see :func:`vec_max`)
    MAX = 6
    #: the smaller of ``a`` and ``t`` (see :func:`vec_min`)
    MIN = 7


def f32_bits(x: ArrayLike) -> NDArray[np.uint32]:
    """Return the binary32 bit patterns of ``x`` (converted to float32 first)."""
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def bits_f32(u: ArrayLike) -> NDArray[np.float32]:
    """Return the float32 values whose bit patterns are ``u`` (converted to uint32 first)."""
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def _rne_to_bf16_u32(x: ArrayLike) -> NDArray[np.uint32]:
    """Round float32 ``x`` to bf16, returning the result's fp32 bit pattern (low half 0).

    Rounding is done on the magnitude so that the increment never carries into the sign:
    adding ``0x7FFF`` plus the kept LSB and truncating is round-to-nearest-even; a carry out
    of the fraction bumps the exponent, which is exactly right (up to ``0x7F80`` = inf).
    """
    u = f32_bits(x)
    mag = u & _MAGNITUDE
    lsb = (mag >> np.uint32(16)) & np.uint32(1)
    rounded = ((mag + np.uint32(0x7FFF) + lsb) & np.uint32(0xFFFF0000)) | (u & _SIGN)
    return np.where(mag > _INF_BITS, np.uint32(CANONICAL_NAN_F32), rounded)


def f32_to_bf16_bits(x: ArrayLike) -> NDArray[np.uint16]:
    """Round fp32 values to bf16 bit patterns.

    Round to nearest, ties to even; subnormals kept; overflow gives ±inf; any NaN gives
    ``0x7FC0``.

    Parameters
    ----------
    x : array_like
        Values, converted to float32 first.

    Returns
    -------
    numpy.ndarray of uint16
        bf16 bit patterns, same shape as ``x``.
    """
    return (_rne_to_bf16_u32(x) >> np.uint32(16)).astype(np.uint16)


def bf16_bits_to_f32(b: ArrayLike) -> NDArray[np.float32]:
    """Widen bf16 bit patterns to float32 exactly (``bits << 16``); NaN payloads are kept."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_to_bf16(x: ArrayLike) -> NDArray[np.float32]:
    """Round fp32 values to bf16 and widen back: ``bf16_bits_to_f32(f32_to_bf16_bits(x))``.

    Returns float32 values representable in bf16, with canonical NaNs.
    """
    return _rne_to_bf16_u32(x).view(np.float32)


def canonical_nan(x: ArrayLike) -> NDArray[np.float32]:
    """Return float32 ``x`` with every NaN replaced by the canonical ``0x7FC00000``.

    Costs one ``isnan`` pass when ``x`` holds no NaN (the common case), and copies nothing.
    """
    x = np.asarray(x, dtype=np.float32)
    nan = np.isnan(x)
    if nan.any():
        return np.where(nan, _F32_NAN, x)
    return x


@_quiet
def bf16_product(a: ArrayLike, b: ArrayLike) -> NDArray[np.float32]:
    """Multiply bf16-valued float32 arrays to fp32 (IEEE round-to-nearest-even).

    Exact unless the product is below the normal range (gradual underflow rounds);
    ``inf × 0`` is NaN. NaNs are returned as numpy produces them (intermediate values).

    Parameters
    ----------
    a, b : array_like
        float32 values representable in bf16 (not checked); broadcast together.
    """
    return np.multiply(a, b, dtype=np.float32)


def _check_dot_width(width: int) -> None:
    if width < 1 or width > MAX_DOT_WIDTH or width & (width - 1):
        raise ValueError(f"dot width must be a power of two from 1 to {MAX_DOT_WIDTH}, "
                         f"not {width!r}")


@_quiet
def dot_tree(p: ArrayLike) -> NDArray[np.float32]:
    """Sum the last axis of ``p`` by the contract's fixed binary tree.

    Level by level, element ``2i`` is added to element ``2i + 1`` (fp32, round to nearest
    even) until one element remains.

    Parameters
    ----------
    p : array_like
        float32 products, shape ``[..., B]`` with B a power of two from 1 to 64.

    Returns
    -------
    numpy.ndarray of float32
        Shape ``[...]``; NaNs canonical.

    Raises
    ------
    ValueError
        If the last axis is not a power of two from 1 to 64.
    """
    p = np.asarray(p, dtype=np.float32)
    _check_dot_width(p.shape[-1] if p.ndim else 0)
    while p.shape[-1] > 1:
        p = p[..., 0::2] + p[..., 1::2]
    return canonical_nan(p[..., 0])


def tile_matvec(w: ArrayLike, x: ArrayLike) -> NDArray[np.float32]:
    """Multiply B × B bf16 tiles by B-vectors: ``out[..., i] = dot(w[..., i, :], x[...])``.

    Parameters
    ----------
    w : array_like
        bf16-valued float32 tiles, shape ``[..., B, B]`` (row ``i`` feeds output lane ``i``).
    x : array_like
        bf16-valued float32 vectors, shape ``[..., B]``; leading axes broadcast with ``w``'s.

    Returns
    -------
    numpy.ndarray of float32
        Shape ``[..., B]``; NaNs canonical.

    Raises
    ------
    ValueError
        If ``w`` is not square in its last two axes or B is not a valid dot width.
    """
    w = np.asarray(w, dtype=np.float32)
    x = np.asarray(x, dtype=np.float32)
    if w.ndim < 2 or w.shape[-1] != w.shape[-2] or x.shape[-1:] != w.shape[-1:]:
        raise ValueError(f"tile_matvec needs w of shape [..., B, B] and x of shape [..., B], "
                         f"not {w.shape!r} and {x.shape!r}")
    return dot_tree(bf16_product(w, x[..., np.newaxis, :]))


@_quiet
def accumulate(acc: ArrayLike, d: ArrayLike) -> NDArray[np.float32]:
    """Return the stored value of ``acc + d`` (fp32, round to nearest even; NaNs canonical)."""
    return canonical_nan(np.add(acc, d, dtype=np.float32))


@_quiet
def vec_max(a: ArrayLike, b: ArrayLike) -> NDArray[np.float32]:
    """Return the larger of fp32 ``a`` and ``b`` elementwise.

    NaN (canonical) if either is NaN; of two zeros, ``+0`` unless both are ``-0``.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    r = np.maximum(a, b)
    # When the result is a zero, its sign is the AND of the operand signs: the other operand
    # is then either a zero or negative, and max(-0, -y) = -0 while max(+0, anything<=0) = +0.
    zero_bits = (a.view(np.uint32) & b.view(np.uint32)) & _SIGN
    return canonical_nan(np.where(r == 0, zero_bits.view(np.float32), r))


@_quiet
def vec_min(a: ArrayLike, b: ArrayLike) -> NDArray[np.float32]:
    """Return the smaller of fp32 ``a`` and ``b`` elementwise.

    NaN (canonical) if either is NaN; of two zeros, ``-0`` unless both are ``+0``.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    r = np.minimum(a, b)
    # Mirror image of vec_max: a zero result takes the OR of the operand signs.
    zero_bits = (a.view(np.uint32) | b.view(np.uint32)) & _SIGN
    return canonical_nan(np.where(r == 0, zero_bits.view(np.float32), r))


def clamp(x: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> NDArray[np.float32]:
    """Return ``vec_min(vec_max(x, lo), hi)``; ``lo = -inf`` / ``hi = +inf`` mean no bound."""
    return vec_min(vec_max(x, lo), hi)


@_quiet
def vec_op(op: VecOp | int, a: ArrayLike, t: ArrayLike) -> NDArray[np.float32]:
    """Apply vector operation ``op`` to ``a`` (fp32) and ``t`` (bf16-valued fp32).

    Parameters
    ----------
    op : VecOp or int
        The operation.
    a : array_like
        fp32 accumulator values.
    t : array_like
        Tensor-RAM values widened from bf16 (float32; not checked); broadcast with ``a``.

    Returns
    -------
    numpy.ndarray of float32
        The fp32 result, NaNs canonical, broadcast shape of ``a`` and ``t``.

    Raises
    ------
    ValueError
        If ``op`` is not a :class:`VecOp` value.
    """
    op = VecOp(op)
    a = np.asarray(a, dtype=np.float32)
    t = np.asarray(t, dtype=np.float32)
    if op in (VecOp.PASS_A, VecOp.PASS_T):
        # A copy, not a broadcast view: the caller may store into the result.
        r = np.array(np.broadcast_to(a if op == VecOp.PASS_A else t,
                                     np.broadcast_shapes(a.shape, t.shape)))
    elif op == VecOp.ADD:
        r = a + t
    elif op == VecOp.SUB:
        r = a - t
    elif op == VecOp.RSUB:
        r = t - a
    elif op == VecOp.MUL:
        r = a * t
    elif op == VecOp.MAX:
        return vec_max(a, t)
    else:
        return vec_min(a, t)
    return canonical_nan(r)


def _check_block(block: int) -> None:
    if block < 1:
        raise ValueError(f"block size must be a positive integer, not {block!r}")


def pack_beats(values: ArrayLike, block: int) -> list[int]:
    """Pack bf16 bit patterns into I/O beats of ``block`` lanes.

    Lane ``i`` of a beat is bits ``[16i, 16i + 16)`` of the beat integer (little-endian).

    Parameters
    ----------
    values : array_like
        ``n * block`` bf16 bit patterns (uint16), flattened in order.
    block : int
        Lanes per beat (B).

    Returns
    -------
    list of int
        ``n`` beats.

    Raises
    ------
    ValueError
        If the number of values is not a multiple of ``block``, or a value is not 16-bit.
    """
    _check_block(block)
    v = np.asarray(values).reshape(-1)
    if v.size % block:
        raise ValueError(f"number of values must be a multiple of the block size {block}, "
                         f"not {v.size}")
    if v.size and (v.min() < 0 or v.max() > 0xFFFF):
        raise ValueError(f"values must be 16-bit patterns, not in [{v.min()}, {v.max()}]")
    raw = v.astype("<u2").tobytes()
    step = 2 * block
    return [int.from_bytes(raw[i:i + step], "little") for i in range(0, len(raw), step)]


def unpack_beats(beats: list[int], block: int) -> NDArray[np.uint16]:
    """Unpack I/O beats of ``block`` lanes into bf16 bit patterns (inverse of pack_beats).

    Raises
    ------
    ValueError
        If a beat is negative or wider than ``16 * block`` bits.
    """
    _check_block(block)
    try:
        raw = b"".join(int(beat).to_bytes(2 * block, "little") for beat in beats)
    except OverflowError:
        bad = next(b for b in beats if not 0 <= int(b) < 1 << (16 * block))
        raise ValueError(f"beat must be an unsigned {16 * block}-bit integer, "
                         f"not {bad!r}") from None
    return np.frombuffer(raw, dtype="<u2").astype(np.uint16)
